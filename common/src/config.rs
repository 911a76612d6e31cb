//! Reading settings from environment variables.
//!
//! Every service builds its `Settings` in one place from an [`Env`]. In production the
//! variables come from the process environment; tests pass a map instead, so they never
//! mutate global state and can run in parallel.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A variable whose value cannot be used. Its `Display` is one line naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration error: {name}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub expected: String,
}

impl ConfigError {
    pub fn invalid(name: &str, value: &str, expected: &str) -> Self {
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }
}

/// A source of configuration variables.
///
/// An empty value counts as unset, because Compose and Kubernetes turn an undefined
/// `${VAR}` into an empty string.
pub struct Env {
    vars: HashMap<String, String>,
    /// Every name looked up, with its default, so a service can list what it reads.
    read: RefCell<BTreeMap<String, String>>,
}

impl Env {
    /// The variables of this process.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
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
            read: RefCell::default(),
        }
    }

    /// The raw value of `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.read.borrow_mut().entry(name.to_owned()).or_default();
        self.get_quietly(name)
    }

    /// The value of `name`, or `default` when unset.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.note_default(name, default);
        self.get(name).unwrap_or(default).to_owned()
    }

    fn note_default(&self, name: &str, default: &str) {
        self.read
            .borrow_mut()
            .insert(name.to_owned(), default.to_owned());
    }

    /// `name` parsed as `T`, or `default` when unset. `expected` describes a valid value
    /// for the error message, e.g. "a port number (1-65535)".
    pub fn parse_or<T>(&self, name: &str, default: T, expected: &str) -> Result<T, ConfigError>
    where
        T: FromStr + Display,
    {
        self.note_default(name, &default.to_string());
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|_| ConfigError::invalid(name, raw, expected)),
        }
    }

    /// A TCP port; 0 is accepted and means "any free port" (used by tests).
    pub fn port_or(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        self.parse_or(name, default, "a port number (0-65535)")
    }

    /// A whole number of at least `min`.
    pub fn at_least<T>(&self, name: &str, default: T, min: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display,
    {
        let expected = format!("a whole number >= {min}");
        let value = self.parse_or(name, default, &expected)?;
        if value < min {
            return Err(ConfigError::invalid(name, &value.to_string(), &expected));
        }
        Ok(value)
    }

    /// Every variable looked up so far, as lines of an env file: `NAME=value` when set
    /// (`<hidden>` for passwords), `# NAME=default` when not. What `<service> config` prints.
    pub fn report(&self) -> Vec<String> {
        self.read
            .borrow()
            .iter()
            .map(|(name, default)| match self.get_quietly(name) {
                Some(_) if name.contains("PASSWORD") => format!("{name}=<hidden>"),
                Some(value) => format!("{name}={value}"),
                None => format!("# {name}={default}"),
            })
            .collect()
    }

    fn get_quietly(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A duration given in (possibly fractional) seconds, e.g. `5` or `0.25`.
    pub fn seconds_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let expected = "a number of seconds, e.g. 5 or 0.5";
        let seconds: f64 = self.parse_or(name, default.as_secs_f64(), expected)?;
        Duration::try_from_secs_f64(seconds)
            .map_err(|_| ConfigError::invalid(name, &seconds.to_string(), expected))
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
    fn the_report_lists_what_was_read_and_hides_passwords() {
        let env = Env::from_pairs([("DB_PASSWORD", "s3cret"), ("DB_HOST", "db"), ("OTHER", "x")]);
        env.string_or("DB_HOST", "localhost");
        env.string_or("DB_PASSWORD", "");
        env.string_or("DB_USER", "postgres");
        assert_eq!(
            env.report(),
            ["DB_HOST=db", "DB_PASSWORD=<hidden>", "# DB_USER=postgres"]
        );
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
