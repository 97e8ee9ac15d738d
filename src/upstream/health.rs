//! Health pings for a ready upstream.
//!
//! Every `health.interval` (and whenever an open breaker's cooldown ends)
//! the upstream gets a `ping` under `health.timeout`. The outcome feeds the
//! upstream's breaker, so a ping is also the probe that closes it again
//! while its tools are hidden and no client calls them. Any reply counts as
//! alive, even an error (a server without `ping` still answered). After
//! `failures_to_restart` failed pings in a row the connection is given up:
//! the supervisor restarts a stdio process or re-initializes an HTTP
//! session.

use std::time::Duration;

use tokio::time::Instant;

use super::Upstream;
use super::conn::Connection;
use crate::resilience::BreakerState;

/// How often a half-open breaker with its probe slots taken is looked at.
const HALF_OPEN_RECHECK: Duration = Duration::from_secs(1);

impl Upstream {
    /// Pings until too many pings in a row failed; returns why.
    pub(super) async fn health_loop(&self, conn: &Connection) -> String {
        let mut h = self.spec().health.clone();
        // With `interval = 0s` there are no periodic pings, but an open
        // breaker is still probed when its cooldown ends.
        let period_of = |h: &crate::config::HealthSection| (!h.interval.is_zero()).then_some(h.interval);
        let mut period = period_of(&h);
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);
        let mut next = period.map_or_else(far, |p| Instant::now() + p);
        let mut failures = 0u32;
        loop {
            // A reload may have changed the settings in place.
            let now_h = self.spec().health.clone();
            if now_h != h {
                h = now_h;
                period = period_of(&h);
                next = period.map_or_else(far, |p| Instant::now() + p);
            }
            let probe_at = match self.breaker.as_ref().map(|b| (b.state(), b.probe_at())) {
                Some((BreakerState::Open, Some(at))) => Some(at),
                Some((BreakerState::HalfOpen, _)) => Some(Instant::now() + HALF_OPEN_RECHECK),
                _ => None,
            };
            let tool_probe = self.next_tool_probe();
            let wake = [probe_at, tool_probe].into_iter().flatten().fold(next, Instant::min);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                // A breaker moved: its cooldown may end before `wake`.
                () = self.breaker_moved.notified() => continue,
            }
            let now = Instant::now();
            if tool_probe.is_some_and(|t| t <= now) {
                // A tool's cooldown ended: list it again so calls can probe.
                self.changed.bump();
            }
            let probing = self.breaker.as_ref().is_some_and(|b| b.state() == BreakerState::HalfOpen);
            if now < next && !probing {
                continue;
            }
            if now >= next {
                next = period.map_or_else(far, |p| now + p);
            }
            let permit = match self.breaker.as_ref() {
                Some(b) => {
                    let (permit, t) = b.try_acquire();
                    self.note(t, None, None);
                    match permit {
                        Ok(p) => Some(p),
                        Err(_) => continue, // Another probe is deciding.
                    }
                }
                None => None,
            };
            // 2026-07-28 has no `ping`: a modern upstream is asked
            // `server/discover`, which every modern server answers.
            let probe = match conn.era() {
                crate::protocol::Era::Legacy => "ping",
                crate::protocol::Era::Modern => "server/discover",
            };
            let outcome = conn.request(probe, None, h.timeout).await.err().map(|e| (e.class, e.message));
            if let (Some(b), Some(p)) = (self.breaker.as_ref(), permit) {
                let class = outcome.as_ref().map(|o| o.0);
                self.note(b.record(p, class), None, class);
            }
            let counter = if outcome.is_some() { &self.counters.pings_failed } else { &self.counters.pings_ok };
            counter.inc();
            match outcome {
                None => failures = 0,
                Some((class, message)) => {
                    failures += 1;
                    tracing::warn!(upstream = %self.id(), class = %class, failures, "Health ping failed: {message}.");
                    self.record_error(class, format!("health ping: {message}"));
                    if h.failures_to_restart > 0 && failures >= h.failures_to_restart {
                        return format!("{failures} health pings in a row failed (last: {class})");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Frozen, conn, fixture, settle, start};
    use super::super::{ErrorClass, State};
    use super::*;

    /// Lets the tasks that `advance` woke run (the health loop sends its
    /// ping into the writer queue at once).
    async fn advance(d: Duration) {
        tokio::time::advance(d).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_pings_in_a_row_give_the_connection_up() {
        let _frozen = Frozen::new();
        let h = start(fixture(
            "[upstreams.x.health]\ninterval = \"1s\"\ntimeout = \"1s\"\nfailures_to_restart = 2\n\
             [upstreams.x.breaker]\nenabled = false",
        ));
        let ready = h.ready(1).await;
        let c = conn(&ready);
        let counters = &h.up.counters;
        advance(Duration::from_secs(1)).await;
        // The server reads in order: once this is answered, so was the ping.
        c.request("test/mute", None, Duration::from_secs(5)).await.expect("answered");
        assert!(settle(|| counters.pings_ok.get() == 1).await, "the first ping was answered");
        advance(Duration::from_secs(1)).await;
        advance(Duration::from_secs(1)).await;
        assert!(settle(|| counters.pings_failed.get() == 1).await, "the second ping timed out");
        assert!(matches!(&*h.up.state(), State::Ready(_)), "one failure is not enough");
        advance(Duration::from_secs(1)).await;
        let down = h.wait_for("down", |s| matches!(s, State::Down { .. })).await;
        let State::Down { reason, class, .. } = &*down else { unreachable!() };
        assert_eq!(
            (reason.as_str(), *class),
            ("2 health pings in a row failed (last: timeout)", ErrorClass::Transport)
        );
        assert_eq!((counters.pings_ok.get(), counters.pings_failed.get()), (1, 2));
        assert_eq!(h.up.status()["health"], serde_json::json!({ "pings": 3, "failed": 2 }));
        h.stop().await;
    }
}
