//! Upstream MCP servers: connections, transports and supervision (D3).
//!
//! Each configured upstream gets one [`Upstream`]: a supervisor task keeps a
//! single shared connection alive (start, `initialize` under a start-up
//! deadline, fetch tools, watch, restart with exponential backoff), and
//! publishes its [`State`] through an `ArcSwap`, so callers read it without
//! locks and a slow or dead upstream never blocks anyone else.
//!
//! Architecture Invariant: this module knows nothing of downstream sessions
//! or the merged catalog; it reports changes through a `Notify`.

mod backoff;
mod call;
mod conn;
mod health;
mod http;
mod legacy;
mod link;
mod sse;
mod stdio;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::backoff::Backoff;
pub use self::call::{Called, Request, Stats, ToolHints};
use self::conn::{Connection, Event, Inbox, Negotiated};
use self::link::Link;
use crate::config::{Redactor, TransportSpec, UpstreamSpec};
use crate::error::{CallError, ErrorClass};
use crate::protocol::{Checked, CheckedBox, Message, encode};
use crate::resilience::{Breaker, BreakerState, Budget, Bulkhead, Transition};
use crate::sync::Locked;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{
    BreakerLabels, Name, NotificationLabels, OutcomeLabels, StateLabels, TransitionLabels, UpstreamCounters,
    UpstreamLabels,
};

/// Restart delays start at 0.5 s and double up to the upstream's
/// `restart_max_delay`; they start over once it stays up `stable_after`.
const RESTART_MIN: Duration = Duration::from_millis(500);
/// Failed starts (or short lives) in a row that count as a crash loop.
const CRASH_LOOP: u32 = 3;

/// Announces upstream changes to whoever builds views of them (the
/// catalog): a generation counter, bumped after every change, and a wake-up.
/// A view built after reading generation `g` reflects every change up to `g`.
#[derive(Debug, Default)]
pub struct Changes {
    generation: AtomicU64,
    notify: Notify,
}

impl Changes {
    /// Records a change and wakes the consumer.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Waits for the next change (a change since the last wait counts).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// One upstream server and its supervisor.
#[derive(Debug)]
pub struct Upstream {
    spec: UpstreamSpec,
    state: ArcSwap<State>,
    settled: AtomicBool,
    /// `settled`, for waiters: a watch never loses a wake-up, and waiting
    /// on it takes nothing from `changed`, whose one consumer is the
    /// catalog.
    settled_watch: tokio::sync::watch::Sender<bool>,
    changed: Arc<Changes>,
    shutdown: CancellationToken,
    max_bytes: usize,
    /// What the strict scan of its messages enforces (docs/design.md D12).
    json: crate::protocol::Limits,
    redactor: Redactor,
    http: reqwest::Client,
    /// The upstream's breaker (`None` when disabled).
    breaker: Option<Breaker>,
    /// Per-tool breakers, created on first use (with `breaker.per_tool`).
    tool_breakers: std::sync::Mutex<std::collections::HashMap<String, Arc<Breaker>>>,
    bulkhead: Bulkhead,
    budget: Budget,
    stats: Stats,
    /// Set while the supervisor sees a crash loop.
    crash_loop: AtomicBool,
    /// Wakes the health loop on breaker transitions (to probe on time).
    breaker_moved: Notify,
    /// The id as a metric label.
    label: Name,
    metrics: Arc<Metrics>,
    /// Its counters with fixed labels (also read by `/status`).
    counters: UpstreamCounters,
    /// Notifications for the gateway to route.
    notes: mpsc::Sender<Note>,
    /// Set on a connection of one session's own (`isolation =
    /// "per-session"`).
    isolated: Option<Isolated>,
    /// The gateway's own OAuth credential (`[upstreams.<id>.oauth]`): the
    /// shared one, or one principal's on a per-principal connection.
    credential: Option<Arc<crate::oauth::Credential>>,
}

/// What an upstream's messages may be.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Largest message, in bytes (`gateway.max_message_bytes`).
    pub max_bytes: usize,
    /// What the strict scan enforces (`gateway.max_json_depth`).
    pub json: crate::protocol::Limits,
}

/// What a connection of one session's own knows of the session.
#[derive(Debug)]
pub struct Isolated {
    /// What the gateway declares to the upstream: the client's own
    /// sampling, elicitation and roots capabilities.
    pub capabilities: Box<RawValue>,
    /// Where the upstream's requests and notifications go: the session.
    pub relay: Arc<dyn Relay>,
}

/// Where an upstream is in its life.
#[derive(Debug)]
pub enum State {
    /// Starting or running `initialize`.
    Starting {
        /// When this attempt began.
        since: Instant,
    },
    /// Initialized and serving.
    Ready(Ready),
    /// Not serving; restarts at `retry_at`.
    Down {
        /// Why, for clients and status (no secrets).
        reason: String,
        /// The class of the failure.
        class: ErrorClass,
        /// When the next attempt starts.
        retry_at: Instant,
    },
    /// Shut down for good.
    Stopped,
}

/// A serving upstream.
#[derive(Debug)]
pub struct Ready {
    conn: Arc<Connection>,
    negotiated: Negotiated,
    /// What it lists, raw, across all its pages.
    pub lists: Lists,
    /// Which connection this is (1 for the first, then one more for each
    /// restart or reconnect).
    pub connection: u64,
    /// When it became ready.
    pub since: Instant,
}

/// What an upstream lists, each raw and across all its pages (empty when
/// the upstream lacks the capability).
#[derive(Debug, Clone, Default)]
pub struct Lists {
    /// `tools/list`.
    pub tools: Arc<[CheckedBox]>,
    /// `prompts/list`.
    pub prompts: Arc<[CheckedBox]>,
    /// `resources/list`.
    pub resources: Arc<[CheckedBox]>,
    /// `resources/templates/list`.
    pub templates: Arc<[CheckedBox]>,
}

/// A notification from an upstream that concerns no single call
/// (`resources/updated`, `message`, …), for the gateway to route.
#[derive(Debug)]
pub struct Note {
    /// The upstream's id.
    pub upstream: Name,
    /// The notification, as received.
    pub msg: Message,
}

/// Where the messages an upstream sends about one call go: the downstream
/// client that made it. The upstream module only knows this trait, never
/// sessions.
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// A notification about the call: `notifications/progress` (still with
    /// the gateway's token) or one that arrived on the call's own HTTP
    /// response stream (`notifications/message`, …).
    fn notify(&self, msg: &Message);

    /// A request the upstream sent about the call (`sampling/createMessage`,
    /// `elicitation/create`): the relay answers it through `reply`, now or
    /// later.
    fn request(&self, msg: Message, reply: Responder);
}

/// Answers one request an upstream sent, under the upstream's own id.
#[derive(Debug)]
pub struct Responder {
    conn: Arc<Connection>,
    id: Box<RawValue>,
    upstream: Name,
}

impl Responder {
    /// The upstream that asked.
    pub fn upstream(&self) -> &Name {
        &self.upstream
    }

    /// The upstream's id of the request, raw.
    pub fn id(&self) -> &RawValue {
        &self.id
    }

    /// Relays a client's response (its `result` or `error`).
    pub fn reply(self, response: &Message) {
        let body = match (response.result_raw(), response.error()) {
            (Some(r), _) => encode::result(&self.id, r),
            (None, Some(e)) => encode::raw_error(&self.id, e.raw()),
            (None, None) => encode::error(Some(&self.id), crate::protocol::INTERNAL_ERROR, "empty response", None),
        };
        self.send(body);
    }

    /// Answers with a JSON-RPC error.
    pub fn error(self, code: i64, message: &str) {
        let body = encode::error(Some(&self.id), code, message, None);
        self.send(body);
    }

    fn send(self, body: String) {
        tokio::spawn(async move { self.conn.respond(body).await });
    }
}

/// The gateway's own OAuth credential for `spec` (`principal`: one
/// principal's, else the shared one), when it has `[oauth]`.
fn credential(
    spec: &UpstreamSpec,
    principal: Option<Arc<str>>,
    metrics: &Arc<Metrics>,
) -> Option<Arc<crate::oauth::Credential>> {
    let oauth = spec.oauth.clone()?;
    Some(Arc::new(crate::oauth::Credential::new(oauth, principal, metrics.clone())))
}

// === impl Upstream ===

impl Upstream {
    /// Creates the upstream and starts its supervisor. `changed` is bumped
    /// whenever its state or tool list changes.
    pub fn start(
        spec: UpstreamSpec,
        bounds: Bounds,
        redactor: Redactor,
        changed: Arc<Changes>,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        notes: mpsc::Sender<Note>,
    ) -> Arc<Self> {
        let credential = credential(&spec, None, &metrics);
        Self::build(spec, bounds, redactor, changed, http, metrics, notes, None, credential)
    }

    /// Starts a connection of one client principal's own to an upstream
    /// with `per_principal` OAuth tokens: the upstream sees that user's
    /// token. It has its own breaker and bulkhead and serves every session
    /// of the principal like a shared connection does; it stops with
    /// [`Upstream::shutdown`].
    pub fn start_for_principal(&self, principal: Arc<str>) -> Arc<Self> {
        self.sibling(None, credential(&self.spec, Some(principal), &self.metrics))
    }

    /// Starts a connection of one session's own to the same server (see
    /// [`Isolated`]), with its own breaker and bulkhead; metrics count
    /// under the same upstream label. It stops with [`Upstream::shutdown`].
    pub fn start_isolated(&self, isolated: Isolated) -> Arc<Self> {
        self.sibling(Some(isolated), self.credential.clone())
    }

    /// Another connection to the same server, with its own state, breaker
    /// and bulkhead. Its notifications about no call never reach the
    /// shared notes: they may concern one client only (an isolated one's
    /// go to its session's relay; a principal's are dropped and counted).
    fn sibling(&self, isolated: Option<Isolated>, credential: Option<Arc<crate::oauth::Credential>>) -> Arc<Self> {
        let (notes, _) = mpsc::channel(1);
        Self::build(
            self.spec.clone(),
            Bounds { max_bytes: self.max_bytes, json: self.json },
            self.redactor.clone(),
            Arc::new(Changes::default()),
            self.http.clone(),
            self.metrics.clone(),
            notes,
            isolated,
            credential,
        )
    }

    /// Waits until its first start has ended (ready or not), at most until
    /// `deadline`.
    pub async fn wait_settled(&self, deadline: Instant) {
        // Waiting on `changed` lost wake-ups: `set` bumps before it marks
        // the start settled (a waiter woken in between slept until its
        // deadline), and its one permit belongs to the catalog.
        let mut settled = self.settled_watch.subscribe();
        let _ = tokio::time::timeout_at(deadline, settled.wait_for(|s| *s)).await;
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        spec: UpstreamSpec,
        bounds: Bounds,
        redactor: Redactor,
        changed: Arc<Changes>,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        notes: mpsc::Sender<Note>,
        isolated: Option<Isolated>,
        credential: Option<Arc<crate::oauth::Credential>>,
    ) -> Arc<Self> {
        let label: Name = Arc::from(spec.id.as_str());
        let counters = metrics.upstream_counters(&label, spec.breaker.enabled);
        let this = Arc::new(Upstream {
            label,
            metrics,
            state: ArcSwap::from_pointee(State::Starting { since: Instant::now() }),
            counters,
            settled: AtomicBool::new(false),
            settled_watch: tokio::sync::watch::Sender::new(false),
            changed,
            shutdown: CancellationToken::new(),
            max_bytes: bounds.max_bytes,
            json: bounds.json,
            redactor,
            http,
            breaker: spec.breaker.enabled.then(|| Breaker::new(spec.breaker.clone())),
            tool_breakers: std::sync::Mutex::default(),
            bulkhead: Bulkhead::new(spec.max_concurrency, spec.max_queue),
            budget: Budget::new(&spec.retry),
            stats: Stats::default(),
            crash_loop: AtomicBool::new(false),
            breaker_moved: Notify::new(),
            notes,
            isolated,
            credential,
            spec,
        });
        tokio::spawn(this.clone().supervise());
        this
    }

    /// The upstream's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The id as a metric label.
    pub fn label(&self) -> Name {
        self.label.clone()
    }

    /// Its validated config.
    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// A snapshot of its state.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// How many times it was restarted.
    pub fn restarts(&self) -> u32 {
        u32::try_from(self.counters.restarts.get()).unwrap_or(u32::MAX)
    }

    /// The error for a call that arrives while the upstream is not ready.
    pub fn unavailable(&self, state: &State) -> CallError {
        let id = &self.spec.id;
        let now = Instant::now();
        let msg = match state {
            State::Starting { since } => format!(
                "upstream `{id}` is starting (initialize pending for {}s); try again shortly",
                now.saturating_duration_since(*since).as_secs()
            ),
            State::Down { reason, retry_at, .. } => format!(
                "upstream `{id}` is unavailable: {reason}; next attempt in {}s",
                retry_at.saturating_duration_since(now).as_secs()
            ),
            State::Stopped => format!("upstream `{id}` is shut down"),
            State::Ready(_) => format!("upstream `{id}` is ready"),
        };
        // No token is not a transport failure: a person must log in.
        let class = match state {
            State::Down { class: ErrorClass::UpstreamAuth, .. } => ErrorClass::UpstreamAuth,
            _ => ErrorClass::Transport,
        };
        CallError::new(class, Some(id), msg).not_delivered()
    }

    fn breaker_opened_total(&self) -> u64 {
        let tools = self.tool_breakers.locked();
        self.breaker.as_ref().map_or(0, Breaker::times_opened) + tools.values().map(|b| b.times_opened()).sum::<u64>()
    }

    /// Records the upstream's most recent failure (a call failure that
    /// says it is sick, or a failed start), for status.
    fn record_error(&self, class: ErrorClass, message: String) {
        *self.stats.last_error.locked() = Some((class, message, Instant::now()));
    }

    /// Whether its tools are hidden: its breaker is not closed.
    pub fn tools_hidden(&self) -> bool {
        self.breaker.as_ref().is_some_and(|b| b.state() != BreakerState::Closed)
    }

    /// Its tools (original names) whose own breaker is open. Unlike the
    /// upstream's (probed by health pings), a tool's breaker is probed by
    /// calls, so the tool is listed again once its cooldown ends.
    pub fn hidden_tools(&self) -> Vec<String> {
        let map = self.tool_breakers.locked();
        map.iter().filter(|(_, b)| b.state() == BreakerState::Open).map(|(t, _)| t.clone()).collect()
    }

    /// When the earliest cooldown of an open tool breaker ends (future
    /// ones only: an ended cooldown waits for a call to probe).
    fn next_tool_probe(&self) -> Option<Instant> {
        let now = Instant::now();
        let map = self.tool_breakers.locked();
        map.values().filter_map(|b| b.probe_at()).filter(|t| *t > now).min()
    }

    /// Logs and counts a breaker transition, and has the catalog rebuilt
    /// (tools are hidden while a breaker is not closed).
    /// `cause` is the class of the outcome that moved it, when one did.
    fn note(&self, t: Option<Transition>, tool: Option<&str>, cause: Option<ErrorClass>) {
        let Some(t) = t else { return };
        let whose = tool.map_or_else(|| "Circuit breaker".to_owned(), |t| format!("Circuit breaker of tool `{t}`"));
        let cause = cause.map_or("-", ErrorClass::as_str);
        match t.to {
            BreakerState::Open => tracing::warn!(
                upstream = %self.spec.id, from = t.from.as_str(), cause, opened_total = self.breaker_opened_total(),
                "{whose} opened after a {cause} failure: calls fail fast and the tools are hidden until a probe succeeds."
            ),
            BreakerState::HalfOpen => {
                tracing::info!(upstream = %self.spec.id, "{whose} half-open: probing.");
            }
            BreakerState::Closed => {
                tracing::info!(upstream = %self.spec.id, "{whose} closed: the tools are back.");
            }
        }
        self.stats.breaker_transitions.fetch_add(1, Ordering::Relaxed);
        let tool = tool.map_or_else(|| Name::from(""), Name::from);
        self.metrics
            .breaker_transitions
            .get_or_create(&TransitionLabels { upstream: self.label.clone(), tool, state: t.to.as_str() })
            .inc();
        self.changed.bump();
        self.breaker_moved.notify_one();
    }

    fn labels(&self) -> UpstreamLabels {
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

    /// Stops the supervisor and the connection (stdio: close stdin →
    /// SIGTERM → SIGKILL) and waits until that is done.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        // The supervisor shuts the connection down and then sets Stopped.
        loop {
            if matches!(**self.state.load(), State::Stopped) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether its first start has ended, ready or not.
    pub fn has_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    fn set(&self, s: State) {
        let settles = matches!(s, State::Ready(_) | State::Down { .. } | State::Stopped);
        self.state.store(Arc::new(s));
        self.changed.bump();
        // After the bump: whoever sees `settled` also sees the generation
        // that includes this state (Release here, Acquire in has_settled).
        if settles {
            self.settled.store(true, Ordering::Release);
            self.settled_watch.send_replace(true);
        }
    }

    async fn supervise(self: Arc<Self>) {
        let max = self.spec.restart_max_delay.max(RESTART_MIN);
        let mut backoff = Backoff::try_new(RESTART_MIN, max).expect("the config checks restart_max_delay");
        let network = self.spec.transport.network() == "tcp";
        // Failed starts and short lives in a row.
        let mut short_runs = 0u32;
        let mut connection = 0u64;
        loop {
            self.set(State::Starting { since: Instant::now() });
            let (tx, rx) = mpsc::channel(64);
            let inbox = Inbox::new(Arc::from(self.spec.id.as_str()), tx, self.json, &self.metrics);
            let outcome = tokio::select! {
                o = self.connect(&inbox) => o,
                () = self.shutdown.cancelled() => break,
            };
            let (reason, class) = match outcome {
                Ok((conn, negotiated)) => {
                    let since = Instant::now();
                    connection += 1;
                    let (reason, class) = self.serve(conn, negotiated, connection, rx, &inbox).await;
                    if self.shutdown.is_cancelled() {
                        break;
                    }
                    if since.elapsed() >= self.spec.stable_after {
                        // Stable (`serve` cleared a crash loop already).
                        backoff.reset();
                        short_runs = 0;
                    } else if class != ErrorClass::UpstreamAuth {
                        short_runs += 1;
                    }
                    (reason, class)
                }
                Err(e) => {
                    // The status names the upstream already.
                    let prefix = format!("upstream `{}` ", self.spec.id);
                    let reason = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
                    // Waiting for a login is not a crash loop, and neither is
                    // a server that cannot be reached (not up yet, or away):
                    // nothing of ours crashed, it is "unreachable".
                    if e.class != ErrorClass::UpstreamAuth && !(network && e.not_delivered) {
                        short_runs += 1;
                    }
                    (reason.strip_prefix("is ").unwrap_or(reason).to_owned(), e.class)
                }
            };
            let delay = backoff.next_delay();
            if short_runs >= CRASH_LOOP && !self.crash_loop.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    upstream = %self.spec.id, failures = short_runs, retry_in_ms = delay.as_millis() as u64,
                    "Upstream is crash-looping; restart delays keep growing (up to {}s).", max.as_secs_f64()
                );
            }
            let unreachable =
                network && matches!(&*self.state(), State::Starting { .. }) && class == ErrorClass::Transport;
            if unreachable {
                tracing::warn!(upstream = %self.spec.id, retry_in_ms = delay.as_millis() as u64, "Upstream is unreachable: {reason}.");
            } else {
                tracing::warn!(upstream = %self.spec.id, class = %class, retry_in_ms = delay.as_millis() as u64, "Upstream is down: {reason}.");
            }
            self.record_error(class, reason.clone());
            self.set(State::Down { reason, class, retry_at: Instant::now() + delay });
            // Down for want of a token: a login (the token file changes)
            // brings it up at once rather than after the backoff.
            let login = async {
                match self.credential.as_ref().filter(|c| class == ErrorClass::UpstreamAuth && c.uses_file()) {
                    Some(c) => c.file_changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = login => {
                    tracing::info!(upstream = %self.spec.id, "The token file changed; starting again now.");
                }
                () = self.shutdown.cancelled() => break,
            }
            self.counters.restarts.inc();
        }
        self.set(State::Stopped);
    }

    /// Opens the transport and runs `initialize` within the start-up
    /// deadline. On failure the half-open transport is shut down properly.
    async fn connect(&self, inbox: &Arc<Inbox>) -> Result<(Arc<Connection>, Negotiated), CallError> {
        let started = Instant::now();
        let deadline = self.spec.startup_timeout;
        let observe = |outcome| {
            self.metrics
                .initialize_duration
                .get_or_create(&OutcomeLabels { upstream: self.label.clone(), outcome })
                .observe(started.elapsed().as_secs_f64());
        };
        let link = tokio::time::timeout(deadline, self.open_link(inbox))
            .await
            .map_err(|_| self.error(ErrorClass::Timeout, format!("did not connect within {}s", deadline.as_secs_f64())))
            .and_then(|r| r.map_err(|e| self.error(ErrorClass::Transport, e)))
            .inspect_err(|_| observe("error"))?;
        let conn = Arc::new(Connection::new(inbox.clone(), link, self.client_capabilities()));
        let left = deadline.saturating_sub(started.elapsed());
        let negotiated = tokio::select! {
            r = conn.initialize(left) => r,
            // A process that dies during start-up fails fast, not at the deadline.
            () = inbox.closed() => Err(self.error(ErrorClass::Transport, format!("{} during initialize", inbox.close_reason()))),
        };
        observe(if negotiated.is_ok() { "ok" } else { "error" });
        match negotiated {
            Ok(n) => {
                conn.link.start_listening(inbox).await;
                tracing::info!(
                    upstream = %self.spec.id,
                    protocol_version = %n.version,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Upstream initialized."
                );
                Ok((conn, n))
            }
            Err(mut e) => {
                conn.link.shutdown().await;
                if e.class == ErrorClass::Timeout {
                    e.message = format!(
                        "upstream `{}` did not answer initialize within {}s",
                        self.spec.id,
                        deadline.as_secs_f64()
                    );
                }
                Err(e)
            }
        }
    }

    async fn open_link(&self, inbox: &Arc<Inbox>) -> Result<Link, String> {
        match &self.spec.transport {
            TransportSpec::Stdio { command, args, env, cwd, shutdown_grace } => {
                let launch = stdio::Launch {
                    command,
                    args,
                    env,
                    cwd,
                    grace: *shutdown_grace,
                    max_bytes: self.max_bytes,
                    redactor: &self.redactor,
                };
                let link =
                    stdio::StdioLink::spawn(&launch, inbox).map_err(|e| format!("cannot start `{command}`: {e}"))?;
                Ok(Link::Stdio(Arc::new(link)))
            }
            TransportSpec::Http { url, headers } => {
                let url = reqwest::Url::parse(url.expose()).map_err(|e| e.to_string())?;
                let link = http::HttpLink::new(
                    self.http.clone(),
                    url,
                    header_map(headers),
                    self.max_bytes,
                    self.credential.clone(),
                );
                Ok(Link::Http(Arc::new(link)))
            }
            TransportSpec::Sse { url, headers } => {
                let url = reqwest::Url::parse(url.expose()).map_err(|e| e.to_string())?;
                let link =
                    legacy::LegacyLink::connect(self.http.clone(), url, header_map(headers), self.max_bytes, inbox)
                        .await
                        .map_err(|e| format!("SSE endpoint {e}"))?;
                Ok(Link::Legacy(Arc::new(link)))
            }
        }
    }

    /// Serves a ready connection until it closes or the gateway shuts down;
    /// returns why it ended.
    async fn serve(
        &self,
        conn: Arc<Connection>,
        negotiated: Negotiated,
        connection: u64,
        mut events: mpsc::Receiver<Event>,
        inbox: &Arc<Inbox>,
    ) -> (String, ErrorClass) {
        let lists = match self.fetch_lists(&conn, negotiated.capabilities.checked()).await {
            Ok(l) => l,
            Err(e) => {
                conn.link.shutdown().await;
                // Refused for want of a token or scope: a person must act
                // (and a login brings it back); not a crash.
                let class = if e.class == ErrorClass::UpstreamAuth { e.class } else { ErrorClass::Transport };
                return (format!("tools/list failed: {}", e.message), class);
            }
        };
        let ready = |lists: Lists| {
            State::Ready(Ready {
                conn: conn.clone(),
                negotiated: negotiated.clone(),
                lists,
                connection,
                since: Instant::now(),
            })
        };
        self.set(ready(lists));
        let health = self.health_loop(&conn);
        tokio::pin!(health);
        // Up `stable_after`: a crash loop is over, while it stays up (not
        // only when this connection ends).
        let stable = tokio::time::sleep(self.spec.stable_after);
        tokio::pin!(stable);
        let mut stable_seen = false;
        loop {
            tokio::select! {
                () = &mut stable, if !stable_seen => {
                    stable_seen = true;
                    if self.crash_loop.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            upstream = %self.spec.id, stable_s = self.spec.stable_after.as_secs_f64(),
                            "Upstream left its crash loop: up and stable."
                        );
                    }
                }
                reason = &mut health => {
                    tracing::warn!(upstream = %self.spec.id, "Giving up the connection: {reason}.");
                    inbox.close(reason.clone());
                    conn.link.shutdown().await;
                    return (reason, ErrorClass::Transport);
                }
                ev = events.recv() => match ev {
                    Some(Event::Request(m, relay)) => self.answer(&conn, m, relay),
                    Some(Event::Answer(body)) => {
                        let conn = conn.clone();
                        tokio::spawn(async move { conn.respond(body).await });
                    }
                    Some(Event::Notification(m)) => match ListKind::changed_by(m.method()) {
                        Some(kind) => self.refresh(&conn, kind, &ready).await,
                        None => self.pass_on(m),
                    },
                    None => return ("event channel closed".into(), ErrorClass::Transport),
                },
                () = inbox.closed() => {
                    conn.link.shutdown().await;
                    return (inbox.close_reason(), ErrorClass::Transport);
                }
                () = self.shutdown.cancelled() => {
                    conn.link.shutdown().await;
                    inbox.close("gateway shutting down".into());
                    return ("gateway shutting down".into(), ErrorClass::Transport);
                }
            }
        }
    }

    /// Answers requests the upstream sends us: `ping`; `roots/list` from
    /// the config (the connection serves every client, so no client's
    /// roots); sampling and elicitation go to the client whose call they
    /// came with, and are refused when no call can be told (a stdio or GET
    /// stream message on a shared connection: the gateway never guesses).
    fn answer(&self, conn: &Arc<Connection>, m: Message, relay: Option<Arc<dyn Relay>>) {
        let Some(id) = m.id.clone() else { return };
        let responder = Responder { conn: conn.clone(), id, upstream: self.label.clone() };
        // A session's own connection: everything it asks is that client's.
        if let Some(isolated) = &self.isolated
            && m.method() != "ping"
        {
            return isolated.relay.request(m, responder);
        }
        match (m.method(), relay) {
            ("ping", _) => {
                let body = encode::result(&responder.id, &RawValue::from_string("{}".into()).expect("valid"));
                responder.send(body);
            }
            ("roots/list", _) => {
                let roots: Vec<_> = self.spec.roots.iter().map(|r| serde_json::json!({ "uri": r })).collect();
                let result = serde_json::value::to_raw_value(&serde_json::json!({ "roots": roots })).expect("valid");
                let body = encode::result(&responder.id, &result);
                responder.send(body);
            }
            ("sampling/createMessage" | "elicitation/create", Some(relay)) => relay.request(m, responder),
            (other, _) => {
                let other = crate::protocol::echo(other);
                tracing::warn!(upstream = %self.spec.id, method = %other, "Refused a request from the upstream that no client call can be tied to.");
                responder.error(crate::protocol::METHOD_NOT_FOUND, &format!("Method not found: {other}"));
            }
        }
    }

    /// What the gateway declares to the upstream: roots when the config
    /// gives some; sampling and elicitation only where a request can be
    /// tied to the call that caused it (on that call's Streamable HTTP
    /// response stream).
    fn client_capabilities(&self) -> Box<RawValue> {
        if let Some(isolated) = &self.isolated {
            return isolated.capabilities.clone();
        }
        let mut caps = serde_json::Map::new();
        if self.spec.isolation == crate::config::Isolation::PerSession {
            // The catalog connection of a per-session upstream: it declares
            // all a session's own connection may, so servers that list tools
            // by capability (server-everything) list them all. Calls never
            // go over it; its own requests get what a shared one's get.
            caps.insert("roots".into(), serde_json::json!({}));
            caps.insert("sampling".into(), serde_json::json!({}));
            caps.insert("elicitation".into(), serde_json::json!({ "form": {}, "url": {} }));
            return serde_json::value::to_raw_value(&caps).expect("valid");
        }
        if !self.spec.roots.is_empty() {
            caps.insert("roots".into(), serde_json::json!({}));
        }
        if matches!(self.spec.transport, TransportSpec::Http { .. }) {
            caps.insert("sampling".into(), serde_json::json!({}));
            caps.insert("elicitation".into(), serde_json::json!({ "form": {}, "url": {} }));
        }
        serde_json::value::to_raw_value(&caps).expect("valid")
    }

    /// Fetches every list the upstream's capabilities declare. Only a
    /// failed `tools/list` fails the start; a failed prompt or resource
    /// list is logged and left empty (the tools still serve).
    async fn fetch_lists(&self, conn: &Connection, caps: Checked<'_>) -> Result<Lists, CallError> {
        let mut lists = Lists::default();
        if capability(caps, "tools") {
            lists.tools = self.fetch_list(conn, ListKind::Tools).await?.into();
        }
        if capability(caps, "prompts") {
            lists.prompts = self.fetch_or_empty(conn, ListKind::Prompts).await;
        }
        if capability(caps, "resources") {
            lists.resources = self.fetch_or_empty(conn, ListKind::Resources).await;
            lists.templates = self.fetch_or_empty(conn, ListKind::Templates).await;
        }
        Ok(lists)
    }

    async fn fetch_or_empty(&self, conn: &Connection, kind: ListKind) -> Arc<[CheckedBox]> {
        match self.fetch_list(conn, kind).await {
            Ok(l) => l.into(),
            // An optional list it does not have (server-postgres has no
            // resource templates): nothing to warn about.
            Err(e) if e.code == crate::protocol::METHOD_NOT_FOUND => {
                tracing::debug!(upstream = %self.spec.id, "{} is not served (-32601); serving none.", kind.method());
                Arc::new([])
            }
            Err(e) => {
                tracing::warn!(upstream = %self.spec.id, class = %e.class, "{} failed; serving none: {}.", kind.method(), e.message);
                Arc::new([])
            }
        }
    }

    /// Re-fetches a list after the upstream said it changed, keeping the
    /// old one when that fails.
    async fn refresh(&self, conn: &Connection, kind: ListKind, ready: &impl Fn(Lists) -> State) {
        let State::Ready(current) = &*self.state() else { return };
        let mut lists = current.lists.clone();
        let kinds: &[ListKind] = match kind {
            ListKind::Resources | ListKind::Templates => &[ListKind::Resources, ListKind::Templates],
            ListKind::Tools => &[ListKind::Tools],
            ListKind::Prompts => &[ListKind::Prompts],
        };
        for &k in kinds {
            match self.fetch_list(conn, k).await {
                Ok(l) => *lists.get_mut(k) = l.into(),
                Err(e) => {
                    tracing::warn!(upstream = %self.spec.id, error = %e, "Refreshing {} failed; keeping the old list.", k.method());
                }
            }
        }
        self.set(ready(lists));
    }

    /// Hands a notification that concerns no single call to the gateway.
    fn pass_on(&self, msg: Message) {
        tracing::debug!(upstream = %self.spec.id, method = %msg.method(), "Upstream notification.");
        if let Some(isolated) = &self.isolated {
            return isolated.relay.notify(&msg);
        }
        let method = crate::telemetry::metrics::notification_label(msg.method());
        if self.notes.try_send(Note { upstream: self.label.clone(), msg }).is_err() {
            let labels = NotificationLabels { upstream: self.label.clone(), method, outcome: "dropped" };
            self.metrics.notifications.get_or_create(&labels).inc();
            tracing::debug!(upstream = %self.spec.id, "Dropped an upstream notification: the gateway is behind.");
        }
    }

    /// Pages through one list method, following `nextCursor`.
    async fn fetch_list(&self, conn: &Connection, kind: ListKind) -> Result<Vec<CheckedBox>, CallError> {
        let method = kind.method();
        let key = kind.key();
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let params = cursor.as_ref().map(|c| CheckedBox::from_value(&serde_json::json!({ "cursor": c })));
            let reply =
                conn.request(method, params.as_ref().map(CheckedBox::checked), self.spec.request_timeout).await?;
            let Some(result) = reply.result() else {
                let error = reply.error();
                let code = error.and_then(|e| e.get("code")).and_then(|c| c.text().parse::<i64>().ok());
                let class = code.map_or(ErrorClass::UpstreamInternal, crate::error::classify_rpc_code);
                let text = error.map(|e| e.text().to_owned()).unwrap_or_default();
                let mut e = self.error(class, format!("{method} answered an error: {}", crate::protocol::echo(&text)));
                e.code = code.unwrap_or(e.code);
                return Err(e);
            };
            let invalid = |e: &dyn std::fmt::Display| {
                self.error(ErrorClass::Protocol, format!("{method} result is invalid: {e}"))
            };
            let page = result.object().ok_or_else(|| invalid(&"not an object"))?;
            let items = match page.get(key) {
                Some(v) => v.items().ok_or_else(|| invalid(&format!("`{key}` is not an array")))?,
                None => return Err(invalid(&format!("no `{key}` array"))),
            };
            all.extend(items.into_iter().map(Checked::to_box));
            match page.str("nextCursor") {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => return Ok(all),
            }
        }
        Err(self.error(ErrorClass::Protocol, format!("{method} returned more than 1000 pages")))
    }

    fn error(&self, class: ErrorClass, what: impl std::fmt::Display) -> CallError {
        CallError::new(class, Some(&self.spec.id), format!("upstream `{}` {what}", self.spec.id))
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

impl Ready {
    /// The protocol revision negotiated with the upstream.
    pub fn protocol_version(&self) -> &str {
        &self.negotiated.version
    }

    /// Whether the upstream declared a capability (`logging`, or a dotted
    /// path such as `tasks.requests.tools.call`).
    pub fn has_capability(&self, name: &str) -> bool {
        capability(self.negotiated.capabilities.checked(), name)
    }
}

/// The lists an upstream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    Templates,
}

impl ListKind {
    /// The list method.
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The member of the result that holds the items.
    pub fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    /// The `list_changed` notification for this list (templates share the
    /// resources one).
    pub fn changed_notification(self) -> &'static str {
        match self {
            ListKind::Tools => "notifications/tools/list_changed",
            ListKind::Prompts => "notifications/prompts/list_changed",
            ListKind::Resources | ListKind::Templates => "notifications/resources/list_changed",
        }
    }

    /// The list a `list_changed` notification is about.
    pub fn changed_by(method: &str) -> Option<ListKind> {
        match method {
            "notifications/tools/list_changed" => Some(ListKind::Tools),
            "notifications/prompts/list_changed" => Some(ListKind::Prompts),
            "notifications/resources/list_changed" => Some(ListKind::Resources),
            _ => None,
        }
    }
}

impl Lists {
    /// One list.
    pub fn get(&self, kind: ListKind) -> &Arc<[CheckedBox]> {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::Templates => &self.templates,
        }
    }

    fn get_mut(&mut self, kind: ListKind) -> &mut Arc<[CheckedBox]> {
        match kind {
            ListKind::Tools => &mut self.tools,
            ListKind::Prompts => &mut self.prompts,
            ListKind::Resources => &mut self.resources,
            ListKind::Templates => &mut self.templates,
        }
    }
}

fn header_map(headers: &std::collections::BTreeMap<String, crate::config::Resolved>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        // Validated at config load.
        if let (Ok(name), Ok(mut value)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.expose())) {
            value.set_sensitive(v.is_secret());
            map.insert(name, value);
        }
    }
    map
}

/// Whether a raw capabilities object declares `name`.
/// Whether `caps` has the capability at a dotted path (`logging`,
/// `tasks.requests.tools.call`), present and not null.
fn capability(caps: Checked<'_>, path: &str) -> bool {
    let mut at = caps;
    for name in path.split('.') {
        match at.get(name) {
            Some(v) => at = v,
            None => return false,
        }
    }
    !at.is_null()
}
