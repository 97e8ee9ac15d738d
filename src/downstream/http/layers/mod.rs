//! The admission stack of the HTTP front end, as tower layers (design.md,
//! "Tower at the edges"): what is checked on a request's head before a
//! handler runs, one check per file.
//!
//! | layer | answers | file |
//! | --- | --- | --- |
//! | [`trace`] | (never) a `request` span around everything below; only when `debug` is on for `tower_http` at start-up | here |
//! | [`CheckHost`] | 400 repeated header or authority mismatch, 403 Host or Origin | `host.rs` |
//! | [`Authenticate`] | 401, 403 scope, 503 keys; puts the `Principal` in the extensions | `auth.rs` |
//! | [`RequireAdmin`] | 403 not an admin (`/status`, `/metrics` only) | `admin.rs` |
//!
//! No handler takes a body extractor: every body is read by
//! `App::read_body`, to `max_message_bytes`, within the in-flight budget,
//! and the unit test `http_bodies_are_read_only_by_read_body` (in
//! `src/layering.rs`) fails on a body extractor (`Json`, `Bytes`, `Form`,
//! `String`) or `to_bytes` anywhere in `src/downstream/http/`: such a
//! reader would skip the budget, and be held to axum's default 2 MiB
//! rather than `max_message_bytes`. There is no `DefaultBodyLimit`
//! layer: on the `Router` it wraps every route once more (one more boxed
//! service to clone per request), and even inside this stack its extension
//! cost ~400 instructions per `tools/call` (`scripts/callgrind-hop.sh`), to
//! bound an extractor no handler uses.
//!
//! What stays in the handlers, and why: a POST's `Content-Type` and
//! `Accept` (415, 406) and the legacy `sessionId` (400, 404) are checked
//! next, and only then is the body read (`App::read_body`: 413 on the
//! declared length or as it grows, the in-flight budget, 408 past
//! [`BODY_READ_TIMEOUT`]). tower-http's `RequestBodyLimitLayer` answers 413
//! on a declared length as soon as it is called, which would come before
//! those checks and drop the body without the linger of
//! [`refused_unread`]; its `RequestBodyTimeoutLayer` bounds the wait for
//! each frame, not the whole body, so a client sending a byte now and then
//! would never be cut off. The request head's deadline is the accept
//! loop's (`listen.rs`): it runs before there is a request to call a
//! service with.

mod admin;
mod auth;
mod host;

use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tower_http::validate_request::ValidateRequestHeaderLayer;

pub(super) use self::admin::RequireAdmin;
pub(super) use self::auth::Authenticate;
pub(super) use self::host::{CheckHost, host_allowed, origin_allowed, request_host};
use super::*;

/// The layers of [`admission`], outermost last.
type AdmissionStack = Stack<Authenticate, Stack<ValidateRequestHeaderLayer<CheckHost>, Identity>>;

/// The layers in front of every route a client uses: `/mcp`, `/sse`,
/// `/messages`.
pub(super) type Admission = ServiceBuilder<AdmissionStack>;

/// The layers in front of an admin page: [`Admission`], then the admin
/// check.
pub(super) type AdminAdmission = ServiceBuilder<Stack<ValidateRequestHeaderLayer<RequireAdmin>, AdmissionStack>>;

/// The admission stack. Layers wrap from the outside in: the first one
/// named sees the request first.
pub(super) fn admission(app: &Arc<App>) -> Admission {
    ServiceBuilder::new()
        // First the host: it defends against DNS rebinding, and a request
        // for a host we do not serve learns nothing more, not even whether
        // its credential is good.
        .layer(CheckHost::layer(app.clone()))
        // Then who the client is, still on the head alone: the handlers
        // read a body only for an authenticated client.
        .layer(Authenticate::layer(app.clone()))
}

/// [`admission`] for the admin page `page`: only principals in an admin
/// group get past it.
pub(super) fn admin_admission(app: &Arc<App>, page: &'static str) -> AdminAdmission {
    // Innermost: the admin check reads the principal `Authenticate` put in
    // the request's extensions.
    admission(app).layer(RequireAdmin::layer(app.clone(), page))
}

/// The `request` span (method, URI, version) around everything a request
/// does, at `debug`, so a refusal's log line says which request it was
/// when debug logs are on. With the default `info` nothing is logged and
/// nothing is formatted: the span's level is off. Failures are logged by
/// the code that refuses or fails, with their reason, so the layer's own
/// failure line is at `debug` too (its default, `error`, would log every
/// 503 twice).
pub(super) fn trace() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>> {
    TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
}

/// Whether anything [`trace`] makes would be recorded: its span or any of
/// its events (`debug` on for `tower_http`, or for one of the trace
/// targets alone). Only then is the layer added, because even with all of
/// it off it wraps every response body, which axum boxes again (about 1 %
/// of a proxied call's instructions). The log filter is set at start-up
/// and not changed while running, so deciding when the router is built is
/// exact.
pub(super) fn tracing_requests() -> bool {
    tracing::enabled!(target: "tower_http::trace::make_span", tracing::Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace::on_request", tracing::Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace::on_response", tracing::Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace::on_failure", tracing::Level::DEBUG)
}
