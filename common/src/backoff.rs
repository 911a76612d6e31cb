//! Exponential backoff for reconnecting to a database or broker.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, with up to 25 % random jitter so that
/// replicas restarting together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// 250 ms doubling to 1 s, for reconnecting to the broker or the database.
    ///
    /// The cap bounds how long a service stays unavailable after its dependency is back: with
    /// nothing to tell it that the broker or database has returned, the service finds out at
    /// its next attempt, so a cap of 10 s meant up to 12.5 s of 503s once an outage had lasted
    /// 15 s. An attempt at a dependency that is down costs next to nothing (a refused
    /// connection, or a timed-out one which itself spaces the attempts), so one per second per
    /// replica is still gentle.
    pub fn for_reconnects() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(1))
    }

    /// The delay to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay + delay.mul_f64(jitter_fraction() * 0.25)
    }

    /// Starts again from the initial delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A number in [0, 1) that differs between processes and calls; good enough for jitter.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits % 1024) as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let base = |d: Duration| d.as_millis();
        let first = backoff.next_delay();
        assert!((100..=125).contains(&base(first)));
        assert!((200..=250).contains(&base(backoff.next_delay())));
        assert!((350..=438).contains(&base(backoff.next_delay())));
        assert!((350..=438).contains(&base(backoff.next_delay())));
        backoff.reset();
        assert!((100..=125).contains(&base(backoff.next_delay())));
    }

    #[test]
    fn reconnect_delays_never_exceed_a_second_and_a_quarter() {
        let mut backoff = Backoff::for_reconnects();
        let delays: Vec<u128> = (0..20).map(|_| backoff.next_delay().as_millis()).collect();
        assert!((250..=313).contains(&delays[0]), "{delays:?}");
        assert!(delays.iter().all(|delay| *delay <= 1250), "{delays:?}");
        assert!(delays[2..].iter().all(|delay| *delay >= 1000), "{delays:?}");
    }
}
