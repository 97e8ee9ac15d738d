//! Routing: the gateway as an MCP server over many upstreams.
//!
//! [`Gateway`] owns the upstreams and the merged [`Catalog`], answers the
//! methods the gateway serves itself (`initialize`, `ping`, the four list
//! methods with its own cursor, `logging/setLevel`, subscriptions) and
//! routes the rest (`tools/call`, `prompts/get`, `resources/read`,
//! `completion/complete`) to the owning upstream with only the name or URI
//! rewritten. Transports (`downstream/`) register each client session as a
//! [`Peer`] and call [`Gateway::handle`] and [`Gateway::notify`];
//! notifications flow back through the peer's queue.
//!
//! Architecture Invariant: routing never holds a catalog snapshot or lock
//! across an upstream call; it clones what it needs first.

pub mod catalog;
pub mod peer;
pub mod tasks;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use self::catalog::Catalog;
pub use self::peer::Peer;
use self::peer::{CallRelay, LEVELS};
use crate::config::Config;
use crate::error::CallError;
use crate::protocol::{self, Checked, CheckedBox, Members, Message, encode};
use crate::security::DenyReason;
use crate::security::access::{Access, Grants, Kind};
use crate::security::auth::Principal;
use crate::security::rules::{Action, Call as RuleCall, History, RuleSet, Tags};
use crate::sync::Locked;
use crate::telemetry::audit::{self, Record};
use crate::telemetry::metrics::{
    DenialLabels, DurationLabels, MethodLabels, Name, Outcome, OutcomeLabels, RequestLabels, RuleLabels, UpstreamLabels,
};
use crate::telemetry::metrics::{class_label, method_label};
use crate::telemetry::{Span, Telemetry};
use crate::upstream::{Changes, Isolated, ListKind, Note, Relay, Request, State, Upstream};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// Who sent a request, and how: for metrics, traces and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// How the request came.
    pub transport: protocol::Transport,
    /// The downstream session id, when there is one.
    pub session: Option<&'a str>,
    /// The client's W3C `traceparent` header (HTTP).
    pub traceparent: Option<&'a str>,
    /// The session's peer (notifications, cancellation, subscriptions).
    pub peer: Option<&'a Arc<Peer>>,
    /// The request's own stream (an HTTP POST answered as SSE): messages
    /// about this call go there rather than to the session stream.
    pub stream: Option<&'a mpsc::Sender<String>>,
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
    /// What failed before the breaker opened (`breaker_open` after retries).
    cause: Option<crate::error::ErrorClass>,
    attempts: u32,
    /// `hmac-sha256:` of the arguments (tools/call, when audited).
    arguments_hmac: Option<String>,
    arguments: Option<Box<RawValue>>,
    /// The client cancelled the request.
    cancelled: bool,
    /// Policy decisions taken (`<reason>:<decision>`), for the audit log.
    policy: Vec<String>,
    /// The tool's tags under the sequence rules (audit log, replay).
    tags: Vec<String>,
}

/// The gateway: upstreams, catalog, and the MCP methods it serves.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    /// The HTTP client every upstream shares (also fetches JWKS).
    http: reqwest::Client,
    /// `[[access]]`, compiled.
    access: Access,
    /// The pin store (`[pinning]`).
    pins: Option<crate::security::pins::Pins>,
    /// Rate limits and result caps (`[limits]`).
    limits: crate::security::limits::Limits,
    /// Sequence rules and each tool's tags under them (`[rules]`).
    rules: arc_swap::ArcSwapOption<RulesState>,
    /// Call histories of principals (principal-scoped rules), bounded.
    principal_histories: Mutex<HashMap<Arc<str>, History>>,
    /// The grants of a request without a session.
    sessionless: Arc<Grants>,
    upstreams: Vec<Arc<Upstream>>,
    by_id: HashMap<String, usize>,
    catalog: ArcSwap<Catalog>,
    /// Counts catalog builds (what a peer's cached visibility is for).
    catalog_version: AtomicU64,
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
    /// Client sessions by peer id.
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    next_peer: AtomicU64,
    /// Resource subscriptions: (upstream, original URI) → peer ids. The
    /// upstream is subscribed once, while any session is.
    subscriptions: Mutex<HashMap<SubscriptionKey, HashSet<u64>>>,
    /// Per upstream, the URIs it has actually been told to watch. Each
    /// upstream's lock serialises its `resources/(un)subscribe`, so a last
    /// unsubscribe and a new subscribe cannot reach it in the wrong order.
    subscribed_upstream: Vec<tokio::sync::Mutex<HashSet<Arc<str>>>>,
    /// The log level last sent to upstreams (index in [`LEVELS`]).
    applied_level: Mutex<Option<usize>>,
    /// Which session owns which upstream task.
    tasks: tasks::Tasks,
    /// Connections of one principal's own (`per_principal` OAuth), by
    /// (upstream index, principal). Never held across an `.await`.
    principal_upstreams: Mutex<HashMap<PrincipalKey, Arc<Upstream>>>,
}

/// (upstream index, principal id): one connection of a principal's own.
type PrincipalKey = (usize, Arc<str>);

/// The gateway's own tool listing the secrets file's names (never values).
pub const LIST_SECRET_NAMES: &str = "gateway__list_secret_names";

/// Most principals whose call history is kept for principal-scoped rules.
const MAX_PRINCIPAL_HISTORIES: usize = 10_000;

/// Most characters of a requested name or URI an audit record keeps.
const AUDIT_NAME_MAX_CHARS: usize = 1024;

/// How long a `confirm` rule waits for the user.
const CONFIRM_WAIT: Duration = Duration::from_secs(120);

/// The rules in force and every tool's tags under them.
#[derive(Debug)]
struct RulesState {
    set: Arc<RuleSet>,
    tags: HashMap<String, Tags>,
}

/// How often the pin store is checked for approvals.
const PINS_POLL: Duration = Duration::from_secs(2);

const LIST_SECRET_NAMES_DEF: &str = r#"{"name":"gateway__list_secret_names","description":"Lists the names of the secrets the gateway holds for its upstreams (never their values), so you can tell which credentials are configured.","inputSchema":{"type":"object","properties":{}},"annotations":{"readOnlyHint":true,"openWorldHint":false}}"#;

/// A resource subscription upstream: (upstream index, original URI).
type SubscriptionKey = (usize, Arc<str>);

/// A client session registered with the gateway; unregistered (its
/// subscriptions dropped) when this is dropped.
#[derive(Debug)]
pub struct Client {
    gateway: Arc<Gateway>,
    /// The session's peer.
    pub peer: Arc<Peer>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.gateway.disconnect(&self.peer);
    }
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
        let (notes, notes_rx) = mpsc::channel(1024);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("the TLS backend initializes");
        let http_client = http.clone();
        let upstreams: Vec<_> = config
            .upstreams
            .iter()
            .map(|spec| {
                Upstream::start(
                    spec.clone(),
                    crate::upstream::Bounds { max_bytes: config.gateway.max_message_bytes, json: config.json_limits() },
                    config.redactor.clone(),
                    changed.clone(),
                    http.clone(),
                    telemetry.metrics.clone(),
                    notes.clone(),
                )
            })
            .collect();
        let by_id = upstreams.iter().enumerate().map(|(i, u)| (u.id().to_owned(), i)).collect();
        let subscribed_upstream = upstreams.iter().map(|_| tokio::sync::Mutex::default()).collect();
        let access = Access::new(&config.access);
        let sessionless = access.grants(&Principal::anonymous());
        let pins = config.pinning.file.as_deref().map(crate::security::pins::Pins::open);
        let limits = crate::security::limits::Limits::new(&config.limits);
        let rules = config.rules.file.as_deref().and_then(|path| match RuleSet::load(path) {
            Ok(set) => Some(Arc::new(RulesState { set: Arc::new(set), tags: HashMap::new() })),
            Err(e) => {
                // Fail closed would block every call; rules are tuned live,
                // so a bad file is loud, and fixed by a reload.
                tracing::error!(error = %e, "Sequence rules not loaded.");
                None
            }
        });
        let gw = Arc::new(Gateway {
            rules: arc_swap::ArcSwapOption::new(rules),
            principal_histories: Mutex::default(),
            limits,
            pins,
            access,
            sessionless,
            http: http_client,
            config,
            upstreams,
            by_id,
            catalog: ArcSwap::from_pointee(Catalog::empty()),
            catalog_version: AtomicU64::new(0),
            built: watch::Sender::new(0),
            changes: changed,
            startup_done: std::sync::atomic::AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            started: tokio::time::Instant::now(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            telemetry,
            no_label: Name::from(""),
            peers: Mutex::default(),
            next_peer: AtomicU64::new(1),
            subscriptions: Mutex::default(),
            subscribed_upstream,
            applied_level: Mutex::new(None),
            tasks: tasks::Tasks::default(),
            principal_upstreams: Mutex::default(),
        });
        tokio::spawn(gw.clone().catalog_loop());
        tokio::spawn(gw.clone().watch_pins());
        tokio::spawn(gw.clone().watch_rules());
        tokio::spawn(gw.clone().notes_loop(notes_rx));
        gw
    }

    /// Rebuilds the catalog whenever an upstream's state or lists change,
    /// and sends every session `list_changed` for each list it would see
    /// differently.
    async fn catalog_loop(self: Arc<Self>) {
        // Each upstream's connection last seen ready: a new connection has
        // to be told the subscriptions and log level again.
        let mut connections: Vec<u64> = vec![0; self.upstreams.len()];
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
                        lists: &r.lists,
                        hidden: u.tools_hidden(),
                        hidden_tools,
                    }),
                    _ => None,
                })
                .collect();
            let namespaces: Vec<&str> = self.upstreams.iter().map(|u| u.id()).collect();
            let mut next = Catalog::build(&sources, self.config.gateway.max_tool_name_length, &namespaces);
            self.apply_pins(&mut next);
            let before = self.catalog.load_full();
            let changed = next.changed_lists(&before);
            let outcome = if changed.is_empty() { "unchanged" } else { "changed" };
            self.telemetry.metrics.catalog_refreshes.get_or_create(&Outcome { outcome }).inc();
            // Routing data (hints, hidden flags) may differ even when the
            // lists clients see do not.
            let next = Arc::new(next);
            self.catalog.store(next.clone());
            self.catalog_version.fetch_add(1, Ordering::Release);
            self.retag();
            if !changed.is_empty() {
                let kinds: Vec<&str> = changed.iter().map(|k| k.key()).collect();
                tracing::info!(lists = %kinds.join(","), "Catalog changed.");
                self.announce(&before, &next, &changed);
            }
            self.built.send_replace(generation);
            for (i, (state, _)) in states.iter().enumerate() {
                if let State::Ready(r) = &**state
                    && r.connection != connections[i]
                {
                    // The first connection too: a log level or subscription
                    // may have come while the upstream was still starting.
                    tokio::spawn(self.clone().restore(i));
                    connections[i] = r.connection;
                }
            }
        }
    }

    /// Checks the new catalog against the pin store: first-seen tools are
    /// pinned, changed ones quarantined (counted, logged, audited).
    fn apply_pins(&self, next: &mut Catalog) {
        let Some(pins) = &self.pins else { return };
        pins.reload_if_changed();
        let tools = next.tools().iter().map(|t| (&*t.key, &*t.name, self.upstreams[t.upstream].id(), t.def.raw()));
        let review = pins.review(tools);
        let hide = self.config.pinning.on_change == crate::config::QuarantineMode::Hide;
        next.quarantine(&review.quarantined, hide);
        self.telemetry.metrics.tools_quarantined.set(review.quarantined.len() as i64);
        if review.newly_pinned > 0 {
            tracing::info!(tools = review.newly_pinned, "Pinned tool definitions seen for the first time.");
        }
        for (upstream, name) in review.newly_changed {
            tracing::warn!(
                upstream = %upstream,
                tool = %name,
                "A tool's definition changed since it was pinned: quarantined until `mcp-gateway tools approve`."
            );
            if let Some(log) = &self.telemetry.audit {
                let now = tokio::time::Instant::now();
                log.record(Record {
                    time: audit::time_of(now),
                    session: None,
                    principal: None,
                    transport: protocol::Transport::Gateway.as_str(),
                    method: "gateway/tool_changed".to_owned(),
                    name: Some(name),
                    upstream: Some(Arc::from(upstream.as_str())),
                    tool: None,
                    arguments_hmac: None,
                    arguments: None,
                    class: "policy",
                    cause: None,
                    is_error: false,
                    latency_ms: 0.0,
                    attempts: 0,
                    trace_id: None,
                    policy: vec!["pin:quarantined".to_owned()],
                    tags: Vec::new(),
                });
            }
        }
    }

    /// Computes every tool's tags under the current rules (once per
    /// catalog or rules change, so a call pays no glob match).
    /// Tags always go with the rule set of the moment: the catalog task
    /// and a rules reload may both retag, and a compare-and-swap keeps the
    /// first from putting back the rule set the second replaced.
    fn retag(&self) {
        let catalog = self.catalog.load();
        self.rules.rcu(|current| {
            let state = current.as_ref()?;
            let tags = catalog
                .tools()
                .iter()
                .map(|t| {
                    let u = &self.upstreams[t.upstream];
                    // Only a trusted upstream's annotations count: an
                    // untrusted one could call a destructive tool read-only
                    // to slip past a rule. Untrusted tools get the spec's
                    // defaults.
                    let annotations = t.def.checked().get("annotations").filter(|_| u.spec().trusted);
                    (t.key.clone(), state.set.tags_for(t.ident(), u.id(), annotations.map(Checked::raw)))
                })
                .collect();
            Some(Arc::new(RulesState { set: state.set.clone(), tags }))
        });
    }

    /// Reloads the rules file when it changes; a bad new file is refused
    /// and the rules in force stay.
    async fn watch_rules(self: Arc<Self>) {
        let Some(path) = self.config.rules.file.clone() else { return };
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen = modified(&path);
        let mut tick = tokio::time::interval(self.config.rules.reload_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match RuleSet::load(&path) {
                Ok(set) => {
                    tracing::info!(rules = set.rules().len(), "Sequence rules reloaded.");
                    self.rules.store(Some(Arc::new(RulesState { set: Arc::new(set), tags: HashMap::new() })));
                    self.retag();
                }
                Err(e) => tracing::error!(error = %e, "The changed rules file is refused; the rules in force stay."),
            }
        }
    }

    /// Applies the sequence rules to a call about to be forwarded: counts
    /// and audits every hit, refuses on `block` (and on `confirm`, which
    /// asks the user when the client can be asked), and records a call that
    /// goes ahead in the session's and the principal's histories.
    async fn apply_rules(
        &self,
        tool: crate::security::Ident<'_>,
        upstream: usize,
        arguments: Option<&RawValue>,
        caller: &Caller<'_>,
        out: &mut Outcomes,
    ) -> Result<(), CallError> {
        let Some(state) = self.rules.load_full() else { return Ok(()) };
        let set = &state.set;
        let fallback;
        let tags = match state.tags.get(tool.key) {
            Some(t) => t,
            None => {
                fallback = set.tags_for(tool, self.upstreams[upstream].id(), None);
                &fallback
            }
        };
        let name = tool.key;
        if self.telemetry.audit.is_some() {
            out.tags = tags.names().map(str::to_owned).collect();
        }
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let call = RuleCall { tool, tags, arguments, at_ms };
        // Anonymous clients share one id; their principal-scoped rules look
        // at the session instead of joining unrelated clients' calls.
        let principal = caller
            .peer
            .filter(|p| p.principal.via != crate::security::auth::Via::Anonymous)
            .map(|p| p.principal.identity.clone());
        let eval = {
            let empty = History::default();
            let session = caller.peer.map(|p| p.lock_history());
            let principals = self.principal_histories.locked();
            let p = principal.as_ref().and_then(|id| principals.get(id));
            set.evaluate(&call, session.as_deref().unwrap_or(&empty), p)
        };
        for hit in eval.hits() {
            let rule = set.rule(hit.rule);
            let labels = RuleLabels { rule: Arc::from(rule.id()), action: hit.action.as_str() };
            self.telemetry.metrics.rule_hits.get_or_create(&labels).inc();
            out.policy.push(format!("rule:{}:{}", rule.id(), hit.action.as_str()));
            match hit.action {
                Action::Shadow => tracing::debug!(rule = rule.id(), tool = name, "Sequence rule hit (shadow)."),
                _ => tracing::warn!(rule = rule.id(), action = hit.action.as_str(), tool = name, "Sequence rule hit."),
            }
        }
        if let Some(hit) = eval.strongest().filter(|h| h.action.stops_call()) {
            let rule = set.rule(hit.rule);
            let allowed = hit.action == Action::Confirm && self.confirm(caller, name, rule.message()).await;
            if !allowed {
                let msg = format!("Refused by rule `{}`: {}", rule.id(), rule.message());
                let err = CallError::new(crate::error::ErrorClass::Policy, None, msg);
                return Err(self.deny(caller, upstream, None, DenyReason::Rule, out, err));
            }
            out.policy.push(format!("rule:{}:confirmed", rule.id()));
        }
        if let Some(p) = caller.peer {
            set.record(&mut p.lock_history(), &eval);
        }
        if let Some(id) = principal {
            let mut principals = self.principal_histories.locked();
            if principals.len() >= MAX_PRINCIPAL_HISTORIES && !principals.contains_key(&id) {
                // Bounded: forget one (its sequences in progress) to make room.
                if let Some(k) = principals.keys().next().cloned() {
                    principals.remove(&k);
                }
            }
            set.record(principals.entry(id).or_insert_with(|| set.new_history()), &eval);
        }
        Ok(())
    }

    /// Asks the user to allow a call a `confirm` rule stopped, through
    /// elicitation; false when the client cannot be asked, declines, or does
    /// not answer in time.
    async fn confirm(&self, caller: &Caller<'_>, tool: &str, message: &str) -> bool {
        let Some(peer) = caller.peer else { return false };
        let params = serde_json::json!({
            "message": format!("{message}\n\nAllow the call to {tool}?"),
            "requestedSchema": {
                "type": "object",
                "properties": { "allow": { "type": "boolean", "title": "Allow this call" } },
                "required": ["allow"],
            },
        });
        let params = CheckedBox::from_value(&params);
        if !peer.supports("elicitation/create", Some(params.checked())) {
            return false;
        }
        let Some(answer) = peer.ask("elicitation/create", params.raw(), caller.stream) else { return false };
        let Ok(Ok(reply)) = tokio::time::timeout(CONFIRM_WAIT, answer).await else { return false };
        let result = reply.and_then(|r| r.checked().value());
        result.is_some_and(|r| r["action"] == "accept" && r["content"]["allow"] == true)
    }

    /// Watches the pin store for approvals (`mcp-gateway tools approve`
    /// rewrites it) and rebuilds the catalog when it changes.
    async fn watch_pins(self: Arc<Self>) {
        let Some(pins) = &self.pins else { return };
        let mut tick = tokio::time::interval(PINS_POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            if pins.reload_if_changed() {
                tracing::info!("The pin store changed; reviewing the catalog again.");
                self.changes.bump();
            }
        }
    }

    /// Tells an upstream that just became ready what its previous
    /// connection knew: the subscriptions and the log level.
    async fn restore(self: Arc<Self>, i: usize) {
        {
            // A new connection watches nothing yet.
            let mut actual = self.subscribed_upstream[i].lock().await;
            actual.clear();
        }
        let uris: Vec<Arc<str>> = {
            let subs = self.subscriptions.locked();
            subs.keys().filter(|(u, _)| *u == i).map(|(_, uri)| uri.clone()).collect()
        };
        for uri in uris {
            if let Err(e) = self.sync_subscription(i, &uri).await {
                tracing::warn!(upstream = %self.upstreams[i].id(), error = %e.message, "Could not renew a resource subscription.");
            }
        }
        let level = *self.applied_level.locked();
        if let Some(level) = level {
            self.set_upstream_level(i, level).await;
        }
    }

    /// Sends each session `list_changed` for the lists that changed as it
    /// sees them: a session from which `[[access]]` hides an upstream is
    /// not told when that upstream's tools come, go or change (it would
    /// learn the upstream exists and when it restarts).
    fn announce(&self, before: &Catalog, after: &Catalog, changed: &[ListKind]) {
        for p in self.peers() {
            for &kind in changed {
                let tells = p.grants.is_open() || {
                    let what = kind_of(kind);
                    let visible = |ident: crate::security::Ident<'_>| p.grants.allows(what, ident);
                    let seen = |c: &Catalog| {
                        let mut h = c.visible_fingerprint(kind, &visible);
                        if kind == ListKind::Resources {
                            h ^= c.visible_fingerprint(ListKind::Templates, &visible).rotate_left(1);
                        }
                        h
                    };
                    seen(before) != seen(after)
                };
                if tells {
                    let method = kind.changed_notification();
                    p.send(&self.no_label, method, encode::notification(method, None));
                }
            }
        }
    }

    /// Whether `peer` may hear what upstream `i` says about no call (its
    /// log messages): it sees at least one of its tools, prompts or
    /// resources. Cached per catalog.
    fn hears(&self, peer: &Peer, i: usize) -> bool {
        if peer.grants.is_open() {
            return true;
        }
        let key = self.catalog_version.load(Ordering::Acquire);
        let catalog = self.catalog.load();
        let mut cache = peer.lock_hears();
        if cache.as_ref().is_none_or(|(k, _)| *k != key) {
            let sees: Vec<bool> = (0..self.upstreams.len())
                .map(|u| catalog.shows_upstream(u, &|kind, ident| peer.grants.allows(kind_of(kind), ident)))
                .collect();
            *cache = Some((key, sees.into()));
        }
        cache.as_ref().is_some_and(|(_, sees)| sees.get(i).copied().unwrap_or(false))
    }

    fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers.locked().values().cloned().collect()
    }

    /// Routes notifications from upstreams that concern no single call.
    async fn notes_loop(self: Arc<Self>, mut notes: mpsc::Receiver<Note>) {
        loop {
            let note = tokio::select! {
                n = notes.recv() => match n {
                    Some(n) => n,
                    None => return,
                },
                () = self.shutdown.cancelled() => return,
            };
            let Some(&i) = self.by_id.get(&*note.upstream) else { continue };
            match note.msg.method() {
                "notifications/resources/updated" => self.resource_updated(i, &note),
                "notifications/tasks/status" => self.task_status(&note),
                "notifications/cancelled" => {
                    // The upstream withdrew a request it sent us: the
                    // client it was relayed to is told, under its own id.
                    let (id, reason) = peer::cancelled_params(note.msg.params());
                    // A per-session upstream's requests come over the
                    // sessions' own connections (and their relays).
                    let per_session = self.upstreams[i].spec().isolation == crate::config::Isolation::PerSession;
                    let Some(id) = id.filter(|_| !per_session) else { continue };
                    let told = self.peers().iter().any(|p| p.cancel_relayed(&note.upstream, id.text(), reason));
                    if !told {
                        tracing::debug!(upstream = %note.upstream, "Upstream cancelled a request no client has.");
                    }
                }
                "notifications/message" => {
                    let params = note.msg.params();
                    let Some(level) = peer::message_level(params) else { continue };
                    let body = encode::notification(
                        "notifications/message",
                        peer::with_logger(params, &note.upstream).as_ref().map(CheckedBox::raw),
                    );
                    // Not about any call: only sessions that asked for logs
                    // and may see something of the upstream get it.
                    for p in
                        self.peers().iter().filter(|p| p.level().is_some_and(|min| level >= min) && self.hears(p, i))
                    {
                        p.send(&note.upstream, "notifications/message", body.clone());
                    }
                }
                other => {
                    tracing::debug!(upstream = %note.upstream, method = %other, "Upstream notification not relayed.")
                }
            }
        }
    }

    /// `notifications/tasks/status` that came outside the creating call
    /// (a stdio pipe, a GET stream): to the session that owns the task. One
    /// that arrives before the task is known (some servers send it ahead of
    /// the `CreateTaskResult`) has no owner yet and is dropped; clients
    /// poll with `tasks/get` anyway.
    fn task_status(&self, note: &Note) {
        let Some(params) = note.msg.params() else { return };
        let Some(original) = params.get("taskId").and_then(Checked::str) else { return };
        let owner = self
            .tasks
            .owner(&tasks::expose(&note.upstream, &original))
            .and_then(|p| self.peers.locked().get(&p).cloned());
        let Some(peer) = owner else {
            tracing::debug!(upstream = %note.upstream, "Task status for a task no session owns (yet); dropped.");
            return;
        };
        if let Some(exposed) = tasks::expose_task(params, &note.upstream) {
            let body = encode::notification("notifications/tasks/status", Some(exposed.raw()));
            peer.send(&note.upstream, "notifications/tasks/status", body);
        }
    }

    /// `notifications/resources/updated`: to the sessions subscribed to
    /// the URI, with the URI they know.
    fn resource_updated(&self, i: usize, note: &Note) {
        let params = note.msg.params();
        let Some(uri) = params.and_then(|p| p.get("uri")).and_then(Checked::str) else {
            return;
        };
        let peers: Vec<u64> = {
            let subs = self.subscriptions.locked();
            subs.get(&(i, Arc::from(&*uri))).map(|s| s.iter().copied().collect()).unwrap_or_default()
        };
        if peers.is_empty() {
            return;
        }
        let exposed = self.expose_uri(i, &uri);
        let params = peer::rewrite(params, |o| o.set_str("uri", &exposed));
        let body = encode::notification("notifications/resources/updated", params.as_ref().map(CheckedBox::raw));
        let subscribed: Vec<Arc<Peer>> = {
            let all = self.peers.locked();
            peers.iter().filter_map(|id| all.get(id).cloned()).collect()
        };
        for p in subscribed {
            p.send(&note.upstream, "notifications/resources/updated", body.clone());
        }
    }

    /// The URI clients know an upstream's `uri` by.
    fn expose_uri(&self, i: usize, uri: &str) -> String {
        let u = &self.upstreams[i];
        match u.spec().prefix {
            true => catalog::namespace_uri(u.id(), uri).unwrap_or_else(|| uri.to_owned()),
            false => uri.to_owned(),
        }
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
        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let caps = init.and_then(|p| p.get("capabilities"));
        let grants = self.access.grants(&principal);
        let metrics = self.telemetry.metrics.clone();
        let redactor = self.config.redactor.clone();
        let peer = Arc::new(Peer::new(id, out, caps, metrics, principal, grants, redactor));
        self.peers.locked().insert(id, peer.clone());
        Client { gateway: self.clone(), peer }
    }

    /// Forgets a session: its subscriptions end (the upstream's too, when
    /// it was the last subscriber) and its log level stops counting.
    fn disconnect(self: &Arc<Self>, peer: &Peer) {
        self.peers.locked().remove(&peer.id);
        peer.fail_pending();
        self.tasks.forget_session(peer.id);
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
        let last = self.unsubscribe_keys(peer.id, keys);
        let had_level = peer.level().is_some();
        if self.shutdown.is_cancelled() || (last.is_empty() && !had_level) {
            return;
        }
        let gw = self.clone();
        tokio::spawn(async move {
            for (i, uri) in last {
                let _ = gw.sync_subscription(i, &uri).await;
            }
            if had_level {
                gw.apply_levels().await;
            }
        });
    }

    /// Removes a peer from subscriptions; returns those it was the last of.
    fn unsubscribe_keys(&self, peer: u64, keys: Vec<(usize, Arc<str>)>) -> Vec<(usize, Arc<str>)> {
        let mut subs = self.subscriptions.locked();
        let mut last = Vec::new();
        for key in keys {
            if let Some(set) = subs.get_mut(&key) {
                set.remove(&peer);
                if set.is_empty() {
                    subs.remove(&key);
                    last.push(key);
                }
            }
        }
        last
    }

    /// Parses one message from a client and scans it (docs/design.md D12): a
    /// message that is not JSON-RPC, or that parsers would read
    /// differently, is refused here, before routing, policy, audit or
    /// forwarding see it; each refusal is counted (`transport`: `http` or
    /// `stdio`) and an ambiguous one logged.
    pub fn parse(&self, transport: protocol::Transport, bytes: &[u8]) -> Result<Message, protocol::ParseError> {
        let refused = match Message::parse(bytes, &self.config.json_limits()) {
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
        self.telemetry.metrics.client_messages_refused.get_or_create(&labels).inc();
    }

    /// The HTTP client (connection pool) the gateway shares.
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// Answers `initialize`: echo the client's revision when supported,
    /// otherwise offer the latest. Returns the reply and the revision, or
    /// the error reply when the client's `capabilities` are larger than
    /// `max_client_capabilities_bytes` (the session would keep them): then
    /// no session may be made.
    pub fn initialize(
        &self,
        transport: protocol::Transport,
        id: &RawValue,
        params: Option<Checked<'_>>,
        principal: &Principal,
    ) -> Result<(String, String), String> {
        let cap = self.config.gateway.max_client_capabilities_bytes;
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
            return Err(encode::error(Some(id), protocol::INVALID_PARAMS, &msg, None));
        }
        let asked = params.and_then(|p| p.get("protocolVersion")).and_then(Checked::str).map(|v| v.into_owned());
        let version = match asked {
            Some(v) if protocol::is_supported_version(&v) => v,
            _ => protocol::LATEST_VERSION.to_owned(),
        };
        // Which servers are behind the gateway is for one whom nothing is
        // hidden; the others learn them from the names they may see.
        let ids: Vec<&str> = match self.access.grants(principal).is_open() {
            true => self.upstreams.iter().map(|u| u.id()).collect(),
            false => Vec::new(),
        };
        let result = serde_json::json!({
            "protocolVersion": version,
            // What the gateway itself serves; list_changed is real: it
            // follows upstream changes, restarts and outages.
            "capabilities": {
                "tools": { "listChanged": true },
                "prompts": { "listChanged": true },
                "resources": { "subscribe": true, "listChanged": true },
                "logging": {},
                "completions": {},
                // Served for upstreams that declare them; tasks are bound
                // to the session that created them (see routing/tasks.rs).
                "tasks": { "list": {}, "cancel": {}, "requests": { "tools": { "call": {} } } },
            },
            "serverInfo": { "name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION") },
            "instructions": match ids.is_empty() {
                true => "Tools of several MCP servers are exposed as <server>__<tool>.".to_owned(),
                false => format!("Tools of several MCP servers ({}) are exposed as <server>__<tool>.", ids.join(", ")),
            },
        });
        let result = serde_json::value::to_raw_value(&result).expect("json! always serializes");
        Ok((encode::result(id, &result), version))
    }

    /// Handles one request (not `initialize`) and returns the reply, or
    /// `None` when the client cancelled it (`notifications/cancelled`):
    /// the spec says a cancelled request gets no reply.
    pub async fn handle(&self, msg: &protocol::Request, caller: &Caller<'_>) -> Option<String> {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _in_flight = InFlight(&self.in_flight);
        let started = tokio::time::Instant::now();
        let id = msg.id();
        let span = self.server_span(msg, caller);
        let mut out = Outcomes::default();
        let call = match caller.peer.map(|p| p.start_call(id)) {
            Some(None) => {
                let e = CallError::protocol(
                    protocol::INVALID_REQUEST,
                    format!("Request id {} is already in flight", protocol::echo(id.get())),
                );
                out.class = Some(e.class);
                span.outcome(Some(e.class), || e.message.clone());
                let reply = e.to_response(id);
                self.record(msg, caller, &span, out, started, reply.len());
                span.end();
                return Some(reply);
            }
            Some(Some(c)) => Some(c),
            None => None,
        };
        let dispatch = self.dispatch(msg, caller, &span, &mut out);
        let result = match &call {
            Some(c) => tokio::select! {
                r = dispatch => Some(r),
                // Dropping the dispatch drops the upstream call, which
                // sends its own notifications/cancelled upstream.
                () = c.token.cancelled() => None,
            },
            None => Some(dispatch.await),
        };
        drop(call);
        let reply = match result {
            Some(Ok(reply)) => Some(reply),
            Some(Err(e)) => {
                tracing::debug!(method = %protocol::echo(msg.method()), class = %e.class, "Request failed: {}.", e.message);
                // A refusal hidden as "unknown" stays `policy` for metrics
                // and audit; everything else is what the client is told.
                if out.class != Some(crate::error::ErrorClass::Policy) {
                    out.class = Some(e.class);
                }
                if let Some(reason) = e.refused {
                    out.policy.push(format!("reply_refused:{reason}"));
                }
                out.cause = e.cause;
                span.outcome(Some(e.class), || e.message.clone());
                Some(e.to_response(id))
            }
            None => {
                tracing::debug!(method = %protocol::echo(msg.method()), "Request cancelled by the client.");
                out.cancelled = true;
                span.set(|| KeyValue::new("error.type", "cancelled"));
                None
            }
        };
        if let Some(class) = out.class.filter(|_| span.is_on()) {
            span.set(|| KeyValue::new("error.type", class.as_str()));
        }
        let reply = reply.map(|r| self.mask(r, &mut out));
        self.record(msg, caller, &span, out, started, reply.as_ref().map_or(0, String::len));
        span.end();
        reply
    }

    /// Masks secret values (the secrets file's) in a reply to the client:
    /// results, errors and lists alike, whatever the upstream put there.
    fn mask(&self, reply: String, out: &mut Outcomes) -> String {
        let redactor = &self.config.redactor;
        if redactor.is_empty() {
            return reply;
        }
        let (masked, n) = redactor.redact_counted(&reply);
        let masked = match masked {
            std::borrow::Cow::Borrowed(_) => return reply,
            std::borrow::Cow::Owned(m) => m,
        };
        let upstream = out.upstream.clone().unwrap_or_else(|| self.no_label.clone());
        self.telemetry
            .metrics
            .secrets_masked
            .get_or_create(&UpstreamLabels { upstream: upstream.clone() })
            .inc_by(n as u64);
        tracing::warn!(upstream = %upstream, masked = n, "Masked secret values in a reply.");
        out.policy.push(format!("secrets:masked:{n}"));
        masked
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

    /// The span of a client request: a child of the client's trace context
    /// (the `traceparent` header, else `params._meta.traceparent`).
    fn server_span(&self, msg: &Message, caller: &Caller<'_>) -> Span {
        let tracer = &self.telemetry.tracer;
        if !tracer.enabled() {
            return Span::NONE;
        }
        // Names a client made up are cut short, like in error messages.
        let method = protocol::echo(msg.method());
        let params = msg.params().and_then(Checked::object);
        let tool = params.as_ref().filter(|_| method == "tools/call").and_then(|p| p.str("name"));
        let tool = tool.as_deref().map(protocol::echo);
        let from_meta =
            || params.as_ref()?.get("_meta")?.get(crate::telemetry::trace::TRACEPARENT)?.str().map(|t| t.into_owned());
        let traceparent = caller.traceparent.map(str::to_owned).or_else(from_meta);
        let name = match &tool {
            Some(t) => format!("{method} {t}"),
            None => method.clone().into_owned(),
        };
        let mut attrs = vec![
            KeyValue::new("mcp.method.name", method.into_owned()),
            KeyValue::new("network.transport", caller.transport.network()),
        ];
        if let Some(id) = &msg.id {
            attrs.push(KeyValue::new("jsonrpc.request.id", id.get().trim_matches('"').to_owned()));
        }
        if let Some(s) = caller.session {
            attrs.push(KeyValue::new("mcp.session.id", session_digest(s)));
        }
        if let Some(t) = tool {
            attrs.push(KeyValue::new("gen_ai.tool.name", t.into_owned()));
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
        let class = if out.cancelled { "cancelled" } else { class_label(out.class) };
        m.requests
            .get_or_create(&RequestLabels { upstream: upstream.clone(), method, tool: tool.clone(), class })
            .inc();
        m.request_duration
            .get_or_create(&DurationLabels { upstream: upstream.clone(), method, tool })
            .observe(elapsed.as_secs_f64());
        let sizes = MethodLabels { upstream, method };
        m.request_bytes.get_or_create(&sizes).observe(msg.params().map_or(0, |p| p.text().len()) as f64);
        m.response_bytes.get_or_create(&sizes).observe(reply_bytes as f64);
        let Some(log) = &self.telemetry.audit else { return };
        // What can read or change data is audited; lists and pings would
        // drown the log.
        if !matches!(method, "tools/call" | "prompts/get" | "resources/read") {
            return;
        }
        log.record(Record {
            time: audit::time_of(started),
            session: caller.session.map(session_digest),
            principal: caller.peer.map(|p| p.principal.identity.to_string()),
            transport: caller.transport.as_str(),
            method: msg.method().to_owned(),
            // What the client asked for, bounded: a URI can be megabytes.
            name: out.name.map(|n| protocol::cut(&n, AUDIT_NAME_MAX_CHARS).into_owned()),
            upstream: out.upstream,
            tool: out.tool,
            arguments_hmac: out.arguments_hmac,
            arguments: out.arguments,
            class,
            cause: out.cause.map(crate::error::ErrorClass::as_str),
            is_error: out.class == Some(crate::error::ErrorClass::ToolError),
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            attempts: out.attempts,
            trace_id: span.trace_id(),
            policy: out.policy,
            tags: out.tags,
        });
    }

    async fn dispatch(
        &self,
        msg: &protocol::Request,
        caller: &Caller<'_>,
        span: &Span,
        out: &mut Outcomes,
    ) -> Result<String, CallError> {
        let id = msg.id();
        let params = msg.params();
        match msg.method() {
            "ping" => Ok(encode::result(id, &empty())),
            "tools/list" => self.list(id, ListKind::Tools, params, caller).await,
            "prompts/list" => self.list(id, ListKind::Prompts, params, caller).await,
            "resources/list" => self.list(id, ListKind::Resources, params, caller).await,
            "resources/templates/list" => self.list(id, ListKind::Templates, params, caller).await,
            "tools/call" => self.call_tool(id, params, caller, span, out).await,
            "prompts/get" => {
                let (mut obj, name) = named_params(params, "name")?;
                let (upstream, original) = {
                    let catalog = self.catalog.load();
                    let p = catalog.prompt(&name).ok_or_else(|| self.unknown("prompt", &name, caller))?;
                    let unknown = || self.unknown("prompt", &name, caller);
                    self.permit(caller, Kind::Prompt, &name, p.ident(), p.upstream, out, unknown)?;
                    (p.upstream, p.original.clone())
                };
                out.name = Some(name);
                obj.set_str("name", &original);
                self.forward(id, "prompts/get", upstream, obj, caller, span, out).await
            }
            "resources/read" => {
                let (mut obj, uri) = named_params(params, "uri")?;
                let (upstream, original) = self.resource_owner(&uri)?;
                let exposed = self.exposed_uri(upstream, &original);
                let ident = crate::security::Ident::plain(&exposed);
                self.permit(caller, Kind::Resource, &exposed, ident, upstream, out, || self.unknown_resource(&uri))?;
                out.name = Some(uri);
                obj.set_str("uri", &original);
                let reply = self.forward_raw("resources/read", upstream, obj, caller, span, out, None).await?;
                Ok(self.reply_with(id, upstream, &reply, |i, r| self.expose_contents(i, r).map(CheckedBox::into_raw)))
            }
            "resources/subscribe" => self.subscribe(id, params, caller).await,
            "resources/unsubscribe" => self.unsubscribe(id, params, caller).await,
            "completion/complete" => self.complete(id, params, caller, span, out).await,
            "logging/setLevel" => self.set_level(id, params, caller).await,
            "tasks/get" => self.task_request(id, "tasks/get", params, caller, span, out).await,
            "tasks/result" => self.task_request(id, "tasks/result", params, caller, span, out).await,
            "tasks/cancel" => self.task_request(id, "tasks/cancel", params, caller, span, out).await,
            "tasks/list" => self.list_tasks(id, params, caller).await,
            // 2026-07-28 probe: -32601 makes modern clients fall back to
            // `initialize` (docs/design.md D2).
            other => Err(CallError::protocol(
                protocol::METHOD_NOT_FOUND,
                format!("Method not found: {}", protocol::echo(other)),
            )),
        }
    }

    /// One page of a merged list, after the start-up wait.
    async fn list(
        &self,
        id: &RawValue,
        kind: ListKind,
        params: Option<Checked<'_>>,
        caller: &Caller<'_>,
    ) -> Result<String, CallError> {
        let cursor = cursor_param(params)?;
        self.wait_for_first_start().await;
        let grants = self.grants(caller);
        let what = kind_of(kind);
        let catalog = self.catalog.load();
        let size = self.config.gateway.page_size;
        let page = if grants.is_open() {
            catalog.page(kind, cursor.as_deref(), size)
        } else {
            catalog.page_visible(kind, cursor.as_deref(), size, &|ident| grants.allows(what, ident))
        };
        let mut page = page.map_err(|e| CallError::protocol(protocol::INVALID_PARAMS, e.to_string()))?;
        if kind == ListKind::Tools && cursor.is_none() && self.builtin_listed(caller) {
            // The gateway's own tool leads the first page.
            let at = "{\"tools\":[".len();
            let sep = if page[at..].starts_with(']') { "" } else { "," };
            page.insert_str(at, &format!("{LIST_SECRET_NAMES_DEF}{sep}"));
        }
        let page = RawValue::from_string(page).expect("the catalog renders valid JSON");
        Ok(encode::result(id, &page))
    }

    /// Routes a resource URI: a namespaced one to its upstream; a bare one
    /// to the upstream that lists it, or whose template matches it, or to
    /// the only unprefixed upstream serving resources. Never guesses among
    /// several.
    fn resource_owner(&self, uri: &str) -> Result<(usize, String), CallError> {
        if let Some((ns, original)) = catalog::split_uri(uri)
            && let Some(&i) = self.by_id.get(ns)
            && self.upstreams[i].spec().prefix
        {
            // Not checked for readiness here: access first, so a hidden
            // upstream's outage tells nothing (the call says it, if allowed).
            return Ok((i, original));
        }
        let catalog = self.catalog.load();
        if let Some(r) = catalog.resource(uri) {
            return Ok((r.upstream, r.original.to_string()));
        }
        let unprefixed = |i: usize| !self.upstreams[i].spec().prefix;
        if let Some(i) = catalog.template(uri).map(|t| t.upstream).or_else(|| catalog.template_owner(uri, unprefixed)) {
            return Ok((i, uri.to_owned()));
        }
        let serving: Vec<usize> = (0..self.upstreams.len())
            .filter(|&i| {
                unprefixed(i) && matches!(&*self.upstreams[i].state(), State::Ready(r) if r.has_capability("resources"))
            })
            .collect();
        if let [only] = serving[..] {
            return Ok((only, uri.to_owned()));
        }
        Err(self.unknown_resource(uri))
    }

    /// The upstream must be serving (else the error says why).
    fn ready(&self, i: usize) -> Result<(), CallError> {
        let state = self.upstreams[i].state();
        match *state {
            State::Ready(_) => Ok(()),
            _ => Err(self.upstreams[i].unavailable(&state)),
        }
    }

    /// `resources/read` contents carry the URI the client knows.
    fn expose_contents(&self, i: usize, reply: &Message) -> Option<CheckedBox> {
        if !self.upstreams[i].spec().prefix {
            return None;
        }
        let mut obj = reply.result()?.object()?;
        let contents: Vec<CheckedBox> = obj
            .get("contents")?
            .items()?
            .into_iter()
            .map(|c| {
                let renamed = c.object().and_then(|mut o| {
                    let uri = o.str("uri")?;
                    o.set_str("uri", &self.expose_uri(i, &uri));
                    Some(o.to_checked())
                });
                renamed.unwrap_or_else(|| c.to_box())
            })
            .collect();
        let mut list = String::from("[");
        for (n, c) in contents.iter().enumerate() {
            if n > 0 {
                list.push(',');
            }
            list.push_str(c.text());
        }
        list.push(']');
        obj.set("contents", CheckedBox::parse(&list, &self.config.json_limits())?);
        Some(obj.to_checked())
    }

    /// `completion/complete`, routed by its reference: a prompt by name, a
    /// resource template (or resource) by URI.
    async fn complete(
        &self,
        id: &RawValue,
        params: Option<Checked<'_>>,
        caller: &Caller<'_>,
        span: &Span,
        out: &mut Outcomes,
    ) -> Result<String, CallError> {
        let invalid = |m: &str| CallError::protocol(protocol::INVALID_PARAMS, m);
        let mut obj = params
            .ok_or_else(|| invalid("completion/complete needs params"))?
            .object()
            .ok_or_else(|| invalid("params must be an object"))?;
        let reference = {
            let mut reference = obj
                .get("ref")
                .and_then(Checked::object)
                .ok_or_else(|| invalid("completion/complete needs an object `ref`"))?;
            let (field, original) = match reference.str("type").as_deref() {
                Some("ref/prompt") => {
                    let name = reference.str("name").ok_or_else(|| invalid("ref/prompt needs a string `name`"))?;
                    let catalog = self.catalog.load();
                    let p = catalog.prompt(&name).ok_or_else(|| self.unknown("prompt", &name, caller))?;
                    self.permit(caller, Kind::Prompt, &name, p.ident(), p.upstream, out, || {
                        self.unknown("prompt", &name, caller)
                    })?;
                    ("name", (p.upstream, p.original.to_string()))
                }
                Some("ref/resource") => {
                    let uri = reference.str("uri").ok_or_else(|| invalid("ref/resource needs a string `uri`"))?;
                    let template = self.catalog.load().template(&uri).map(|t| (t.upstream, t.original.to_string()));
                    let (i, original) = match template {
                        Some(t) => t,
                        None => self.resource_owner(&uri)?,
                    };
                    // Checked as what it is, like resources/read: its exposed
                    // URI, however the client spelled it.
                    let exposed = self.exposed_uri(i, &original);
                    let ident = crate::security::Ident::plain(&exposed);
                    self.permit(caller, Kind::Resource, &uri, ident, i, out, || self.unknown_resource(&uri))?;
                    ("uri", (i, original))
                }
                _ => return Err(invalid("ref.type must be ref/prompt or ref/resource")),
            };
            reference.set_str(field, &original.1);
            (original.0, reference.to_checked())
        };
        let (upstream, reference) = reference;
        obj.set("ref", reference);
        self.forward(id, "completion/complete", upstream, obj, caller, span, out).await
    }

    /// `resources/subscribe`: the upstream is subscribed once, while any
    /// session is; its updates reach only subscribed sessions.
    async fn subscribe(
        &self,
        id: &RawValue,
        params: Option<Checked<'_>>,
        caller: &Caller<'_>,
    ) -> Result<String, CallError> {
        let (peer, key) = self.subscription(params, caller)?;
        {
            let mine = peer.lock_subscriptions();
            if mine.len() >= peer::MAX_SUBSCRIPTIONS && !mine.contains(&key) {
                return Err(CallError::protocol(
                    protocol::INVALID_REQUEST,
                    format!("Too many subscriptions (at most {} per session)", peer::MAX_SUBSCRIPTIONS),
                ));
            }
        }
        {
            let mut subs = self.subscriptions.locked();
            subs.entry(key.clone()).or_default().insert(peer.id);
        }
        peer.lock_subscriptions().insert(key.clone());
        if let Err(e) = self.sync_subscription(key.0, &key.1).await {
            peer.lock_subscriptions().remove(&key);
            self.unsubscribe_keys(peer.id, vec![key]);
            return Err(e);
        }
        Ok(encode::result(id, &empty()))
    }

    async fn unsubscribe(
        &self,
        id: &RawValue,
        params: Option<Checked<'_>>,
        caller: &Caller<'_>,
    ) -> Result<String, CallError> {
        let (peer, key) = self.subscription(params, caller)?;
        peer.lock_subscriptions().remove(&key);
        for (i, uri) in self.unsubscribe_keys(peer.id, vec![key]) {
            self.sync_subscription(i, &uri).await?;
        }
        Ok(encode::result(id, &empty()))
    }

    /// The session and the upstream URI a `resources/(un)subscribe` is about.
    fn subscription<'c>(
        &self,
        params: Option<Checked<'_>>,
        caller: &Caller<'c>,
    ) -> Result<(&'c Arc<Peer>, SubscriptionKey), CallError> {
        let peer = caller
            .peer
            .ok_or_else(|| CallError::protocol(protocol::INVALID_REQUEST, "Subscriptions need a session"))?;
        let (_, uri) = named_params(params, "uri")?;
        let (i, original) = self.resource_owner(&uri)?;
        let exposed = self.exposed_uri(i, &original);
        let mut out = Outcomes::default();
        let ident = crate::security::Ident::plain(&exposed);
        self.permit(caller, Kind::Resource, &exposed, ident, i, &mut out, || self.unknown_resource(&uri))?;
        Ok((peer, (i, Arc::from(original))))
    }

    /// Brings the upstream's subscription to `uri` in line with whether any
    /// session wants it now, under that upstream's lock: whichever of a
    /// racing subscribe and unsubscribe runs last sees the final state.
    async fn sync_subscription(&self, i: usize, uri: &Arc<str>) -> Result<(), CallError> {
        let mut actual = self.subscribed_upstream[i].lock().await;
        let wanted = {
            let subs = self.subscriptions.locked();
            subs.contains_key(&(i, uri.clone()))
        };
        match (wanted, actual.contains(uri)) {
            (true, false) => {
                self.upstream_subscribe(i, "resources/subscribe", uri).await?;
                actual.insert(uri.clone());
            }
            (false, true) => {
                // Forgotten even if the upstream refuses: nobody wants it.
                actual.remove(uri);
                self.upstream_subscribe(i, "resources/unsubscribe", uri).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends `resources/subscribe` or `unsubscribe` for `uri` upstream.
    async fn upstream_subscribe(&self, i: usize, method: &'static str, uri: &str) -> Result<(), CallError> {
        let params = CheckedBox::from_value(&serde_json::json!({ "uri": uri }));
        let called = self.upstreams[i].call(Request::method(method, Some(params.checked()))).await;
        let reply = called.result?;
        match reply.error() {
            Some(e) => Err(CallError::new(
                crate::error::ErrorClass::UpstreamInternal,
                Some(self.upstreams[i].id()),
                format!("upstream `{}` refused {method}: {}", self.upstreams[i].id(), protocol::echo(e.text())),
            )),
            None => Ok(()),
        }
    }

    /// `logging/setLevel`: the session's own level filters what it gets;
    /// upstreams get the most verbose level any session asked for.
    async fn set_level(
        &self,
        id: &RawValue,
        params: Option<Checked<'_>>,
        caller: &Caller<'_>,
    ) -> Result<String, CallError> {
        let (_, level) = named_params(params, "level")?;
        let index = LEVELS.iter().position(|l| *l == level).ok_or_else(|| {
            CallError::protocol(
                protocol::INVALID_PARAMS,
                format!("Unknown log level {:?}; one of {}", protocol::echo(&level), LEVELS.join(", ")),
            )
        })?;
        if let Some(p) = caller.peer {
            p.set_level(index);
        }
        self.apply_levels().await;
        Ok(encode::result(id, &empty()))
    }

    /// Sends the most verbose level of any session to every upstream that
    /// declares `logging`, when it changed.
    async fn apply_levels(&self) {
        let wanted = self.peers().iter().filter_map(|p| p.level()).min();
        let Some(level) = wanted else { return };
        {
            let mut applied = self.applied_level.locked();
            if *applied == Some(level) {
                return;
            }
            *applied = Some(level);
        }
        let all = (0..self.upstreams.len()).map(|i| self.set_upstream_level(i, level));
        futures_util::future::join_all(all).await;
    }

    async fn set_upstream_level(&self, i: usize, level: usize) {
        let u = &self.upstreams[i];
        if !matches!(&*u.state(), State::Ready(r) if r.has_capability("logging")) {
            return;
        }
        let params = CheckedBox::from_value(&serde_json::json!({ "level": LEVELS[level] }));
        let called = u.call(Request::method("logging/setLevel", Some(params.checked()))).await;
        match called.result {
            Ok(r) if r.error().is_none() => {
                tracing::debug!(upstream = %u.id(), level = LEVELS[level], "Upstream log level set.")
            }
            Ok(r) => {
                tracing::warn!(upstream = %u.id(), error = %r.error().map_or("", Checked::text), "Upstream refused logging/setLevel.")
            }
            Err(e) => tracing::warn!(upstream = %u.id(), error = %e.message, "Could not set the upstream's log level."),
        }
    }

    /// Forwards a routed request and relays its reply as it came.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        id: &RawValue,
        method: &'static str,
        upstream: usize,
        params: Members<'_>,
        caller: &Caller<'_>,
        span: &Span,
        out: &mut Outcomes,
    ) -> Result<String, CallError> {
        let reply = self.forward_raw(method, upstream, params, caller, span, out, None).await?;
        Ok(self.reply_with(id, upstream, &reply, |_, _| None))
    }

    /// Forwards a routed request; returns the upstream's reply message.
    #[allow(clippy::too_many_arguments)]
    async fn forward_raw(
        &self,
        method: &'static str,
        i: usize,
        mut obj: Members<'_>,
        caller: &Caller<'_>,
        span: &Span,
        out: &mut Outcomes,
        timeout: Option<Duration>,
    ) -> Result<Message, CallError> {
        let upstream = &*self.instance(i, caller).await;
        out.upstream = Some(upstream.label());
        let (progress, relay) = self.related(&mut obj, caller, upstream);
        let params = obj.to_checked();
        let req = Request {
            method,
            params: Some(params.checked()),
            tool: None,
            hints: crate::upstream::ToolHints::default(),
            progress: progress.as_deref(),
            relay: relay.as_ref(),
            span,
            timeout,
        };
        let called = upstream.call(req).await;
        out.class = called.class;
        out.attempts = called.attempts;
        called.result
    }

    /// The reply to the client: the upstream's result (after `expose`,
    /// which may rewrite it) or its error, relayed.
    fn reply_with(
        &self,
        id: &RawValue,
        i: usize,
        reply: &Message,
        expose: impl Fn(usize, &Message) -> Option<Box<RawValue>>,
    ) -> String {
        match (reply.result_raw(), reply.error()) {
            (Some(r), _) => match expose(i, reply) {
                Some(r) => encode::result(id, &r),
                None => encode::result(id, r),
            },
            (None, Some(e)) => crate::error::relay_error(id, e, self.upstreams[i].id()),
            (None, None) => unreachable!("a response has a result or an error"),
        }
    }

    /// Gives the call a gateway-unique progress token (so progress from a
    /// shared connection is never confused between clients) and, when the
    /// client can hear them, a relay that takes progress (with the client's
    /// own token) and related notifications back to the client.
    fn related(
        &self,
        params: &mut Members<'_>,
        caller: &Caller<'_>,
        upstream: &Upstream,
    ) -> (Option<String>, Option<Arc<dyn Relay>>) {
        let client_token = rewrite_progress_token(params);
        let Some(peer) = caller.peer else { return (client_token.map(|(ours, _)| ours), None) };
        // Only an HTTP upstream's response stream carries other messages
        // about one call.
        let network = matches!(upstream.spec().transport.network(), "tcp");
        if client_token.is_none() && !network {
            return (None, None);
        }
        let (ours, theirs) = client_token.unzip();
        let relay: Arc<dyn Relay> =
            Arc::new(CallRelay::new(peer.clone(), caller.stream.cloned(), theirs, upstream.label()));
        (ours, Some(relay))
    }

    async fn call_tool(
        &self,
        id: &RawValue,
        params: Option<Checked<'_>>,
        caller: &Caller<'_>,
        span: &Span,
        out: &mut Outcomes,
    ) -> Result<String, CallError> {
        let invalid = |m: &str| CallError::protocol(protocol::INVALID_PARAMS, m);
        let params = params.ok_or_else(|| invalid("tools/call needs params"))?;
        let mut obj = params.object().ok_or_else(|| invalid("tools/call params must be an object"))?;
        let name = obj.str("name").ok_or_else(|| invalid("tools/call needs a string `name`"))?;
        // What the client asked for, for the audit record and the log,
        // whatever becomes of the call.
        out.name = Some(name.clone());
        if name == LIST_SECRET_NAMES && self.builtin_listed(caller) {
            let names = serde_json::to_string(&self.config.secret_names).expect("strings serialize");
            let result = serde_json::json!({
                "content": [{ "type": "text", "text": names }],
                "structuredContent": { "names": self.config.secret_names },
            });
            let result = serde_json::value::to_raw_value(&result).expect("valid");
            return Ok(encode::result(id, &result));
        }
        if let Some(log) = &self.telemetry.audit {
            let args = obj.get("arguments");
            out.arguments_hmac = Some(log.keyed_digest(args.map_or(&b"null"[..], |a| a.text().as_bytes())));
            out.arguments = args.and_then(|a| log.arguments(a.raw()));
        }
        // The order of checks is part of the contract (tests pin it): what
        // is hidden answers like what does not exist and costs the same;
        // no refused call spends a rate-limit token or enters a rule
        // history.
        let (i, original, hints, key, bare) = {
            let catalog = self.catalog.load();
            match catalog.get(&name) {
                Some(t) if !self.grants(caller).allows(Kind::Tool, t.ident()) => {
                    let err = self.unknown("tool", &name, caller);
                    return Err(self.hide(caller, t.upstream, Some(&t.original), DenyReason::Access, out, err));
                }
                Some(t) if t.quarantined => {
                    return Err(match self.config.pinning.on_change {
                        crate::config::QuarantineMode::Hide => {
                            let err = self.unknown("tool", &name, caller);
                            self.hide(caller, t.upstream, Some(&t.original), DenyReason::Quarantined, out, err)
                        }
                        crate::config::QuarantineMode::Refuse => {
                            let err = CallError::protocol(
                                protocol::INVALID_PARAMS,
                                format!(
                                    "{name} is held: its definition changed since it was approved \
                                     (an operator must run `mcp-gateway tools approve {}`)",
                                    t.key
                                ),
                            );
                            self.deny(caller, t.upstream, Some(&t.original), DenyReason::Quarantined, out, err)
                        }
                    });
                }
                Some(t) => (t.upstream, t.original.clone(), t.hints, t.key.clone(), t.bare),
                None => {
                    // Counted against the upstream whose namespace it is
                    // (down, or the tool is gone), when there is one.
                    out.upstream = name
                        .split_once(catalog::SEPARATOR)
                        .and_then(|(ns, _)| self.by_id.get(ns))
                        .map(|&i| self.upstreams[i].label());
                    return Err(self.unknown("tool", &name, caller));
                }
            }
        };
        let ident = crate::security::Ident { key: &key, bare: bare.then_some(&*original) };
        let local = match &self.upstreams[i].spec().transport {
            crate::config::TransportSpec::Stdio { cwd, .. } => Some(cwd.as_path()),
            _ => None,
        };
        if let Err(e) = self.grants(caller).check_arguments(ident, obj.get("arguments"), local) {
            let err = CallError::new(crate::error::ErrorClass::Policy, None, e.to_string());
            let err = CallError { code: protocol::INVALID_PARAMS, ..err };
            return Err(self.deny(caller, i, Some(&original), DenyReason::Argument, out, err));
        }
        let who: Option<Arc<str>> = self
            .limits
            .rates()
            .then(|| caller.peer.map_or_else(|| Arc::from("anonymous"), |p| p.principal.identity.clone()));
        if let Some(who) = &who
            && let Err(limited) = self.limits.check(who, ident, tokio::time::Instant::now())
        {
            let err = CallError::new(crate::error::ErrorClass::Policy, None, limited.to_string());
            let err = CallError { retry_after: Some(limited.retry_after), ..err };
            return Err(self.deny(caller, i, Some(&original), DenyReason::RateLimit, out, err));
        }
        if let Err(refused) = self.apply_rules(ident, i, obj.get("arguments").map(Checked::raw), caller, out).await {
            // A call the rules refuse costs no token either.
            if let Some(who) = &who {
                self.limits.give_back(who, ident);
            }
            return Err(refused);
        }
        let upstream = &*self.instance(i, caller).await;
        // A task-augmented call: only to an upstream that runs tools as
        // tasks (one that does not would ignore `task` and answer a plain
        // result the client does not expect), and only with a session to
        // bind the task to.
        let task = obj.contains("task");
        if task {
            if caller.peer.is_none() {
                return Err(CallError::protocol(protocol::INVALID_REQUEST, "Tasks need a session"));
            }
            if let State::Ready(r) = &*upstream.state()
                && !r.has_capability("tasks.requests.tools.call")
            {
                return Err(CallError::protocol(
                    protocol::INVALID_PARAMS,
                    format!("{name} cannot run as a task: upstream `{}` does not support tasks", upstream.id()),
                ));
            }
        }
        let cap = self.limits.result_cap(ident);
        out.upstream = Some(upstream.label());
        out.tool = Some(original.clone());
        obj.set_str("name", &original);
        let (progress, relay) = self.related(&mut obj, caller, upstream);
        let params = obj.to_checked();
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
            params: Some(params.checked()),
            tool: Some(&original),
            hints,
            progress: progress.as_deref(),
            relay: relay.as_ref(),
            span: &route,
            timeout: None,
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
        if task
            && let (Some(peer), Some(result)) = (caller.peer, reply.result_object())
            && let Some((created, original)) = tasks::expose_created(result, upstream.id())
        {
            // Its result comes with `tasks/result`, under the same cap.
            self.tasks.insert(peer.id, i, upstream.id(), &original, cap);
            return Ok(encode::result(id, &created));
        }
        if let Some(capped) = self.capped(id, cap, &reply, i, Some(&original), caller, out) {
            return capped;
        }
        Ok(self.reply_with(id, i, &reply, |_, _| None))
    }

    /// A tool's result over its `[limits.results]` cap: truncated (counted,
    /// logged, audited) or refused. `None`: it fits, or there is no cap.
    #[allow(clippy::too_many_arguments)]
    fn capped(
        &self,
        id: &RawValue,
        cap: Option<crate::config::ResultCap>,
        reply: &Message,
        i: usize,
        tool: Option<&Arc<str>>,
        caller: &Caller<'_>,
        out: &mut Outcomes,
    ) -> Option<Result<String, CallError>> {
        use crate::security::limits::{Capped, cap_result};
        let (cap, result) = (cap?, reply.result_raw()?);
        let labels = |outcome| OutcomeLabels { upstream: self.upstreams[i].label(), outcome };
        let name = out.name.clone().unwrap_or_default();
        match cap_result(result, cap, &name, &self.config.json_limits()) {
            Capped::Fits => None,
            Capped::Truncated(cut) => {
                self.telemetry.metrics.results_capped.get_or_create(&labels("truncated")).inc();
                tracing::info!(tool = %protocol::echo(&name), bytes = result.get().len(), "Truncated a result over its cap.");
                out.policy.push("result_size:truncated".to_owned());
                Some(Ok(encode::result(id, &cut)))
            }
            Capped::Refused(message) => {
                self.telemetry.metrics.results_capped.get_or_create(&labels("refused")).inc();
                let err = CallError::new(crate::error::ErrorClass::Policy, None, message);
                Some(Err(self.deny(caller, i, tool, DenyReason::ResultSize, out, err)))
            }
        }
    }

    /// `tasks/get`, `tasks/result` and `tasks/cancel`: only on a task of
    /// the caller's session, under the upstream's id; the reply carries the
    /// id the client knows.
    async fn task_request(
        &self,
        id: &RawValue,
        method: &'static str,
        params: Option<Checked<'_>>,
        caller: &Caller<'_>,
        span: &Span,
        out: &mut Outcomes,
    ) -> Result<String, CallError> {
        let peer = caller.peer.ok_or_else(|| CallError::protocol(protocol::INVALID_REQUEST, "Tasks need a session"))?;
        let (mut obj, task_id) = named_params(params, "taskId")?;
        // Another session's task is as unknown as one that never was.
        let (i, original, cap) = self.tasks.get(peer.id, &task_id).ok_or_else(|| {
            CallError::protocol(protocol::INVALID_PARAMS, format!("Unknown task: {}", protocol::echo(&task_id)))
        })?;
        obj.set_str("taskId", &original);
        // `tasks/result` waits for the task to end: as long as the gateway
        // waits for anything from this upstream.
        let timeout = (method == "tasks/result").then(|| self.upstreams[i].spec().max_request_timeout);
        let reply = self.forward_raw(method, i, obj, caller, span, out, timeout).await?;
        if method == "tasks/result"
            && let Some(capped) = self.capped(id, cap, &reply, i, None, caller, out)
        {
            return capped;
        }
        let up = self.upstreams[i].id();
        Ok(self.reply_with(id, i, &reply, |_, r| match method {
            "tasks/result" => {
                r.result_raw()?.get().contains(tasks::RELATED_TASK).then(|| r.result_object())??;
                tasks::expose_related_of(r.result_object()?, up)
            }
            _ => tasks::expose_task(r.result()?, up).map(CheckedBox::into_raw),
        }))
    }

    /// `tasks/list`: the caller's own tasks, across upstreams, each as its
    /// upstream's `tasks/get` tells it now. Asking per task (not the
    /// upstream's `tasks/list`) costs the session's own tasks only, and
    /// never reads other clients' tasks on a shared connection.
    async fn list_tasks(
        &self,
        id: &RawValue,
        params: Option<Checked<'_>>,
        caller: &Caller<'_>,
    ) -> Result<String, CallError> {
        let peer = caller.peer.ok_or_else(|| CallError::protocol(protocol::INVALID_REQUEST, "Tasks need a session"))?;
        let after = cursor_param(params)?
            .map(|c| catalog::decode_tagged_cursor(tasks::CURSOR_TAG, &c))
            .transpose()
            .map_err(|e| CallError::protocol(protocol::INVALID_PARAMS, e.to_string()))?;
        let (page, more) = self.tasks.page(peer.id, after.as_deref(), self.config.gateway.page_size);
        let gets = page.iter().map(|(exposed, i, original)| async move {
            let params = CheckedBox::from_value(&serde_json::json!({ "taskId": &**original }));
            let called =
                self.instance(*i, caller).await.call(Request::method("tasks/get", Some(params.checked()))).await;
            (exposed, *i, called.result)
        });
        let mut body = String::from(r#"{"tasks":["#);
        let mut first = true;
        for (exposed, i, result) in futures_util::future::join_all(gets).await {
            let upstream = self.upstreams[i].id();
            let task = match result {
                Ok(reply) if reply.result().is_some() => reply.result().and_then(|r| tasks::expose_task(r, upstream)),
                Ok(_) => {
                    // The upstream no longer knows it (its ttl passed).
                    tracing::debug!(upstream, "A task expired upstream; forgetting it.");
                    self.tasks.forget(peer.id, exposed);
                    None
                }
                Err(e) => {
                    tracing::warn!(upstream, error = %e.message, "tasks/get failed while listing tasks; leaving the task out.");
                    None
                }
            };
            if let Some(t) = task {
                if !first {
                    body.push(',');
                }
                first = false;
                body.push_str(t.text());
            }
        }
        body.push(']');
        if let (true, Some((last, _, _))) = (more, page.last()) {
            body.push_str(r#","nextCursor":"#);
            body.push_str(
                &serde_json::to_string(&catalog::encode_tagged_cursor(tasks::CURSOR_TAG, last)).expect("a string"),
            );
        }
        body.push('}');
        Ok(encode::result(id, &RawValue::from_string(body).expect("valid JSON built above")))
    }

    /// The connection a session's request to upstream `i` goes over: the
    /// shared one, or with `isolation = "per-session"` the session's own,
    /// started on its first request with the client's capabilities (its
    /// sampling, elicitation and `roots/list` requests then go to that
    /// client) and waited for up to `startup_timeout`.
    async fn instance(&self, i: usize, caller: &Caller<'_>) -> Arc<Upstream> {
        let shared = &self.upstreams[i];
        if shared.spec().oauth.as_ref().is_some_and(|o| o.per_principal) {
            return self.principal_instance(i, caller).await;
        }
        let per_session = shared.spec().isolation == crate::config::Isolation::PerSession;
        let Some(peer) = caller.peer.filter(|_| per_session) else { return shared.clone() };
        let own = {
            let mut own = peer.lock_instances();
            // A call still running as its session ends: no new process.
            if peer.gone.load(Ordering::Relaxed) {
                return shared.clone();
            }
            own.entry(i)
                .or_insert_with(|| {
                    tracing::info!(upstream = %shared.id(), "Starting a connection of the session's own.");
                    let relay: Arc<dyn Relay> = Arc::new(CallRelay::new(peer.clone(), None, None, shared.label()));
                    shared.start_isolated(Isolated { capabilities: peer.relayable_capabilities(), relay })
                })
                .clone()
        };
        own.wait_settled(tokio::time::Instant::now() + shared.spec().startup_timeout).await;
        own
    }

    /// The connection of the caller's principal to a `per_principal`
    /// OAuth upstream (its calls carry that user's token), started on the
    /// principal's first call. A request without a session has no
    /// principal the gateway may act for: it gets a connection that can
    /// never hold a token (`-`), so it fails with `upstream_auth`.
    async fn principal_instance(&self, i: usize, caller: &Caller<'_>) -> Arc<Upstream> {
        let shared = &self.upstreams[i];
        let principal: Arc<str> = caller.peer.map_or_else(|| Arc::from("-"), |p| p.principal.identity.clone());
        let own = {
            let mut map = self.principal_upstreams.locked();
            map.entry((i, principal.clone()))
                .or_insert_with(|| {
                    tracing::info!(upstream = %shared.id(), principal = %principal, "Starting the principal's own connection.");
                    shared.start_for_principal(principal.clone())
                })
                .clone()
        };
        own.wait_settled(tokio::time::Instant::now() + shared.spec().startup_timeout).await;
        own
    }

    /// An unknown tool or prompt: name the upstream when its namespace is
    /// known but the upstream is not serving, so the agent learns why.
    /// Whether `gateway__list_secret_names` is on and the caller may use it.
    fn builtin_listed(&self, caller: &Caller<'_>) -> bool {
        self.config.gateway.list_secret_names
            && self.grants(caller).allows(Kind::Tool, crate::security::Ident::plain(LIST_SECRET_NAMES))
    }

    /// The grants of the caller's principal.
    fn grants(&self, caller: &Caller<'_>) -> Arc<Grants> {
        caller.peer.map_or_else(|| self.sessionless.clone(), |p| p.grants.clone())
    }

    /// Checks `[[access]]` for a prompt or resource: a denied one is
    /// answered like an unknown one (`unknown`), and counted.
    #[allow(clippy::too_many_arguments)]
    fn permit(
        &self,
        caller: &Caller<'_>,
        kind: Kind,
        name: &str,
        ident: crate::security::Ident<'_>,
        upstream: usize,
        out: &mut Outcomes,
        unknown: impl FnOnce() -> CallError,
    ) -> Result<(), CallError> {
        if self.grants(caller).allows(kind, ident) {
            return Ok(());
        }
        out.name = Some(name.to_owned());
        Err(self.hide(caller, upstream, None, DenyReason::Access, out, unknown()))
    }

    /// A refusal by policy the client is told of: `err` (what the client
    /// sees) classed `policy`, counted in
    /// `mcp_gateway_policy_denials_total`, logged and noted for the audit
    /// record.
    fn deny(
        &self,
        caller: &Caller<'_>,
        upstream: usize,
        tool: Option<&Arc<str>>,
        reason: DenyReason,
        out: &mut Outcomes,
        err: CallError,
    ) -> CallError {
        let err = self.hide(caller, upstream, tool, reason, out, err);
        CallError { class: crate::error::ErrorClass::Policy, ..err }
    }

    /// A refusal by policy of something the caller may not know exists
    /// (docs/design.md D12): the client gets `err`, the very answer an unknown
    /// name gets (class `protocol`, nothing that tells them apart); the
    /// metrics, the log and the audit record say `policy`.
    fn hide(
        &self,
        caller: &Caller<'_>,
        upstream: usize,
        tool: Option<&Arc<str>>,
        reason: DenyReason,
        out: &mut Outcomes,
        err: CallError,
    ) -> CallError {
        let labels = DenialLabels {
            upstream: self.upstreams[upstream].label(),
            tool: tool.cloned().unwrap_or_else(|| self.no_label.clone()),
            reason: reason.as_str(),
        };
        self.telemetry.metrics.policy_denials.get_or_create(&labels).inc();
        let principal = caller.peer.map_or("anonymous", |p| &*p.principal.identity);
        let name = protocol::echo(out.name.as_deref().unwrap_or(""));
        tracing::info!(principal, reason = reason.as_str(), name = %name, "Refused by policy.");
        out.upstream = Some(labels.upstream);
        out.tool = tool.cloned();
        out.class = Some(crate::error::ErrorClass::Policy);
        out.policy.push(format!("{}:denied", reason.as_str()));
        err
    }

    /// The URI clients see for an upstream's `original` one.
    fn exposed_uri(&self, i: usize, original: &str) -> String {
        let u = &self.upstreams[i];
        match u.spec().prefix {
            true => catalog::namespace_uri(u.id(), original).unwrap_or_else(|| original.to_owned()),
            false => original.to_owned(),
        }
    }

    /// The error of a resource nobody serves.
    fn unknown_resource(&self, uri: &str) -> CallError {
        CallError::protocol(protocol::RESOURCE_NOT_FOUND, format!("Resource not found: {}", protocol::echo(uri)))
    }

    /// The answer to a tool or prompt that does not exist, or that the
    /// caller may not see (the same answer). It names what is down only to
    /// a caller who may know: every upstream's state to one whom nothing is
    /// hidden, the state of the name's own upstream to one who may use that
    /// name; to anyone else the bare "Unknown …", so a hidden upstream is
    /// not revealed by its outages.
    fn unknown(&self, what: &str, name: &str, caller: &Caller<'_>) -> CallError {
        let grants = self.grants(caller);
        let kind = if what == "prompt" { Kind::Prompt } else { Kind::Tool };
        let may_know = grants.allows(kind, crate::security::Ident::plain(name));
        if may_know
            && let Some((ns, _)) = name.split_once(catalog::SEPARATOR)
            && let Some(&i) = self.by_id.get(ns)
            && let Err(e) = self.ready(i)
        {
            return e;
        }
        let down: Vec<&str> = match grants.is_open() {
            true => self.upstreams.iter().filter(|u| !matches!(*u.state(), State::Ready(_))).map(|u| u.id()).collect(),
            false => Vec::new(),
        };
        let name = protocol::echo(name);
        let msg = if down.is_empty() {
            format!("Unknown {what}: {name}")
        } else {
            format!("Unknown {what}: {name} (not serving right now: {})", down.join(", "))
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

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The upstreams, in id order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// How many upstreams are ready now (for readiness probes, which must
    /// not reach into the upstream layer themselves).
    pub fn ready_upstreams(&self) -> usize {
        self.upstreams.iter().filter(|u| matches!(*u.state(), State::Ready(_))).count()
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
        // Sessions' own connections too (their sessions may outlive this).
        let own: Vec<Arc<Upstream>> =
            self.peers().iter().flat_map(|p| p.lock_instances().drain().map(|(_, u)| u).collect::<Vec<_>>()).collect();
        let principals: Vec<Arc<Upstream>> = self.principal_upstreams.locked().drain().map(|(_, u)| u).collect();
        let all = self.upstreams.iter().chain(&own).chain(&principals);
        futures_util::future::join_all(all.map(|u| u.shutdown())).await;
        // Flushing spans and audit lines blocks; keep it off the workers.
        let telemetry = self.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
}

/// What `[[access]]` calls the items of a list.
fn kind_of(list: ListKind) -> Kind {
    match list {
        ListKind::Tools => Kind::Tool,
        ListKind::Prompts => Kind::Prompt,
        ListKind::Resources | ListKind::Templates => Kind::Resource,
    }
}

/// Replaces a client's `_meta.progressToken` with one unique in the
/// gateway, so progress from a shared upstream connection is never
/// confused between clients. Returns ours and theirs (raw JSON).
fn rewrite_progress_token(params: &mut Members<'_>) -> Option<(String, CheckedBox)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let token = format!("mcpgw-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let (meta, theirs) = {
        let mut meta = params.get("_meta")?.object()?;
        let theirs = meta.get("progressToken")?.to_box();
        meta.set_str("progressToken", &token);
        (meta.to_checked(), theirs)
    };
    params.set("_meta", meta);
    Some((serde_json::to_string(&token).expect("a string always serializes"), theirs))
}

/// A list request's `cursor`, if any (-32602 when it is not a string).
fn cursor_param(params: Option<Checked<'_>>) -> Result<Option<String>, CallError> {
    let Some(params) = params else { return Ok(None) };
    let obj =
        params.object().ok_or_else(|| CallError::protocol(protocol::INVALID_PARAMS, "params must be an object"))?;
    match obj.get("cursor") {
        None => Ok(None),
        Some(c) if c.is_null() => Ok(None),
        Some(c) => c
            .str()
            .map(|c| Some(c.into_owned()))
            .ok_or_else(|| CallError::protocol(protocol::INVALID_PARAMS, "Invalid cursor")),
    }
}

/// The params as an object and its string member `field` (-32602 when
/// either is missing).
fn named_params<'a>(params: Option<Checked<'a>>, field: &str) -> Result<(Members<'a>, String), CallError> {
    let invalid = |m: String| CallError::protocol(protocol::INVALID_PARAMS, m);
    let obj = params
        .ok_or_else(|| invalid("params are required".into()))?
        .object()
        .ok_or_else(|| invalid("params must be an object".into()))?;
    let value = obj.str(field).ok_or_else(|| invalid(format!("params need a string `{field}`")))?;
    Ok((obj, value))
}

/// A downstream session id is a credential: logs, traces and the audit
/// log get the first 16 hex digits of its SHA-256 instead.
fn session_digest(session: &str) -> String {
    audit::digest(session.as_bytes())["sha256:".len()..][..16].to_owned()
}

fn empty() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("valid")
}
