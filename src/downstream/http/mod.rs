//! Streamable HTTP for clients at `/mcp` (transports.mdx §Streamable HTTP),
//! plus `/healthz`, `/readyz`, `/status` and the status page at `/ui`.
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
//! rebinding, then authenticated (401); both are tower layers in front of
//! those routes ([`layers`]). The host is the URI's authority
//! when there is one (cleartext HTTP/2 has `:authority`, no `Host`), and a
//! `Host` that differs from it is refused (400). A POST's headers are checked next
//! (declared length, Content-Type, Accept), and only then is its body read:
//! at most `max_message_bytes` (413), within [`BODY_READ_TIMEOUT`] (408 and
//! the connection closed). A refusal that leaves a body unread closes an
//! HTTP/1.1 connection, after reading and discarding the rest for a moment
//! so that the client gets the answer rather than a reset. Slow request
//! heads are the accept loop's business ([`super::listen`]).

mod admin;
mod guard;
mod layers;
mod legacy;
mod mcp;
mod modern;
mod respond;
mod subscriptions;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

pub use self::admin::admin_router;
use self::admin::*;
use self::{legacy::*, mcp::*, respond::*};
use super::bounds::{Held, Over, Quota};
use super::media;
use super::session::{Session, Sessions};
use super::token::{Claims, Keyring, unix_now};
use crate::config::{ResponseMode, SESSION_KEY_VAR};
use crate::protocol::{self, Classified, Message, Transport, encode};
use crate::routing::Caller;
use crate::routing::{Gateway, Initialized};
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

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// Shared state of the HTTP front end.
#[derive(Debug)]
pub struct App {
    gateway: Arc<Gateway>,
    sessions: Sessions,
    shutdown: CancellationToken,
    /// Sessions of the legacy HTTP+SSE transport, by id.
    legacy: std::sync::Mutex<std::collections::HashMap<String, Arc<LegacySession>>>,
    /// Client authentication (`[auth]`), swapped whole by a reload
    /// ([`AuthReload`]).
    auth: Arc<ArcSwap<Authenticator>>,
    /// Bytes of request bodies in flight, whole and per principal.
    bytes: Arc<Quota>,
    /// Sessions per principal (the whole count is the tables').
    sessions_each: Arc<Quota>,
    /// The keys that seal session tokens, swapped by a reload that rotates
    /// them ([`KeysReload`]).
    keyring: Arc<ArcSwap<Keyring>>,
}

/// Builds the router. `shutdown` ends open GET streams so a graceful
/// shutdown does not wait on them. With `admin.listen` set, `/metrics` is
/// not on this router but on [`admin_router`]'s.
pub fn router(gateway: Arc<Gateway>, shutdown: CancellationToken) -> Result<Router, AuthSetupError> {
    let g = &gateway.config().gateway;
    let split = gateway.config().admin.listen.is_some();
    let auth = Authenticator::new(&gateway.config().auth, gateway.http_client())?;
    let metadata_path = auth.metadata_path().to_owned();
    let auth = Arc::new(ArcSwap::from_pointee(auth));
    gateway.add_participant(Arc::new(AuthReload { auth: auth.clone(), http: gateway.http_client() }));
    let keyring = Keyring::new(gateway.config().session_keys.as_ref());
    match keyring.generated {
        true => tracing::warn!(
            "No {SESSION_KEY_VAR} in the secrets file: session tokens are sealed with a key made by this process. \
             Sessions end with it, and another replica cannot serve them: run one replica, or set the key."
        ),
        false => {
            tracing::info!(key_id = %keyring.key_id(), keys = keyring.len(), "Session tokens are sealed with the configured key.")
        }
    }
    let keyring = Arc::new(ArcSwap::from_pointee(keyring));
    // Every outcome exported from the start, at 0.
    for outcome in [
        "rebuilt",
        "ended",
        "expired",
        "unknown_key",
        "forged",
        "not_a_token",
        "other_principal",
        "unsupported_version",
        "future",
        "bad_capabilities",
        "full",
    ] {
        let _ =
            gateway.telemetry().metrics.session_rebuilds.get_or_create(&crate::telemetry::metrics::Outcome { outcome });
    }
    gateway.add_participant(Arc::new(KeysReload { keyring: keyring.clone() }));
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
        shutdown,
        gateway,
        legacy: Default::default(),
        keyring,
    });
    tokio::spawn(expire_sessions(app.clone()));
    if let Some(shared) = app.gateway.shared() {
        tokio::spawn(end_announced(app.clone(), shared.ended()));
    }
    // Each route a client uses, and each admin page, is behind the
    // admission layers (`layers/`); `MethodRouter::route_layer` keeps them
    // off the 405 of a method the route does not serve. The probes and the
    // protected-resource metadata are public.
    let admitted = layers::admission(&app);
    let mut main = Router::new()
        .route("/mcp", get(get_mcp).post(post_mcp_boxed).delete(delete_mcp).route_layer(admitted.clone()))
        .route("/sse", get(get_sse).route_layer(admitted.clone()))
        .route("/messages", axum::routing::post(post_messages).route_layer(admitted))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/reload", axum::routing::post(reload).route_layer(layers::admin_admission(&app, "/admin/reload")))
        .route("/status", get(status).route_layer(layers::admin_admission(&app, "/status")))
        .route("/status/upstreams/{id}", get(upstream_status).route_layer(layers::admin_admission(&app, "/status")))
        // The status page holds no data (its script fetches `/status`),
        // so it asks for no credential; it is behind the Host and Origin
        // check all the same, like every page but the probes (`ui.rs`).
        .route("/ui", get(ui::index).route_layer(layers::CheckHost::layer(app.clone())))
        .route("/ui/", get(ui::slash))
        .route("/ui/app.js", get(ui::script).route_layer(layers::CheckHost::layer(app.clone())))
        .route("/ui/app.css", get(ui::style).route_layer(layers::CheckHost::layer(app.clone())))
        .route(WELL_KNOWN_RESOURCE, get(resource_metadata));
    if metadata_path != WELL_KNOWN_RESOURCE {
        main = main.route(&metadata_path, get(resource_metadata));
    }
    if !split {
        main = main.route("/metrics", get(metrics_checked).route_layer(layers::admin_admission(&app, "/metrics")));
    }
    // The trace span (when `debug` is on for `tower_http`) is outermost,
    // so everything a request does, refusals included, is inside it.
    let main = if layers::tracing_requests() { main.layer(layers::trace()) } else { main };
    Ok(main.with_state(app))
}

/// The HTTP front end's share of a reload: a new `[auth]` builds a new
/// authenticator (which can still fail: a PEM file that does not read),
/// swapped in for the next request. The protected-resource metadata's
/// route stays where it was until a restart.
#[derive(Debug)]
struct AuthReload {
    auth: Arc<ArcSwap<Authenticator>>,
    http: reqwest::Client,
}

impl crate::routing::reload::Participant for AuthReload {
    fn prepare(
        &self,
        now: &crate::config::Config,
        next: &crate::config::Config,
    ) -> Result<Option<crate::routing::reload::Commit>, String> {
        if now.auth == next.auth {
            return Ok(None);
        }
        let auth = Authenticator::new(&next.auth, self.http.clone()).map_err(|e| e.to_string())?;
        let slot = self.auth.clone();
        Ok(Some(Box::new(move || slot.store(Arc::new(auth)))))
    }
}

/// Puts new session keys in force: new tokens are sealed with the new key,
/// and the one it replaces still opens the tokens it sealed (until the
/// next restart or rotation). A reload that drops the key keeps the ring
/// in force: it never ends every session.
#[derive(Debug)]
struct KeysReload {
    keyring: Arc<ArcSwap<Keyring>>,
}

impl crate::routing::reload::Participant for KeysReload {
    fn prepare(
        &self,
        now: &crate::config::Config,
        next: &crate::config::Config,
    ) -> Result<Option<crate::routing::reload::Commit>, String> {
        if now.session_keys == next.session_keys {
            return Ok(None);
        }
        let ring = self.keyring.load().rotated(next.session_keys.as_ref());
        let dropped = next.session_keys.is_none();
        let new_sealer = !ring.seals_like(&self.keyring.load());
        let slot = self.keyring.clone();
        Ok(Some(Box::new(move || {
            match (dropped, new_sealer) {
                (true, _) => {
                    tracing::warn!("The reload drops {SESSION_KEY_VAR}: the key in force stays until a restart.")
                }
                (false, true) => tracing::info!(
                    key_id = %ring.key_id(),
                    keys = ring.len(),
                    "Session keys rotated: new tokens use the new key; older ones still open."
                ),
                (false, false) => tracing::info!(
                    key_id = %ring.key_id(),
                    keys = ring.len(),
                    "Session keys changed: the same key seals; the keys that open tokens changed."
                ),
            }
            slot.store(Arc::new(ring));
        })))
    }
}

/// Lets go of sessions ended on another replica (`[redis]`) as soon as
/// that is announced: from then on every request of such a session gets
/// 404 here, not only its tool calls (which Redis checks anyway).
async fn end_announced(app: Arc<App>, mut ended: tokio::sync::broadcast::Receiver<crate::shared::KeyHash>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let hash = tokio::select! {
            got = ended.recv() => match got {
                Ok(hash) => hash,
                Err(RecvError::Lagged(missed)) => {
                    // Their next tool call finds them ended.
                    tracing::warn!(missed, "Missed announcements of ended sessions.");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
            () = app.shutdown.cancelled() => return,
        };
        if let Some(id) = app.sessions.find_shared(hash) {
            let idle = app.gateway.config_now().gateway.session_idle_timeout;
            app.sessions.remove_until(&id, std::time::SystemTime::now() + idle);
            tracing::info!("Let go of a session ended on another replica.");
        }
    }
}

async fn expire_sessions(app: Arc<App>) {
    loop {
        // Read at each look: a reload may change it. Half the idle time at
        // most, so that a session ended elsewhere is seen here before its
        // record in Redis expires.
        let idle = app.gateway.config_now().gateway.session_idle_timeout;
        let every = Duration::from_secs(30).min(idle / 2);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = app.shutdown.cancelled() => return,
        }
        let n = app.sessions.expire(idle);
        if n > 0 {
            tracing::info!(expired = n, "Closed idle downstream sessions.");
        }
        if let Some(shared) = app.gateway.shared() {
            refresh_shared(&app, shared, every, idle).await;
        }
    }
}

/// Checks the sessions this replica holds against Redis: records the last
/// use of those used here lately (a session used only for requests other
/// than tool calls stays alive on every replica), and lets go of those
/// ended elsewhere (an announcement this replica missed) or idle on every
/// replica. Sessions opened while Redis was unreachable are not known
/// there yet: their next tool call makes them known.
async fn refresh_shared(app: &App, shared: &crate::shared::Shared, every: Duration, idle: Duration) {
    let held = app.sessions.held_shared(every);
    if held.is_empty() {
        return;
    }
    let checks: Vec<_> = held.iter().map(|(_, hash, used)| (*hash, *used)).collect();
    let Ok(alive) = shared.refresh(&checks, idle).await else { return };
    let mut gone = 0usize;
    for ((id, _, _), alive) in held.iter().zip(alive) {
        if !alive {
            app.sessions.remove_until(id, std::time::SystemTime::now() + idle);
            gone += 1;
        }
    }
    if gone > 0 {
        tracing::info!(sessions = gone, "Let go of sessions ended or idle on every replica.");
    }
}
