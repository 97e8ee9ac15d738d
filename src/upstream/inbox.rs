//! Where an upstream's transports deliver what they read: the replies
//! owed to calls in flight (by gateway-assigned id), progress tokens and
//! related-message relays of those calls, and the events (requests,
//! notifications) for the supervisor. One per connection, shared by its
//! [`Connection`](super::conn::Connection) and its link.

use std::collections::HashMap;

/// Maps keyed by the gateway's own request ids (sequential, never chosen by
/// a peer: a lookup of an id an upstream made up inserts nothing) need no
/// flood-resistant hash; Fx is a few instructions per id where SipHash took
/// hundreds, on every call (docs/benchmarks.md).
type IdMap<V> = HashMap<u64, V, rustc_hash::FxBuildHasher>;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

use super::Relay;
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Envelope, Message, MessageKind, ParseError, ResultCheck};
use crate::sync::Locked;
use crate::telemetry::metrics::{Name, UpstreamLabels, UpstreamRefusalLabels};

/// A call watching its progress token: its waker (deadline extension) and
/// where its progress goes.
type Watcher = (Arc<Notify>, Option<Arc<dyn Relay>>);

/// What a connection reports to its supervisor.
#[derive(Debug)]
pub(crate) enum Event {
    /// A request from the upstream (ping, roots/list, …), with the relay of
    /// the call it came with (on that call's HTTP response stream) and that
    /// call's [`Hold`].
    Request(Message, Option<Related>),
    /// A notification from the upstream.
    Notification(Message),
    /// An answer the gateway owes the upstream: an error for a request of
    /// its that was refused unread.
    Answer(String),
}

pub(super) type Reply = Result<Message, CallError>;

/// Where transports deliver what they read.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(super) upstream: Arc<str>,
    /// Calls waiting for their reply, and how much of that reply to scan.
    pending: Mutex<IdMap<(oneshot::Sender<Reply>, ResultCheck)>>,
    /// What the strict scan of every message enforces.
    json: protocol::Limits,
    /// `mcp_gateway_upstream_messages_refused_total`.
    refused:
        prometheus_client::metrics::family::Family<UpstreamRefusalLabels, prometheus_client::metrics::counter::Counter>,
    /// `mcp_gateway_upstream_stdout_noise_lines_total` (a stdio link takes
    /// its upstream's series with [`Inbox::noise`]).
    noise: prometheus_client::metrics::family::Family<UpstreamLabels, prometheus_client::metrics::counter::Counter>,
    events: mpsc::Sender<Event>,
    closed: tokio_util::sync::CancellationToken,
    close_reason: Mutex<Option<String>>,
    /// Progress tokens of calls in flight (raw JSON text) → their waker
    /// and where their progress goes.
    progress: Mutex<HashMap<Box<str>, Watcher>>,
    /// Calls in flight whose related messages (those on the call's own HTTP
    /// response stream) go to a client.
    pub(super) related: Mutex<IdMap<Related>>,
    /// `mcp.client.operation.duration` (when the standard metrics are on).
    pub(super) standard: crate::telemetry::standard::Standard,
}

/// Where a call's related messages go, and the hold on its deadline.
pub(crate) type Related = (Arc<dyn Relay>, Arc<Hold>);

/// How many of a call's own server requests (sampling, elicitation) wait
/// for the client: while any does, the call's deadline does not run (up to
/// its hard maximum), as a person may be answering.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    waiting: std::sync::atomic::AtomicUsize,
    /// Woken when `waiting` changes.
    pub(super) changed: Notify,
}

impl Hold {
    /// Whether a request of the call waits for the client now.
    pub(super) fn held(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed) > 0
    }
}

/// One request waiting on a [`Hold`]: counted while it lives.
#[derive(Debug)]
pub(crate) struct Held(Arc<Hold>);

impl Held {
    pub(super) fn new(hold: Arc<Hold>) -> Self {
        hold.waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        hold.changed.notify_one();
        Held(hold)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

// === impl Inbox ===

impl Inbox {
    pub(crate) fn new(
        upstream: Arc<str>,
        events: mpsc::Sender<Event>,
        json: protocol::Limits,
        metrics: &crate::telemetry::metrics::Metrics,
    ) -> Arc<Self> {
        Arc::new(Inbox {
            upstream,
            pending: Mutex::new(IdMap::default()),
            json,
            refused: metrics.upstream_messages_refused.clone(),
            noise: metrics.upstream_stdout_noise_lines.clone(),
            events,
            closed: tokio_util::sync::CancellationToken::new(),
            close_reason: Mutex::new(None),
            progress: Mutex::new(HashMap::new()),
            related: Mutex::new(IdMap::default()),
            standard: metrics.standard.clone(),
        })
    }

    /// Handles one message read from the upstream (tests: as an HTTP body).
    #[cfg(test)]
    pub(crate) fn deliver(&self, bytes: &[u8]) {
        self.deliver_owned(bytes.to_vec(), None);
    }

    /// Handles one message read from the response stream of request
    /// `related` (tests: as an event's data).
    #[cfg(test)]
    pub(crate) fn deliver_related(&self, bytes: &[u8], related: Option<u64>) {
        self.deliver_owned(bytes.to_vec(), related);
    }

    /// Handles one line read from a stdio upstream's stdout (its buffer is
    /// the reader's, so a result is copied out of it); a line that is no
    /// JSON-RPC message at all is [`Noise`].
    pub(crate) fn deliver_line(&self, bytes: &[u8], noise: &Noise) {
        let mut request = false;
        let msg = Envelope::parse(bytes).and_then(|env| {
            let how = self.how(&env, &mut request);
            env.check(&self.json, how)
        });
        self.receive(msg, request, None, Some((noise, bytes)));
    }

    /// [`Inbox::deliver_line`] of a line its reader gives away (a long one:
    /// a tool's result is then forwarded from it, not copied out of it).
    pub(crate) fn deliver_line_owned(&self, bytes: Vec<u8>, noise: &Noise) {
        // What a noise warning quotes, kept before the line is parsed.
        let excerpt = bytes[..bytes.len().min(4 * Noise::EXCERPT)].to_vec();
        let mut request = false;
        let msg = self.parse_given(bytes, &mut request);
        self.receive(msg, request, None, Some((noise, &excerpt)));
    }

    /// Handles one message its reader gives away (an HTTP body, an event's
    /// data; `related`: read from the response stream of that request, so a
    /// notification there is about that call). A tool's result is forwarded
    /// from this buffer, not from a copy of it (a result may be megabytes).
    pub(crate) fn deliver_owned(&self, bytes: Vec<u8>, related: Option<u64>) {
        let mut request = false;
        let msg = self.parse_given(bytes, &mut request);
        self.receive(msg, request, related, None);
    }

    /// A message its reader gave away, parsed and checked as [`Inbox::how`]
    /// says, its result (if forwarded unread) left in `bytes`.
    fn parse_given(&self, bytes: Vec<u8>, request: &mut bool) -> Result<Message, ParseError> {
        String::from_utf8(bytes)
            .map_err(|e| ParseError::Utf8(e.utf8_error()))
            .and_then(|text| Message::parse_owned(text, &self.json, |env| self.how(env, request)))
    }

    /// How much of a message to scan: a reply as the request it answers
    /// needs (a tool's result only where the gateway reads it), the rest
    /// whole. Notes whether it is a request (to answer a refusal).
    fn how(&self, env: &Envelope<'_>, request: &mut bool) -> ResultCheck {
        *request = !env.is_response();
        match env.numeric_id().filter(|_| env.is_response()) {
            Some(id) => self.lock().get(&id).map_or(ResultCheck::Whole, |(_, check)| *check),
            None => ResultCheck::Whole,
        }
    }

    fn receive(
        &self,
        msg: Result<Message, ParseError>,
        request: bool,
        related: Option<u64>,
        noise: Option<(&Noise, &[u8])>,
    ) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => match noise {
                Some((noise, bytes)) if Noise::is_noise(&e) => return noise.seen(&self.upstream, &e, bytes),
                _ => return self.refuse(&e, request),
            },
        };
        match msg.kind() {
            Ok(MessageKind::Response) => {
                let id = msg.id.as_deref().and_then(|id| id.get().parse::<u64>().ok());
                let waiter = id.and_then(|id| self.lock().remove(&id));
                match waiter {
                    // The caller may have given up (timeout, cancel): fine.
                    Some((tx, _)) => drop(tx.send(Ok(msg))),
                    None => tracing::debug!(upstream = %self.upstream, "Dropped a reply nobody waits for."),
                }
            }
            Ok(MessageKind::Request) => {
                let relay = related.and_then(|id| self.related.locked().get(&id).cloned());
                self.event(Event::Request(msg, relay));
            }
            Ok(MessageKind::Notification) if msg.method() == "notifications/progress" => self.progress_seen(&msg),
            // A log message or task status on a call's response stream is
            // about that call; everything else (list changes, resource
            // updates, …) is the supervisor's to handle, wherever it arrived.
            Ok(MessageKind::Notification)
                if matches!(msg.method(), "notifications/message" | "notifications/tasks/status") =>
            {
                let relay = related.and_then(|id| self.related.locked().get(&id).map(|(r, _)| r.clone()));
                match relay {
                    Some(r) => r.notify(&msg),
                    None => self.event(Event::Notification(msg)),
                }
            }
            Ok(MessageKind::Notification) => self.event(Event::Notification(msg)),
            Err(_) => {}
        }
    }

    /// An upstream message that is not one, or that parsers would read
    /// differently (docs/design.md D12): counted and logged, never acted on. A
    /// reply whose id is known fails its call with class `protocol` (the
    /// call did run upstream, so it is never retried); a request gets an
    /// error back, so the upstream does not wait for it.
    fn refuse(&self, e: &ParseError, request: bool) {
        let labels = UpstreamRefusalLabels { upstream: Name::from(&*self.upstream), reason: e.reason() };
        self.refused.get_or_create(&labels).inc();
        match e.ambiguous() {
            Some(a) => tracing::warn!(
                upstream = %self.upstream, reason = a.reason.as_str(), path = %a.path,
                "Upstream sent an ambiguous message; refused."
            ),
            None => {
                tracing::warn!(upstream = %self.upstream, error = %e, "Upstream sent an invalid JSON-RPC message; refused.")
            }
        }
        let Some(id) = e.id() else { return };
        if request {
            self.event(Event::Answer(e.to_response()));
            return;
        }
        if let Some((tx, _)) = id.get().parse::<u64>().ok().and_then(|n| self.lock().remove(&n)) {
            let msg = format!("upstream `{}` sent a reply the gateway refused: {e}", self.upstream);
            let mut err = CallError::new(ErrorClass::Protocol, Some(&self.upstream), msg);
            err.refused = Some(e.reason());
            drop(tx.send(Err(err)));
        }
    }

    /// A fresh [`Noise`] for one process of this upstream: its counter
    /// series exists from now (at 0, so a rate or an alert sees the first
    /// line), and its first line is warned about again.
    pub(crate) fn noise(&self) -> Noise {
        let lines = self.noise.get_or_create(&UpstreamLabels { upstream: Name::from(&*self.upstream) }).clone();
        Noise { lines, warned: std::sync::atomic::AtomicBool::new(false) }
    }

    pub(crate) fn event(&self, ev: Event) {
        if let Err(e) = self.events.try_send(ev) {
            tracing::debug!(upstream = %self.upstream, error = %e, "Upstream event dropped: supervisor busy.");
        }
    }

    /// Fails one pending call (a transport error for that request only).
    pub(crate) fn fail(&self, id: u64, err: CallError) {
        if let Some((tx, _)) = self.lock().remove(&id) {
            drop(tx.send(Err(err)));
        }
    }

    /// Fails the call whose reply was too large to read, when its id could
    /// be read from the reply's first bytes.
    pub(crate) fn fail_oversized(&self, id: Option<&str>, max: usize) {
        let Some(id) = id.and_then(|id| id.parse::<u64>().ok()) else { return };
        let msg = format!("upstream `{}` sent a reply larger than {max} bytes", self.upstream);
        self.fail(id, CallError::new(ErrorClass::UpstreamInternal, Some(&self.upstream), msg));
    }

    /// Wakes the call that registered the progress token of `msg` and
    /// relays the notification to its client. Progress for no call in
    /// flight (a late one, or a token we never gave) is dropped.
    fn progress_seen(&self, msg: &Message) {
        let token = msg.params().and_then(|p| p.get("progressToken")).map(|t| t.text().to_owned());
        let Some(token) = token else { return };
        let entry = self.progress.locked().get(token.as_str()).cloned();
        match entry {
            Some((waker, relay)) => {
                waker.notify_one();
                if let Some(r) = relay {
                    r.notify(msg);
                }
            }
            None => tracing::debug!(upstream = %self.upstream, "Dropped progress for no call in flight."),
        }
    }

    /// Registers a call's progress token (raw JSON text) until the guard
    /// drops; its progress goes to `relay`.
    pub(crate) fn watch_progress(self: &Arc<Self>, token: &str, relay: Option<&Arc<dyn Relay>>) -> ProgressWatch {
        let notify = Arc::new(Notify::new());
        self.progress.locked().insert(token.into(), (notify.clone(), relay.cloned()));
        ProgressWatch { inbox: self.clone(), token: token.into(), notify }
    }

    /// Fails every pending call: the connection is gone.
    pub(crate) fn fail_all(&self, reason: &str) {
        let drained: Vec<_> = self.lock().drain().collect();
        for (_, (tx, _)) in drained {
            let msg = format!("upstream `{}` connection lost: {reason}", self.upstream);
            drop(tx.send(Err(CallError::new(ErrorClass::Transport, Some(&self.upstream), msg))));
        }
    }

    /// Marks the transport as gone (first reason wins) and fails every
    /// pending call. Never lost, unlike events.
    pub(crate) fn close(&self, reason: String) {
        {
            let mut r = self.close_reason.locked();
            r.get_or_insert(reason);
        }
        self.closed.cancel();
        let reason = self.close_reason();
        self.fail_all(&reason);
    }

    /// Resolves once the transport is gone.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Whether the transport is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Why the transport is gone.
    pub(crate) fn close_reason(&self) -> String {
        let r = self.close_reason.locked();
        r.clone().unwrap_or_else(|| "closed".to_owned())
    }

    /// Whether request `id` still waits for a reply.
    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    pub(crate) fn upstream(&self) -> &str {
        &self.upstream
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, IdMap<(oneshot::Sender<Reply>, ResultCheck)>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove calls), so poisoning is ignored.
        self.pending.locked()
    }
}

/// Lines on one stdio process's stdout that are no JSON-RPC message: most
/// often a server (or the `npx`/`uvx` wrapper in front of it) logging to
/// the wrong stream. They are skipped and counted; the first of each
/// process is a warning, the rest are debug lines, so a chatty server does
/// not flood the log while the operator still learns that it happens.
#[derive(Debug)]
pub(crate) struct Noise {
    lines: prometheus_client::metrics::counter::Counter,
    warned: std::sync::atomic::AtomicBool,
}

impl Noise {
    /// How much of a noise line goes into the log.
    const EXCERPT: usize = 200;

    /// Whether a refusal is noise: not JSON, or JSON that is no JSON-RPC
    /// message and carries no id. Ambiguous JSON (design D12) and a
    /// message with an id (a reply to fail, a request to answer) stay
    /// refusals, warned about every time.
    fn is_noise(e: &ParseError) -> bool {
        e.ambiguous().is_none() && e.id().is_none()
    }

    fn seen(&self, upstream: &str, e: &ParseError, bytes: &[u8]) {
        self.lines.inc();
        let first = !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed);
        // A server that prints a line per request must cost no more than
        // the count when debug is off.
        if !first && !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        let end = text.char_indices().nth(Self::EXCERPT).map_or(text.len(), |(i, _)| i);
        let line = text[..end].trim_end();
        if !first {
            tracing::debug!(upstream = %upstream, error = %e, line, "Upstream wrote a non-JSON-RPC line on stdout; skipped.");
        } else {
            tracing::warn!(
                upstream = %upstream, error = %e, line,
                "Upstream wrote an invalid JSON-RPC message on stdout (servers must log to stderr); skipped. \
                 Further ones from this process are logged at debug and counted in \
                 mcp_gateway_upstream_stdout_noise_lines_total."
            );
        }
    }

    /// Lines counted so far (the series is shared by every process of the
    /// upstream).
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.lines.get()
    }
}

/// A registered progress token; unregistered on drop.
#[derive(Debug)]
pub(crate) struct ProgressWatch {
    inbox: Arc<Inbox>,
    token: Box<str>,
    pub(super) notify: Arc<Notify>,
}

impl Drop for ProgressWatch {
    fn drop(&mut self) {
        self.inbox.progress.locked().remove(&self.token);
    }
}

/// Removes a pending entry when its caller goes away.
pub(super) struct PendingGuard<'a> {
    pub(super) inbox: &'a Inbox,
    pub(super) id: u64,
    pub(super) related: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inbox.lock().remove(&self.id);
        if self.related {
            self.inbox.related.locked().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests;
