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
use crate::upstream::{Changes, Request, State, Upstream};

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
    pub fn start(config: Config) -> Arc<Self> {
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
            if !next.same_as(&self.catalog.load()) {
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
    pub async fn handle(&self, msg: &Message) -> String {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _in_flight = InFlight(&self.in_flight);
        let id = msg.id.as_deref().expect("handle is called for requests");
        match self.dispatch(msg).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(method = %msg.method(), class = %e.class, "Request failed: {}.", e.message);
                e.to_response(id)
            }
        }
    }

    async fn dispatch(&self, msg: &Message) -> Result<String, CallError> {
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
            "tools/call" => self.call_tool(id, msg.params.as_deref()).await,
            // 2026-07-28 probe: -32601 makes modern clients fall back to
            // `initialize` (design.md D2).
            other => Err(CallError::protocol(protocol::METHOD_NOT_FOUND, format!("Method not found: {other}"))),
        }
    }

    async fn call_tool(&self, id: &RawValue, params: Option<&RawValue>) -> Result<String, CallError> {
        let invalid = |m: &str| CallError::protocol(protocol::INVALID_PARAMS, m);
        let params = params.ok_or_else(|| invalid("tools/call needs params"))?;
        let mut obj = RawObject::parse(params.get()).map_err(|_| invalid("tools/call params must be an object"))?;
        let name = obj.get_str("name").ok_or_else(|| invalid("tools/call needs a string `name`"))?;
        let (upstream, original, hints) = {
            let catalog = self.catalog.load();
            match catalog.get(&name) {
                Some(t) => (self.upstreams[t.upstream].clone(), t.original.clone(), t.hints),
                None => return Err(self.unknown_tool(&name)),
            }
        };
        obj.set_str("name", &original);
        let progress = rewrite_progress_token(&mut obj);
        let params = obj.to_raw();
        let req = Request {
            method: "tools/call",
            params: Some(&params),
            tool: Some(&original),
            hints,
            progress: progress.as_deref(),
        };
        let reply = upstream.call(req).await?;
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

fn empty() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("valid")
}
