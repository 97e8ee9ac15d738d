//! One live connection to an upstream, shared by every downstream session
//! (design.md D3).
//!
//! Requests get gateway-assigned numeric ids; the caller keeps the client's
//! id and gets the upstream's reply through a oneshot, so replies that arrive
//! in any order reach the right caller and the id map lives exactly as long
//! as the call (a dropped or timed-out call removes its entry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::link::{Link, LinkError};
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Message, MessageKind, encode};

/// What a connection reports to its supervisor.
#[derive(Debug)]
pub(crate) enum Event {
    /// A request from the upstream (ping, roots/list, …).
    Request(Message),
    /// A notification from the upstream.
    Notification(Message),
}

type Reply = Result<Message, CallError>;

/// Where transports deliver what they read.
#[derive(Debug)]
pub(crate) struct Inbox {
    upstream: Arc<str>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    events: mpsc::Sender<Event>,
    closed: tokio_util::sync::CancellationToken,
    close_reason: Mutex<Option<String>>,
}

/// What `initialize` negotiated.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    /// The protocol revision both sides speak.
    pub(crate) version: String,
    /// The upstream's raw `capabilities`.
    pub(crate) capabilities: Box<RawValue>,
    /// The upstream's raw `serverInfo`.
    pub(crate) server_info: Option<Box<RawValue>>,
}

/// A connection: a transport link plus the id map.
#[derive(Debug)]
pub(crate) struct Connection {
    upstream: Arc<str>,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) link: Link,
    next_id: AtomicU64,
    /// Serialises re-initialisation after an HTTP session expired.
    reinit: tokio::sync::Mutex<u64>,
}

// === impl Inbox ===

impl Inbox {
    pub(crate) fn new(upstream: Arc<str>, events: mpsc::Sender<Event>) -> Arc<Self> {
        Arc::new(Inbox {
            upstream,
            pending: Mutex::new(HashMap::new()),
            events,
            closed: tokio_util::sync::CancellationToken::new(),
            close_reason: Mutex::new(None),
        })
    }

    /// Handles one message read from the upstream.
    pub(crate) fn deliver(&self, bytes: &[u8]) {
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(upstream = %self.upstream, error = %e, "Upstream sent an invalid JSON-RPC message.");
                return;
            }
        };
        match msg.kind() {
            Ok(MessageKind::Response) => {
                let id = msg.id.as_deref().and_then(|id| id.get().parse::<u64>().ok());
                let waiter = id.and_then(|id| self.lock().remove(&id));
                match waiter {
                    // The caller may have given up (timeout, cancel): fine.
                    Some(tx) => drop(tx.send(Ok(msg))),
                    None => tracing::debug!(upstream = %self.upstream, "Dropped a reply nobody waits for."),
                }
            }
            Ok(MessageKind::Request) => self.event(Event::Request(msg)),
            Ok(MessageKind::Notification) => self.event(Event::Notification(msg)),
            Err(_) => {}
        }
    }

    pub(crate) fn event(&self, ev: Event) {
        if let Err(e) = self.events.try_send(ev) {
            tracing::debug!(upstream = %self.upstream, error = %e, "Upstream event dropped: supervisor busy.");
        }
    }

    /// Fails one pending call (a transport error for that request only).
    pub(crate) fn fail(&self, id: u64, err: CallError) {
        if let Some(tx) = self.lock().remove(&id) {
            drop(tx.send(Err(err)));
        }
    }

    /// Fails every pending call: the connection is gone.
    pub(crate) fn fail_all(&self, reason: &str) {
        let drained: Vec<_> = self.lock().drain().collect();
        for (_, tx) in drained {
            let msg = format!("upstream `{}` connection lost: {reason}", self.upstream);
            drop(tx.send(Err(CallError::new(ErrorClass::Transport, Some(&self.upstream), msg))));
        }
    }

    /// Marks the transport as gone (first reason wins) and fails every
    /// pending call. Never lost, unlike events.
    pub(crate) fn close(&self, reason: String) {
        {
            let mut r = self.close_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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

    /// Why the transport is gone.
    pub(crate) fn close_reason(&self) -> String {
        let r = self.close_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.clone().unwrap_or_else(|| "closed".to_owned())
    }

    /// Whether request `id` still waits for a reply.
    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    pub(crate) fn upstream(&self) -> &str {
        &self.upstream
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Reply>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove calls), so poisoning is ignored.
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes a pending entry when its caller goes away.
struct PendingGuard<'a> {
    inbox: &'a Inbox,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inbox.lock().remove(&self.id);
    }
}

// === impl Connection ===

impl Connection {
    pub(crate) fn new(inbox: Arc<Inbox>, link: Link) -> Self {
        Connection {
            upstream: inbox.upstream.clone(),
            inbox,
            link,
            next_id: AtomicU64::new(1),
            reinit: tokio::sync::Mutex::new(0),
        }
    }

    /// Sends a request and waits for its reply until `timeout`.
    ///
    /// An HTTP session that expired (404) is re-initialised once and the
    /// request sent again: it provably never reached the upstream.
    pub(crate) async fn request(&self, method: &str, params: Option<&RawValue>, timeout: Duration) -> Reply {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut reinitialized = false;
        loop {
            let generation = self.link.generation();
            match tokio::time::timeout_at(deadline, self.request_once(method, params)).await {
                Ok(Err(Retry::SessionExpired)) if !reinitialized => {
                    reinitialized = true;
                    self.reinitialize(generation, deadline).await?;
                }
                Ok(Err(Retry::SessionExpired)) => {
                    return Err(self.transport_error("session expired again right after re-initialize"));
                }
                Ok(Err(Retry::Failed(e))) => return Err(e),
                Ok(Ok(m)) => return Ok(m),
                Err(_) => {
                    let secs = timeout.as_secs_f64();
                    return Err(CallError::new(
                        ErrorClass::Timeout,
                        Some(&self.upstream),
                        format!("upstream `{}` did not answer {method} within {secs}s", self.upstream),
                    ));
                }
            }
        }
    }

    async fn request_once(&self, method: &str, params: Option<&RawValue>) -> Result<Message, Retry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inbox.lock().insert(id, tx);
        let guard = PendingGuard { inbox: &self.inbox, id };
        let body = encode::request(id, method, params);
        let mut cancel_on_drop = CancelOnDrop { conn: self, id, armed: false };
        match self.link.send(&self.inbox, body, Some(id)).await {
            Ok(()) => {}
            Err(LinkError::SessionExpired) => return Err(Retry::SessionExpired),
            Err(e) => return Err(Retry::Failed(self.link_error(&e))),
        }
        // From here the upstream may be working on it: a caller that gives
        // up (timeout, client gone) tells the upstream to stop.
        cancel_on_drop.armed = true;
        let reply = rx.await;
        cancel_on_drop.armed = false;
        drop(guard);
        match reply {
            Ok(r) => r.map_err(Retry::Failed),
            Err(_) => Err(Retry::Failed(self.transport_error("connection closed before the reply"))),
        }
    }

    /// Sends a notification.
    pub(crate) async fn notify(&self, method: &str, params: Option<&RawValue>) -> Result<(), CallError> {
        self.link.send(&self.inbox, encode::notification(method, params), None).await.map_err(|e| self.link_error(&e))
    }

    /// Answers a request the upstream sent.
    pub(crate) async fn respond(&self, body: String) {
        if let Err(e) = self.link.send(&self.inbox, body, None).await {
            tracing::debug!(upstream = %self.upstream, error = %e, "Could not answer an upstream request.");
        }
    }

    /// The `initialize` handshake: offer the latest revision, accept any
    /// supported one, and send `initialized` only after the result arrived.
    pub(crate) async fn initialize(&self, timeout: Duration) -> Result<Negotiated, CallError> {
        let params = serde_json::json!({
            "protocolVersion": protocol::LATEST_VERSION,
            // Only what the gateway can relay; nothing yet.
            "capabilities": {},
            "clientInfo": { "name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION") },
        });
        let params = serde_json::value::to_raw_value(&params).expect("json! always serializes");
        let reply = self.request("initialize", Some(&params), timeout).await?;
        let result = match (reply.result, reply.error) {
            (Some(r), _) => r,
            (None, Some(e)) => {
                return Err(CallError::new(
                    ErrorClass::Protocol,
                    Some(&self.upstream),
                    format!("upstream `{}` refused initialize: {}", self.upstream, short(e.get())),
                ));
            }
            (None, None) => unreachable!("a response has a result or an error"),
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct InitResult {
            protocol_version: String,
            #[serde(default)]
            capabilities: Option<Box<RawValue>>,
            #[serde(default)]
            server_info: Option<Box<RawValue>>,
        }
        let init: InitResult = serde_json::from_str(result.get()).map_err(|e| {
            CallError::new(
                ErrorClass::Protocol,
                Some(&self.upstream),
                format!("upstream `{}` sent an invalid initialize result: {e}", self.upstream),
            )
        })?;
        if !protocol::is_supported_version(&init.protocol_version) {
            return Err(CallError::new(
                ErrorClass::Protocol,
                Some(&self.upstream),
                format!("upstream `{}` speaks unsupported protocol version {:?}", self.upstream, init.protocol_version),
            ));
        }
        self.link.set_protocol_version(&init.protocol_version);
        self.notify("notifications/initialized", None).await?;
        let capabilities = init.capabilities.unwrap_or_else(|| RawValue::from_string("{}".into()).expect("valid"));
        Ok(Negotiated { version: init.protocol_version, capabilities, server_info: init.server_info })
    }

    /// Runs the handshake again after the upstream forgot our session, once
    /// for all callers that saw the same expired session.
    async fn reinitialize(&self, seen_generation: u64, deadline: tokio::time::Instant) -> Result<(), CallError> {
        let mut done = self.reinit.lock().await;
        if *done > seen_generation || self.link.generation() > seen_generation {
            return Ok(()); // Someone else already re-initialised.
        }
        tracing::info!(upstream = %self.upstream, "Upstream session expired; initializing a new one.");
        self.link.reset_session();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        Box::pin(self.initialize(left)).await?;
        // The old session's notification stream died with it.
        self.link.start_listening(&self.inbox);
        *done = self.link.generation();
        Ok(())
    }

    fn link_error(&self, e: &LinkError) -> CallError {
        let class = match e {
            LinkError::Status { status: 429, .. } => ErrorClass::Overloaded,
            _ => ErrorClass::Transport,
        };
        CallError::new(class, Some(&self.upstream), format!("upstream `{}` {e}", self.upstream))
    }

    fn transport_error(&self, what: &str) -> CallError {
        CallError::new(ErrorClass::Transport, Some(&self.upstream), format!("upstream `{}`: {what}", self.upstream))
    }
}

enum Retry {
    SessionExpired,
    Failed(CallError),
}

/// Sends `notifications/cancelled` for a request whose caller went away
/// while the upstream was working on it (spec: basic/utilities/cancellation).
struct CancelOnDrop<'a> {
    conn: &'a Connection,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed || !self.conn.inbox.is_pending(self.id) {
            return;
        }
        let body = encode::notification(
            "notifications/cancelled",
            Some(
                &RawValue::from_string(format!(r#"{{"requestId":{},"reason":"caller went away"}}"#, self.id))
                    .expect("valid"),
            ),
        );
        self.conn.link.send_detached(&self.conn.inbox, body);
    }
}

/// The first 200 characters of an upstream's text, for an error message.
fn short(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
