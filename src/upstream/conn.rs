//! One live connection to an upstream, shared by every downstream session
//! (docs/design.md D3).
//!
//! Requests get gateway-assigned numeric ids; the caller keeps the client's
//! id and gets the upstream's reply through a oneshot, so replies that arrive
//! in any order reach the right caller and the id map lives exactly as long
//! as the call (a dropped or timed-out call removes its entry).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::Relay;
use super::inbox::{Inbox, PendingGuard, Reply};
use super::link::{Headers, Link, LinkError};
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Checked, CheckedBox, Members, Message, encode};
use crate::sync::Locked;

/// A call's deadline: `deadline` now, pushed to `extend` after the last
/// progress notification, never past `hard`. Retries share one clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) deadline: Instant,
    pub(crate) extend: Duration,
    pub(crate) hard: Instant,
    pub(crate) started: Instant,
}

/// What `initialize` negotiated.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    /// The protocol revision both sides speak.
    pub(crate) version: String,
    /// The upstream's `capabilities`.
    pub(crate) capabilities: CheckedBox,
    /// The upstream's `serverInfo`.
    pub(crate) server_info: Option<CheckedBox>,
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
    /// The capabilities the gateway declares in `initialize`.
    capabilities: Box<RawValue>,
    /// The era the handshake settled on: a 2026-07-28 upstream gets `_meta`
    /// and the request metadata headers on every request.
    modern: std::sync::atomic::AtomicBool,
    /// The 2025 revision `initialize` settled on (`mcp.protocol.version`).
    version: std::sync::OnceLock<&'static str>,
}

/// What ties a request to the client that made it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Related<'a> {
    /// The call's progress token (raw JSON text, unique in the gateway).
    pub(crate) progress: Option<&'a str>,
    /// Where its progress and related notifications go.
    pub(crate) relay: Option<&'a Arc<dyn Relay>>,
    /// Tool parameters mirrored into `Mcp-Param-*` headers (a modern
    /// HTTP upstream's `x-mcp-header`), name and value.
    pub(crate) params: &'a [(String, String)],
}

// === impl Connection ===

impl Connection {
    pub(crate) fn new(inbox: Arc<Inbox>, link: Link, capabilities: Box<RawValue>) -> Self {
        Connection {
            upstream: inbox.upstream.clone(),
            inbox,
            link,
            next_id: AtomicU64::new(1),
            reinit: tokio::sync::Mutex::new(0),
            capabilities,
            modern: std::sync::atomic::AtomicBool::new(false),
            version: std::sync::OnceLock::new(),
        }
    }

    /// Sends a request and waits for its reply until `timeout`.
    pub(crate) async fn request(&self, method: &str, params: Option<Checked<'_>>, timeout: Duration) -> Reply {
        let now = Instant::now();
        let mut clock = Clock { deadline: now + timeout, extend: timeout, hard: now + timeout, started: now };
        self.request_within(method, params, &mut clock, Related::default(), None).await
    }

    /// Sends a request and waits for its reply until the clock's deadline,
    /// which progress notifications for `progress` (raw JSON token) extend.
    /// `traceparent` goes in a header over HTTP and in `_meta` over stdio.
    ///
    /// An HTTP session that expired (404) is re-initialised once and the
    /// request sent again: it provably never reached the upstream.
    pub(crate) async fn request_within(
        &self,
        method: &str,
        params: Option<Checked<'_>>,
        clock: &mut Clock,
        related: Related<'_>,
        traceparent: Option<&str>,
    ) -> Reply {
        let standard = &self.inbox.standard;
        if !standard.enabled() {
            return self.exchange(method, params, clock, related, traceparent).await;
        }
        let started = Instant::now();
        // The tool's own name: the gateway wrote it, from the catalog.
        let tool = params.filter(|_| method == "tools/call").and_then(|p| p.get("name")).and_then(|n| n.str());
        let tool: Option<crate::telemetry::metrics::Name> = tool.map(|n| Arc::from(&*n));
        let reply = self.exchange(method, params, clock, related, traceparent).await;
        let (error, status) = match &reply {
            Ok(m) => {
                let code = m.error().and_then(|e| e.get("code")).and_then(|c| c.text().parse().ok());
                (crate::error::classify_reply(m).map(ErrorClass::as_str), code)
            }
            Err(e) => (Some(e.class.as_str()), None),
        };
        let op = crate::telemetry::standard::Op {
            method: crate::telemetry::metrics::method_label(method),
            version: match self.era() {
                protocol::Era::Modern => Some(protocol::modern::MODERN_VERSION),
                protocol::Era::Legacy => self.version.get().copied(),
            },
            error,
            status: status.map(crate::telemetry::standard::status_label),
            tool: tool.as_ref(),
            upstream: Some(&self.upstream),
            transport: if self.link.carries_headers() { "tcp" } else { "pipe" },
        };
        standard.client_operation(started.elapsed(), &op);
        reply
    }

    /// [`Connection::request_within`], untimed.
    async fn exchange(
        &self,
        method: &str,
        params: Option<Checked<'_>>,
        clock: &mut Clock,
        related: Related<'_>,
        traceparent: Option<&str>,
    ) -> Reply {
        let with_meta;
        let (params, header) = match traceparent {
            Some(tp) if !self.link.carries_headers() => {
                with_meta = set_meta(params, crate::telemetry::trace::TRACEPARENT, tp);
                (with_meta.as_ref().map(CheckedBox::checked).or(params), None)
            }
            other => (params, other),
        };
        let modern;
        let params = match self.era() {
            protocol::Era::Modern => {
                modern = modern_params(params);
                modern.as_ref().map(CheckedBox::checked).or(params)
            }
            protocol::Era::Legacy => params,
        };
        let name = match (self.era(), protocol::modern::named_member(method)) {
            (protocol::Era::Modern, Some(member)) => params.and_then(|p| p.get(member)).and_then(Checked::str),
            _ => None,
        };
        let headers = Headers {
            traceparent: header,
            method: (self.era() == protocol::Era::Modern).then_some(method),
            name: name.as_deref(),
            params: related.params,
        };
        let params = params.map(Checked::raw);
        let watch = related.progress.map(|t| self.inbox.watch_progress(t, related.relay));
        let progress = watch.as_ref().map(|w| &*w.notify);
        // Only an HTTP response stream can carry messages about one call.
        let relay = related.relay.filter(|_| self.link.carries_headers());
        let hold = relay.map(|r| (r.clone(), Arc::new(super::inbox::Hold::default())));
        let mut reinitialized = false;
        loop {
            let generation = self.link.generation();
            // Pinned here and lent to `until`: taken by value, the ~2 KB
            // future would be stored twice in `until`'s own (argument and
            // pinned local), and every future above this one grows by it.
            let once = std::pin::pin!(self.request_once(method, params, headers, hold.as_ref()));
            match until(once, clock, progress, hold.as_ref().map(|(_, h)| &**h)).await {
                Some(Err(Retry::SessionExpired)) if !reinitialized => {
                    reinitialized = true;
                    self.reinitialize(generation, clock.deadline).await?;
                }
                Some(Err(Retry::SessionExpired)) => {
                    return Err(self.transport_error("session expired again right after re-initialize"));
                }
                Some(Err(Retry::Failed(e))) => return Err(e),
                // A 2026-07-28 server that says it does not serve the
                // revision asked but lists it among those it does (the
                // version check is per request): sent again, once.
                Some(Ok(m)) if !reinitialized && self.era() == protocol::Era::Modern && offers_ours(&m) => {
                    reinitialized = true;
                    tracing::debug!(upstream = %self.upstream, method, "Upstream refused the protocol revision it lists; sending again.");
                }
                Some(Ok(m)) => return Ok(m),
                None => {
                    let secs = clock.deadline.saturating_duration_since(clock.started).as_secs_f64();
                    return Err(CallError::new(
                        ErrorClass::Timeout,
                        Some(&self.upstream),
                        format!("upstream `{}` did not answer {method} within {secs:.1}s", self.upstream),
                    ));
                }
            }
        }
    }

    async fn request_once(
        &self,
        method: &str,
        params: Option<&RawValue>,
        headers: Headers<'_>,
        relay: Option<&(Arc<dyn Relay>, Arc<super::inbox::Hold>)>,
    ) -> Result<Message, Retry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inbox.lock().insert(id, (tx, protocol::result_check(method)));
        if let Some(r) = relay {
            self.inbox.related.locked().insert(id, r.clone());
        }
        let guard = PendingGuard { inbox: &self.inbox, id, related: relay.is_some() };
        let body = encode::request(id, method, params);
        let mut cancel_on_drop = CancelOnDrop { conn: self, id, armed: false };
        match self.link.send(&self.inbox, body, Some(id), headers).await {
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
    pub(crate) async fn notify(&self, method: &str, params: Option<Checked<'_>>) -> Result<(), CallError> {
        self.link
            .send(&self.inbox, encode::notification(method, params.map(Checked::raw)), None, Headers::default())
            .await
            .map_err(|e| self.link_error(&e))
    }

    /// Answers a request the upstream sent.
    pub(crate) async fn respond(&self, body: String) {
        if let Err(e) = self.link.send(&self.inbox, body, None, Headers::default()).await {
            tracing::debug!(upstream = %self.upstream, error = %e, "Could not answer an upstream request.");
        }
    }

    /// The `initialize` handshake: offer the latest revision, accept any
    /// supported one, and send `initialized` only after the result arrived.
    pub(crate) async fn initialize(&self, timeout: Duration) -> Result<Negotiated, CallError> {
        let params = format!(
            r#"{{"protocolVersion":"{}","capabilities":{},"clientInfo":{{"name":"mcp-gateway","version":"{}"}}}}"#,
            protocol::LATEST_VERSION,
            self.capabilities.get(),
            env!("CARGO_PKG_VERSION")
        );
        let params = CheckedBox::from_value(&serde_json::from_str(&params).expect("valid JSON"));
        let reply = self.request("initialize", Some(params.checked()), timeout).await?;
        let result = match (reply.result(), reply.error()) {
            (Some(r), _) => r,
            (None, Some(e)) => {
                return Err(CallError::new(
                    ErrorClass::Protocol,
                    Some(&self.upstream),
                    format!("upstream `{}` refused initialize: {}", self.upstream, short(e.text())),
                ));
            }
            (None, None) => unreachable!("a response has a result or an error, and initialize's is scanned whole"),
        };
        let invalid = |why: &str| {
            CallError::new(
                ErrorClass::Protocol,
                Some(&self.upstream),
                format!("upstream `{}` sent an invalid initialize result: {why}", self.upstream),
            )
        };
        let result = result.object().ok_or_else(|| invalid("not an object"))?;
        let version = result.str("protocolVersion").ok_or_else(|| invalid("no string `protocolVersion`"))?;
        let capabilities = match result.get("capabilities") {
            Some(c) if c.object().is_some() => c.to_box(),
            Some(_) => return Err(invalid("`capabilities` is not an object")),
            None => CheckedBox::from_value(&serde_json::json!({})),
        };
        let init = Negotiated { version, capabilities, server_info: result.get("serverInfo").map(Checked::to_box) };
        if !protocol::is_supported_version(&init.version) {
            return Err(CallError::new(
                ErrorClass::Protocol,
                Some(&self.upstream),
                format!(
                    "upstream `{}` speaks unsupported protocol version {:?}",
                    self.upstream,
                    protocol::echo(&init.version)
                ),
            ));
        }
        self.link.set_protocol_version(&init.version);
        if let Some(v) = crate::telemetry::standard::version_label(&init.version) {
            let _ = self.version.set(v);
        }
        self.notify("notifications/initialized", None).await?;
        Ok(init)
    }

    /// The era the handshake settled on (2025 until one has).
    pub(crate) fn era(&self) -> protocol::Era {
        match self.modern.load(Ordering::Relaxed) {
            true => protocol::Era::Modern,
            false => protocol::Era::Legacy,
        }
    }

    /// The 2026-07-28 handshake: `server/discover`. A result that lists a
    /// modern revision makes this a modern connection (every request then
    /// carries `_meta` and the metadata headers, and there is no session);
    /// an error, or a result without one, is `Err`, and the caller may fall
    /// back to `initialize`.
    pub(crate) async fn discover(&self, timeout: Duration) -> Result<Negotiated, CallError> {
        let params = CheckedBox::from_value(&serde_json::json!({}));
        self.modern.store(true, Ordering::Relaxed);
        self.link.set_protocol_version(protocol::modern::MODERN_VERSION);
        let reply = self.request("server/discover", Some(params.checked()), timeout).await;
        let refused = |why: String| CallError::new(ErrorClass::Protocol, Some(&self.upstream), why);
        let reply = reply.inspect_err(|_| self.unmodern())?;
        let Some(result) = reply.result().and_then(Checked::object) else {
            self.unmodern();
            let why = reply.error().map_or_else(|| "an invalid result".to_owned(), |e| short(e.text()).to_owned());
            return Err(refused(format!("upstream `{}` refused server/discover: {why}", self.upstream)));
        };
        let versions = result.get("supportedVersions").and_then(Checked::items).unwrap_or_default();
        let speaks = versions.iter().filter_map(|v| v.str()).any(|v| protocol::modern::is_modern(&v));
        if !speaks {
            self.unmodern();
            return Err(refused(format!("upstream `{}` serves no 2026-07-28 revision", self.upstream)));
        }
        let capabilities = match result.get("capabilities") {
            Some(c) if c.object().is_some() => c.to_box(),
            _ => CheckedBox::from_value(&serde_json::json!({})),
        };
        let server_info = result
            .get("serverInfo")
            .or_else(|| result.get("_meta").and_then(|m| m.get("io.modelcontextprotocol/serverInfo")))
            .map(Checked::to_box);
        Ok(Negotiated { version: protocol::modern::MODERN_VERSION.to_owned(), capabilities, server_info })
    }

    /// Forgets a modern attempt that failed, so `initialize` goes out plain.
    fn unmodern(&self) {
        self.modern.store(false, Ordering::Relaxed);
        self.link.clear_protocol_version();
    }

    /// Runs the handshake again after the upstream forgot our session, once
    /// for all callers that saw the same expired session.
    async fn reinitialize(&self, seen_generation: u64, deadline: Instant) -> Result<(), CallError> {
        let mut done = self.reinit.lock().await;
        if *done > seen_generation || self.link.generation() > seen_generation {
            return Ok(()); // Someone else already re-initialised.
        }
        tracing::info!(upstream = %self.upstream, "Upstream session expired; initializing a new one.");
        self.link.reset_session();
        let left = deadline.saturating_duration_since(Instant::now());
        Box::pin(self.initialize(left)).await?;
        // The old session's notification stream died with it.
        self.link.start_listening(&self.inbox).await;
        *done = self.link.generation();
        Ok(())
    }

    /// Classifies a transport failure (D5) and whether the request
    /// provably never reached the upstream (D6).
    fn link_error(&self, e: &LinkError) -> CallError {
        let (class, not_delivered, retry_after) = match e {
            LinkError::Status { status: 429, retry_after } => (ErrorClass::Overloaded, true, *retry_after),
            // 503 refuses before processing (RFC 9110 §15.6.4); 500, 502
            // and 504 may come after the upstream did the work.
            LinkError::Status { status: 503, retry_after } => (ErrorClass::Transport, true, *retry_after),
            // Refused at the door for want of credentials: never processed.
            LinkError::Status { status: 401 | 403, .. } | LinkError::Auth(_) => (ErrorClass::UpstreamAuth, true, None),
            LinkError::Status { .. } | LinkError::Io(_) => (ErrorClass::Transport, false, None),
            LinkError::Closed | LinkError::Connect(_) | LinkError::SessionExpired => {
                (ErrorClass::Transport, true, None)
            }
            LinkError::TooLarge(_) => (ErrorClass::UpstreamInternal, false, None),
        };
        let msg = match e {
            LinkError::Auth(why) => why.to_string(),
            _ => format!("upstream `{}` {e}", self.upstream),
        };
        let mut err = CallError::new(class, Some(&self.upstream), msg);
        err.not_delivered = not_delivered;
        err.retry_after = retry_after;
        err
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
        // 2026-07-28 over HTTP has no such notification: the request's
        // stream closing (its reader stops once no one waits) is the
        // cancellation.
        if self.conn.era() == protocol::Era::Modern && self.conn.link.carries_headers() {
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

/// `params` with their `_meta` object edited by `edit` (made when there
/// is none). `None` when `params` or `_meta` is not an object: they are
/// left alone.
fn edit_meta(params: Option<Checked<'_>>, edit: impl FnOnce(&mut Members<'_>)) -> Option<CheckedBox> {
    let mut obj = match params {
        Some(p) => p.object()?,
        None => Members::new(),
    };
    let meta = {
        let mut meta = match obj.get("_meta") {
            Some(m) => m.object()?,
            None => Members::new(),
        };
        edit(&mut meta);
        meta.to_checked()
    };
    obj.set("_meta", meta);
    Some(obj.to_checked())
}

/// `params` with the `_meta` a 2026-07-28 request carries: the revision,
/// and the client's capabilities and info unless the client (a modern one)
/// sent its own, which go on as they are. A 2025 client's request declares
/// no capabilities: what it could answer is bridged by the gateway, not
/// promised to the upstream. `None` when `params` is not an object.
fn modern_params(params: Option<Checked<'_>>) -> Option<CheckedBox> {
    use protocol::modern::{META_CAPABILITIES, META_CLIENT_INFO, META_VERSION, MODERN_VERSION};
    edit_meta(params, |meta| {
        meta.set_str(META_VERSION, MODERN_VERSION);
        if !meta.contains(META_CAPABILITIES) {
            meta.set(META_CAPABILITIES, CheckedBox::from_value(&serde_json::json!({})));
        }
        if !meta.contains(META_CLIENT_INFO) {
            let info = serde_json::json!({ "name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION") });
            meta.set(META_CLIENT_INFO, CheckedBox::from_value(&info));
        }
    })
}

/// Whether `reply` is `-32022` UnsupportedProtocolVersion whose
/// `data.supported` lists the modern revision the gateway speaks.
fn offers_ours(reply: &Message) -> bool {
    let Some(error) = reply.error() else { return false };
    if error.get("code").map(Checked::text) != Some("-32022") {
        return false;
    }
    let supported = error.get("data").and_then(|d| d.get("supported")).and_then(Checked::items).unwrap_or_default();
    supported.iter().filter_map(|v| v.str()).any(|v| v == protocol::modern::MODERN_VERSION)
}

/// `params` with `_meta.<key>` set to a string (params that are not an
/// object are left alone: `None`).
fn set_meta(params: Option<Checked<'_>>, key: &str, value: &str) -> Option<CheckedBox> {
    edit_meta(params, |meta| meta.set_str(key, value))
}

/// Runs `fut` until the clock's deadline; a progress notification moves the
/// deadline to `extend` from now (never past `hard`), and so does the
/// client's answer to the last of the call's own server requests; while
/// one waits for the client (`hold`), only `hard` applies. `None` on
/// timeout.
async fn until<F: std::future::Future>(
    mut fut: std::pin::Pin<&mut F>,
    clock: &mut Clock,
    progress: Option<&Notify>,
    hold: Option<&super::inbox::Hold>,
) -> Option<F::Output> {
    loop {
        let progressed = async {
            match progress {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        let changed = async {
            match hold {
                Some(h) => h.changed.notified().await,
                None => std::future::pending().await,
            }
        };
        let held = hold.is_some_and(super::inbox::Hold::held);
        let deadline = if held { clock.hard } else { clock.deadline };
        tokio::select! {
            out = &mut fut => return Some(out),
            () = tokio::time::sleep_until(deadline) => return None,
            () = progressed => {
                clock.deadline = clock.deadline.max((Instant::now() + clock.extend).min(clock.hard));
            }
            () = changed => {
                if !hold.is_some_and(super::inbox::Hold::held) {
                    clock.deadline = clock.deadline.max((Instant::now() + clock.extend).min(clock.hard));
                }
            }
        }
    }
}

/// The first 200 characters of an upstream's text, for an error message.
fn short(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
