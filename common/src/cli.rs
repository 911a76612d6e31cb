//! The command line every service binary shares:
//!
//! - `<service>` or `<service> serve`: run the service;
//! - `<service> healthcheck`: exit 0 if the service on this machine answers `GET /health`
//!   with 200, for container healthchecks in images that have no shell or curl;
//! - `<service> config`: print every variable the service reads, with its value (passwords
//!   hidden), and exit 1 if one is invalid.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env};
use crate::shutdown;
use crate::telemetry::{self, LogSettings};

/// What a service's `main` hands over: how to read its settings, where it listens, and how
/// it serves on a bound listener until told to stop.
pub struct Service<S, F> {
    pub name: &'static str,
    pub settings: fn(&Env) -> Result<S, ConfigError>,
    pub listen: fn(&S) -> SocketAddr,
    pub serve: fn(TcpListener, S, CancellationToken) -> F,
}

impl<S, F> Service<S, F>
where
    F: Future<Output = std::io::Result<()>>,
{
    /// Runs the command given on the command line; the exit code follows the outcome.
    pub fn main(self) -> ExitCode {
        let env = Env::from_process();
        match std::env::args().nth(1).as_deref() {
            None | Some("serve") => self.serve(&env),
            Some("healthcheck") => self.healthcheck(&env),
            Some("config") => self.config(&env),
            Some(other) => {
                eprintln!(
                    "{}: unknown command {other:?}; expected serve, healthcheck or config",
                    self.name
                );
                ExitCode::from(2)
            }
        }
    }

    fn serve(self, env: &Env) -> ExitCode {
        let _log_guard = telemetry::init(self.name, &LogSettings::from_env(env));
        let settings = match (self.settings)(env) {
            Ok(settings) => settings,
            Err(err) => {
                tracing::error!("{err}");
                return ExitCode::FAILURE;
            }
        };
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!("cannot start the async runtime: {err}");
                return ExitCode::FAILURE;
            }
        };
        let listen = (self.listen)(&settings);
        let outcome = runtime.block_on(async {
            let listener = TcpListener::bind(listen).await.map_err(|err| {
                std::io::Error::new(err.kind(), format!("cannot listen on {listen}: {err}"))
            })?;
            // Tests that start the binary read the port from this line.
            tracing::info!("listening on {}", listener.local_addr()?);
            (self.serve)(listener, settings, shutdown::on_signal()).await
        });
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{} stopped: {err}", self.name);
                ExitCode::FAILURE
            }
        }
    }

    fn healthcheck(self, env: &Env) -> ExitCode {
        let port = match (self.settings)(env) {
            Ok(settings) => (self.listen)(&settings).port(),
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        };
        match get_health(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("{}: unhealthy: {reason}", self.name);
                ExitCode::FAILURE
            }
        }
    }

    fn config(self, env: &Env) -> ExitCode {
        LogSettings::from_env(env);
        let outcome = (self.settings)(env);
        for line in env.report() {
            println!("{line}");
        }
        match outcome {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        }
    }
}

/// `GET /health` on the local port, with short timeouts, over plain HTTP/1.0.
fn get_health(port: u16) -> Result<(), String> {
    let timeout = Duration::from_secs(2);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n"))
        .map_err(|e| e.to_string())?;
    let mut status_line = [0u8; 12];
    stream
        .read_exact(&mut status_line)
        .map_err(|e| e.to_string())?;
    match &status_line[9..12] {
        b"200" => Ok(()),
        other => Err(format!(
            "/health answered {}",
            String::from_utf8_lossy(other)
        )),
    }
}
