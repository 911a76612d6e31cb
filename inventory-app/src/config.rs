//! inventory-app's settings, all from environment variables (see `.env.example`).

use common::config::{ConfigError, Env};
use common::db::DatabaseSettings;
use common::server::ServerSettings;
use std::net::{Ipv4Addr, SocketAddr};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the HTTP server listens: all interfaces, port `INVENTORY_APP_PORT` (8080).
    pub listen: SocketAddr,
    /// `INVENTORY_DB_*`, database `movies` by default.
    pub database: DatabaseSettings,
    /// `HTTP_*` and `SHUTDOWN_TIMEOUT_SECONDS`: what the server allows each client.
    pub server: ServerSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let port = env.port_or("INVENTORY_APP_PORT", 8080)?;
        Ok(Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            database: DatabaseSettings::from_env(env, "INVENTORY", "movies")?,
            server: ServerSettings::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reach_a_local_postgres() {
        let settings = Settings::from_env(&Env::from_pairs::<&str, &str>([])).unwrap();
        assert_eq!(settings.listen.port(), 8080);
        assert_eq!(settings.database.name, "movies");
        assert_eq!(settings.database.host, "127.0.0.1");
        assert_eq!(settings.database.port, 5432);
    }

    #[test]
    fn spec_variables_are_read() {
        let env = Env::from_pairs([
            ("INVENTORY_APP_PORT", "9000"),
            ("INVENTORY_DB_HOST", "inventory-db"),
            ("INVENTORY_DB_PORT", "5433"),
            ("INVENTORY_DB_USER", "app"),
            ("INVENTORY_DB_PASSWORD", "s3cret"),
            ("INVENTORY_DB_NAME", "films"),
        ]);
        let settings = Settings::from_env(&env).unwrap();
        assert_eq!(settings.listen.port(), 9000);
        let db = &settings.database;
        assert_eq!(
            (
                db.host.as_str(),
                db.port,
                db.user.as_str(),
                db.password.as_str(),
                db.name.as_str()
            ),
            ("inventory-db", 5433, "app", "s3cret", "films")
        );
        assert!(
            !format!("{db:?}").contains("s3cret"),
            "the password never reaches a log"
        );
    }

    #[test]
    fn a_malformed_port_is_named() {
        let env = Env::from_pairs([("INVENTORY_DB_PORT", "fivefour")]);
        let err = Settings::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("INVENTORY_DB_PORT"), "{err}");
    }
}
