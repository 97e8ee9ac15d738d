//! One call to an upstream, with the resilience policies applied in order
//! (docs/design.md D5–D7):
//!
//! 1. the deadline: the tool's timeout or the upstream's, shared by every
//!    attempt, extended by progress up to `max_request_timeout`;
//! 2. the bulkhead: a slot, or a place in the bounded queue, or
//!    `overloaded` at once;
//! 3. per attempt: the upstream must be ready (else a fast `transport`
//!    error naming why), its breaker (and the tool's) must admit the call
//!    (else `breaker_open`), then the request, whose outcome is classified
//!    once and fed to the breakers;
//! 4. a failed attempt is retried only when the class allows it, the call
//!    is safe to repeat (not delivered, a read method, or an idempotent
//!    tool), attempts are left, the backoff wait ends before the deadline,
//!    and the retry budget has a token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::conn::Clock;
use super::{State, Upstream};
use crate::error::{CallError, ErrorClass, classify_reply};
use crate::protocol::{Checked, Message};
use crate::resilience::bulkhead::Full;
use crate::resilience::retry::{self, Delays, NoRetry, Safety};
use crate::resilience::{Breaker, breaker};
use crate::sync::Locked;
use crate::telemetry::metrics::{ClassLabels, class_label};
use crate::telemetry::{LogPace, Span};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// A request for [`Upstream::call`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The JSON-RPC method.
    pub method: &'a str,
    /// Its params: a client's (scanned) or the gateway's own.
    pub params: Option<Checked<'a>>,
    /// For `tools/call`: the tool's name as the upstream knows it.
    pub tool: Option<&'a str>,
    /// What the tool's annotations say.
    pub hints: ToolHints,
    /// The call's progress token (raw JSON text, unique in the gateway).
    pub progress: Option<&'a str>,
    /// Where the call's progress and related notifications go.
    pub relay: Option<&'a Arc<dyn super::Relay>>,
    /// The span each attempt's span is a child of.
    pub span: &'a Span,
    /// A deadline of its own instead of the tool's or the upstream's
    /// (`tasks/result`, which waits for a task to end).
    pub timeout: Option<Duration>,
    /// `tools/call` to a 2026-07-28 upstream: arguments mirrored into
    /// `Mcp-Param-*` headers as the tool's `x-mcp-header` asks.
    pub params_headers: &'a [(String, String)],
}

/// What [`Upstream::call`] did.
#[derive(Debug)]
pub struct Called {
    /// The reply (an upstream's JSON-RPC error is a reply) or the failure.
    pub result: Result<Message, CallError>,
    /// `None` for success, else the class (also for an error reply or a
    /// result with `isError`).
    pub class: Option<ErrorClass>,
    /// Attempts sent upstream (0: refused before any).
    pub attempts: u32,
}

/// The span of requests made outside any client request.
static NO_SPAN: Span = Span::NONE;

/// What a tool's annotations claim. Believed only for trusted upstreams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToolHints {
    /// `readOnlyHint: true`.
    pub read_only: bool,
    /// `idempotentHint: true`.
    pub idempotent: bool,
}

/// Counters for status (and, later, metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Calls made (not attempts).
    pub calls: AtomicU64,
    /// Failed calls by class, in [`ErrorClass::ALL`] order.
    pub failures: [AtomicU64; ErrorClass::ALL.len()],
    /// Retries made.
    pub retries: AtomicU64,
    /// Breaker transitions (all breakers of the upstream).
    pub breaker_transitions: AtomicU64,
    /// The last failure that says the upstream is sick: class, message,
    /// when.
    pub last_error: std::sync::Mutex<Option<(ErrorClass, String, Instant)>>,
    /// Paces the "bulkhead full" warning.
    pub overload_log: LogPace,
}

impl<'a> Request<'a> {
    /// A request that is not a tool call.
    pub fn method(method: &'a str, params: Option<Checked<'a>>) -> Self {
        Request {
            method,
            params,
            tool: None,
            hints: ToolHints::default(),
            progress: None,
            relay: None,
            span: &NO_SPAN,
            timeout: None,
            params_headers: &[],
        }
    }
}

/// Methods that only read: repeating them changes nothing (D6).
fn is_read_method(method: &str) -> bool {
    matches!(
        method,
        "ping"
            | "tools/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "prompts/list"
            | "prompts/get"
            | "completion/complete"
            | "tasks/get"
            | "tasks/list"
            | "tasks/result"
    )
}

// === impl Upstream ===

impl Upstream {
    /// Sends a request and waits for its reply, with the deadline, the
    /// bulkhead, the breakers and safe retries applied. An upstream's
    /// JSON-RPC error is returned as the reply (`Ok`), classified for
    /// retries and breakers on the way.
    pub async fn call(&self, req: Request<'_>) -> Called {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut attempts = 0;
        let (result, class) = self.call_inner(&req, &mut attempts).await;
        if let Some(class) = class {
            let i = ErrorClass::ALL.iter().position(|c| *c == class).expect("ALL lists every class");
            self.stats.failures[i].fetch_add(1, Ordering::Relaxed);
            // The caller's mistakes, tool errors and the gateway's own
            // refusals say nothing about the upstream's health.
            if class.counts_for_breaker() {
                let what = req.tool.map_or_else(|| req.method.to_owned(), |t| format!("tool `{t}`"));
                let message = match &result {
                    Err(e) => format!("{what}: {}", e.message),
                    Ok(_) => format!("{what}: the upstream answered a JSON-RPC error"),
                };
                self.record_error(class, message);
            }
        }
        Called { result, class, attempts }
    }

    /// The call and its class (`None`: success), classified once per
    /// attempt: a reply is scanned for `isError` only there.
    async fn call_inner(
        &self,
        req: &Request<'_>,
        attempts: &mut u32,
    ) -> (Result<Message, CallError>, Option<ErrorClass>) {
        let started = Instant::now();
        // The settings in force when the call began, for all its attempts.
        let spec = self.spec_full();
        let timeout =
            req.timeout.or_else(|| req.tool.and_then(|t| spec.tool_timeouts.get(t))).unwrap_or(spec.request_timeout);
        let mut clock = Clock {
            deadline: started + timeout,
            extend: timeout,
            hard: started + spec.max_request_timeout.max(timeout),
            started,
        };
        let _slot = match self.bulkhead.acquire(clock.deadline).await {
            Ok(slot) => slot,
            Err(full) => {
                let e = self.bulkhead_error(full, timeout);
                let class = Some(e.class);
                return (Err(e), class);
            }
        };
        self.budget.deposit();
        let tool_breaker = self.tool_breaker(req.tool, &spec);
        let mut delays = Delays::new(&spec.retry, true);
        let mut attempt = 1u32;
        // The failure that made the last retry, for an attempt refused
        // because the breaker opened meanwhile: the client and the audit
        // log still learn what was wrong.
        let mut before: Option<(ErrorClass, String)> = None;
        loop {
            let (mut outcome, class) = self.attempt(req, &mut clock, tool_breaker.as_deref(), attempt, attempts).await;
            if let (Err(e), Some((cause, why))) = (&mut outcome, &before)
                && e.class == ErrorClass::BreakerOpen
            {
                e.cause = Some(*cause);
                e.message = format!("{}; the attempt before failed ({cause}): {why}", e.message);
            }
            // An upstream's own error reply is retried like a failure, but
            // relayed as it is when given up on.
            let err = match (&outcome, class) {
                (Ok(_), Some(ErrorClass::UpstreamInternal)) => {
                    CallError::new(ErrorClass::UpstreamInternal, Some(self.id()), "answered an error")
                }
                (Ok(_), _) => return (outcome, class),
                (Err(e), _) => e.clone(),
            };
            // Not ready (any more): fail fast with why. A restart takes
            // longer than a backoff step, and the agent can try again.
            if !matches!(**self.state.load(), State::Ready(_)) {
                return (outcome, class);
            }
            // Safety is only asked once an attempt failed: it matches globs.
            let verdict = retry::allowed(&err, self.safety(req)).and_then(|()| {
                if attempt >= spec.retry.attempts {
                    return Err(NoRetry::Attempts);
                }
                let backoff = delays.next().unwrap_or_default();
                let wait = retry::wait_before_retry(backoff, &err, clock.deadline).ok_or(NoRetry::Deadline)?;
                if self.budget.withdraw() { Ok(wait) } else { Err(NoRetry::Budget) }
            });
            let wait = match verdict {
                Ok(wait) => wait,
                Err(why) => {
                    if why == NoRetry::Budget {
                        self.counters.budget_exhausted.inc();
                        tracing::warn!(upstream = %self.id(), method = req.method, "Retry budget exhausted; not retrying.");
                    }
                    if attempt > 1 || why == NoRetry::Unsafe {
                        tracing::debug!(
                            upstream = %self.id(), method = req.method, class = %err.class,
                            attempts = attempt, reason = why.as_str(), "Not retrying."
                        );
                    }
                    return (outcome, class);
                }
            };
            tracing::info!(
                upstream = %self.id(), method = req.method, tool = req.tool.unwrap_or(""),
                class = %err.class, attempt, wait_ms = wait.as_millis() as u64, "Retrying: {}.", err.message
            );
            before = Some((err.class, err.message.clone()));
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .retries
                .get_or_create(&ClassLabels { upstream: self.label.clone(), class: err.class.as_str() })
                .inc();
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt: readiness, breakers, the request, the breakers' books.
    /// Returns the outcome and its class (`None`: success). `sent` counts
    /// attempts that reached the transport.
    async fn attempt(
        &self,
        req: &Request<'_>,
        clock: &mut Clock,
        tool_breaker: Option<&Breaker>,
        number: u32,
        sent: &mut u32,
    ) -> (Result<Message, CallError>, Option<ErrorClass>) {
        let fail = |e: CallError| {
            let class = Some(e.class);
            (Err(e), class)
        };
        let state = self.state.load_full();
        let conn = match &*state {
            State::Ready(r) => r.conn.clone(),
            other => return fail(self.unavailable(other)),
        };
        drop(state);
        let permit = match self.admit(self.breaker.as_ref(), None) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let tool_permit = match self.admit(tool_breaker, req.tool) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        *sent += 1;
        let span = self.attempt_span(req, number);
        let traceparent = span.traceparent();
        let started = Instant::now();
        let result = conn
            .request_within(
                req.method,
                req.params,
                clock,
                super::conn::Related { progress: req.progress, relay: req.relay, params: req.params_headers },
                traceparent.as_deref(),
            )
            .await;
        let outcome = match &result {
            Ok(reply) => classify_reply(reply),
            Err(e) => Some(e.class),
        };
        self.metrics
            .attempt_duration
            .get_or_create(&ClassLabels { upstream: self.label.clone(), class: class_label(outcome) })
            .observe(started.elapsed().as_secs_f64());
        if let Some(code) = result.as_ref().ok().and_then(|r| r.error()).and_then(|e| e.get("code")) {
            // The upstream's JSON-RPC error code (the conventions' status).
            span.set(|| KeyValue::new("rpc.response.status_code", code.text().to_owned()));
        }
        span.outcome(outcome, || match &result {
            Err(e) => e.message.clone(),
            Ok(_) => "the upstream answered an error".into(),
        });
        span.end();
        // With per-tool breakers, a tool's own failures (internal errors,
        // timeouts) count against that tool only; the upstream's breaker
        // counts what says the connection is sick.
        let connection_level = |c: &ErrorClass| matches!(c, ErrorClass::Transport | ErrorClass::Overloaded);
        let (upstream_outcome, tool_outcome) = match tool_breaker {
            Some(_) => (outcome.filter(connection_level), outcome.filter(|c| !connection_level(c))),
            None => (outcome, None),
        };
        if let (Some(b), Some(p)) = (self.breaker.as_ref(), permit) {
            self.note(b.record(p, upstream_outcome), None, upstream_outcome);
        }
        if let (Some(b), Some(p)) = (tool_breaker, tool_permit) {
            self.note(b.record(p, tool_outcome), req.tool, tool_outcome);
        }
        (result, outcome)
    }

    /// The span of one attempt (nothing when traces are off).
    fn attempt_span(&self, req: &Request<'_>, number: u32) -> Span {
        if !req.span.is_on() {
            return Span::NONE;
        }
        let name = match req.tool {
            Some(t) => format!("{} {t}", req.method),
            None => req.method.to_owned(),
        };
        let mut attrs = vec![
            KeyValue::new("mcp.method.name", req.method.to_owned()),
            KeyValue::new("mcp_gateway.upstream", self.id().to_owned()),
            KeyValue::new("mcp_gateway.attempt", i64::from(number)),
            KeyValue::new("network.transport", self.spec.load().transport.network()),
        ];
        if let Some(t) = req.tool {
            attrs.push(KeyValue::new("gen_ai.tool.name", t.to_owned()));
        }
        if let State::Ready(r) = &*self.state() {
            attrs.push(KeyValue::new("mcp.protocol.version", r.protocol_version().to_owned()));
        }
        req.span.child(name, SpanKind::Client, attrs)
    }

    /// Asks a breaker (if any) to admit a call.
    fn admit<'b>(
        &self,
        breaker: Option<&'b Breaker>,
        tool: Option<&str>,
    ) -> Result<Option<breaker::Permit<'b>>, CallError> {
        let Some(b) = breaker else { return Ok(None) };
        let (permit, t) = b.try_acquire();
        self.note(t, tool, None);
        match permit {
            Ok(p) => Ok(Some(p)),
            Err(r) => {
                let what = match tool {
                    Some(t) => format!("tool `{t}` of upstream `{}`", self.id()),
                    None => format!("upstream `{}`", self.id()),
                };
                let when = if r.retry_in.is_zero() {
                    "a probe is in flight".to_owned()
                } else {
                    format!("next probe in {:.1}s", r.retry_in.as_secs_f64())
                };
                let msg = format!("{what} is failing; its circuit breaker is open ({when})");
                Err(CallError::new(ErrorClass::BreakerOpen, Some(self.id()), msg).not_delivered())
            }
        }
    }

    /// The tool's own breaker, with `breaker.per_tool`.
    fn tool_breaker(&self, tool: Option<&str>, spec: &crate::config::UpstreamSpec) -> Option<Arc<Breaker>> {
        let tool = tool.filter(|_| spec.breaker.enabled && spec.breaker.per_tool)?;
        let mut map = self.tool_breakers.locked();
        if let Some(b) = map.get(tool) {
            return Some(b.clone());
        }
        // From the spec in force now, under the map's lock (a reload that
        // changed the thresholds updates the map under it too).
        let b = Arc::new(Breaker::new(self.spec().breaker.clone()));
        map.insert(tool.to_owned(), b.clone());
        Some(b)
    }

    /// Whether repeating this call is safe (D6): read methods, and tools
    /// the operator lists as idempotent, or whose annotations say so when
    /// the upstream is trusted.
    fn safety(&self, req: &Request<'_>) -> Safety {
        let idempotent_tool = req.tool.is_some_and(|t| {
            self.spec().idempotent_tools.exposes(t)
                || (self.spec().trusted && (req.hints.read_only || req.hints.idempotent))
        });
        Safety { read_method: is_read_method(req.method), idempotent_tool }
    }

    fn bulkhead_error(&self, full: Full, timeout: Duration) -> CallError {
        let id = self.id();
        match full {
            Full::Queue => {
                let rejected = self.counters.rejected_queue_full.inc() + 1;
                // Under sustained overload, one line a second, with the count.
                if self.stats.overload_log.ready() {
                    tracing::warn!(
                        upstream = %id, in_flight = self.bulkhead.in_flight(), queued = self.bulkhead.queued(),
                        rejected_total = rejected, "Bulkhead full; refusing calls."
                    );
                }
                let msg = format!(
                    "upstream `{id}` is overloaded: {} calls in flight and {} waiting; try again later",
                    self.bulkhead.in_flight(),
                    self.bulkhead.queued()
                );
                CallError::new(ErrorClass::Overloaded, Some(id), msg).not_delivered()
            }
            Full::Deadline => {
                self.counters.rejected_no_slot.inc();
                CallError::new(
                    ErrorClass::Timeout,
                    Some(id),
                    format!("upstream `{id}` had no free slot within {:.1}s", timeout.as_secs_f64()),
                )
                .not_delivered()
            }
        }
    }

    /// Counters and limits for status.
    pub(super) fn call_status(&self) -> serde_json::Value {
        let s = &self.stats;
        let failures: serde_json::Map<_, _> = ErrorClass::ALL
            .iter()
            .zip(&s.failures)
            .map(|(c, n)| (c.as_str().to_owned(), n.load(Ordering::Relaxed).into()))
            .collect();
        serde_json::json!({
            "calls": s.calls.load(Ordering::Relaxed),
            "failures": failures,
            "retries": s.retries.load(Ordering::Relaxed),
            "retry_budget_exhausted": self.counters.budget_exhausted.get(),
            "bulkhead": {
                "in_flight": self.bulkhead.in_flight(),
                "queued": self.bulkhead.queued(),
                "rejected": self.counters.rejected_queue_full.get(),
                "max_concurrency": self.spec().max_concurrency,
                "max_queue": self.spec().max_queue,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn log_pace_allows_one_line_a_second() {
        let pace = LogPace::default();
        assert!(pace.ready());
        assert!(!pace.ready());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!pace.ready());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(pace.ready());
    }

    #[test]
    fn read_methods() {
        for m in ["tools/list", "resources/read", "prompts/get", "ping"] {
            assert!(is_read_method(m), "{m}");
        }
        for m in ["tools/call", "resources/subscribe", "logging/setLevel", "tasks/cancel", "sampling/createMessage"] {
            assert!(!is_read_method(m), "{m}");
        }
    }
}
