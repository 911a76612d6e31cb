//! api-gateway's settings, all from environment variables (see `.env.example`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::http::Uri;
use common::amqp::BrokerSettings;
use common::config::{ConfigError, Env};
use common::server::ServerSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    /// All interfaces, port `API_GATEWAY_PORT` (3000).
    pub listen: SocketAddr,
    /// `INVENTORY_APP_URL`: where `/api/movies` is forwarded.
    pub inventory_url: Uri,
    /// `BILLING_APP_URL`: where `/api/billing/orders` is forwarded.
    pub billing_url: Uri,
    /// `RABBITMQ_*`: where orders are published.
    pub broker: BrokerSettings,
    /// `UPSTREAM_TIMEOUT_SECONDS`: how long a forwarded request may wait for the response
    /// headers before the client gets 504.
    pub upstream_timeout: Duration,
    /// `PUBLISH_CONFIRM_TIMEOUT_SECONDS`: how long an order waits for the broker's confirm
    /// before the client gets 503.
    pub confirm_timeout: Duration,
    /// `PUBLISH_MAX_UNCONFIRMED`: messages published and not yet confirmed, at most; an order
    /// beyond that gets 503 at once.
    pub max_unconfirmed: usize,
    /// `HTTP_*` and `SHUTDOWN_TIMEOUT_SECONDS`: what the server allows each client.
    pub server: ServerSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let port = env.port_or("API_GATEWAY_PORT", 3000)?;
        Ok(Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            inventory_url: service_url(env, "INVENTORY_APP_URL", "http://127.0.0.1:8080")?,
            billing_url: service_url(env, "BILLING_APP_URL", "http://127.0.0.1:8081")?,
            broker: BrokerSettings::from_env(env)?,
            upstream_timeout: env
                .seconds_or("UPSTREAM_TIMEOUT_SECONDS", Duration::from_secs(10))?,
            confirm_timeout: env
                .seconds_or("PUBLISH_CONFIRM_TIMEOUT_SECONDS", Duration::from_secs(5))?,
            max_unconfirmed: env.at_least("PUBLISH_MAX_UNCONFIRMED", 1000, 1)?,
            server: ServerSettings::from_env(env)?,
        })
    }
}

/// An `http://host[:port]` URL, with no path: requests keep their own path.
fn service_url(env: &Env, name: &str, default: &str) -> Result<Uri, ConfigError> {
    let raw = env.string_or(name, default);
    let invalid = || {
        let expected = "an http:// URL with a host and no path, such as http://inventory-app:8080";
        ConfigError::invalid(name, &raw, expected)
    };
    let uri: Uri = raw.parse().map_err(|_| invalid())?;
    let has_no_path = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    // Credentials in the URL would be sent to the service as its Host.
    let has_userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
    if uri.scheme_str() != Some("http") || uri.authority().is_none() || !has_no_path || has_userinfo
    {
        return Err(invalid());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reach_local_services() {
        let settings = Settings::from_env(&Env::from_pairs::<&str, &str>([])).unwrap();
        assert_eq!(settings.listen.port(), 3000);
        assert_eq!(settings.inventory_url, "http://127.0.0.1:8080/");
        assert_eq!(settings.broker.queue, "billing_queue");
    }

    #[test]
    fn service_urls_must_be_plain_http_origins() {
        for good in ["http://inventory-app:8080", "http://10.0.0.7:8080/"] {
            let env = Env::from_pairs([("INVENTORY_APP_URL", good)]);
            assert!(Settings::from_env(&env).is_ok(), "{good}");
        }
        for bad in [
            "inventory-app:8080",
            "https://x:1",
            "http://x:1/api",
            "::",
            "http://user:secret@x:1",
        ] {
            let env = Env::from_pairs([("INVENTORY_APP_URL", bad)]);
            let err = Settings::from_env(&env).unwrap_err().to_string();
            assert!(err.contains("INVENTORY_APP_URL"), "{bad}: {err}");
        }
    }
}
