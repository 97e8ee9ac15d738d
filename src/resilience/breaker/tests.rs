//! Tests of `breaker`.

use super::*;

const FAIL: Option<ErrorClass> = Some(ErrorClass::Transport);
const OK: Option<ErrorClass> = None;

fn cfg() -> BreakerSection {
    BreakerSection {
        enabled: true,
        consecutive_failures: 3,
        failure_rate: 0.5,
        window: 10,
        min_calls: 6,
        cooldown: Duration::from_secs(5),
        max_cooldown: Duration::from_secs(30),
        half_open_probes: 2,
        per_tool: false,
    }
}

fn call(b: &Breaker, outcome: Option<ErrorClass>) -> Result<Option<Transition>, Rejected> {
    let (permit, _) = b.try_acquire();
    Ok(b.record(permit?, outcome))
}

fn to(to: BreakerState) -> Option<Transition> {
    let from = match to {
        BreakerState::Open => None,
        BreakerState::Closed => Some(BreakerState::HalfOpen),
        BreakerState::HalfOpen => Some(BreakerState::Open),
    };
    from.map(|from| Transition { from, to })
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_it() {
    let b = Breaker::new(cfg());
    assert_eq!(call(&b, FAIL), Ok(None));
    assert_eq!(call(&b, FAIL), Ok(None));
    assert_eq!(call(&b, OK), Ok(None)); // resets the run
    assert_eq!(call(&b, FAIL), Ok(None));
    assert_eq!(call(&b, FAIL), Ok(None));
    let t = call(&b, FAIL).unwrap().unwrap();
    assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(call(&b, OK), Err(Rejected { retry_in: Duration::from_secs(5) }));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_needs_min_calls() {
    let b = Breaker::new(BreakerSection { consecutive_failures: 100, ..cfg() });
    // F S F S F: 60 % failures but only 5 calls (min 6).
    for o in [FAIL, OK, FAIL, OK, FAIL] {
        assert_eq!(call(&b, o), Ok(None));
    }
    // The 6th call is a success: 3/6 = 50 % but it is not a failure,
    // and only a failure can trip.
    assert_eq!(call(&b, OK), Ok(None));
    let t = call(&b, FAIL).unwrap().unwrap(); // 4/7 ≥ 50 %
    assert_eq!(t.to, BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn window_forgets_old_outcomes() {
    let b = Breaker::new(BreakerSection { consecutive_failures: 100, window: 4, min_calls: 4, ..cfg() });
    for o in [FAIL, OK, OK, OK, OK, OK, OK] {
        assert_eq!(call(&b, o), Ok(None));
    }
    // The early failure left the window: 1/4 after this one.
    assert_eq!(call(&b, FAIL), Ok(None));
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(call(&b, FAIL).unwrap().map(|t| t.to), Some(BreakerState::Open)); // 2/4
}

#[tokio::test(start_paused = true)]
async fn caller_errors_do_not_count() {
    let b = Breaker::new(cfg());
    for class in [ErrorClass::Protocol, ErrorClass::ToolError, ErrorClass::Policy, ErrorClass::BreakerOpen] {
        for _ in 0..5 {
            assert_eq!(call(&b, Some(class)), Ok(None));
        }
    }
    assert_eq!(b.state(), BreakerState::Closed);
    for class in [ErrorClass::Timeout, ErrorClass::Overloaded, ErrorClass::UpstreamInternal] {
        let b = Breaker::new(cfg());
        for _ in 0..3 {
            let _ = call(&b, Some(class));
        }
        assert_eq!(b.state(), BreakerState::Open, "{class}");
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_bounded_probes_and_closes() {
    let b = Breaker::new(cfg());
    for _ in 0..3 {
        let _ = call(&b, FAIL);
    }
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert!(b.try_acquire().0.is_err());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let (p1, t) = b.try_acquire();
    assert_eq!(t, to(BreakerState::HalfOpen));
    let (p2, t) = b.try_acquire();
    assert_eq!(t, None);
    // A third caller is refused while two probes are out.
    assert_eq!(b.try_acquire().0.unwrap_err(), Rejected { retry_in: Duration::ZERO });
    assert_eq!(b.record(p1.unwrap(), OK), None);
    assert_eq!(b.record(p2.unwrap(), OK), to(BreakerState::Closed));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_frees_its_slot() {
    let b = Breaker::new(BreakerSection { half_open_probes: 1, ..cfg() });
    for _ in 0..3 {
        let _ = call(&b, FAIL);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let (p, _) = b.try_acquire();
    assert!(b.try_acquire().0.is_err());
    drop(p);
    assert!(b.try_acquire().0.is_ok());
}

#[tokio::test(start_paused = true)]
async fn cooldown_grows_on_repeated_trips_and_resets_on_close() {
    let b = Breaker::new(BreakerSection { half_open_probes: 1, ..cfg() });
    for _ in 0..3 {
        let _ = call(&b, FAIL);
    }
    let mut expect = Vec::new();
    for _ in 0..4 {
        let wait = b.probe_at().unwrap() - Instant::now();
        expect.push(wait.as_secs());
        tokio::time::advance(wait).await;
        // The probe fails: open again, longer.
        assert_eq!(call(&b, FAIL).unwrap().map(|t| t.to), Some(BreakerState::Open));
    }
    assert_eq!(expect, [5, 10, 20, 30]);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(call(&b, OK).unwrap().map(|t| t.to), Some(BreakerState::Closed));
    for _ in 0..3 {
        let _ = call(&b, FAIL);
    }
    assert_eq!((b.probe_at().unwrap() - Instant::now()).as_secs(), 5);
    assert_eq!(b.times_opened(), 6);
}

#[tokio::test(start_paused = true)]
async fn stale_outcomes_are_ignored() {
    let b = Breaker::new(cfg());
    let (slow, _) = b.try_acquire();
    for _ in 0..3 {
        let _ = call(&b, FAIL);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let (probe, _) = b.try_acquire();
    // The call admitted while closed ends now: it must not close it.
    assert_eq!(b.record(slow.unwrap(), OK), None);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    drop(probe);
}

#[tokio::test(start_paused = true)]
async fn a_reload_changes_the_thresholds_keeping_the_state_and_a_smaller_window_forgets_the_oldest() {
    let b = Breaker::new(BreakerSection { consecutive_failures: 100, window: 10, min_calls: 4, ..cfg() });
    // F F S S S S S S: 2/8 failures, under 50 %.
    for o in [FAIL, FAIL, OK, OK, OK, OK, OK, OK] {
        assert_eq!(call(&b, o), Ok(None));
    }
    // A window of 4 keeps the newest 3 and this one: the two early
    // failures are gone, so one failure is 1/4, not 3/9.
    b.reconfigure(BreakerSection { consecutive_failures: 100, window: 4, min_calls: 4, ..cfg() });
    assert_eq!(call(&b, FAIL), Ok(None));
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.inner.lock().unwrap().window.len(), 4, "bounded by the new window");
    assert_eq!(call(&b, FAIL).unwrap().map(|t| t.to), Some(BreakerState::Open), "2/4 under the new window");
    // The state was kept: it is open, and a lower consecutive threshold
    // does not close it.
    b.reconfigure(cfg());
    assert_eq!(b.state(), BreakerState::Open);
}
