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

    /// A JSON status snapshot for `/status` and the CLI.
    pub fn status(&self) -> serde_json::Value {
        let state = self.state();
        let now = Instant::now();
        let mut v = serde_json::json!({
            "id": self.spec.id,
            "transport": match self.spec.transport {
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
                v["down_class"] = class.as_str().into();
                v["retry_in_ms"] = (retry_at.saturating_duration_since(now).as_millis() as u64).into();
            }
            State::Stopped => v["state"] = "stopped".into(),
        }
        v
    }
}
