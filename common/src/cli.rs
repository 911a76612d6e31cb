//! The command line every service binary shares:
//!
//! - `<service>` or `<service> serve`: run the service;
//! - `<service> healthcheck`: exit 0 if the service on this machine answers `GET /health`
//!   with 200, for container healthchecks in images that have no shell or curl;
//! - `<service> config`: print every variable the service reads, with its value (passwords
//!   hidden), and exit 1 if one is invalid;
//! - `<service> help`: the commands this binary understands;
//! - any [`Command`] the service adds of its own (billing-app's `dead-letters`), which reads
//!   the same environment variables.

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

/// What a service's `main` hands over: how to read its settings, where it listens, how it
/// serves on a bound listener until told to stop, and the commands it adds to the shared ones.
pub struct Service<S, F> {
    /// The binary's name, in messages.
    pub name: &'static str,
    /// Reads and checks the service's settings.
    pub settings: fn(&Env) -> Result<S, ConfigError>,
    /// Where the service listens, for `serve` and `healthcheck`.
    pub listen: fn(&S) -> SocketAddr,
    /// Serves on the bound listener until the token is cancelled.
    pub serve: fn(TcpListener, S, CancellationToken) -> F,
    /// Commands of this service alone, besides `serve`, `healthcheck` and `config`.
    pub commands: &'static [Command],
}

/// A command one service adds to the shared command line: `<service> NAME ARGS...`.
pub struct Command {
    /// What follows the binary's name.
    pub name: &'static str,
    /// Its arguments and what it does, one line, for `help` and usage errors.
    pub summary: &'static str,
    /// Runs the command with the process's environment and the arguments after its name;
    /// what it returns is the exit code.
    pub run: fn(&Env, &[String]) -> ExitCode,
}

impl<S, F> Service<S, F>
where
    F: Future<Output = std::io::Result<()>>,
{
    /// Runs the command given on the command line; the exit code follows the outcome.
    pub fn main(self) -> ExitCode {
        let env = Env::from_process();
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.first().map(String::as_str) {
            None | Some("serve") => self.serve(&env),
            Some("healthcheck") => self.healthcheck(&env),
            Some("config") => self.config(&env),
            Some("help" | "--help" | "-h") => {
                println!("{}", self.usage());
                ExitCode::SUCCESS
            }
            Some(name) => match self.commands.iter().find(|command| command.name == name) {
                Some(command) => (command.run)(&env, &args[1..]),
                None => {
                    eprintln!("{}: unknown command {name:?}\n{}", self.name, self.usage());
                    ExitCode::from(2)
                }
            },
        }
    }

    /// Every command, one per line.
    fn usage(&self) -> String {
        let shared = [
            ("serve", "run the service (the default)"),
            (
                "healthcheck",
                "exit 0 if the service on this machine answers GET /health",
            ),
            (
                "config",
                "print the variables the service reads; exit 1 if one is invalid",
            ),
        ];
        let mut lines = vec![format!("usage: {} COMMAND", self.name)];
        for (name, summary) in shared {
            lines.push(format!("  {name:<12} {summary}"));
        }
        for command in self.commands {
            lines.push(format!("  {:<12} {}", command.name, command.summary));
        }
        lines.join("\n")
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
