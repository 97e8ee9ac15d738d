//! Routing: the gateway as an MCP server over many upstreams.
//!
//! [`Gateway`] owns the upstreams and the merged [`Catalog`], answers the
//! methods the gateway serves itself (`initialize`, `ping`, `tools/list`)
//! and routes `tools/call` to the owning upstream with only the tool name
//! rewritten. Transports (`downstream/`) call [`Gateway::handle`].
//!
//! Architecture Invariant: routing never holds a catalog snapshot or lock
//! across an upstream call; it clones what it needs first.

pub mod catalog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::catalog::Catalog;
use crate::config::Config;
use crate::error::CallError;
use crate::protocol::{self, Message, RawObject, encode};
use crate::telemetry::audit::{self, Record};
use crate::telemetry::metrics::{DurationLabels, MethodLabels, Name, Outcome, RequestLabels, UpstreamLabels};
use crate::telemetry::metrics::{class_label, method_label};
use crate::telemetry::{Span, Telemetry};
use crate::upstream::{Changes, Request, State, Upstream};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// Who sent a request, and how: for metrics, traces and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// `http` or `stdio`.
    pub transport: &'static str,
    /// The downstream session id, when there is one.
    pub session: Option<&'a str>,
    /// The client's W3C `traceparent` header (HTTP).
    pub traceparent: Option<&'a str>,
}

/// What handling a request came to, filled in as it goes.
#[derive(Debug, Default)]
struct Outcomes {
    /// The owning upstream, once routed.
    upstream: Option<Name>,
    /// The tool's own name, once routed.
    tool: Option<Name>,
    /// The name the client asked for (tools/call).
    name: Option<String>,
    class: Option<crate::error::ErrorClass>,
    attempts: u32,
    /// `sha256:` of the arguments (tools/call, when audited).
    arguments_sha256: Option<String>,
    arguments: Option<Box<RawValue>>,
}

/// The gateway: upstreams, catalog, and the MCP methods it serves.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    upstreams: Vec<Arc<Upstream>>,
    by_id: HashMap<String, usize>,
    catalog: ArcSwap<Catalog>,
    list_changed: watch::Sender<u64>,
    /// The upstream-change generation the current catalog was built from.
    built: watch::Sender<u64>,
    changes: Arc<Changes>,
    /// Set once the start-up wait is over, so later lists skip it.
    startup_done: std::sync::atomic::AtomicBool,
    shutdown: CancellationToken,
    started: tokio::time::Instant,
    /// Requests being handled now (for graceful drain).
    in_flight: std::sync::atomic::AtomicUsize,
    telemetry: Telemetry,
    /// The empty label value (requests the gateway answers itself).
    no_label: Name,
}

/// Counts a request in flight until dropped.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

// === impl Gateway ===

impl Gateway {
    /// Starts every upstream (in the background: nothing here waits for
    /// one) and the task that keeps the catalog current.
    pub fn start(config: Config, telemetry: Telemetry) -> Arc<Self> {
        let changed = Arc::new(Changes::default());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("the TLS backend initializes");
        let upstreams: Vec<_> = config
            .upstreams
            .iter()
            .map(|spec| {
                Upstream::start(
                    spec.clone(),
                    config.gateway.max_message_bytes,
                    config.redactor.clone(),
                    changed.clone(),
                    http.clone(),
                    telemetry.metrics.clone(),
                )
            })
            .collect();
        let by_id = upstreams.iter().enumerate().map(|(i, u)| (u.id().to_owned(), i)).collect();
        let gw = Arc::new(Gateway {
            config,
            upstreams,
            by_id,
            catalog: ArcSwap::from_pointee(Catalog::empty()),
            list_changed: watch::Sender::new(0),
            built: watch::Sender::new(0),
            changes: changed,
            startup_done: std::sync::atomic::AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            started: tokio::time::Instant::now(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            telemetry,
            no_label: Name::from(""),
        });
        tokio::spawn(gw.clone().catalog_loop());
        gw
    }

    /// Rebuilds the catalog whenever an upstream's state or tools change,
    /// and bumps the `list_changed` counter when clients would see a
    /// different list.
    async fn catalog_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.changes.changed() => {}
                () = self.shutdown.cancelled() => return,
            }
            // Read the generation before the states: the catalog built
            // below reflects at least every change up to it.
            let generation = self.changes.generation();
            let states: Vec<_> = self.upstreams.iter().map(|u| (u.state(), u.hidden_tools())).collect();
            let sources: Vec<_> = self
                .upstreams
                .iter()
                .zip(&states)
                .enumerate()
                .filter_map(|(i, (u, (s, hidden_tools)))| match &**s {
                    State::Ready(r) => Some(catalog::Source {
                        upstream: i,
                        id: u.id(),
                        prefix: u.spec().prefix,
                        filter: &u.spec().tools,
                        tools: &r.tools,
                        hidden: u.tools_hidden(),
                        hidden_tools,
                    }),
                    _ => None,
                })
                .collect();
            let next = Catalog::build(&sources, self.config.gateway.max_tool_name_length);
            let changed = !next.same_as(&self.catalog.load());
            let outcome = if changed { "changed" } else { "unchanged" };
            self.telemetry.metrics.catalog_refreshes.get_or_create(&Outcome { outcome }).inc();
            if changed {
                tracing::info!(tools = next.tools().iter().filter(|t| !t.hidden).count(), "Tool catalog changed.");
                self.catalog.store(Arc::new(next));
                self.list_changed.send_modify(|v| *v += 1);
            } else {
                // Same list, but routing data (hints, hidden flags) may differ.
                self.catalog.store(Arc::new(next));
            }
            self.built.send_replace(generation);
        }
    }

    /// Answers `initialize`: echo the client's revision when supported,
    /// otherwise offer the latest. Returns the reply and the revision.
    pub fn initialize(&self, id: &RawValue, params: Option<&RawValue>) -> (String, String) {
        let asked = params.and_then(|p| RawObject::parse(p.get()).ok()).and_then(|o| o.get_str("protocolVersion"));
        let version = match asked {
            Some(v) if protocol::is_supported_version(&v) => v,
            _ => protocol::LATEST_VERSION.to_owned(),
        };
        let ids: Vec<&str> = self.upstreams.iter().map(|u| u.id()).collect();
        let result = serde_json::json!({
            "protocolVersion": version,
            // What the gateway itself serves; list_changed is real: it
            // follows upstream changes, restarts and outages.
            "capabilities": { "tools": { "listChanged": true } },
            "serverInfo": { "name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION") },
            "instructions": format!(
                "Tools of several MCP servers ({}) are exposed as <server>__<tool>.",
                ids.join(", ")
            ),
        });
        let result = serde_json::value::to_raw_value(&result).expect("json! always serializes");
        (encode::result(id, &result), version)
    }

    /// Handles one request (not `initialize`) and returns the reply.
    pub async fn handle(&self, msg: &Message, caller: &Caller<'_>) -> String {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _in_flight = InFlight(&self.in_flight);
        let started = tokio::time::Instant::now();
        let id = msg.id.as_deref().expect("handle is called for requests");
        let span = self.server_span(msg, caller);
        let mut out = Outcomes::default();
        let reply = match self.dispatch(msg, &span, &mut out).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(method = %msg.method(), class = %e.class, "Request failed: {}.", e.message);
                out.class = Some(e.class);
                span.outcome(Some(e.class), || e.message.clone());
                e.to_response(id)
            }
        };
        if let Some(class) = out.class.filter(|_| span.is_on()) {
            span.set(|| KeyValue::new("error.type", class.as_str()));
        }
        self.record(msg, caller, &span, out, started, reply.len());
        span.end();
        reply
    }

    /// The span of a client request: a child of the client's trace context
    /// (the `traceparent` header, else `params._meta.traceparent`).
    fn server_span(&self, msg: &Message, caller: &Caller<'_>) -> Span {
        let tracer = &self.telemetry.tracer;
        if !tracer.enabled() {
            return Span::NONE;
        }
        let method = msg.method();
        let params = msg.params.as_deref().and_then(|p| RawObject::parse(p.get()).ok());
        let tool = params.as_ref().filter(|_| method == "tools/call").and_then(|p| p.get_str("name"));
        let from_meta = || {
            let meta = RawObject::parse(params.as_ref()?.get("_meta")?.get()).ok()?;
            meta.get_str(crate::telemetry::trace::TRACEPARENT)
        };
        let traceparent = caller.traceparent.map(str::to_owned).or_else(from_meta);
        let name = match &tool {
            Some(t) => format!("{method} {t}"),
            None => method.to_owned(),
        };
        let mut attrs = vec![
            KeyValue::new("mcp.method.name", method.to_owned()),
            KeyValue::new("network.transport", if caller.transport == "stdio" { "pipe" } else { "tcp" }),
        ];
        if let Some(id) = &msg.id {
            attrs.push(KeyValue::new("jsonrpc.request.id", id.get().trim_matches('"').to_owned()));
        }
        if let Some(s) = caller.session {
            attrs.push(KeyValue::new("mcp.session.id", session_digest(s)));
        }
        if let Some(t) = tool {
            attrs.push(KeyValue::new("gen_ai.tool.name", t));
            attrs.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        }
        tracer.server_span(name, traceparent.as_deref(), attrs)
    }

    /// Metrics and the audit record of one handled request.
    fn record(
        &self,
        msg: &Message,
        caller: &Caller<'_>,
        span: &Span,
        out: Outcomes,
        started: tokio::time::Instant,
        reply_bytes: usize,
    ) {
        let elapsed = started.elapsed();
        let m = &self.telemetry.metrics;
        let method = method_label(msg.method());
        let upstream = out.upstream.clone().unwrap_or_else(|| self.no_label.clone());
        let tool = out.tool.clone().unwrap_or_else(|| self.no_label.clone());
        let class = class_label(out.class);
        m.requests
            .get_or_create(&RequestLabels { upstream: upstream.clone(), method, tool: tool.clone(), class })
            .inc();
        m.request_duration
            .get_or_create(&DurationLabels { upstream: upstream.clone(), method, tool })
            .observe(elapsed.as_secs_f64());
        let sizes = MethodLabels { upstream, method };
        m.request_bytes.get_or_create(&sizes).observe(msg.params.as_ref().map_or(0, |p| p.get().len()) as f64);
        m.response_bytes.get_or_create(&sizes).observe(reply_bytes as f64);
        let Some(log) = &self.telemetry.audit else { return };
        if method != "tools/call" {
            return;
        }
        log.record(Record {
            time: audit::time_of(started),
            session: caller.session.map(session_digest),
            principal: None,
            transport: caller.transport,
            method: msg.method().to_owned(),
            name: out.name,
            upstream: out.upstream,
            tool: out.tool,
            arguments_sha256: out.arguments_sha256,
            arguments: out.arguments,
            class,
            is_error: out.class == Some(crate::error::ErrorClass::ToolError),
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            attempts: out.attempts,
            trace_id: span.trace_id(),
            policy: Vec::new(),
        });
    }

    async fn dispatch(&self, msg: &Message, span: &Span, out: &mut Outcomes) -> Result<String, CallError> {
        let id = msg.id.as_deref().expect("requests have ids");
        match msg.method() {
            "ping" => Ok(encode::result(id, &empty())),
            "tools/list" => {
                // The whole merged list is one page; the gateway never
                // hands out a cursor, so any cursor is invalid.
                if let Some(p) = &msg.params {
                    let cursor =
                        RawObject::parse(p.get()).ok().and_then(|o| o.get("cursor").map(|c| c.get() != "null"));
                    if cursor == Some(true) {
                        return Err(CallError::protocol(protocol::INVALID_PARAMS, "Invalid cursor"));
                    }
                }
                self.wait_for_first_start().await;
                Ok(encode::result(id, self.catalog.load().list_result()))
            }
            "tools/call" => self.call_tool(id, msg.params.as_deref(), span, out).await,
            // 2026-07-28 probe: -32601 makes modern clients fall back to
            // `initialize` (design.md D2).
            other => Err(CallError::protocol(protocol::METHOD_NOT_FOUND, format!("Method not found: {other}"))),
        }
    }

    async fn call_tool(
        &self,
        id: &RawValue,
        params: Option<&RawValue>,
        span: &Span,
        out: &mut Outcomes,
    ) -> Result<String, CallError> {
        let invalid = |m: &str| CallError::protocol(protocol::INVALID_PARAMS, m);
        let params = params.ok_or_else(|| invalid("tools/call needs params"))?;
        let mut obj = RawObject::parse(params.get()).map_err(|_| invalid("tools/call params must be an object"))?;
        let name = obj.get_str("name").ok_or_else(|| invalid("tools/call needs a string `name`"))?;
        if let Some(log) = &self.telemetry.audit {
            let args = obj.get("arguments");
            out.arguments_sha256 = Some(audit::digest(args.map_or(&b"null"[..], |a| a.get().as_bytes())));
            out.arguments = args.and_then(|a| log.arguments(a));
        }
        let (upstream, original, hints) = {
            let catalog = self.catalog.load();
            match catalog.get(&name) {
                Some(t) => (self.upstreams[t.upstream].clone(), t.original.clone(), t.hints),
                None => {
                    // Counted against the upstream whose namespace it is
                    // (down, or the tool is gone), when there is one.
                    out.upstream = name
                        .split_once(catalog::SEPARATOR)
                        .and_then(|(ns, _)| self.by_id.get(ns))
                        .map(|&i| self.upstreams[i].label());
                    out.name = Some(name.clone());
                    return Err(self.unknown_tool(&name));
                }
            }
        };
        out.name = Some(name);
        out.upstream = Some(upstream.label());
        out.tool = Some(original.clone());
        obj.set_str("name", &original);
        let progress = rewrite_progress_token(&mut obj);
        let params = obj.to_raw();
        let route = if span.is_on() {
            span.child(
                "route",
                SpanKind::Internal,
                vec![
                    KeyValue::new("mcp_gateway.upstream", upstream.id().to_owned()),
                    KeyValue::new("gen_ai.tool.name", original.to_string()),
                ],
            )
        } else {
            Span::NONE
        };
        let req = Request {
            method: "tools/call",
            params: Some(&params),
            tool: Some(&original),
            hints,
            progress: progress.as_deref(),
            span: &route,
        };
        let called = upstream.call(req).await;
        out.class = called.class;
        out.attempts = called.attempts;
        route.set(|| KeyValue::new("mcp_gateway.attempts", i64::from(called.attempts)));
        route.outcome(called.class, || match &called.result {
            Err(e) => e.message.clone(),
            Ok(_) => "failed".into(),
        });
        route.end();
        let reply = called.result?;
        Ok(match (&reply.result, &reply.error) {
            (Some(r), _) => encode::result(id, r),
            (None, Some(e)) => crate::error::relay_error(id, e, upstream.id()),
            (None, None) => unreachable!("a response has a result or an error"),
        })
    }

    /// An unknown tool: name the upstream when its namespace is known but
    /// the upstream is not serving, so the agent learns why.
    fn unknown_tool(&self, name: &str) -> CallError {
        if let Some((ns, _)) = name.split_once(catalog::SEPARATOR)
            && let Some(&i) = self.by_id.get(ns)
        {
            let state = self.upstreams[i].state();
            if !matches!(*state, State::Ready(_)) {
                return self.upstreams[i].unavailable(&state);
            }
        }
        let down: Vec<&str> =
            self.upstreams.iter().filter(|u| !matches!(*u.state(), State::Ready(_))).map(|u| u.id()).collect();
        let msg = if down.is_empty() {
            format!("Unknown tool: {name}")
        } else {
            format!("Unknown tool: {name} (not serving right now: {})", down.join(", "))
        };
        CallError::protocol(protocol::INVALID_PARAMS, msg)
    }

    /// Right after start, waits (at most `startup_list_wait` since start)
    /// for upstreams still on their first start. Never waits afterwards.
    async fn wait_for_first_start(&self) {
        use std::sync::atomic::Ordering;
        if self.startup_done.load(Ordering::Relaxed) {
            return;
        }
        self.wait_for_first_start_slow().await;
        self.startup_done.store(true, Ordering::Relaxed);
    }

    async fn wait_for_first_start_slow(&self) {
        let deadline = self.started + self.config.gateway.startup_list_wait;
        let mut built = self.built.subscribe();
        // Until every upstream has settled (or the deadline), then until
        // the catalog reflects that moment's generation.
        loop {
            // Settled first, then the generation: see `Upstream::set`.
            let settled = self.upstreams.iter().all(|u| u.has_settled());
            let generation = self.changes.generation();
            if settled && *built.borrow_and_update() >= generation {
                return;
            }
            // Woken by each rebuild; the short sleep covers a change that
            // has not reached the catalog task yet.
            tokio::select! {
                _ = built.changed() => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(25)) => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// A receiver that changes whenever the tool list clients see changes.
    pub fn list_changed(&self) -> watch::Receiver<u64> {
        self.list_changed.subscribe()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The upstreams, in id order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The config the gateway runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether start-up is over: every upstream's first start ended, or
    /// `startup_list_wait` passed.
    pub fn started_up(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.startup_done.load(Ordering::Relaxed)
            || self.upstreams.iter().all(|u| u.has_settled())
            || self.started.elapsed() >= self.config.gateway.startup_list_wait
    }

    /// Status of one upstream (`/status/upstreams/<id>`).
    pub fn upstream_status(&self, id: &str) -> Option<serde_json::Value> {
        let &i = self.by_id.get(id)?;
        Some(self.upstream_status_at(i, &self.catalog.load()))
    }

    fn upstream_status_at(&self, i: usize, catalog: &Catalog) -> serde_json::Value {
        let mut v = self.upstreams[i].status();
        if let Some(offered) = v.get("tools").cloned() {
            // What clients see, after filters, collisions and breakers.
            v["tools_offered"] = offered;
            v["tools"] = catalog.tools().iter().filter(|t| t.upstream == i && !t.hidden).count().into();
        }
        v
    }

    /// Status of every upstream, for `/status`.
    pub fn status(&self) -> serde_json::Value {
        let catalog = self.catalog.load();
        let upstreams: Vec<_> = (0..self.upstreams.len()).map(|i| self.upstream_status_at(i, &catalog)).collect();
        serde_json::json!({
            "upstreams": upstreams,
            "tools": catalog.tools().iter().filter(|t| !t.hidden).count(),
            "in_flight": self.in_flight(),
            "runtime": { "alive_tasks": tokio::runtime::Handle::current().metrics().num_alive_tasks() },
            "collisions": catalog.collisions.iter().map(|c| serde_json::json!({
                "name": c.name, "refused": c.refused, "owner": c.owner,
            })).collect::<Vec<_>>(),
        })
    }

    /// The metrics, traces and audit log.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The Prometheus exposition, with the state gauges set first.
    pub fn metrics_text(&self) -> String {
        let m = &self.telemetry.metrics;
        m.in_flight_requests.set(self.in_flight() as i64);
        let catalog = self.catalog.load();
        let mut exposed = vec![0i64; self.upstreams.len()];
        for t in catalog.tools().iter().filter(|t| !t.hidden) {
            exposed[t.upstream] += 1;
        }
        for (u, n) in self.upstreams.iter().zip(exposed) {
            u.export_gauges();
            m.tools_exposed.get_or_create(&UpstreamLabels { upstream: u.label() }).set(n);
        }
        m.encode()
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until no request is in flight, at most `timeout`; returns how
    /// many were still in flight at the end.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let n = self.in_flight();
        if n > 0 {
            tracing::info!(in_flight = n, timeout_ms = timeout.as_millis() as u64, "Draining calls in flight.");
        }
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.in_flight();
        if left > 0 {
            tracing::warn!(in_flight = left, "Drain deadline passed; cutting off the calls still in flight.");
        }
        left
    }

    /// Stops every upstream (stdio children: close stdin → SIGTERM →
    /// SIGKILL) and waits for them.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        futures_util::future::join_all(self.upstreams.iter().map(|u| u.shutdown())).await;
        // Flushing spans and audit lines blocks; keep it off the workers.
        let telemetry = self.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
}

/// Replaces a client's `_meta.progressToken` with one unique in the
/// gateway, so progress from a shared upstream connection is never
/// confused between clients, and returns it (raw JSON text). The client's
/// own token comes back when progress is relayed (issue 3).
fn rewrite_progress_token(params: &mut RawObject) -> Option<String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut meta = RawObject::parse(params.get("_meta")?.get()).ok()?;
    meta.get("progressToken")?;
    let token = format!("\"mcpgw-{}\"", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    meta.set("progressToken", RawValue::from_string(token.clone()).expect("a JSON string"));
    params.set("_meta", meta.to_raw());
    Some(token)
}

/// A downstream session id is a credential: logs, traces and the audit
/// log get the first 16 hex digits of its SHA-256 instead.
fn session_digest(session: &str) -> String {
    audit::digest(session.as_bytes())["sha256:".len()..][..16].to_owned()
}

fn empty() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("valid")
}
