//! Reading settings from environment variables.
//!
//! Every service builds its `Settings` in one place from an [`Env`]. In production the
//! variables come from the process environment; tests pass a map instead, so they never
//! mutate global state and can run in parallel.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A setting that is missing or cannot be used. Its `Display` is one line naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration error: {name} is not set ({hint})")]
    Missing { name: String, hint: String },
    #[error("configuration error: {name}={value:?} is not valid: expected {expected}")]
    Invalid {
        name: String,
        value: String,
        expected: String,
    },
}

/// A source of configuration variables.
///
/// An empty value counts as unset, because Compose and Kubernetes turn an undefined
/// `${VAR}` into an empty string.
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The variables of this process.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// Explicit variables, for tests and tools.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The raw value of `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of `name`, or `default` when unset.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// The value of `name`; an error naming it when unset.
    pub fn required(&self, name: &str, hint: &str) -> Result<String, ConfigError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::Missing {
                name: name.to_owned(),
                hint: hint.to_owned(),
            })
    }

    /// `name` parsed as `T`, or `default` when unset. `expected` describes a valid value
    /// for the error message, e.g. "a port number (1-65535)".
    pub fn parse_or<T>(&self, name: &str, default: T, expected: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| ConfigError::Invalid {
                name: name.to_owned(),
                value: raw.to_owned(),
                expected: expected.to_owned(),
            }),
        }
    }

    /// A TCP port; 0 is accepted and means "any free port" (used by tests).
    pub fn port_or(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        self.parse_or(name, default, "a port number (0-65535)")
    }

    /// A whole number of at least `min`.
    pub fn at_least<T>(&self, name: &str, default: T, min: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let expected = format!("a whole number >= {min}");
        let value = self.parse_or(name, default, &expected)?;
        if value < min {
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                value: value.to_string(),
                expected,
            });
        }
        Ok(value)
    }

    /// A duration given in (possibly fractional) seconds, e.g. `5` or `0.25`.
    pub fn seconds_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let expected = "a number of seconds, e.g. 5 or 0.5";
        let seconds: f64 = self.parse_or(name, default.as_secs_f64(), expected)?;
        Duration::try_from_secs_f64(seconds).map_err(|_| ConfigError::Invalid {
            name: name.to_owned(),
            value: seconds.to_string(),
            expected: expected.to_owned(),
        })
    }
}

/// How long a service waits for in-flight work after SIGTERM before exiting anyway.
/// Read from `SHUTDOWN_TIMEOUT_SECONDS`; 10 s fits inside Kubernetes' default 30 s grace period.
pub fn shutdown_timeout(env: &Env) -> Result<Duration, ConfigError> {
    env.seconds_or("SHUTDOWN_TIMEOUT_SECONDS", Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("PORT", "")]);
        assert_eq!(env.port_or("PORT", 8080), Ok(8080));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let env = Env::from_pairs([("INVENTORY_APP_PORT", "eighty")]);
        let err = env.port_or("INVENTORY_APP_PORT", 8080).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: INVENTORY_APP_PORT=\"eighty\" is not valid: expected a port number (0-65535)"
        );
    }

    #[test]
    fn missing_required_values_name_the_variable() {
        let err = Env::from_pairs::<&str, &str>([])
            .required("RABBITMQ_HOST", "the broker's host name")
            .unwrap_err();
        assert!(err.to_string().contains("RABBITMQ_HOST is not set"));
    }

    #[test]
    fn lower_bounds_are_enforced() {
        let env = Env::from_pairs([("POOL", "0")]);
        assert!(env.at_least("POOL", 5u32, 1).is_err());
        assert_eq!(
            Env::from_pairs([("POOL", "7")]).at_least("POOL", 5u32, 1),
            Ok(7)
        );
    }

    #[test]
    fn seconds_accept_fractions_and_reject_negatives() {
        let env = Env::from_pairs([("T", "0.5"), ("N", "-1")]);
        assert_eq!(
            env.seconds_or("T", Duration::ZERO),
            Ok(Duration::from_millis(500))
        );
        assert!(env.seconds_or("N", Duration::ZERO).is_err());
    }
}
