//! Routing: the gateway as an MCP server over many upstreams.
//!
//! [`Gateway`] wires the components and is what transports (`downstream/`)
//! talk to: they register each client session ([`Gateway::connect`]) and
//! hand it requests ([`Gateway::handle`]), responses and notifications;
//! messages for the client flow back through the session's [`Peer`].
//!
//! The components each own their state and are tested alone:
//! [`upstreams`] (the configured upstreams and their per-session and
//! per-principal connections), [`published`] (the catalog clients see),
//! [`gate`] (every policy a call meets), [`sessions`], [`subscriptions`],
//! [`levels`] and [`tasks`]. [`core::Core`] holds them; the method families
//! in [`methods`] answer one request each; [`pipeline`] runs a request
//! through its family; [`refresh`] and [`notes`] are the background tasks.
//! ARCHITECTURE.md gives the order in which these files may use each other.
//!
//! Architecture Invariant: routing never holds a catalog snapshot or lock
//! across an upstream call; it clones what it needs first. The one named
//! exception is [`subscriptions::Subscriptions::sync`].

pub mod catalog;
pub mod peer;
pub mod tasks;

mod bridge;
mod caller;
mod core;
mod gate;
mod ix;
mod levels;
mod methods;
mod notes;
mod outcome;
mod params;
mod pipeline;
mod published;
mod refresh;
pub mod reload;
pub mod reloader;
mod replace;
mod sessions;
mod subscriptions;
mod upstreams;
mod warm;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::caller::Caller;
pub use self::catalog::Catalog;
use self::core::Core;
pub use self::core::LIST_SECRET_NAMES;
pub use self::ix::UpstreamIx;
use self::methods::{logging, resources};
pub use self::peer::Peer;
use self::pipeline::InFlight;
use crate::config::Config;
use crate::protocol::{self, Checked, Message, encode};
use crate::security::auth::Principal;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::UpstreamLabels;
use crate::upstream::Upstream;

/// The gateway: the components, wired, and the background tasks that keep
/// them current.
#[derive(Debug)]
pub struct Gateway {
    core: Arc<Core>,
    /// The HTTP client every upstream shares (also fetches JWKS).
    http: reqwest::Client,
    /// Requests being handled now (for graceful drain).
    in_flight: InFlight,
    shutdown: CancellationToken,
    /// Parts outside routing that take their share of a reload.
    participants: std::sync::Mutex<Vec<Arc<dyn reload::Participant>>>,
    /// The reload task, once started ([`reloader::Reloader::start`]).
    reloader: std::sync::OnceLock<reloader::Reloader>,
    /// The address the main listener is bound to (set by `serve`): a
    /// reload is checked against it, not against the file's `listen`.
    bound: std::sync::OnceLock<std::net::SocketAddr>,
    /// The warm-start cache writer, awaited at shutdown (its last write).
    saver: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when a stop has begun and `drain_delay` runs: still serving,
    /// but `/readyz` says it is leaving.
    leaving: std::sync::atomic::AtomicBool,
}

/// A client session registered with the gateway; unregistered (its
/// subscriptions dropped) when this is dropped.
#[derive(Debug)]
pub struct Client {
    gateway: Arc<Gateway>,
    /// The session's peer.
    pub peer: Arc<Peer>,
    /// A 2025 session's life (`mcp.server.session.duration`).
    _life: Option<crate::telemetry::standard::Life>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.gateway.disconnect(&self.peer);
    }
}

/// An `initialize` answered: a session may be made.
#[derive(Debug)]
pub struct Initialized {
    /// The reply to send.
    pub reply: String,
    /// The protocol revision agreed on.
    pub version: String,
}

/// An `initialize` refused: no session may be made.
#[derive(Debug)]
pub struct InitializeRefused {
    /// The error reply to send.
    pub reply: String,
}

// === impl Gateway ===

/// How long shutdown waits for the warm-start cache's last write.
const SAVER_PATIENCE: Duration = Duration::from_secs(5);

impl Gateway {
    /// Starts every upstream (in the background: nothing here waits for
    /// one) and the tasks that keep the catalog current.
    pub fn start(config: Config, telemetry: Telemetry) -> Arc<Self> {
        let (notes, notes_rx) = mpsc::channel(1024);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("the TLS backend initializes");
        let core = Core::start(config, telemetry, &http, &notes);
        let shutdown = core.shutdown.clone();
        tokio::spawn(refresh::catalog_loop(core.clone(), shutdown.clone()));
        tokio::spawn(refresh::watch_pins(core.clone(), shutdown.clone()));
        tokio::spawn(refresh::watch_rules(core.clone(), shutdown.clone()));
        tokio::spawn(notes::notes_loop(core.clone(), notes_rx, shutdown.clone()));
        let saver = tokio::spawn(refresh::save_warm(core.clone(), shutdown.clone()));
        Arc::new(Gateway {
            core,
            http,
            in_flight: InFlight::default(),
            shutdown,
            participants: Default::default(),
            reloader: Default::default(),
            bound: Default::default(),
            saver: std::sync::Mutex::new(Some(saver)),
            leaving: Default::default(),
        })
    }

    /// Registers a client session; `out` is its stream (bounded), `init`
    /// the params of its `initialize` (its capabilities say which server
    /// requests may be relayed to it).
    pub fn connect(
        self: &Arc<Self>,
        out: mpsc::Sender<String>,
        init: Option<Checked<'_>>,
        principal: Arc<Principal>,
    ) -> Client {
        let core = &self.core;
        let caps = init.and_then(|p| p.get("capabilities"));
        let metrics = core.telemetry.metrics.clone();
        // Registered with no grants, then given the policy in force: a
        // reload from now on sees the session, and one that ran before is
        // already in force (policy taken before registering could be
        // replaced by a reload that did not see this session yet). No
        // request of the session comes before `connect` returns.
        let peer = core.sessions.register(|id| {
            Peer::new(id, out, caps, metrics, principal, crate::security::access::Grants::none(), Default::default())
        });
        peer.reconfigure(core.gate.grants_of(&peer.principal), (**core.mask()).clone());
        // Opened by `initialize`: a 2025 session, with its revision.
        let version = init.map(|p| {
            let asked = p.get("protocolVersion").and_then(Checked::str);
            asked.and_then(|v| protocol::SUPPORTED_VERSIONS.iter().find(|s| **s == v).copied())
        });
        let version = version.map(|v| *peer.version.get_or_init(|| v.unwrap_or(protocol::LATEST_VERSION)));
        let transport = if peer.principal.via == crate::security::auth::Via::Stdio { "pipe" } else { "tcp" };
        let _life = version.and_then(|v| core.telemetry.metrics.standard.server_session(Some(v), transport));
        Client { gateway: self.clone(), peer, _life }
    }

    /// Forgets a session: its subscriptions end (the upstream's too, when
    /// it was the last subscriber) and its log level stops counting.
    fn disconnect(&self, peer: &Peer) {
        let core = &self.core;
        core.sessions.remove(peer.id);
        peer.fail_pending();
        core.tasks.forget_session(peer.id);
        // The session's own connections end with it (this also breaks the
        // cycle peer → connection → relay → peer).
        let own: Vec<Arc<Upstream>> = {
            let mut own = peer.lock_instances();
            peer.gone.store(true, Ordering::Relaxed);
            own.drain().map(|(_, u)| u).collect()
        };
        if !own.is_empty() {
            tokio::spawn(async move {
                futures_util::future::join_all(own.iter().map(|u| u.shutdown())).await;
            });
        }
        let keys: Vec<_> = peer.lock_subscriptions().drain().collect();
        let last = core.subscriptions.drop_wants(peer.id, keys);
        let had_level = peer.level().is_some();
        if self.shutdown.is_cancelled() || (last.is_empty() && !had_level) {
            return;
        }
        let core = core.clone();
        tokio::spawn(async move {
            for key in last {
                let _ = resources::sync(&core, &key).await;
            }
            if had_level {
                logging::apply(&core).await;
            }
        });
    }

    /// Parses one message from a client and scans it (docs/design.md D12): a
    /// message that is not JSON-RPC, or that parsers would read
    /// differently, is refused here, before routing, policy, audit or
    /// forwarding see it; each refusal is counted (`transport`: `http` or
    /// `stdio`) and an ambiguous one logged.
    pub fn parse(&self, transport: protocol::Transport, bytes: &[u8]) -> Result<Message, protocol::ParseError> {
        let refused = match Message::parse(bytes, &self.core.config().json_limits()) {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        self.refused(transport, refused.reason());
        match refused.ambiguous() {
            Some(a) => {
                tracing::warn!(transport = transport.as_str(), reason = a.reason.as_str(), path = %a.path, "Refused an ambiguous client message.")
            }
            None => {
                tracing::debug!(transport = transport.as_str(), error = %refused, "Refused a client message that is not JSON-RPC.")
            }
        }
        Err(refused)
    }

    /// Counts a client message refused before routing.
    pub fn refused(&self, transport: protocol::Transport, reason: &'static str) {
        let labels = crate::telemetry::metrics::RefusalLabels { transport: transport.as_str(), reason };
        self.core.telemetry.metrics.client_messages_refused.get_or_create(&labels).inc();
    }

    /// The HTTP client (connection pool) the gateway shares.
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// Answers `initialize`: echo the client's revision when supported,
    /// otherwise offer the latest. Refused when the client's
    /// `capabilities` are larger than `max_client_capabilities_bytes` (the
    /// session would keep them): then no session may be made.
    pub fn initialize(
        &self,
        transport: protocol::Transport,
        id: &RawValue,
        params: Option<Checked<'_>>,
        principal: &Principal,
    ) -> Result<Initialized, InitializeRefused> {
        let core = &self.core;
        let cap = core.config().gateway.max_client_capabilities_bytes;
        let declared = params.and_then(|p| p.get("capabilities")).map_or(0, |c| c.text().len());
        if declared > cap {
            self.refused(transport, "capabilities_too_large");
            tracing::warn!(
                transport = transport.as_str(),
                principal = %principal.identity,
                bytes = declared,
                max = cap,
                "Refused an initialize whose client capabilities are over max_client_capabilities_bytes."
            );
            let msg = format!(
                "Invalid params: the client capabilities are {declared} bytes; this gateway keeps at most {cap} \
                 (gateway.max_client_capabilities_bytes)"
            );
            return Err(InitializeRefused { reply: encode::error(Some(id), protocol::INVALID_PARAMS, &msg, None) });
        }
        let asked = params.and_then(|p| p.get("protocolVersion")).and_then(Checked::str).map(|v| v.into_owned());
        let version = match asked {
            Some(v) if protocol::is_supported_version(&v) => v,
            _ => protocol::LATEST_VERSION.to_owned(),
        };
        let result = serde_json::json!({
            "protocolVersion": version,
            "capabilities": methods::discover::capabilities(protocol::Era::Legacy),
            "serverInfo": methods::discover::server_info(),
            "instructions": methods::discover::instructions(core, principal),
        });
        let result = serde_json::value::to_raw_value(&result).expect("json! always serializes");
        Ok(Initialized { reply: encode::result(id, &result), version })
    }

    /// Handles one request (not `initialize`) and returns the reply, or
    /// `None` when the client cancelled it (`notifications/cancelled`):
    /// the spec says a cancelled request gets no reply.
    pub async fn handle(&self, msg: &protocol::Request, caller: &Caller<'_>) -> Option<String> {
        self.handle_reply(msg, caller).await.map(protocol::Reply::into_string)
    }

    /// [`Gateway::handle`] for a writer that sends a reply in parts: a large
    /// forwarded result stays in the upstream's message ([`protocol::Reply`]).
    pub async fn handle_reply(&self, msg: &protocol::Request, caller: &Caller<'_>) -> Option<protocol::Reply> {
        pipeline::handle(&self.core, &self.in_flight, msg, caller).await
    }

    /// Handles a client's response to a server request relayed to it: the
    /// upstream that asked gets it under its own id. A response nobody
    /// waits for (late, or never asked) is dropped.
    pub fn respond(&self, msg: &Message, peer: &Peer) {
        let Some(id) = &msg.id else { return };
        if peer.answer_ask(id.get(), msg) {
            return;
        }
        match peer.take_pending(id.get()) {
            Some(r) => r.reply(msg),
            None => tracing::debug!("Dropped a client response nobody waits for."),
        }
    }

    /// Handles a notification from a client: `notifications/cancelled`
    /// stops the request it names; the rest need nothing.
    pub fn notify(&self, msg: &Message, peer: &Peer) {
        match msg.method() {
            "notifications/cancelled" => {
                let Some(id) = msg.params().and_then(|p| p.get("requestId")) else { return };
                if !peer.cancel(id.text()) {
                    // Races are normal: the reply may already be on its way.
                    tracing::debug!("Cancellation for a request not in flight.");
                }
            }
            other => tracing::trace!(method = %other, "Client notification."),
        }
    }

    /// Records the address the main listener is bound to, which every
    /// reload's `[auth]` is checked against.
    pub fn set_bound(&self, addr: std::net::SocketAddr) {
        let _ = self.bound.set(addr);
    }

    /// The reload task, when one was started (`serve` and `stdio` start
    /// it; tests may not).
    pub fn reloader(&self) -> Option<&reloader::Reloader> {
        self.reloader.get()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.core.published.load_full()
    }

    /// The parameters tool `name` mirrors into headers (`x-mcp-header`) as
    /// `principal` may see it: none for a tool hidden from it or
    /// quarantined, so a header check never tells such a tool apart from
    /// one that does not exist (the gate answers for it).
    pub fn mirrored_for(&self, principal: &Principal, name: &str) -> Arc<[protocol::modern::ParamHeader]> {
        let catalog = self.core.published.load();
        let Some(t) = catalog.get(name).filter(|t| !t.mirrored.is_empty()) else { return Arc::new([]) };
        let kind = crate::security::access::Kind::Tool;
        if t.quarantined || !self.core.gate.grants_of(principal).allows(kind, t.ident()) {
            return Arc::new([]);
        }
        t.mirrored.clone()
    }

    /// The configured upstreams, in id order.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.core.upstreams.all()
    }

    /// How many upstreams are ready now (for readiness probes, which must
    /// not reach into the upstream layer themselves).
    pub fn ready_upstreams(&self) -> usize {
        self.core.upstreams.ready_count()
    }

    /// The config in force now (a reload may replace it at any time:
    /// read what you need from it, do not keep it).
    pub fn config(&self) -> Arc<Config> {
        self.core.config().clone()
    }

    /// The mask of secret values in force (the secrets file's, and those a
    /// reload replaced while upstreams may still use them).
    pub fn redactor(&self) -> arc_swap::Guard<Arc<crate::config::Redactor>> {
        self.core.mask()
    }

    /// The config in force now, for a short read on a request's path (no
    /// reference count taken; never hold it across an `.await`).
    pub fn config_now(&self) -> arc_swap::Guard<Arc<Config>> {
        self.core.config()
    }

    /// Marks the gateway as leaving: `/readyz` answers 503 from now on
    /// while requests are still served (`drain_delay`).
    pub fn set_leaving(&self) {
        self.leaving.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a stop has begun ([`Gateway::set_leaving`]).
    pub fn leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether start-up is over: every upstream's first start ended, or
    /// `startup_list_wait` passed.
    pub fn started_up(&self) -> bool {
        self.core.published.started_up(self.core.first_starts_unlisted().is_empty())
    }

    /// Status of one upstream (`/status/upstreams/<id>`).
    pub fn upstream_status(&self, id: &str) -> Option<serde_json::Value> {
        let i = self.core.upstreams.find(id)?;
        Some(self.upstream_status_at(i, &self.core.published.load()))
    }

    fn upstream_status_at(&self, i: UpstreamIx, catalog: &Catalog) -> serde_json::Value {
        let mut v = self.core.upstreams.get(i).status();
        if let Some(offered) = v.get("tools").cloned() {
            // What clients see, after filters, collisions and breakers.
            v["tools_offered"] = offered;
            v["tools"] = catalog.tools().iter().filter(|t| t.upstream == i && !t.hidden).count().into();
        }
        v
    }

    /// Status of every upstream, for `/status`.
    pub fn status(&self) -> serde_json::Value {
        let catalog = self.core.published.load();
        let table = self.core.upstreams.now();
        let upstreams: Vec<_> = table.iter().map(|(i, _)| self.upstream_status_at(i, &catalog)).collect();
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

    /// The catalog for `/status` ([`Catalog::status`]).
    pub fn catalog_status(&self) -> serde_json::Value {
        let catalog = self.core.published.load();
        let table = self.core.upstreams.now();
        catalog.status(|i| table[i].id())
    }

    /// Client sessions now, of every transport (`/status` on the admin
    /// listener, which has no HTTP session table of its own).
    pub fn session_count(&self) -> usize {
        self.core.sessions.all().len()
    }

    /// The last refusals by policy, newest first, for `/status`
    /// (`recent_refusals`): at most 100, each with when, the principal,
    /// the upstream, the name asked for, the reason and the rule hits.
    pub fn recent_refusals(&self) -> serde_json::Value {
        self.core.refusals.to_json()
    }

    /// The state replicas share (`[redis]`), when configured.
    pub fn shared(&self) -> Option<&Arc<crate::shared::Shared>> {
        self.core.gate.shared()
    }

    /// The metrics, traces and audit log.
    pub fn telemetry(&self) -> &Telemetry {
        &self.core.telemetry
    }

    /// The Prometheus exposition, with the state gauges set first.
    pub fn metrics_text(&self) -> String {
        let m = &self.core.telemetry.metrics;
        m.in_flight_requests.set(self.in_flight() as i64);
        let catalog = self.core.published.load();
        let table = self.core.upstreams.now();
        let mut exposed = vec![0i64; table.slots()];
        for t in catalog.tools().iter().filter(|t| !t.hidden) {
            exposed[t.upstream.index()] += 1;
        }
        // Upstreams a reload removed or replaced first (draining, then
        // stopped: a removed id's series follow them down rather than keep
        // their last values), then the configured ones, which win for an
        // id in both.
        for u in table.every().filter(|u| u.is_retired()) {
            u.export_gauges();
            m.tools_exposed.get_or_create(&UpstreamLabels { upstream: u.label() }).set(0);
        }
        for (i, u) in table.iter() {
            u.export_gauges();
            m.tools_exposed.get_or_create(&UpstreamLabels { upstream: u.label() }).set(exposed[i.index()]);
        }
        m.encode()
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.now()
    }

    /// Waits until no request is in flight, at most `timeout`; returns how
    /// many were still in flight at the end.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.core.draining.cancel();
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
        let core = &self.core;
        // Sessions' own connections too (their sessions may outlive this).
        let own: Vec<Arc<Upstream>> = core
            .sessions
            .all()
            .iter()
            .flat_map(|p| p.lock_instances().drain().map(|(_, u)| u).collect::<Vec<_>>())
            .collect();
        let mut principals = core.upstreams.take_principal_connections();
        // Connections a retirement took and has not stopped yet.
        principals.extend(core.upstreams.take_retiring());
        let table = core.upstreams.now();
        let all = table.every().chain(&own).chain(&principals);
        futures_util::future::join_all(all.map(|u| u.shutdown())).await;
        // The cache writer's last write (a change still pending).
        let saver = crate::sync::Locked::locked(&self.saver).take();
        if let Some(saver) = saver {
            let _ = tokio::time::timeout(SAVER_PATIENCE, saver).await;
        }
        // Flushing spans and audit lines blocks; keep it off the workers.
        let telemetry = core.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
}

#[cfg(test)]
mod tests;
