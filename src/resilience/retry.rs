//! Safe retries (docs/design.md D6): when a retry is allowed, how long to wait,
//! and a budget that keeps retries from storming a struggling upstream.

use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

use crate::config::RetrySection;
use crate::error::CallError;
use crate::sync::Locked;

/// What is known about the call being retried.
#[derive(Debug, Clone, Copy)]
pub struct Safety {
    /// A read method (`tools/list`, `resources/read`, `prompts/get`, …):
    /// repeating it changes nothing.
    pub read_method: bool,
    /// A `tools/call` of a tool the operator (or a trusted upstream's
    /// annotations) declared idempotent or read-only.
    pub idempotent_tool: bool,
}

/// Why a failed call is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRetry {
    /// The class is never retried (`protocol`, `tool_error`, …).
    Class,
    /// The request may have reached the upstream and the call is not
    /// idempotent: running it twice could repeat a side effect.
    Unsafe,
    /// Every attempt is used.
    Attempts,
    /// The wait would pass the call's deadline.
    Deadline,
    /// The retry budget is spent.
    Budget,
}

/// Whether a failure may be retried, before attempts, deadline and budget.
pub fn allowed(err: &CallError, safety: Safety) -> Result<(), NoRetry> {
    if !err.class.retryable() {
        return Err(NoRetry::Class);
    }
    if err.not_delivered || safety.read_method || safety.idempotent_tool { Ok(()) } else { Err(NoRetry::Unsafe) }
}

/// Backoff delays: exponential ceilings from `backon` (initial, doubling,
/// capped), each drawn uniformly from `[0, ceiling]` ("full jitter", so
/// callers that failed together do not retry together). Tests turn the
/// jitter off to get the ceilings exactly.
#[derive(Debug)]
pub struct Delays {
    ceilings: backon::ExponentialBackoff,
    jitter: bool,
}

impl Delays {
    /// The delays before retry 1, 2, … of a call under `cfg`.
    pub fn new(cfg: &RetrySection, jitter: bool) -> Self {
        let ceilings = ExponentialBuilder::new()
            .with_min_delay(cfg.initial_delay)
            .with_max_delay(cfg.max_delay)
            .with_factor(2.0)
            .without_max_times()
            .build();
        Delays { ceilings, jitter }
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.ceilings.next()?;
        if !self.jitter {
            return Some(ceiling);
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(fastrand::u64(..=nanos)))
    }
}

/// The wait before the next attempt: the backoff delay, or longer when the
/// upstream asked for it (`Retry-After`). `None` when it would end after
/// `deadline`.
pub fn wait_before_retry(backoff: Duration, err: &CallError, deadline: Instant) -> Option<Duration> {
    let wait = err.retry_after.map_or(backoff, |ra| ra.max(backoff));
    (Instant::now() + wait < deadline).then_some(wait)
}

/// A retry budget: each call deposits `ratio` of a token, each retry takes
/// one, so retries add at most that share of the load; `min_per_second`
/// tokens accrue with time so a quiet upstream can still be retried. The
/// balance is capped, which bounds a burst of retries after a quiet spell.
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    min_per_second: f64,
    cap: f64,
    inner: Mutex<(f64, Instant)>,
}

impl Budget {
    /// A full budget.
    pub fn new(cfg: &RetrySection) -> Self {
        let cap = (cfg.budget_min_per_second * 10.0).max(10.0);
        Budget {
            ratio: cfg.budget_ratio,
            min_per_second: cfg.budget_min_per_second,
            cap,
            inner: Mutex::new((cap, Instant::now())),
        }
    }

    /// A call was made.
    pub fn deposit(&self) {
        if self.ratio > 0.0 {
            let mut g = self.lock();
            g.0 = (g.0 + self.ratio).min(self.cap);
        }
    }

    /// Takes a token for one retry; `false` when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let mut g = self.lock();
        let now = Instant::now();
        let earned = now.saturating_duration_since(g.1).as_secs_f64() * self.min_per_second;
        g.0 = (g.0 + earned).min(self.cap);
        g.1 = now;
        if g.0 >= 1.0 {
            g.0 -= 1.0;
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        self.inner.locked()
    }
}

impl NoRetry {
    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NoRetry::Class => "class",
            NoRetry::Unsafe => "unsafe",
            NoRetry::Attempts => "attempts",
            NoRetry::Deadline => "deadline",
            NoRetry::Budget => "budget",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    fn cfg() -> RetrySection {
        RetrySection {
            attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            budget_ratio: 0.2,
            budget_min_per_second: 1.0,
        }
    }

    #[test]
    fn safety_table() {
        let err = |class| CallError::new(class, Some("u"), "x");
        let unsafe_call = Safety { read_method: false, idempotent_tool: false };
        let read = Safety { read_method: true, idempotent_tool: false };
        let idem = Safety { read_method: false, idempotent_tool: true };
        let table = [
            // A non-idempotent call that may have run: never again.
            (err(ErrorClass::Transport), unsafe_call, Err(NoRetry::Unsafe)),
            (err(ErrorClass::Timeout), unsafe_call, Err(NoRetry::Unsafe)),
            (err(ErrorClass::UpstreamInternal), unsafe_call, Err(NoRetry::Unsafe)),
            // ...unless it provably never arrived.
            (err(ErrorClass::Transport).not_delivered(), unsafe_call, Ok(())),
            (err(ErrorClass::Overloaded).not_delivered(), unsafe_call, Ok(())),
            (err(ErrorClass::Timeout), read, Ok(())),
            (err(ErrorClass::UpstreamInternal), idem, Ok(())),
            // Never the caller's mistakes or tool errors, however safe.
            (err(ErrorClass::Protocol).not_delivered(), read, Err(NoRetry::Class)),
            (err(ErrorClass::ToolError), idem, Err(NoRetry::Class)),
            (err(ErrorClass::BreakerOpen).not_delivered(), read, Err(NoRetry::Class)),
            (err(ErrorClass::Policy), read, Err(NoRetry::Class)),
        ];
        for (e, safety, want) in table {
            assert_eq!(allowed(&e, safety), want, "{:?} {safety:?}", e.class);
        }
    }

    #[test]
    fn delays_double_to_the_cap_and_jitter_stays_below() {
        let got: Vec<_> = Delays::new(&cfg(), false).take(6).map(|d| d.as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        for (i, d) in Delays::new(&cfg(), true).take(50).enumerate() {
            let ceiling = (100u128 << i.min(20)).min(1000);
            assert!(d.as_millis() <= ceiling, "{i}: {d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_and_deadline_bounds() {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut e = CallError::new(ErrorClass::Overloaded, Some("u"), "x");
        assert_eq!(wait_before_retry(Duration::from_millis(100), &e, deadline), Some(Duration::from_millis(100)));
        e.retry_after = Some(Duration::from_secs(2));
        assert_eq!(wait_before_retry(Duration::from_millis(100), &e, deadline), Some(Duration::from_secs(2)));
        e.retry_after = Some(Duration::from_secs(3));
        assert_eq!(wait_before_retry(Duration::from_millis(100), &e, deadline), None);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_limits_retries_to_a_share_of_calls() {
        let b = Budget::new(&RetrySection { budget_min_per_second: 0.0, ..cfg() });
        // Starts full (10 tokens), then each call adds 0.2.
        let mut granted = 0;
        for _ in 0..100 {
            b.deposit();
            if b.withdraw() {
                granted += 1;
            }
        }
        // 10 at start + 100 × 0.2 = 30 (float sums may lose the last one).
        assert!((29..=30).contains(&granted), "{granted}");
        assert!(!b.withdraw());
        // Time alone earns nothing at min_per_second = 0 ...
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!b.withdraw());
        // ... and one token per second at 1.
        let b = Budget::new(&cfg());
        while b.withdraw() {}
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(b.withdraw());
    }
}
