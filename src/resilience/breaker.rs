//! A circuit breaker (docs/design.md D7), small and our own.
//!
//! Closed → open on `consecutive_failures` failures in a row, or when the
//! share of failures among the last `window` outcomes reaches
//! `failure_rate` (once at least `min_calls` are in the window). Open for a
//! cooldown that doubles with each trip in a row (up to `max_cooldown`);
//! then half-open, where at most `half_open_probes` calls are admitted at
//! once: that many successes close it, one failure opens it again.
//!
//! Unlike `failsafe`, half-open admits a bounded number of probes, not every
//! caller. Only outcomes of classes that say the upstream is sick count as
//! failures (`ErrorClass::counts_for_breaker`); other errors count as
//! successes, since the upstream answered. An outcome of a call admitted
//! before the last transition is ignored: it says nothing about the state
//! the breaker is in now.
//!
//! Time is tokio's, so tests drive it with `tokio::time::pause`. The lock is
//! a `std` mutex held for a few arithmetic operations, never across `.await`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerSection;
use crate::error::ErrorClass;
use crate::sync::Locked;

/// The breaker's state, as shown in status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls fail fast until the cooldown ends.
    Open,
    /// A bounded number of probe calls decide.
    HalfOpen,
}

/// A change of state, reported once by the call that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Until the breaker probes again (zero while probes are in flight).
    pub retry_in: Duration,
}

/// One circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    /// Its thresholds: a reload may change them, keeping the state.
    cfg: arc_swap::ArcSwap<BreakerSection>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Bumped on every transition; permits of an older generation are stale.
    generation: u64,
    consecutive: u32,
    /// Last outcomes, `true` = failure.
    window: VecDeque<bool>,
    failures: u32,
    /// Trips in a row (without closing in between): grows the cooldown.
    trips: u32,
    open_until: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
    /// Total transitions into `Open`, for status.
    opened: u64,
}

/// Admission to call; report its outcome with [`Breaker::record`]. Dropped
/// without a report (the caller went away), it frees its probe slot.
#[derive(Debug)]
#[must_use = "report the outcome with Breaker::record"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    probe: bool,
    done: bool,
}

// === impl Breaker ===

impl Breaker {
    /// Puts new thresholds in force, keeping the state and the window
    /// (a reload that changed `[upstreams.<id>.breaker]`).
    pub fn reconfigure(&self, cfg: BreakerSection) {
        self.cfg.store(std::sync::Arc::new(cfg));
    }

    /// A closed breaker.
    pub fn new(cfg: BreakerSection) -> Self {
        let window = VecDeque::with_capacity(cfg.window as usize);
        Breaker {
            cfg: arc_swap::ArcSwap::from_pointee(cfg),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                consecutive: 0,
                window,
                failures: 0,
                trips: 0,
                open_until: Instant::now(),
                probes_in_flight: 0,
                probe_successes: 0,
                opened: 0,
            }),
        }
    }

    /// Asks to make a call. An open breaker whose cooldown is over turns
    /// half-open here, admitting this call as a probe.
    pub fn try_acquire(&self) -> (Result<Permit<'_>, Rejected>, Option<Transition>) {
        let mut s = self.lock();
        let now = Instant::now();
        let mut transition = None;
        if s.state == BreakerState::Open {
            if now < s.open_until {
                return (Err(Rejected { retry_in: s.open_until - now }), None);
            }
            transition = Some(s.go(BreakerState::HalfOpen));
        }
        let probe = s.state == BreakerState::HalfOpen;
        if probe {
            if s.probes_in_flight >= self.cfg.load().half_open_probes {
                return (Err(Rejected { retry_in: Duration::ZERO }), transition);
            }
            s.probes_in_flight += 1;
        }
        (Ok(Permit { breaker: self, generation: s.generation, probe, done: false }), transition)
    }

    /// Reports the outcome of an admitted call: `None` for success, else
    /// the failure's class.
    pub fn record(&self, mut permit: Permit<'_>, outcome: Option<ErrorClass>) -> Option<Transition> {
        permit.done = true;
        let failed = outcome.is_some_and(ErrorClass::counts_for_breaker);
        let mut s = self.lock();
        if permit.generation != s.generation {
            return None; // Admitted under another state: says nothing now.
        }
        match s.state {
            BreakerState::Closed => {
                s.push(failed, self.cfg.load().window as usize);
                s.consecutive = if failed { s.consecutive + 1 } else { 0 };
                let len = s.window.len() as u32;
                let rate_trips = {
                    let cfg = self.cfg.load();
                    len >= cfg.min_calls && f64::from(s.failures) >= cfg.failure_rate * f64::from(len)
                };
                (failed && (s.consecutive >= self.cfg.load().consecutive_failures || rate_trips))
                    .then(|| s.open(&self.cfg.load()))
            }
            BreakerState::HalfOpen => {
                s.probes_in_flight = s.probes_in_flight.saturating_sub(1);
                if failed {
                    return Some(s.open(&self.cfg.load()));
                }
                s.probe_successes += 1;
                (s.probe_successes >= self.cfg.load().half_open_probes).then(|| {
                    s.trips = 0;
                    s.go(BreakerState::Closed)
                })
            }
            BreakerState::Open => None,
        }
    }

    /// The state now; an open breaker whose cooldown is over reads as
    /// half-open (it turns so on the next call).
    pub fn state(&self) -> BreakerState {
        let s = self.lock();
        match s.state {
            BreakerState::Open if Instant::now() >= s.open_until => BreakerState::HalfOpen,
            other => other,
        }
    }

    /// When an open breaker will admit a probe; `None` unless open.
    pub fn probe_at(&self) -> Option<Instant> {
        let s = self.lock();
        (s.state == BreakerState::Open).then_some(s.open_until)
    }

    /// How many times it opened since start.
    pub fn times_opened(&self) -> u64 {
        self.lock().opened
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a few assignments; a panic cannot leave it torn.
        self.inner.locked()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.done || !self.probe {
            return;
        }
        let mut s = self.breaker.lock();
        if s.generation == self.generation {
            s.probes_in_flight = s.probes_in_flight.saturating_sub(1);
        }
    }
}

// === impl Inner ===

impl Inner {
    fn go(&mut self, to: BreakerState) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.consecutive = 0;
        self.window.clear();
        self.failures = 0;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        Transition { from, to }
    }

    fn open(&mut self, cfg: &BreakerSection) -> Transition {
        let factor = 1u32.checked_shl(self.trips.min(20)).unwrap_or(u32::MAX);
        let cooldown = cfg.cooldown.saturating_mul(factor).min(cfg.max_cooldown);
        self.trips += 1;
        self.opened += 1;
        self.open_until = Instant::now() + cooldown;
        self.go(BreakerState::Open)
    }

    fn push(&mut self, failed: bool, cap: usize) {
        // `while`: a reload may have made the window smaller than it is.
        while self.window.len() >= cap.max(1) {
            if self.window.pop_front() == Some(true) {
                self.failures -= 1;
            }
        }
        self.window.push_back(failed);
        self.failures += u32::from(failed);
    }
}

impl BreakerState {
    /// The label in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[cfg(test)]
mod tests;
