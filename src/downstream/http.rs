//! Streamable HTTP for clients at `/mcp` (transports.mdx §Streamable HTTP),
//! plus `/healthz`, `/readyz` and `/status`.
//!
//! - POST: one JSON-RPC message. `initialize` creates a session (random
//!   256-bit id in `Mcp-Session-Id`); requests are answered as JSON or as a
//!   one-event SSE stream (`gateway.response_mode`); notifications and
//!   responses get 202. Missing session → 400, unknown session → 404,
//!   unsupported `MCP-Protocol-Version` → 400, body over the limit → 413.
//! - GET: an SSE stream of the session's notifications (list changes,
//!   resource updates, log messages, progress of calls answered as JSON);
//!   one per session (409 for a second). Notifications wait in a bounded
//!   queue while no stream is open.
//! - A request answered as SSE streams the messages about that call
//!   (progress, its log messages) before the reply.
//! - Every SSE event has an id `<stream>-<n>`; the session keeps its recent
//!   events (bounded), and a GET with `Last-Event-ID` resumes the stream it
//!   names: a request stream is replayed and followed to its reply, the GET
//!   stream replays what it sent after that event and goes on.
//! - DELETE: ends the session.
//!
//! - The legacy HTTP+SSE transport (2024-11-05) for older clients: GET
//!   `/sse` opens a session whose first event names its POST endpoint
//!   (`/messages?sessionId=…`); POSTs there get 202 and every answer comes
//!   on the stream. The session ends with the stream.
//!
//! Every `/mcp`, `/sse` and `/messages` request is checked against the
//! `Host` and `Origin` allow-lists first (403), which defends against DNS
//! rebinding, then authenticated (401). The host is the URI's authority
//! when there is one (cleartext HTTP/2 has `:authority`, no `Host`), and a
//! `Host` that differs from it is refused (400). A POST's headers are checked next
//! (declared length, Content-Type, Accept), and only then is its body read:
//! at most `max_message_bytes` (413), within [`BODY_READ_TIMEOUT`] (408 and
//! the connection closed). A refusal that leaves a body unread closes an
//! HTTP/1.1 connection, after reading and discarding the rest for a moment
//! so that the client gets the answer rather than a reset. Slow request
//! heads are the accept loop's business ([`super::listen`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::bounds::{Held, Over, Quota};
use super::media;
use super::session::{Session, Sessions};
use crate::config::ResponseMode;
use crate::protocol::{self, Classified, Message, Transport, encode};
use crate::routing::Caller;
use crate::routing::Gateway;
use crate::security::auth::{AuthSetupError, Authenticator, Principal};
use crate::sync::Locked;
use crate::telemetry::metrics::ReasonLabels;
use crate::telemetry::trace::TRACEPARENT;

/// Longest a client may take to send a request body, whole, once its
/// request was admitted. At the smallest rate this allows (a body of the
/// default `max_message_bytes`, 16 MiB, in 30 s: about 560 KB/s) no client
/// on a working link is cut off; a slower one gets 408 and its connection
/// is closed, so it cannot hold a buffer of up to `max_message_bytes`
/// open indefinitely. A constant: `[gateway]` has no key for it.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, and how much of, the body of a request refused before it was
/// read is still read and thrown away on HTTP/1.1 before the connection is
/// closed. A client is usually still sending when the refusal comes; if the
/// gateway closed the connection with its body unread, the kernel would
/// reset it and many clients (hyper's among them) would report the broken
/// pipe instead of the answer. Nothing is kept, and both bounds hold the
/// connection for much less than a reasonable `connection_idle_timeout`.
const LINGER: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 16 << 20;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// Headers that may occur once: the gateway decides on them (who the client
/// is, which session, which revision, where it comes from), and a proxy in
/// front might read another copy than the first.
const SINGLE_HEADERS: [&str; 8] =
    ["authorization", "x-api-key", SESSION_HEADER, VERSION_HEADER, "host", "origin", "content-type", "last-event-id"];

/// Shared state of the HTTP front end.
#[derive(Debug)]
pub struct App {
    gateway: Arc<Gateway>,
    sessions: Sessions,
    hosts: Vec<String>,
    origins: Vec<String>,
    mode: ResponseMode,
    shutdown: CancellationToken,
    /// Sessions of the legacy HTTP+SSE transport, by id.
    legacy: std::sync::Mutex<std::collections::HashMap<String, Arc<LegacySession>>>,
    /// Client authentication (`[auth]`).
    auth: Authenticator,
    /// Bytes of request bodies in flight, whole and per principal.
    bytes: Arc<Quota>,
    /// Sessions per principal (the whole count is the tables').
    sessions_each: Arc<Quota>,
}

/// A legacy HTTP+SSE session: its stream carries every message to the
/// client, replies included.
#[derive(Debug)]
struct LegacySession {
    out: tokio::sync::mpsc::Sender<String>,
    /// Who opened it; only they may post to it.
    principal: Arc<Principal>,
    /// Registered with the gateway at `initialize`.
    client: std::sync::Mutex<Option<Arc<crate::routing::Client>>>,
    /// Its place in its principal's sessions.
    _quota: Held,
}

/// What the admin router's handlers need: no sessions, no Host check.
#[derive(Debug, Clone)]
struct Admin {
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
}

/// Builds the router. `shutdown` ends open GET streams so a graceful
/// shutdown does not wait on them. With `admin.listen` set, `/metrics` is
/// not on this router but on [`admin_router`]'s.
pub fn router(gateway: Arc<Gateway>, shutdown: CancellationToken) -> Result<Router, AuthSetupError> {
    let g = &gateway.config().gateway;
    let max = g.max_message_bytes;
    let split = gateway.config().admin.listen.is_some();
    let auth = Authenticator::new(&gateway.config().auth, gateway.http_client())?;
    let metadata_path = auth.metadata_path().to_owned();
    let metrics = &gateway.telemetry().metrics;
    let bytes = Quota::new(
        g.max_inflight_request_bytes,
        g.max_inflight_request_bytes_per_principal,
        Some(metrics.inflight_request_bytes.clone()),
    );
    let app = Arc::new(App {
        bytes,
        sessions_each: Quota::new(usize::MAX, g.max_sessions_per_principal, None),
        auth,
        sessions: Sessions::new(g.max_sessions, &gateway.telemetry().metrics),
        hosts: g.allowed_hosts.clone(),
        origins: g.allowed_origins.clone(),
        mode: g.response_mode,
        shutdown,
        gateway,
        legacy: Default::default(),
    });
    tokio::spawn(expire_sessions(app.clone()));
    let mut main = Router::new()
        .route("/mcp", get(get_mcp).post(post_mcp).delete(delete_mcp))
        .route("/sse", get(get_sse))
        .route("/messages", axum::routing::post(post_messages))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/status/upstreams/{id}", get(upstream_status))
        .route(WELL_KNOWN_RESOURCE, get(resource_metadata));
    if metadata_path != WELL_KNOWN_RESOURCE {
        main = main.route(&metadata_path, get(resource_metadata));
    }
    if !split {
        main = main.route("/metrics", get(metrics_checked));
    }
    // Bodies are read by `App::read_body`, after admission; the layer keeps
    // any extractor that would read one to the same limit.
    Ok(main.layer(DefaultBodyLimit::max(max)).with_state(app))
}

/// The router of `admin.listen`: `/metrics`, `/healthz`, `/readyz`, with no
/// Host check (bind it where only your scraper reaches).
pub fn admin_router(gateway: Arc<Gateway>, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/metrics", get(|State(a): State<Admin>| async move { metrics(&a.gateway) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|State(a): State<Admin>| async move { readiness(&a.gateway, &a.shutdown) }))
        .with_state(Admin { gateway, shutdown })
}

/// `/metrics` on the main listener: behind the Host check and, like
/// `/status`, for admins only (its labels name hidden tools).
async fn metrics_checked(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = app.admin(&headers, &uri, "/metrics").await {
        return r;
    }
    metrics(&app.gateway)
}

/// The Prometheus scrape (OpenMetrics text).
fn metrics(gateway: &Gateway) -> Response {
    let body = gateway.metrics_text();
    let content_type = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn expire_sessions(app: Arc<App>) {
    let idle = app.gateway.config().gateway.session_idle_timeout;
    let mut tick = tokio::time::interval(Duration::from_secs(30).min(idle));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.shutdown.cancelled() => return,
        }
        let n = app.sessions.expire(idle);
        if n > 0 {
            tracing::info!(expired = n, "Closed idle downstream sessions.");
        }
    }
}

async fn post_mcp(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    // Who the client is and what it sends are checked on the headers
    // alone: a client that may not post, or whose body would be refused
    // anyway, is answered before a byte of its body is read.
    let principal = match app.admit(headers, &parts.uri).await {
        Ok(p) => p,
        Err(r) => return refused_unread(parts.version, body.into_data_stream(), r),
    };
    if !media::content_type_is(headers, "application", "json") {
        app.rejected("content_type");
        let r = rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            protocol::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
        return refused_unread(parts.version, body.into_data_stream(), r);
    }
    // The reply is JSON, or an SSE stream for a client that names
    // text/event-stream itself; no Accept at all takes either.
    let accept = media::Accept::from_headers(headers);
    if accept.as_ref().is_some_and(|a| !a.allows("application", "json") && !a.names("text", "event-stream")) {
        app.rejected("accept");
        let r = rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            protocol::INVALID_REQUEST,
            "Accept must allow application/json or text/event-stream",
        );
        return refused_unread(parts.version, body.into_data_stream(), r);
    }
    let (msg, held) = match app.read_message(parts.version, body, &principal).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let sse = app.mode == ResponseMode::Sse && accept.as_ref().is_some_and(|a| a.names("text", "event-stream"));
    match msg.classify() {
        Ok(Classified::Request(msg)) if msg.method() == "initialize" => {
            let id = msg.id();
            let quota = match app.take_session(&principal) {
                Ok(q) => q,
                Err(r) => return *r,
            };
            let (reply, version) = match app.gateway.initialize(Transport::Http, id, msg.params(), &principal) {
                Ok(r) => r,
                Err(refusal) => {
                    app.rejected("capabilities_too_large");
                    return (StatusCode::BAD_REQUEST, json_headers(), refusal).into_response();
                }
            };
            let (tx, outbox) = tokio::sync::mpsc::channel(crate::routing::peer::QUEUE);
            let client = app.gateway.connect(tx, msg.params(), principal);
            let legacy = app.legacy.locked().len();
            let Ok(session) = app.sessions.create(version, client, outbox, quota, legacy) else {
                app.too_many_sessions();
                let e = crate::error::CallError::new(crate::error::ErrorClass::Overloaded, None, "Too many sessions");
                return (StatusCode::SERVICE_UNAVAILABLE, json_headers(), e.to_response(id)).into_response();
            };
            tracing::debug!(session_version = %session.version, "Downstream session created.");
            let mut resp = reply_response(reply, sse);
            resp.headers_mut()
                .insert(SESSION_HEADER, HeaderValue::from_str(&session.id).expect("hex is a valid header"));
            resp
        }
        Ok(Classified::Request(msg)) if msg.method() == "server/discover" => {
            // The 2026-07-28 probe comes without a session; -32601 at once
            // makes modern clients fall back to `initialize` (docs/design.md D2).
            let reply =
                encode::error(Some(msg.id()), protocol::METHOD_NOT_FOUND, "Method not found: server/discover", None);
            reply_response(reply, false)
        }
        Ok(Classified::Request(msg)) => {
            let session = match app.session(headers, Some(msg.id()), &principal) {
                Ok(s) => s,
                Err(r) => return r,
            };
            session.touch();
            let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if sse {
                return streamed(app.gateway.clone(), session, msg, held, traceparent, app.shutdown.clone());
            }
            let caller = Caller {
                transport: Transport::Http,
                session: Some(&session.id),
                traceparent: traceparent.as_deref(),
                peer: Some(&session.client.peer),
                stream: None,
            };
            let reply = app.gateway.handle(&msg, &caller).await;
            // The request's bytes are held until its reply is in.
            drop(held);
            match reply {
                Some(reply) => reply_response(reply, false),
                // Cancelled: no reply (cancellation.mdx). A stream that
                // ends without one says that, when the client takes SSE.
                None if accept.as_ref().is_some_and(|a| a.names("text", "event-stream")) => {
                    let mut resp = Response::new(Body::empty());
                    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                    resp
                }
                None => rpc_error(StatusCode::OK, Some(msg.id()), REQUEST_CANCELLED, "Request cancelled"),
            }
        }
        Ok(Classified::Notification(msg)) => match app.session(headers, None, &principal) {
            Ok(s) => {
                s.touch();
                app.gateway.notify(&msg, &s.client.peer);
                StatusCode::ACCEPTED.into_response()
            }
            Err(r) => r,
        },
        Ok(Classified::Response(msg)) => match app.session(headers, None, &principal) {
            Ok(s) => {
                s.touch();
                app.gateway.respond(&msg, &s.client.peer);
                StatusCode::ACCEPTED.into_response()
            }
            Err(r) => r,
        },
        Err(e) => (StatusCode::BAD_REQUEST, json_headers(), e.to_response()).into_response(),
    }
}

/// JSON-RPC code of a reply to a request the client cancelled, for a
/// client that takes only JSON (the LSP convention; MCP says to send
/// nothing, which a JSON POST cannot do).
const REQUEST_CANCELLED: i64 = -32800;

/// Answers a request as an SSE stream: the messages about the call as they
/// come (progress, its log messages), then the reply. The call runs in its
/// own task and every event goes through the session's replay buffer, so a
/// client that loses the stream resumes it with a GET and `Last-Event-ID`.
/// Losing the stream does not cancel the call (transports.mdx: only
/// `notifications/cancelled` or the session's end does).
fn streamed(
    gateway: Arc<Gateway>,
    session: Arc<Session>,
    msg: protocol::Request,
    held: Held,
    traceparent: Option<String>,
    shutdown: CancellationToken,
) -> Response {
    let stream = session.replay.open_stream();
    // Revisions from 2025-11-25 know priming events (SEP-1699); the
    // session's negotiated revision decides, as older clients may choke on
    // an event with empty data.
    if session.version.as_str() >= PRIMING_SINCE {
        session.replay.prime(stream, RECONNECT_AFTER);
    }
    let s = session.clone();
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(crate::routing::peer::QUEUE);
        let caller = Caller {
            transport: Transport::Http,
            session: Some(&s.id),
            traceparent: traceparent.as_deref(),
            peer: Some(&s.client.peer),
            stream: Some(&tx),
        };
        let handled = gateway.handle(&msg, &caller);
        tokio::pin!(handled);
        let reply = loop {
            tokio::select! {
                biased;
                Some(m) = rx.recv() => drop(s.replay.record(stream, m)),
                r = &mut handled => break r,
            }
        };
        while let Ok(m) = rx.try_recv() {
            s.replay.record(stream, m);
        }
        drop(held);
        if let Some(reply) = reply {
            s.replay.record(stream, reply);
        }
        s.replay.end(stream);
    });
    sse_response(replay_body(session, stream, 0, shutdown))
}

fn sse_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The events of request stream `stream` after event `after`, read from
/// the session's replay buffer as they come, until the stream ends.
fn replay_body(session: Arc<Session>, stream: u64, after: u64, shutdown: CancellationToken) -> Body {
    struct Reader {
        session: Arc<Session>,
        stream: u64,
        last: u64,
        changed: tokio::sync::watch::Receiver<u64>,
        ready: std::collections::VecDeque<Bytes>,
        shutdown: CancellationToken,
    }
    let changed = session.replay.subscribe();
    let reader = Reader { session, stream, last: after, changed, ready: Default::default(), shutdown };
    let events = futures_util::stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(b) = r.ready.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(b), r));
            }
            // Marked seen before reading, so no event slips between.
            r.changed.borrow_and_update();
            let found = r.session.replay.after(r.stream, r.last);
            if let Some((n, _)) = found.events.last() {
                r.last = *n;
            }
            r.ready.extend(found.events.into_iter().map(|(_, b)| b));
            if !r.ready.is_empty() {
                continue;
            }
            if found.ended {
                return None;
            }
            tokio::select! {
                c = r.changed.changed() => c.ok()?,
                () = tokio::time::sleep(KEEPALIVE) => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), r)),
                () = r.session.closed.cancelled() => return None,
                () = r.shutdown.cancelled() => return None,
            }
        }
    });
    Body::from_stream(events)
}

/// The first revision whose clients expect a priming event on a request's
/// SSE stream (an id and empty data).
const PRIMING_SINCE: &str = "2025-11-25";

/// The `retry` of a priming event: how long a client that lost a request's
/// stream waits before it resumes it.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A comment line this often keeps idle streams open through proxies.
const KEEPALIVE: Duration = Duration::from_secs(15);

async fn get_mcp(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    let principal = match app.admit(&headers, &uri).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // The stream is all a GET can get: text/event-stream must be named
    // (a wildcard is not enough, as the transport asks of clients).
    if !media::accept_names(&headers, "text", "event-stream") {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            protocol::INVALID_REQUEST,
            "Accept must include text/event-stream",
        );
    }
    let session = match app.session(&headers, None, &principal) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Resuming: a request stream is replayed here (and followed to its
    // end); the GET stream replays what it sent after the id, then goes on.
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(super::session::parse_event_id);
    if let Some((stream, after)) = resume.filter(|(s, _)| *s != 0) {
        tracing::debug!(stream, after, "Resuming a request stream.");
        return sse_response(replay_body(session, stream, after, app.shutdown.clone()));
    }
    let taken = session.outbox.locked().take();
    let Some(outbox) = taken else {
        return rpc_error(
            StatusCode::CONFLICT,
            None,
            protocol::INVALID_REQUEST,
            "A stream is already open for this session",
        );
    };
    // What this stream sent after the client's last event and may have
    // lost; the queue then has everything not sent yet.
    let replayed = match resume {
        Some((_, after)) => session.replay.after(0, after).events.into_iter().map(|(_, b)| b).collect(),
        None => std::collections::VecDeque::new(),
    };
    let state = StreamState { outbox: Some(outbox), replayed, session, shutdown: app.shutdown.clone() };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(b) = st.replayed.pop_front() {
            return Some((Ok::<_, std::convert::Infallible>(b), st));
        }
        let outbox = st.outbox.as_mut().expect("held until drop");
        tokio::select! {
            m = outbox.recv() => {
                let event = st.session.replay.record(0, m?);
                Some((Ok(event), st))
            }
            () = tokio::time::sleep(KEEPALIVE) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st)),
            () = st.shutdown.cancelled() => None,
            () = st.session.closed.cancelled() => None,
        }
    });
    sse_response(Body::from_stream(stream))
}

/// The state of a GET stream; gives the session its queue back on drop, so
/// notifications wait for the next stream.
struct StreamState {
    outbox: Option<tokio::sync::mpsc::Receiver<String>>,
    /// Events to send again first (`Last-Event-ID`).
    replayed: std::collections::VecDeque<Bytes>,
    session: Arc<Session>,
    shutdown: CancellationToken,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        *self.session.outbox.locked() = self.outbox.take();
    }
}

/// GET `/sse`: a legacy session; the stream's first event is the endpoint
/// to POST to.
async fn get_sse(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    let principal = match app.admit(&headers, &uri).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let quota = match app.take_session(&principal) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (out, rx) = tokio::sync::mpsc::channel::<String>(crate::routing::peer::QUEUE);
    let id = super::session::random_id::<32>();
    {
        let mut legacy = app.legacy.locked();
        if legacy.len() + app.sessions.len() >= app.gateway.config().gateway.max_sessions {
            drop(legacy);
            app.too_many_sessions();
            return rpc_error(StatusCode::SERVICE_UNAVAILABLE, None, protocol::INVALID_REQUEST, "Too many sessions");
        }
        let session = LegacySession { out, principal, client: Default::default(), _quota: quota };
        legacy.insert(id.clone(), Arc::new(session));
        app.legacy_gauge(legacy.len());
    }
    tracing::debug!("Legacy HTTP+SSE session opened.");
    let endpoint = Bytes::from(format!("event: endpoint\ndata: /messages?sessionId={id}\n\n"));
    let state = LegacyStream { app, id, rx, endpoint: Some(endpoint) };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(e) = st.endpoint.take() {
            return Some((Ok::<_, std::convert::Infallible>(e), st));
        }
        tokio::select! {
            m = st.rx.recv() => Some((Ok(Bytes::from(super::session::sse_event(None, m?))), st)),
            () = tokio::time::sleep(KEEPALIVE) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st)),
            () = st.app.shutdown.cancelled() => None,
        }
    });
    sse_response(Body::from_stream(stream))
}

/// A legacy session's stream; the session ends when it is dropped.
struct LegacyStream {
    app: Arc<App>,
    id: String,
    rx: tokio::sync::mpsc::Receiver<String>,
    endpoint: Option<Bytes>,
}

impl Drop for LegacyStream {
    fn drop(&mut self) {
        let gone = {
            let mut legacy = self.app.legacy.locked();
            let gone = legacy.remove(&self.id);
            self.app.legacy_gauge(legacy.len());
            gone
        };
        let client = gone.and_then(|s| s.client.locked().take());
        if let Some(c) = client {
            c.peer.close();
        }
        tracing::debug!("Legacy HTTP+SSE session closed.");
    }
}

#[derive(Debug, serde::Deserialize)]
struct LegacyQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

/// POST `/messages?sessionId=…`: 202 at once; the answer goes on the
/// session's stream.
async fn post_messages(
    State(app): State<Arc<App>>,
    query: Result<axum::extract::Query<LegacyQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let principal = match app.admit(headers, &parts.uri).await {
        Ok(p) => p,
        Err(r) => return refused_unread(parts.version, body.into_data_stream(), r),
    };
    let Ok(axum::extract::Query(q)) = query else {
        let r = rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, "sessionId is required");
        return refused_unread(parts.version, body.into_data_stream(), r);
    };
    let session = app.legacy.locked().get(&q.session_id).cloned();
    let session = session.filter(|s| app.same_principal(&s.principal, &principal));
    let Some(session) = session else {
        let r = rpc_error(StatusCode::NOT_FOUND, None, protocol::INVALID_REQUEST, "Session not found");
        return refused_unread(parts.version, body.into_data_stream(), r);
    };
    let (msg, held) = match app.read_message(parts.version, body, &principal).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let client = session.client.locked().clone();
    match (msg.classify(), client) {
        (Ok(Classified::Request(msg)), _) if msg.method() == "initialize" => {
            let reply = match app.gateway.initialize(Transport::Http, msg.id(), msg.params(), &session.principal) {
                Ok((reply, _version)) => reply,
                Err(refusal) => {
                    app.rejected("capabilities_too_large");
                    send_legacy(&session, refusal);
                    return (StatusCode::ACCEPTED, "Accepted").into_response();
                }
            };
            let client = Arc::new(app.gateway.connect(session.out.clone(), msg.params(), session.principal.clone()));
            if let Some(old) = session.client.locked().replace(client) {
                old.peer.close();
            }
            send_legacy(&session, reply);
        }
        (Ok(Classified::Request(msg)), Some(client)) => {
            let gateway = app.gateway.clone();
            let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
            tokio::spawn(async move {
                let caller = Caller {
                    transport: Transport::Http,
                    session: Some(&q.session_id),
                    traceparent: traceparent.as_deref(),
                    peer: Some(&client.peer),
                    stream: None,
                };
                let reply = gateway.handle(&msg, &caller).await;
                drop(held);
                if let Some(reply) = reply {
                    // Waits for room: a reply is never dropped, and a client
                    // that does not read holds only its own calls.
                    let _ = session.out.send(reply).await;
                }
            });
        }
        (Ok(Classified::Request(msg)), None) => {
            send_legacy(
                &session,
                encode::error(Some(msg.id()), protocol::INVALID_REQUEST, "Send initialize first", None),
            );
        }
        (Ok(Classified::Notification(msg)), Some(c)) => app.gateway.notify(&msg, &c.peer),
        (Ok(Classified::Response(msg)), Some(c)) => app.gateway.respond(&msg, &c.peer),
        (Ok(_), None) => {}
        (Err(e), _) => return (StatusCode::BAD_REQUEST, json_headers(), e.to_response()).into_response(),
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}

/// Queues a message on a legacy session's stream without waiting.
fn send_legacy(session: &LegacySession, msg: String) {
    if session.out.try_send(msg).is_err() {
        tracing::debug!("Dropped a reply: the legacy session's queue is full.");
    }
}

async fn delete_mcp(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    let principal = match app.admit(&headers, &uri).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let session = match app.session(&headers, None, &principal) {
        Ok(s) => s,
        Err(r) => return r,
    };
    app.sessions.remove(&session.id);
    StatusCode::OK.into_response()
}

/// Where RFC 9728 protected-resource metadata is looked for first.
const WELL_KNOWN_RESOURCE: &str = "/.well-known/oauth-protected-resource";

/// RFC 9728 protected-resource metadata: public, so clients can discover
/// where to get a token.
async fn resource_metadata(State(app): State<Arc<App>>) -> Response {
    (StatusCode::OK, json_headers(), app.auth.metadata().to_owned()).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    readiness(&app.gateway, &app.shutdown)
}

fn readiness(g: &Gateway, shutdown: &CancellationToken) -> Response {
    // Ready means "serving", not "every upstream is up" (partial
    // availability is the point of the gateway): not while starting (until
    // the start-up list wait is over) or draining.
    let ready_upstreams = g.ready_upstreams();
    let draining = shutdown.is_cancelled();
    let ready = g.started_up() && !draining;
    let body = serde_json::json!({
        "ready": ready,
        "draining": draining,
        "upstreams_ready": ready_upstreams,
        "upstreams": g.upstreams().len(),
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, json_headers(), body.to_string()).into_response()
}

async fn upstream_status(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.admin(&headers, &uri, "/status").await {
        return r;
    }
    match app.gateway.upstream_status(&id) {
        Some(body) => (StatusCode::OK, json_headers(), masked(&app, &body)).into_response(),
        None => {
            let body = serde_json::json!({ "error": format!("no upstream `{id}`") });
            (StatusCode::NOT_FOUND, json_headers(), body.to_string()).into_response()
        }
    }
}

/// A status body with every secret value masked: an upstream's
/// `serverInfo` and instructions are its own words, and may hold one.
fn masked(app: &App, body: &serde_json::Value) -> String {
    app.gateway.config().redactor.redact(&body.to_string()).into_owned()
}

async fn status(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    // Pids, errors and server names are not for a DNS-rebinding page; the
    // health probes reveal nothing and stay open to orchestrators. It
    // names every tool, hidden ones too: admins only.
    if let Err(r) = app.admin(&headers, &uri, "/status").await {
        return r;
    }
    let mut body = app.gateway.status();
    body["sessions"] = app.sessions.len().into();
    (StatusCode::OK, json_headers(), masked(&app, &body)).into_response()
}

// === impl App ===

impl App {
    /// Checks the host the request is for ([`request_host`]) and `Origin`,
    /// then who the client is: 401 with a `WWW-Authenticate` challenge
    /// (RFC 9728 metadata URL), 403 for a missing scope, 503 when the
    /// signing keys cannot be fetched.
    async fn admit(&self, headers: &HeaderMap, uri: &Uri) -> Result<Arc<Principal>, Response> {
        self.check_single_headers(headers)?;
        self.check_origin(headers, uri)?;
        let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        let api_key = headers.get("x-api-key").map(HeaderValue::as_bytes);
        match self.auth.authenticate(authorization, api_key).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let metrics = &self.gateway.telemetry().metrics;
                metrics.auth_failures.get_or_create(&ReasonLabels { reason: e.reason() }).inc();
                // Never the credential itself: only why it was refused.
                tracing::warn!(reason = e.reason(), error = %e, "Refused a client at authentication.");
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
                let mut resp = rpc_error(status, None, protocol::INVALID_REQUEST, &format!("Unauthorized: {e}"));
                if let Ok(v) = HeaderValue::from_str(&self.auth.challenge(&e)) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                Err(resp)
            }
        }
    }

    /// [`App::admit`], and the principal must be an admin: in one of
    /// `[auth] admin_groups`. Without authentication (`mode = "none"`, a
    /// loopback listener unless written out) nobody is told apart, so the
    /// pages stay open as everything else does.
    async fn admin(&self, headers: &HeaderMap, uri: &Uri, what: &str) -> Result<Arc<Principal>, Response> {
        let principal = self.admit(headers, uri).await?;
        let config = self.gateway.config();
        let allowed = match principal.via {
            crate::security::auth::Via::Anonymous => true,
            _ => config.auth.admin_groups.iter().any(|g| principal.in_group(g)),
        };
        if allowed {
            return Ok(principal);
        }
        self.rejected("not_admin");
        tracing::info!(principal = %principal.identity, page = what, "Refused an admin page to a principal not in an admin group.");
        let msg = format!("Forbidden: {what} is for principals in an admin group ([auth] admin_groups)");
        Err(rpc_error(StatusCode::FORBIDDEN, None, protocol::INVALID_REQUEST, &msg))
    }

    /// Reads and parses one JSON-RPC message from an admitted request's
    /// body: 413, 408, 400 or 503 as [`Self::read_body`] says, 400 with the
    /// JSON-RPC parse error when it is not a message. The [`Held`] keeps
    /// the body's bytes counted until it is dropped.
    async fn read_message(
        &self,
        version: Version,
        body: Body,
        principal: &Principal,
    ) -> Result<(Message, Held), Response> {
        let (body, held) = self.read_body(version, body, principal).await?;
        let msg = self
            .gateway
            .parse(Transport::Http, &body)
            .map_err(|e| (StatusCode::BAD_REQUEST, json_headers(), e.to_response()).into_response())?;
        Ok((msg, held))
    }

    /// Reads a request body of at most `max_message_bytes` within
    /// [`BODY_READ_TIMEOUT`]: 413 at once when its declared length is over
    /// the limit (nothing is kept) or as soon as it grows over it, 408 when
    /// it is too slow (and the connection is closed), 400 when the client
    /// breaks it off. Its bytes are taken from the in-flight budget (its
    /// declared length at once, or as it arrives): 503 with `Retry-After`
    /// when the principal's share or the whole budget has no room.
    async fn read_body(&self, version: Version, body: Body, principal: &Principal) -> Result<(Bytes, Held), Response> {
        let max = self.gateway.config().gateway.max_message_bytes;
        let too_large = || {
            self.rejected("body_too_large");
            let msg = format!("Request body exceeds {max} bytes");
            rpc_error(StatusCode::PAYLOAD_TOO_LARGE, None, protocol::INVALID_REQUEST, &msg)
        };
        let declared = axum::body::HttpBody::size_hint(&body).lower();
        let mut chunks = body.into_data_stream();
        if usize::try_from(declared).map_or(true, |n| n > max) {
            return Err(refused_unread(version, chunks, too_large()));
        }
        let mut held = match self.bytes.take(principal, declared as usize) {
            Ok(h) => h,
            Err(over) => return Err(refused_unread(version, chunks, self.over_budget(over, principal))),
        };
        let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
        // The declared length is at most `max` here: one allocation for
        // the usual body that says its length.
        let mut buf = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        loop {
            match tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut chunks)).await {
                Ok(None) => return Ok((Bytes::from(buf), held)),
                Ok(Some(Ok(chunk))) if buf.len() + chunk.len() <= max => {
                    // Past its declared length (or with none), a body takes
                    // what it brings.
                    let more = (buf.len() + chunk.len()).saturating_sub(held.amount());
                    if let Err(over) = held.grow(more) {
                        return Err(refused_unread(version, chunks, self.over_budget(over, principal)));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(Some(Ok(_))) => return Err(refused_unread(version, chunks, too_large())),
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "Could not read a request body.");
                    let msg = format!("Could not read the request body: {e}");
                    return Err(rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, &msg));
                }
                Err(_) => {
                    self.rejected("body_timeout");
                    let secs = BODY_READ_TIMEOUT.as_secs();
                    tracing::warn!(timeout_s = secs, "Refused a request whose body did not arrive in time.");
                    let msg = format!("Request Timeout: the body did not arrive within {secs} s");
                    let mut resp = rpc_error(StatusCode::REQUEST_TIMEOUT, None, protocol::INVALID_REQUEST, &msg);
                    // The rest of the body may still come; only closing the
                    // connection gets rid of it, at once (no lingering for
                    // a client this slow). HTTP/2 has no such header: the
                    // stream is reset when the body is dropped.
                    if version < Version::HTTP_2 {
                        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    return Err(resp);
                }
            }
        }
    }

    /// The refusal of a body the in-flight budget has no room for: 503
    /// with `Retry-After` (bodies in flight are short-lived), counted and
    /// logged with the principal whose share, or the whole, is full.
    fn over_budget(&self, over: Over, principal: &Principal) -> Response {
        self.rejected(over.reason("bytes"));
        let g = &self.gateway.config().gateway;
        let (msg, held) = match over {
            Over::Share => (
                format!(
                    "Service Unavailable: this principal's requests in flight hold {} bytes \
                     (gateway.max_inflight_request_bytes_per_principal is {}); retry shortly",
                    self.bytes.held_by(&principal.identity),
                    g.max_inflight_request_bytes_per_principal
                ),
                self.bytes.held_by(&principal.identity),
            ),
            Over::Whole => (
                // What others hold is not this client's business.
                "Service Unavailable: the gateway's budget of request bytes in flight \
                 (gateway.max_inflight_request_bytes) is full; retry shortly"
                    .to_owned(),
                self.bytes.total(),
            ),
        };
        tracing::info!(principal = %principal.identity, reason = over.reason("bytes"), held, "Refused a request: no room for its body in the in-flight budget.");
        let body = crate::error::CallError::new(crate::error::ErrorClass::Overloaded, None, msg).to_response_null();
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, json_headers(), body).into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    }

    /// Sets `mcp_gateway_downstream_sessions{transport="sse"}`: the legacy
    /// transport's sessions.
    fn legacy_gauge(&self, open: usize) {
        let labels = crate::telemetry::metrics::TransportLabels { transport: "sse" };
        self.gateway.telemetry().metrics.sessions.get_or_create(&labels).set(open as i64);
    }

    /// Counts and logs a session refused because `max_sessions` are open.
    fn too_many_sessions(&self) {
        self.rejected("sessions");
        let max = self.gateway.config().gateway.max_sessions;
        tracing::warn!(max, "Refused a session: max_sessions are open.");
    }

    /// A place among `principal`'s sessions, or 429 when it has
    /// `max_sessions_per_principal` open.
    fn take_session(&self, principal: &Principal) -> Result<Held, Box<Response>> {
        self.sessions_each.take(principal, 1).map_err(|over| {
            self.rejected(over.reason("sessions"));
            let max = self.gateway.config().gateway.max_sessions_per_principal;
            tracing::info!(principal = %principal.identity, max, "Refused a session: the principal has max_sessions_per_principal open.");
            let msg = format!(
                "Too Many Requests: this principal has {max} sessions open (gateway.max_sessions_per_principal); \
                 end one (DELETE /mcp) or wait for idle ones to expire"
            );
            Box::new(rpc_error(StatusCode::TOO_MANY_REQUESTS, None, protocol::INVALID_REQUEST, &msg))
        })
    }

    /// Counts a request refused before routing, by `reason`.
    fn rejected(&self, reason: &'static str) {
        self.gateway.telemetry().metrics.http_rejections.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Whether a session opened by `owner` may be used by `presenter`;
    /// counts and logs the refusal.
    /// A session belongs to the whole identity that opened it: an API key
    /// and a JWT with the same name are two principals (docs/design.md D12).
    fn same_principal(&self, owner: &Principal, presenter: &Principal) -> bool {
        if owner.identity == presenter.identity {
            return true;
        }
        let metrics = &self.gateway.telemetry().metrics;
        metrics.auth_failures.get_or_create(&ReasonLabels { reason: "session_principal" }).inc();
        tracing::warn!(owner = %owner.identity, presenter = %presenter.identity, "A session id was presented by another principal.");
        false
    }

    /// The request's host ([`request_host`]) and `Origin` against the
    /// allow-lists.
    /// Refuses a request that repeats a header the gateway decides on
    /// (docs/design.md D12): a proxy in front may read the last copy where the
    /// gateway reads the first.
    #[allow(clippy::result_large_err)]
    fn check_single_headers(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(name) = SINGLE_HEADERS.iter().find(|h| headers.get_all(**h).iter().nth(1).is_some()) else {
            return Ok(());
        };
        self.gateway.refused(Transport::Http, "duplicate_header");
        tracing::warn!(header = %name, "Refused a request that repeats a header.");
        let msg = format!("Bad Request: the {name} header occurs more than once");
        Err(rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, &msg))
    }

    #[allow(clippy::result_large_err)]
    fn check_origin(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Response> {
        let host = match request_host(headers, uri) {
            Ok(host) => host,
            Err(why) => {
                self.rejected("authority_mismatch");
                tracing::warn!(authority = ?uri.authority().map(|a| a.as_str()), "Refused a request: {why}.");
                let msg = format!("Bad Request: {why}");
                return Err(rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, &msg));
            }
        };
        if !host_allowed(&self.hosts, host) {
            self.rejected("host");
            tracing::warn!(host = %host, "Refused a request with a Host that is not allowed.");
            return Err(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                protocol::INVALID_REQUEST,
                "Forbidden: Host not allowed",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origin_allowed(&self.origins, origin) {
                self.rejected("origin");
                tracing::warn!(origin = %origin, "Refused a request with an Origin that is not allowed.");
                return Err(rpc_error(
                    StatusCode::FORBIDDEN,
                    None,
                    protocol::INVALID_REQUEST,
                    "Forbidden: Origin not allowed",
                ));
            }
        }
        Ok(())
    }

    /// The session named by `Mcp-Session-Id`: 400 when missing or not
    /// visible ASCII, 404 when unknown, 400 when `MCP-Protocol-Version` is
    /// unsupported.
    #[allow(clippy::result_large_err)]
    fn session(
        &self,
        headers: &HeaderMap,
        id: Option<&protocol::RawValue>,
        principal: &Arc<Principal>,
    ) -> Result<Arc<Session>, Response> {
        if let Some(v) = headers.get(VERSION_HEADER) {
            let v = v.to_str().unwrap_or("");
            if !protocol::is_supported_version(v) {
                let msg = format!("Unsupported MCP-Protocol-Version: {}", protocol::echo(v));
                return Err(rpc_error(StatusCode::BAD_REQUEST, id, protocol::INVALID_REQUEST, &msg));
            }
        }
        let Some(sid) = headers.get(SESSION_HEADER) else {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                protocol::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required",
            ));
        };
        // Session ids are visible ASCII (transports.mdx, session
        // management); anything else cannot name a session.
        let Some(sid) = sid.to_str().ok().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())) else {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                protocol::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is invalid (session ids are visible ASCII)",
            ));
        };
        // Another principal's session is answered like an unknown one: a
        // session id is not a credential of its own.
        let found = self.sessions.get(sid).filter(|s| self.same_principal(&s.client.peer.principal, principal));
        found.ok_or_else(|| {
            rpc_error(
                StatusCode::NOT_FOUND,
                id,
                protocol::INVALID_REQUEST,
                "Session not found; initialize a new session",
            )
        })
    }
}

/// `resp` to a request refused before its body was (all) read. On
/// HTTP/1.1 the connection closes after it, but the rest of the body is
/// first read and thrown away for a moment ([`LINGER`], [`LINGER_BYTES`]) so
/// that the client, likely still sending, gets to read the answer. HTTP/2
/// needs none of this: the stream alone is reset, after the answer.
fn refused_unread(version: Version, mut rest: axum::body::BodyDataStream, mut resp: Response) -> Response {
    if version >= Version::HTTP_2 || axum::body::HttpBody::is_end_stream(&rest) {
        return resp;
    }
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    tokio::spawn(async move {
        let mut left = LINGER_BYTES;
        let discard = async {
            while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut rest).await {
                left = left.checked_sub(chunk.len())?;
            }
            Some(())
        };
        // Either way the body is dropped here, which closes the connection.
        let _ = tokio::time::timeout(LINGER, discard).await;
    });
    resp
}

fn reply_response(reply: String, sse: bool) -> Response {
    if sse {
        let mut resp = Response::new(Body::from(super::session::sse_event(None, reply)));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return resp;
    }
    (StatusCode::OK, json_headers(), reply).into_response()
}

fn json_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))]
}

fn rpc_error(status: StatusCode, id: Option<&protocol::RawValue>, code: i64, message: &str) -> Response {
    (status, json_headers(), encode::error(id, code, message, None)).into_response()
}

/// The host a request is for, as `host[:port]` text: the authority of its
/// URI when it has one (HTTP/2's `:authority`, which replaces `Host`, or an
/// HTTP/1.1 absolute-form target, which overrides it: RFC 9112 §3.2.2),
/// else its `Host` (`""` when there is none, or it is not text). Refused
/// when both are there and differ (RFC 9113 §8.3.1 calls that malformed;
/// checking one and serving the other would defeat the check), and when
/// there are several `Host` lines.
fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Result<&'a str, &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (host, more) = (hosts.next(), hosts.next());
    if more.is_some() {
        return Err("more than one Host header");
    }
    let host = host.map(|h| h.to_str().unwrap_or(""));
    match (uri.authority(), host) {
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => {
            Err("the Host header and the request's authority differ")
        }
        (Some(a), _) => Ok(a.as_str()),
        (None, h) => Ok(h.unwrap_or("")),
    }
}

const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// `host[:port]` against entries `host` (any port) or `host:port`.
fn host_allowed(allowed: &[String], host: &str) -> bool {
    let name = split_host(host);
    if allowed.is_empty() {
        return LOOPBACK.contains(&name);
    }
    allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
}

fn split_host(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// An origin against exact entries or `scheme://host:*` patterns.
fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    if allowed.is_empty() {
        let Some((scheme, rest)) = origin.split_once("://") else { return false };
        return matches!(scheme, "http" | "https") && LOOPBACK.contains(&split_host(rest));
    }
    allowed.iter().any(|a| {
        a == "*"
            || a.eq_ignore_ascii_case(origin)
            || a.strip_suffix(":*").is_some_and(|base| {
                origin.len() > base.len()
                    && origin[..base.len()].eq_ignore_ascii_case(base)
                    && (origin[base.len()..].starts_with(':') || origin.len() == base.len())
            })
            || a.strip_suffix(":*").is_some_and(|base| base.eq_ignore_ascii_case(origin))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: Vec<String> = vec![];
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:80", "[::1]"] {
            assert!(host_allowed(&none, ok), "{ok}");
        }
        for bad in ["evil.com", "evil.com:8080", "127.0.0.2:80", "", "localhost.evil.com"] {
            assert!(!host_allowed(&none, bad), "{bad}");
        }
        let cfg = vec!["gw.internal".to_owned(), "10.0.0.5:8080".to_owned()];
        assert!(host_allowed(&cfg, "gw.internal:443"));
        assert!(host_allowed(&cfg, "10.0.0.5:8080"));
        assert!(!host_allowed(&cfg, "10.0.0.5:9090"));
        assert!(!host_allowed(&cfg, "localhost"));
    }

    #[test]
    fn the_host_comes_from_the_authority_or_host() {
        let uri = |u: &str| u.parse::<Uri>().unwrap();
        let hosts = |v: &[&str]| {
            let mut h = HeaderMap::new();
            for v in v {
                h.append(header::HOST, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        // HTTP/1.1 origin form: Host.
        assert_eq!(request_host(&hosts(&["localhost:8080"]), &uri("/mcp")), Ok("localhost:8080"));
        assert_eq!(request_host(&hosts(&[]), &uri("/mcp")), Ok(""));
        // HTTP/2 (or absolute form): the authority, with or without Host.
        assert_eq!(request_host(&hosts(&[]), &uri("http://127.0.0.1:9/mcp")), Ok("127.0.0.1:9"));
        assert_eq!(request_host(&hosts(&["LOCALHOST:9"]), &uri("http://localhost:9/mcp")), Ok("localhost:9"));
        assert!(request_host(&hosts(&["evil.example"]), &uri("http://localhost:9/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost:9"]), &uri("http://evil.example/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost", "evil.example"]), &uri("/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost", "localhost"]), &uri("/mcp")).is_err());
    }

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        for ok in ["http://localhost:3000", "http://127.0.0.1", "https://[::1]:8443"] {
            assert!(origin_allowed(&none, ok), "{ok}");
        }
        for bad in ["null", "http://evil.com", "file://localhost", "http://localhost.evil.com"] {
            assert!(!origin_allowed(&none, bad), "{bad}");
        }
        let cfg = vec!["https://app.example.com".to_owned(), "http://localhost:*".to_owned()];
        assert!(origin_allowed(&cfg, "https://app.example.com"));
        assert!(origin_allowed(&cfg, "http://localhost:5173"));
        assert!(origin_allowed(&cfg, "http://localhost"));
        assert!(!origin_allowed(&cfg, "http://localhostevil.com"));
        assert!(!origin_allowed(&cfg, "https://app.example.com.evil"));
    }
}
