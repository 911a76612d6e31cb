//! billing-app's settings, all from environment variables (see `.env.example`).

use common::amqp::BrokerSettings;
use common::config::{ConfigError, Env};
use common::db::DatabaseSettings;
use common::server::ServerSettings;
use std::net::{Ipv4Addr, SocketAddr};

#[derive(Debug, Clone)]
pub struct Settings {
    /// All interfaces, port `BILLING_APP_PORT` (8080).
    pub listen: SocketAddr,
    /// `BILLING_DB_*`, database `orders` by default.
    pub database: DatabaseSettings,
    /// `RABBITMQ_*`.
    pub broker: BrokerSettings,
    /// `BILLING_PREFETCH`: deliveries the broker may push before any is acknowledged. Batches
    /// take at most half of it, so the broker keeps sending while a batch is being stored.
    pub prefetch: u16,
    /// `HTTP_*` and `SHUTDOWN_TIMEOUT_SECONDS`: what the server allows each client; the
    /// shutdown timeout also bounds settling the batch in hand.
    pub server: ServerSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let port = env.port_or("BILLING_APP_PORT", 8080)?;
        Ok(Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            database: DatabaseSettings::from_env(env, "BILLING", "orders")?,
            broker: BrokerSettings::from_env(env)?,
            prefetch: env.at_least("BILLING_PREFETCH", 1000, 1)?,
            server: ServerSettings::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reach_local_services() {
        let settings = Settings::from_env(&Env::from_pairs::<&str, &str>([])).unwrap();
        assert_eq!(settings.listen.port(), 8080);
        assert_eq!(settings.database.name, "orders");
        assert_eq!(settings.broker.queue, "billing_queue");
        assert_eq!(
            settings.broker.nodes,
            [common::amqp::Node::new("127.0.0.1", 5672)]
        );
    }

    #[test]
    fn spec_variables_are_read() {
        let env = Env::from_pairs([
            ("BILLING_APP_PORT", "8181"),
            ("BILLING_DB_HOST", "billing-db"),
            ("BILLING_DB_NAME", "orders2"),
            ("RABBITMQ_HOST", "rabbitmq"),
            ("RABBITMQ_PORT", "5673"),
            ("RABBITMQ_USER", "billing"),
            ("RABBITMQ_PASSWORD", "hunter2"),
            ("RABBITMQ_QUEUE", "orders_queue"),
        ]);
        let settings = Settings::from_env(&env).unwrap();
        assert_eq!(settings.listen.port(), 8181);
        assert_eq!(settings.database.host, "billing-db");
        assert_eq!(settings.database.name, "orders2");
        let broker = &settings.broker;
        assert_eq!(broker.nodes, [common::amqp::Node::new("rabbitmq", 5673)]);
        assert_eq!(
            (broker.user.as_str(), broker.password.as_str()),
            ("billing", "hunter2")
        );
        assert_eq!(broker.queue, "orders_queue");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn a_zero_prefetch_is_refused() {
        let env = Env::from_pairs([("BILLING_PREFETCH", "0")]);
        let err = Settings::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("BILLING_PREFETCH"), "{err}");
    }
}
