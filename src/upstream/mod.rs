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
mod client;
mod conn;
mod health;
mod http;
mod inbox;
mod legacy;
mod link;
mod lists;
mod server_requests;
mod sse;
mod status;
mod stdio;
mod supervise;

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
use self::conn::{Connection, Negotiated};
use self::inbox::{Event, Inbox};
use self::link::{Link, OpenError};
pub use self::lists::ListKind;
pub use self::server_requests::Responder;
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
    /// What it is and how it behaves: its identity (transport, OAuth,
    /// isolation) never changes; a reload may swap in new settings
    /// ([`Upstream::reconfigure`]).
    spec: ArcSwap<UpstreamSpec>,
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
    /// stdio: the child's last stderr line, shown in `/status` while down.
    last_stderr: stdio::LastLine,
    /// Found to speak 2026-07-28 (a handshake by `server/discover` worked):
    /// its next starts ask that first (`protocol = "auto"`).
    learned_modern: AtomicBool,
    /// The `ttlMs` its last lists said, by [`ListKind`] (`u64::MAX`: none
    /// said, a 2025 upstream's case).
    list_ttls: [std::sync::atomic::AtomicU64; 4],
    /// Set when a reload replaced or removed it.
    retired: AtomicBool,
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
        self.sibling(None, credential(&self.spec(), Some(principal), &self.metrics))
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
            (**self.spec()).clone(),
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
            retired: AtomicBool::new(false),
            crash_loop: AtomicBool::new(false),
            last_stderr: stdio::LastLine::default(),
            learned_modern: AtomicBool::new(false),
            list_ttls: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(u64::MAX)),
            breaker_moved: Notify::new(),
            notes,
            isolated,
            credential,
            spec: ArcSwap::from_pointee(spec),
        });
        tokio::spawn(this.clone().supervise());
        this
    }

    /// The upstream's id.
    pub fn id(&self) -> &str {
        &self.label
    }

    /// The id as a metric label.
    pub fn label(&self) -> Name {
        self.label.clone()
    }

    /// Its validated config, as in force now (a reload may change its
    /// settings in place): for a short read, never held across an
    /// `.await` ([`Upstream::spec_full`] for that).
    pub fn spec(&self) -> arc_swap::Guard<Arc<UpstreamSpec>> {
        self.spec.load()
    }

    /// [`Upstream::spec`], to keep.
    pub fn spec_full(&self) -> Arc<UpstreamSpec> {
        self.spec.load_full()
    }

    /// Puts `spec`'s settings in force in place (a reload changed only
    /// what needs no new connection: timeouts, retry, breaker thresholds,
    /// health, filters, `trusted`, idempotent globs, start-up timings): the
    /// connection, the breakers' state and the counters are kept. The
    /// caller has checked that the identity (transport, OAuth, isolation,
    /// the bulkhead's sizes, whether breakers are on) is the same.
    pub fn reconfigure(&self, spec: UpstreamSpec) {
        let breaker = spec.breaker.clone();
        // The spec first: a tool breaker made from now on takes the new
        // thresholds (it is made under the map's lock, from the spec in
        // force), and those made before are updated under that lock.
        self.spec.store(Arc::new(spec));
        if let Some(b) = &self.breaker {
            b.reconfigure(breaker.clone());
        }
        for b in self.tool_breakers.lock().unwrap_or_else(|e| e.into_inner()).values() {
            b.reconfigure(breaker.clone());
        }
        // The health loop picks up a new interval now.
        self.breaker_moved.notify_one();
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
        let id = self.id();
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
                upstream = %self.id(), from = t.from.as_str(), cause, opened_total = self.breaker_opened_total(),
                "{whose} opened after a {cause} failure: calls fail fast and the tools are hidden until a probe succeeds."
            ),
            BreakerState::HalfOpen => {
                tracing::info!(upstream = %self.id(), "{whose} half-open: probing.");
            }
            BreakerState::Closed => {
                tracing::info!(upstream = %self.id(), "{whose} closed: the tools are back.");
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

    fn error(&self, class: ErrorClass, what: impl std::fmt::Display) -> CallError {
        CallError::new(class, Some(self.id()), format!("upstream `{}` {what}", self.id()))
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

#[cfg(test)]
mod tests;
