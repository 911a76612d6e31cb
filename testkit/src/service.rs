//! A service's `startup::serve` running inside the test process, and the probes every service
//! test asks of a running service (in-process or a [`crate::ServiceProcess`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::eventually;

/// The signature every service's `startup::serve` has.
pub type Serve<S, F> = fn(TcpListener, S, CancellationToken) -> F;

/// A service serving on a local port until [`InProcess::stop`]ped or dropped.
pub struct InProcess {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    /// Runs `serve` with `settings` on a free port of 127.0.0.1.
    pub async fn start<S, F>(serve: Serve<S, F>, settings: S) -> Self
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), serve, settings).await
    }

    /// The same on a given address, e.g. the one of an instance stopped before.
    pub async fn start_on<S, F>(listen: SocketAddr, serve: Serve<S, F>, settings: S) -> Self
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind(listen)
            .await
            .unwrap_or_else(|err| panic!("bind {listen}: {err}"));
        let addr = listener.local_addr().expect("a bound address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, settings, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// Where the service listens (127.0.0.1 unless started elsewhere).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the service the way SIGTERM does and waits until it has, cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("the service task").expect("a clean stop");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The status of `GET {url}/ready`, or 0 when nothing answers.
pub async fn ready_status(url: &str) -> u16 {
    match reqwest::get(format!("{url}/ready")).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Waits until `GET {url}/ready` answers `status`.
pub async fn wait_for_ready(url: &str, status: u16) {
    eventually(
        Duration::from_secs(30),
        &format!("{url}/ready answers {status}"),
        || async { ready_status(url).await == status },
    )
    .await;
}

/// `GET {url}/metrics`.
pub async fn metrics_text(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value on `GET {url}/metrics` of `sample`: one series (`name{label="value"}`, or the
/// name of a metric without labels), or, for the bare name of a metric with labels, the sum
/// of all its series; 0 when there is none.
pub async fn metric(url: &str, sample: &str) -> f64 {
    metrics_text(url)
        .await
        .lines()
        .filter_map(|line| sample_value(line, sample))
        .sum()
}

/// The value on `line` if it is a series of `sample`.
fn sample_value(line: &str, sample: &str) -> Option<f64> {
    let mut rest = line.strip_prefix(sample)?;
    if !sample.contains('{') && rest.starts_with('{') {
        // A bare name: any of its label sets.
        rest = &rest[rest.find('}')? + 1..];
    }
    // Whatever else follows, such as `_sum` (another metric), does not parse as a value.
    rest.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::sample_value;

    #[test]
    fn a_sample_is_one_series_or_the_series_of_a_bare_name() {
        let series = r#"retries_total{reason="unavailable"} 3"#;
        assert_eq!(
            sample_value(series, r#"retries_total{reason="unavailable"}"#),
            Some(3.0)
        );
        assert_eq!(sample_value(series, "retries_total"), Some(3.0));
        assert_eq!(
            sample_value(series, r#"retries_total{reason="cancelled"}"#),
            None
        );
        assert_eq!(sample_value("in_flight 4", "in_flight"), Some(4.0));
        assert_eq!(sample_value("seconds_sum 0.5", "seconds"), None);
        assert_eq!(sample_value(r#"seconds_bucket{le="1"} 2"#, "seconds"), None);
        assert_eq!(sample_value("# HELP in_flight Requests", "in_flight"), None);
    }
}
