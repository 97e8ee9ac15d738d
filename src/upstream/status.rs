//! What the upstream looks like from outside: `/status` and the gauges set
//! at scrape time.

use super::*;

impl Upstream {
    pub(super) fn labels(&self) -> UpstreamLabels {
        UpstreamLabels { upstream: self.label.clone() }
    }

    /// Sets the gauges that mirror this upstream's state (called when
    /// `/metrics` is scraped, so the request path never pays for them).
    pub fn export_gauges(&self) {
        let m = &self.metrics;
        let labels = self.labels();
        let state = match &**self.state.load() {
            State::Starting { .. } => "starting",
            State::Ready(_) => "ready",
            State::Down { .. } => "down",
            State::Stopped => "stopped",
        };
        m.upstream_up.get_or_create(&labels).set(i64::from(state == "ready"));
        for s in ["starting", "ready", "down", "stopped"] {
            m.upstream_state
                .get_or_create(&StateLabels { upstream: self.label.clone(), state: s })
                .set(i64::from(s == state));
        }
        m.upstream_crash_looping.get_or_create(&labels).set(i64::from(self.crash_loop.load(Ordering::Relaxed)));
        m.upstream_in_flight.get_or_create(&labels).set(self.bulkhead.in_flight() as i64);
        m.upstream_queued.get_or_create(&labels).set(self.bulkhead.queued() as i64);
        let value = |s: BreakerState| match s {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        if let Some(b) = &self.breaker {
            m.breaker_state
                .get_or_create(&BreakerLabels { upstream: self.label.clone(), tool: Name::from("") })
                .set(value(b.state()));
        }
        let tools = self.tool_breakers.locked();
        for (tool, b) in tools.iter() {
            m.breaker_state
                .get_or_create(&BreakerLabels { upstream: self.label.clone(), tool: Name::from(tool.as_str()) })
                .set(value(b.state()));
        }
    }

    /// Marks it retired: a reload replaced or removed it, so no new
    /// connection of a session or principal is opened to it.
    pub fn retire(&self) {
        self.retired.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a reload replaced or removed it.
    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Calls in flight or waiting for a slot now (a retired upstream
    /// drains until this is zero).
    pub fn busy(&self) -> usize {
        self.bulkhead.in_flight() + self.bulkhead.queued()
    }

    /// A JSON status snapshot for `/status` and the CLI.
    pub fn status(&self) -> serde_json::Value {
        let state = self.state();
        let now = Instant::now();
        let mut v = serde_json::json!({
            "id": self.spec().id,
            "transport": match self.spec().transport {
                TransportSpec::Stdio { .. } => "stdio",
                TransportSpec::Http { .. } => "http",
                TransportSpec::Sse { .. } => "sse",
            },
            "restarts": self.restarts(),
            "crash_loop": self.crash_loop.load(Ordering::Relaxed),
        });
        if let Some(b) = &self.breaker {
            v["breaker"] = serde_json::json!({
                "state": b.state().as_str(),
                "opened_total": b.times_opened(),
                // Every transition of this upstream's breakers, tools' included.
                "transitions_total": self.stats.breaker_transitions.load(Ordering::Relaxed),
                "probe_in_ms": b.probe_at().map(|t| t.saturating_duration_since(now).as_millis() as u64),
            });
        }
        let open_tools = self.hidden_tools();
        if !open_tools.is_empty() {
            v["breaker_open_tools"] = open_tools.into();
        }
        let last = self.stats.last_error.locked().clone();
        if let Some((class, message, at)) = last {
            v["last_error_class"] = class.as_str().into();
            v["last_error"] = message.into();
            v["last_error_age_ms"] = (now.saturating_duration_since(at).as_millis() as u64).into();
        }
        v["health"] = serde_json::json!({
            "pings": self.counters.pings_ok.get() + self.counters.pings_failed.get(),
            "failed": self.counters.pings_failed.get(),
        });
        if let serde_json::Value::Object(calls) = self.call_status() {
            v.as_object_mut().expect("an object").extend(calls);
        }
        match &*state {
            State::Starting { since } => {
                v["state"] = "starting".into();
                v["starting_for_ms"] = (now.saturating_duration_since(*since).as_millis() as u64).into();
            }
            State::Ready(r) => {
                v["state"] = "ready".into();
                v["ready_for_ms"] = (now.saturating_duration_since(r.since).as_millis() as u64).into();
                v["tools"] = r.lists.tools.len().into();
                if !r.lists.prompts.is_empty() {
                    v["prompts"] = r.lists.prompts.len().into();
                }
                if !r.lists.resources.is_empty() || !r.lists.templates.is_empty() {
                    v["resources"] = r.lists.resources.len().into();
                    v["resource_templates"] = r.lists.templates.len().into();
                }
                v["protocol_version"] = r.negotiated.version.clone().into();
                if let Some(info) = &r.negotiated.server_info {
                    v["server_info"] = info.checked().value().unwrap_or_default();
                }
                if let Some(pid) = r.conn.link.pid() {
                    v["pid"] = pid.into();
                }
            }
            State::Down { reason, class, retry_at } => {
                v["state"] = "down".into();
                v["down_reason"] = reason.clone().into();
                // What the process last said: usually why it exited.
                if let Some(line) = self.last_stderr.locked().as_deref() {
                    v["last_stderr"] = line.into();
                }
                v["down_class"] = class.as_str().into();
                v["retry_in_ms"] = (retry_at.saturating_duration_since(now).as_millis() as u64).into();
            }
            State::Stopped => v["state"] = "stopped".into(),
        }
        v
    }
}

#[cfg(test)]
mod tests {
    //! `/status` and the gauges, for an upstream in each state it can be in.

    use std::time::Duration;

    use serde_json::json;

    use super::super::tests::{Frozen, Harness, NO_SUCH_COMMAND, fixture, spec, start};
    use super::*;

    /// The state gauges: `upstream_up`, then `upstream_state` for starting,
    /// ready, down and stopped, then `upstream_crash_looping`.
    fn gauges(h: &Harness) -> (i64, [i64; 4], i64) {
        h.up.export_gauges();
        let m = &h.metrics;
        let labels = h.up.labels();
        let state = |state| m.upstream_state.get_or_create(&StateLabels { upstream: h.up.label(), state }).get();
        (
            m.upstream_up.get_or_create(&labels).get(),
            ["starting", "ready", "down", "stopped"].map(state),
            m.upstream_crash_looping.get_or_create(&labels).get(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_looping_upstream_says_why_when_it_retries_and_since_when_it_fails() {
        let h = start(spec(&format!("command = {NO_SUCH_COMMAND:?}")));
        // The supervisor has not run yet.
        let s = h.up.status();
        assert_eq!((&s["state"], &s["starting_for_ms"]), (&json!("starting"), &json!(0)));
        assert_eq!(gauges(&h), (0, [1, 0, 0, 0], 0));

        let mut last = None;
        for _ in 0..3 {
            last = Some(h.next_down(last).await.0);
        }
        let reason = format!("cannot start `{NO_SUCH_COMMAND}`: No such file or directory (os error 2)");
        let s = h.up.status();
        let mut expected = json!({
            "id": "x",
            "transport": "stdio",
            "state": "down",
            "restarts": 2,
            "crash_loop": true,
            "down_reason": reason,
            "down_class": "transport",
            "retry_in_ms": 2000,
            "last_error": reason,
            "last_error_class": "transport",
            "last_error_age_ms": 0,
            "health": { "pings": 0, "failed": 0 },
            "breaker": { "state": "closed", "opened_total": 0, "transitions_total": 0, "probe_in_ms": null },
        });
        // The call counters are `call_status`'s (and tested with it).
        for k in ["calls", "failures", "retries", "retry_budget_exhausted", "bulkhead"] {
            expected[k] = s[k].clone();
        }
        assert_eq!(s, expected);
        assert_eq!(gauges(&h), (0, [0, 0, 1, 0], 1));

        // Half-way through the wait, the error is older and the retry nearer.
        tokio::time::advance(Duration::from_millis(500)).await;
        let s = h.up.status();
        assert_eq!((&s["retry_in_ms"], &s["last_error_age_ms"]), (&json!(1500), &json!(500)));

        h.up.shutdown().await;
        assert_eq!(h.up.status()["state"], "stopped");
        assert_eq!(gauges(&h), (0, [0, 0, 0, 1], 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_upstream_shows_what_it_serves_and_who_it_is() {
        let _frozen = Frozen::new();
        let h = start(fixture("health.interval = \"0s\"\n[upstreams.x.breaker]\nenabled = false"));
        h.ready(1).await;
        tokio::time::advance(Duration::from_millis(1500)).await;
        let s = h.up.status();
        assert_eq!(s["state"], "ready");
        assert_eq!(s["ready_for_ms"], 1500);
        assert_eq!((&s["tools"], &s["prompts"]), (&json!(4), &json!(2)), "{s}");
        // It lists no resources and no templates (both failed): no counts.
        assert!(s.get("resources").is_none() && s.get("resource_templates").is_none(), "{s}");
        assert_eq!(s["protocol_version"], crate::protocol::LATEST_VERSION);
        assert_eq!(s["server_info"], json!({ "name": "fixture", "version": "1.0" }));
        assert!(s["pid"].as_u64().is_some_and(|p| p > 1), "{s}");
        assert!(s.get("breaker").is_none(), "no breaker, no breaker status: {s}");
        assert_eq!(gauges(&h), (1, [0, 1, 0, 0], 0));
        h.stop().await;
    }
}
