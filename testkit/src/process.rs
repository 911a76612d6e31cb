//! A service started as a real process, on a port of its choosing.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A running service binary. Killed when dropped.
pub struct ServiceProcess {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts `binary` (from `env!("CARGO_BIN_EXE_...")`) with `env` on top of a clean
    /// environment and waits for its "listening on ADDR" log line.
    pub async fn start(binary: &str, env: &[(String, String)]) -> Self {
        let mut child = Command::new(binary)
            .env_clear()
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("start {binary}: {err}"));

        let output = Arc::new(Mutex::new(Vec::new()));
        let (found, listening) = oneshot::channel();
        let mut found = Some(found);
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let lines = output.clone();
        tokio::spawn(async move {
            loop {
                let line = tokio::select! {
                    Ok(Some(line)) = stdout.next_line() => line,
                    Ok(Some(line)) = stderr.next_line() => line,
                    else => break,
                };
                if let Some(addr) = listening_addr(&line)
                    && let Some(found) = found.take()
                {
                    let _ = found.send(addr);
                }
                lines.lock().expect("log lock").push(line);
            }
        });

        let addr = match tokio::time::timeout(Duration::from_secs(30), listening).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "{binary} did not report its address; output:\n{}",
                output.lock().expect("log lock").join("\n")
            ),
        };
        Self {
            child,
            addr,
            output,
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its resident memory now (`VmRSS`), in KiB.
    pub fn resident_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Where the service listens, as reachable from the test.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("log lock").join("\n")
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("process still running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.wait(Duration::from_secs(20)).await
    }

    /// Sends SIGKILL: the process gets no chance to finish anything.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL the service");
    }

    async fn wait(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the service"),
            Err(_) => panic!(
                "the service did not exit within {limit:?}; output:\n{}",
                self.output()
            ),
        }
    }
}

/// Reads the address from a line ending in "listening on 0.0.0.0:PORT"; the port is what
/// matters, the test always connects to loopback.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, addr) = line.split_once("listening on ")?;
    let addr: SocketAddr = addr.trim().parse().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], addr.port())))
}

/// Runs a binary with `args` to completion and returns its exit status and output.
pub async fn run_to_exit(
    binary: &str,
    args: &[&str],
    env: &[(String, String)],
) -> (ExitStatus, String) {
    let output = Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("the binary exits on its own")
        .expect("run the binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}
