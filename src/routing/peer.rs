//! Downstream peers: what the gateway knows of each client session, and
//! how messages that are not replies reach it.
//!
//! A [`Peer`] has one bounded outbound queue (the session's stream: the
//! HTTP GET stream or the stdio writer). A call may also have a stream of
//! its own (an HTTP POST answered as SSE); messages about that call go
//! there. Nothing here waits: a full queue drops the message and counts it
//! (`mcp_gateway_notifications_total{outcome="dropped"}`), so a client that
//! does not read never slows an upstream or another client.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ix::UpstreamIx;
use crate::protocol::{Checked, CheckedBox, Members, Message, encode};
use crate::security::access::Grants;
use crate::security::auth::Principal;
use crate::sync::Locked;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{Name, NotificationLabels, notification_label};
use crate::upstream::{Relay, Responder};

/// How many messages wait for a client that is not reading (per session,
/// and per call stream).
pub const QUEUE: usize = 256;

/// The MCP log levels (RFC 5424 severities), least severe first.
pub const LEVELS: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

/// No `logging/setLevel` yet.
const UNSET: u8 = u8::MAX;

/// One client session as routing sees it.
#[derive(Debug)]
pub struct Peer {
    /// Unique in the gateway.
    pub(crate) id: u64,
    out: mpsc::Sender<String>,
    /// Index in [`LEVELS`] of the session's `logging/setLevel`, or unset.
    level: AtomicU8,
    /// Resource subscriptions: (upstream index, original URI).
    subscriptions: Mutex<HashSet<super::subscriptions::Key>>,
    /// Requests in flight by raw JSON-RPC id, for `notifications/cancelled`.
    in_flight: Mutex<HashMap<Box<str>, CancellationToken>>,
    /// The client's `initialize` capabilities (what may be relayed to it).
    capabilities: Option<CheckedBox>,
    /// Requests relayed to the client, by the raw id we gave them.
    pending: Mutex<HashMap<Box<str>, Responder>>,
    next_request: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
    /// The session's own connections (`isolation = "per-session"`), by
    /// upstream index; shut down when the session ends.
    instances: Mutex<HashMap<UpstreamIx, Arc<crate::upstream::Upstream>>>,
    /// The session was unregistered: no new connection of its own starts.
    pub(crate) gone: std::sync::atomic::AtomicBool,
    /// Who the client is (fixed for the session's life).
    pub principal: Arc<Principal>,
    /// What the principal may see and use (`[[access]]`), recomputed
    /// when a reload changes the policy.
    grants: ArcSwap<Grants>,
    /// Masks secret values in what is sent to the client (a reload that
    /// changes the secrets replaces it).
    redactor: ArcSwap<crate::config::Redactor>,
    /// The session's calls for session-scoped sequence rules.
    history: Mutex<crate::security::rules::History>,
    /// The gateway's own requests to the client (a `confirm` rule's
    /// elicitation), by the raw id we gave them.
    asks: Mutex<HashMap<Box<str>, AskAnswer>>,
    /// Which upstreams it may hear about no call (log messages): computed
    /// for one catalog build (its version), see `Gateway::hears`.
    hears: Mutex<Option<(u64, Arc<[bool]>)>>,
    /// What the session is known by in the shared state (`[redis]`): a
    /// hash of its id, set once the transport gives it one.
    shared_key: std::sync::OnceLock<crate::shared::KeyHash>,
    /// Whether Redis knows the session (it was opened or taken over there,
    /// not while Redis was unreachable).
    shared_registered: std::sync::atomic::AtomicBool,
    /// The peer of a principal's stateless (2026-07-28) requests: sent no
    /// notifications; Redis forgetting it opens it again, not ends it.
    stateless: std::sync::atomic::AtomicBool,
    /// A 2025 session's protocol revision (`mcp.protocol.version`).
    pub(crate) version: std::sync::OnceLock<&'static str>,
}

/// Where the answer to one of the gateway's own requests goes: the
/// result, or `None` for an error.
type AskAnswer = tokio::sync::oneshot::Sender<Option<CheckedBox>>;

/// Most resource subscriptions of one session.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// How long a relayed request waits for the client (a person may be
/// answering an elicitation) before the upstream gets an error.
pub const CLIENT_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Unregisters its request from [`Peer::in_flight`] when dropped.
pub(crate) struct InFlightCall<'a> {
    peer: &'a Peer,
    id: &'a str,
    pub(crate) token: CancellationToken,
}

impl Drop for InFlightCall<'_> {
    fn drop(&mut self) {
        self.peer.lock_in_flight().remove(self.id);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let kept = self.capabilities.as_ref().map_or(0, |c| c.text().len());
        self.metrics.client_capabilities_bytes.dec_by(kept as i64);
    }
}

// === impl Peer ===

impl Peer {
    /// What the principal may see and use now.
    pub(crate) fn grants(&self) -> Arc<Grants> {
        self.grants.load_full()
    }

    /// Puts a reload's policy in force for this session: its grants
    /// (recomputed by the caller for this principal) and the redactor.
    pub(crate) fn reconfigure(&self, grants: Arc<Grants>, redactor: crate::config::Redactor) {
        self.grants.store(grants);
        self.redactor.store(Arc::new(redactor));
    }

    pub(crate) fn new(
        id: u64,
        out: mpsc::Sender<String>,
        capabilities: Option<Checked<'_>>,
        metrics: Arc<Metrics>,
        principal: Arc<Principal>,
        grants: Arc<Grants>,
        redactor: crate::config::Redactor,
    ) -> Self {
        let capabilities = capabilities.filter(|c| c.object().is_some()).map(Checked::to_box);
        metrics.client_capabilities_bytes.inc_by(capabilities.as_ref().map_or(0, |c| c.text().len()) as i64);
        Peer {
            redactor: ArcSwap::from_pointee(redactor),
            principal,
            grants: ArcSwap::new(grants),
            id,
            out,
            level: AtomicU8::new(UNSET),
            subscriptions: Mutex::default(),
            in_flight: Mutex::default(),
            capabilities,
            pending: Mutex::default(),
            next_request: std::sync::atomic::AtomicU64::new(1),
            history: Mutex::default(),
            asks: Mutex::default(),
            hears: Mutex::default(),
            shared_key: std::sync::OnceLock::new(),
            shared_registered: std::sync::atomic::AtomicBool::new(false),
            stateless: std::sync::atomic::AtomicBool::new(false),
            version: std::sync::OnceLock::new(),
            metrics,
            instances: Mutex::default(),
            gone: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What of the client's capabilities a connection of its own may be
    /// offered: sampling, elicitation and roots, as the client declared them.
    pub(crate) fn relayable_capabilities(&self) -> Box<RawValue> {
        self.relayable().into_raw()
    }

    /// [`Peer::relayable_capabilities`], checked.
    pub(crate) fn relayable(&self) -> CheckedBox {
        let mut out = Members::new();
        if let Some(caps) = self.capabilities.as_ref().and_then(|c| c.checked().object()) {
            for name in ["sampling", "elicitation", "roots"] {
                if let Some(v) = caps.get(name) {
                    out.set(name, v.to_box());
                }
            }
        }
        out.to_checked()
    }

    pub(crate) fn lock_hears(&self) -> std::sync::MutexGuard<'_, Option<(u64, Arc<[bool]>)>> {
        self.hears.locked()
    }

    pub(crate) fn lock_instances(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<UpstreamIx, Arc<crate::upstream::Upstream>>> {
        self.instances.locked()
    }

    /// Whether the client declared what `method` (with `params`) needs:
    /// `sampling`, or `elicitation` in the requested mode (an empty
    /// `elicitation` object means form mode).
    pub(crate) fn supports(&self, method: &str, params: Option<Checked<'_>>) -> bool {
        crate::protocol::declares(self.capabilities.as_ref().map(CheckedBox::checked), method, params)
    }

    /// The upstream cancelled a request it sent (`requestId`, raw): if it
    /// was relayed to this client, it is forgotten and the client told
    /// under the id it knows. Returns whether it was this client's.
    pub(crate) fn cancel_relayed(&self, upstream: &str, request_id: &str, reason: Option<Checked<'_>>) -> bool {
        let ours = {
            let mut pending = self.lock_pending();
            let ours = pending.iter().find(|(_, r)| &**r.upstream() == upstream && r.id().get() == request_id);
            let Some(ours) = ours.map(|(k, _)| k.clone()) else { return false };
            pending.remove(&ours);
            ours
        };
        let params = match reason {
            Some(r) => format!(r#"{{"requestId":{ours},"reason":{}}}"#, r.text()),
            None => format!(r#"{{"requestId":{ours}}}"#),
        };
        let params = RawValue::from_string(params).expect("raw JSON parts");
        let body = encode::notification("notifications/cancelled", Some(&params));
        self.send(&Name::from(upstream), "notifications/cancelled", body);
        true
    }

    /// Names the session in the shared state by its id (a hash of it);
    /// the first id given stays.
    pub fn share_as(&self, session_id: &str) {
        let _ = self.shared_key.set(crate::shared::key_hash(session_id));
    }

    /// Makes this the peer of a principal's stateless requests.
    pub fn mark_stateless(&self) {
        self.stateless.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    /// Whether this is the peer of a principal's stateless requests.
    pub fn is_stateless(&self) -> bool {
        self.stateless.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that Redis knows the session (opened or taken over there).
    pub fn set_shared_registered(&self) {
        self.shared_registered.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether Redis knows the session: a call Redis does not know is then
    /// one of a session that ended or idled out there, not one opened
    /// while Redis was unreachable.
    pub fn shared_registered(&self) -> bool {
        self.shared_registered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the session is known by in the shared state, once named.
    pub(crate) fn shared_key(&self) -> Option<crate::shared::KeyHash> {
        self.shared_key.get().copied()
    }

    /// The session's call history (sequence rules); never held across an
    /// `.await`.
    pub(crate) fn lock_history(&self) -> std::sync::MutexGuard<'_, crate::security::rules::History> {
        self.history.locked()
    }

    /// Sends the gateway's own request to the client (on the call's stream
    /// when it has one); the answer comes through the receiver. `None`
    /// when the client's queue is full. The answer is the result (`None`
    /// for an error).
    pub(crate) fn ask(
        &self,
        method: &str,
        params: &RawValue,
        stream: Option<&mpsc::Sender<String>>,
    ) -> Option<tokio::sync::oneshot::Receiver<Option<CheckedBox>>> {
        let (id, body) = self.request(method, Some(params));
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.asks.locked().insert(id.clone().into(), tx);
        if !send_counted(stream.unwrap_or(&self.out), self, &Name::from(""), method, body) {
            self.asks.locked().remove(id.as_str());
            return None;
        }
        Some(rx)
    }

    /// A request to the client under a new id of ours (`"mcpgw-<peer>-<n>"`,
    /// so ids from several upstreams and the gateway never collide in the
    /// client's id space): the raw id and the message.
    fn request(&self, method: &str, params: Option<&RawValue>) -> (String, String) {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let id = format!("\"mcpgw-{}-{n}\"", self.id);
        let body = match params {
            Some(p) => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{},"params":{}}}"#, json_str(method), p.get()),
            None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{}}}"#, json_str(method)),
        };
        (id, body)
    }

    /// Forgets the gateway's requests to the client whose asker stopped
    /// waiting (timed out, gone), so unanswered ones do not pile up.
    pub(crate) fn forget_unheard_asks(&self) {
        self.asks.locked().retain(|_, tx| !tx.is_closed());
    }

    /// Delivers the client's answer to one of the gateway's own requests;
    /// false when `id` is not one.
    pub(crate) fn answer_ask(&self, id: &str, msg: &Message) -> bool {
        let tx = self.asks.locked().remove(id);
        match tx {
            Some(tx) => {
                let _ = tx.send(msg.result().map(Checked::to_box));
                true
            }
            None => false,
        }
    }

    /// Takes the upstream's side of a relayed request answered by `id`.
    pub(crate) fn take_pending(&self, id: &str) -> Option<Responder> {
        self.lock_pending().remove(id)
    }

    /// The session ended: its calls in flight are cancelled (upstream too)
    /// and the requests relayed to it fail.
    pub fn close(&self) {
        for t in self.lock_in_flight().values() {
            t.cancel();
        }
        self.fail_pending();
    }

    /// Fails every relayed request still waiting (the client went away).
    pub(crate) fn fail_pending(&self) {
        let all: Vec<_> = self.lock_pending().drain().collect();
        for (_, r) in all {
            r.error(crate::protocol::INTERNAL_ERROR, "The client went away before answering");
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Responder>> {
        self.pending.locked()
    }

    /// Queues a message on the session stream; false when the queue is full
    /// or the session gone (counted as dropped).
    pub fn send(&self, upstream: &Name, method: &str, msg: String) -> bool {
        send_counted(&self.out, self, upstream, method, msg)
    }

    /// The session's log level, if it set one.
    pub(crate) fn level(&self) -> Option<usize> {
        let l = self.level.load(Ordering::Relaxed);
        (l != UNSET).then_some(usize::from(l))
    }

    pub(crate) fn set_level(&self, index: usize) {
        self.level.store(u8::try_from(index).unwrap_or(UNSET), Ordering::Relaxed);
    }

    /// Registers a request so a `notifications/cancelled` for `id` can stop
    /// it; `None` when a request with that id is already in flight (ids
    /// must be unique among a client's requests in flight, and a second one
    /// would make the first impossible to cancel).
    pub(crate) fn start_call<'a>(&'a self, id: &'a RawValue) -> Option<InFlightCall<'a>> {
        let token = CancellationToken::new();
        match self.lock_in_flight().entry(id.get().into()) {
            std::collections::hash_map::Entry::Occupied(_) => return None,
            std::collections::hash_map::Entry::Vacant(v) => v.insert(token.clone()),
        };
        Some(InFlightCall { peer: self, id: id.get(), token })
    }

    /// Cancels the request with raw id `id`; false when none is in flight.
    pub(crate) fn cancel(&self, id: &str) -> bool {
        match self.lock_in_flight().get(id) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    pub(crate) fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, HashSet<super::subscriptions::Key>> {
        self.subscriptions.locked()
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, CancellationToken>> {
        self.in_flight.locked()
    }
}

/// `try_send`, counted by outcome.
fn send_counted(out: &mpsc::Sender<String>, peer: &Peer, upstream: &Name, method: &str, msg: String) -> bool {
    let m = &peer.metrics;
    // What an upstream sends a client (log messages, requests) is masked
    // like its replies: secret values never reach the model.
    let (masked, n) = peer.redactor.load().redact_counted(&msg);
    let msg = match masked {
        std::borrow::Cow::Borrowed(_) => msg,
        std::borrow::Cow::Owned(masked) => {
            m.secrets_masked
                .get_or_create(&crate::telemetry::metrics::UpstreamLabels { upstream: upstream.clone() })
                .inc_by(n as u64);
            tracing::warn!(upstream = %upstream, masked = n, method, "Masked secret values in a message to a client.");
            masked
        }
    };
    let sent = out.try_send(msg).is_ok();
    let labels = NotificationLabels {
        upstream: upstream.clone(),
        method: notification_label(method),
        outcome: if sent { "sent" } else { "dropped" },
    };
    m.notifications.get_or_create(&labels).inc();
    if !sent {
        tracing::debug!(upstream = %upstream, method, "Dropped a notification: the client's queue is full or gone.");
    }
    sent
}

/// Where messages about one client call go: its own stream when it has
/// one, else its session's; progress gets the client's own token back.
#[derive(Debug)]
pub(crate) struct CallRelay {
    pub(crate) peer: Arc<Peer>,
    pub(crate) stream: Option<mpsc::Sender<String>>,
    /// The client's `progressToken`.
    pub(crate) token: Option<CheckedBox>,
    pub(crate) upstream: Name,
    /// The highest progress relayed (f64 bits): a retried attempt starts
    /// counting again, and the spec says progress only increases.
    pub(crate) progress: std::sync::atomic::AtomicU64,
}

impl CallRelay {
    pub(crate) fn new(
        peer: Arc<Peer>,
        stream: Option<mpsc::Sender<String>>,
        token: Option<CheckedBox>,
        upstream: Name,
    ) -> Self {
        let progress = std::sync::atomic::AtomicU64::new(f64::NEG_INFINITY.to_bits());
        CallRelay { peer, stream, token, upstream, progress }
    }

    /// Whether `params` carry progress above any relayed before (recorded).
    fn advances(&self, params: Option<Checked<'_>>) -> bool {
        let Some(p) = params.and_then(|p| p.get("progress")).and_then(|v| serde_json::from_str::<f64>(v.text()).ok())
        else {
            return true;
        };
        let last = self.progress.fetch_max_f64(p);
        p > last
    }
}

/// `fetch_max` for f64 bits (non-negative progress compares like its bits,
/// but negative values do not, so compare as floats).
trait FetchMaxF64 {
    fn fetch_max_f64(&self, v: f64) -> f64;
}

impl FetchMaxF64 for std::sync::atomic::AtomicU64 {
    fn fetch_max_f64(&self, v: f64) -> f64 {
        let mut cur = self.load(Ordering::Relaxed);
        loop {
            let old = f64::from_bits(cur);
            if v <= old {
                return old;
            }
            match self.compare_exchange_weak(cur, v.to_bits(), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return old,
                Err(actual) => cur = actual,
            }
        }
    }
}

impl Relay for CallRelay {
    fn notify(&self, msg: &Message) {
        let method = msg.method();
        let params = match method {
            "notifications/progress" => {
                let Some(token) = &self.token else { return };
                if !self.advances(msg.params()) {
                    tracing::debug!(upstream = %self.upstream, "Dropped progress that did not advance (a retried attempt).");
                    return;
                }
                rewrite(msg.params(), |o| o.set("progressToken", token.clone()))
            }
            "notifications/message" => {
                let level = message_level(msg.params());
                // About the client's own call: sent unless it asked for less.
                if let (Some(min), Some(l)) = (self.peer.level(), level)
                    && l < min
                {
                    return;
                }
                with_logger(msg.params(), &self.upstream)
            }
            "notifications/tasks/status" => msg.params().and_then(|p| super::tasks::expose_task(p, &self.upstream)),
            "notifications/cancelled" => {
                // A session's own connection withdrew a request it sent.
                let (id, reason) = cancelled_params(msg.params());
                if let Some(id) = id {
                    self.peer.cancel_relayed(&self.upstream, id.text(), reason);
                }
                return;
            }
            _ => msg.params().map(Checked::to_box),
        };
        // Progress and log messages of a task name it under the id the
        // client knows.
        let params = match params {
            Some(p) => super::tasks::expose_related(p.checked(), &self.upstream).or(Some(p)),
            None => None,
        };
        let body = encode::notification(method, params.as_ref().map(CheckedBox::raw));
        let out = self.stream.as_ref().unwrap_or(&self.peer.out);
        send_counted(out, &self.peer, &self.upstream, method, body);
    }

    fn request(&self, msg: Message, reply: Responder) {
        let method = msg.method();
        let peer = &self.peer;
        if !peer.supports(method, msg.params()) {
            tracing::info!(upstream = %self.upstream, method, "Refused a server request the client did not declare.");
            reply.error(crate::protocol::METHOD_NOT_FOUND, &format!("The client does not support {method}"));
            return;
        }
        // Our own id, so ids of several upstreams never collide in the
        // client's id space.
        let related = msg.params().and_then(|p| super::tasks::expose_related(p, &self.upstream));
        let params = related.as_ref().map(CheckedBox::raw).or(msg.params().map(Checked::raw));
        let (id, body) = peer.request(method, params);
        peer.lock_pending().insert(id.clone().into(), reply);
        let out = self.stream.as_ref().unwrap_or(&peer.out);
        if !send_counted(out, peer, &self.upstream, method, body) {
            if let Some(r) = peer.take_pending(&id) {
                r.error(crate::protocol::INTERNAL_ERROR, "The client's queue is full");
            }
            return;
        }
        // Weak: the timer must not keep a session (and its stream) alive.
        let peer = Arc::downgrade(peer);
        tokio::spawn(async move {
            tokio::time::sleep(CLIENT_ANSWER_WAIT).await;
            if let Some(r) = peer.upgrade().and_then(|p| p.take_pending(&id)) {
                tracing::warn!(upstream = %r.upstream(), "The client did not answer a relayed request in time.");
                r.error(crate::protocol::INTERNAL_ERROR, "The client did not answer in time");
            }
        });
    }
}

/// `requestId` and `reason` of a `notifications/cancelled`.
pub(crate) fn cancelled_params(params: Option<Checked<'_>>) -> (Option<Checked<'_>>, Option<Checked<'_>>) {
    let Some(p) = params else { return (None, None) };
    (p.get("requestId"), p.get("reason"))
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// `params` with one change applied (unchanged when not an object).
pub(crate) fn rewrite(params: Option<Checked<'_>>, f: impl FnOnce(&mut Members<'_>)) -> Option<CheckedBox> {
    let p = params?;
    match p.object() {
        Some(mut o) => {
            f(&mut o);
            Some(o.to_checked())
        }
        None => Some(p.to_box()),
    }
}

/// The index in [`LEVELS`] of a `notifications/message`'s level.
pub(crate) fn message_level(params: Option<Checked<'_>>) -> Option<usize> {
    let level = params?.get("level")?.str()?;
    LEVELS.iter().position(|l| *l == level)
}

/// A log message's `logger`, prefixed with the upstream's id (`<id>`, or
/// `<id>/<logger>`), so the client knows which server said it.
pub(crate) fn with_logger(params: Option<Checked<'_>>, upstream: &str) -> Option<CheckedBox> {
    rewrite(params, |o| {
        let logger = match o.str("logger") {
            Some(l) => format!("{upstream}/{l}"),
            None => upstream.to_owned(),
        };
        o.set_str("logger", &logger);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    /// A client's notification with these params (scanned).
    fn note(params: &str) -> Message {
        let line = format!(r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{params}}}"#);
        Message::parse(line.as_bytes(), &crate::protocol::Limits::default()).unwrap()
    }

    #[test]
    fn loggers_name_the_upstream() {
        let p = note(r#"{"level":"info","data":{"x":1},"logger":"db"}"#);
        assert_eq!(
            with_logger(p.params(), "pg").unwrap().text(),
            r#"{"level":"info","data":{"x":1},"logger":"pg/db"}"#
        );
        let p = note(r#"{"level":"error","data":"x"}"#);
        assert_eq!(with_logger(p.params(), "pg").unwrap().text(), r#"{"level":"error","data":"x","logger":"pg"}"#);
        assert_eq!(message_level(p.params()), Some(4));
        assert_eq!(message_level(note(r#"{"level":"loud"}"#).params()), None);
    }

    #[tokio::test]
    async fn relayed_progress_gets_the_clients_token_and_a_full_queue_drops() {
        let metrics = Arc::new(Metrics::new());
        let (tx, mut rx) = mpsc::channel(1);
        let peer = Arc::new(Peer::new(
            1,
            tx,
            None,
            metrics.clone(),
            Arc::new(Principal::anonymous()),
            Grants::open(),
            Default::default(),
        ));
        let relay = CallRelay::new(peer.clone(), None, Some(CheckedBox::from_value(&7.into())), Name::from("u"));
        let progress = |n: u32| {
            let line = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"mcpgw-9","progress":{n}}}}}"#
            );
            Message::parse(line.as_bytes(), &crate::protocol::Limits::default()).unwrap()
        };
        relay.notify(&progress(1));
        relay.notify(&progress(2)); // the queue holds one: dropped
        relay.notify(&progress(1)); // a retry starting over: not relayed, not counted
        let got = rx.recv().await.unwrap();
        assert!(got.contains(r#""progressToken":7,"progress":1"#), "{got}");
        assert!(rx.try_recv().is_err());
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"mcp_gateway_notifications_total{upstream="u",method="notifications/progress",outcome="sent"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"mcp_gateway_notifications_total{upstream="u",method="notifications/progress",outcome="dropped"} 1"#
        ));

        // A call's own stream wins over the session's.
        let (tx2, mut rx2) = mpsc::channel(4);
        let relay = CallRelay { stream: Some(tx2), ..relay };
        relay.notify(&progress(2)); // not above 2
        relay.notify(&progress(3));
        assert!(rx2.recv().await.unwrap().contains(r#""progress":3"#));
    }

    #[test]
    fn cancel_finds_calls_in_flight_only() {
        let (tx, _rx) = mpsc::channel(1);
        let peer = Peer::new(
            1,
            tx,
            None,
            Arc::new(Metrics::new()),
            Arc::new(Principal::anonymous()),
            Grants::open(),
            Default::default(),
        );
        let id = raw(r#""a-1""#);
        let call = peer.start_call(&id).unwrap();
        assert!(peer.start_call(&id).is_none(), "an id in flight cannot be reused");
        assert!(!peer.cancel("\"a-2\""));
        assert!(peer.cancel("\"a-1\""));
        assert!(call.token.is_cancelled());
        drop(call);
        assert!(!peer.cancel("\"a-1\""), "gone once the call ends");
    }
}
