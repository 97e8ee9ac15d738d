//! The pages for operators and probes: `/metrics`, `/healthz`, `/readyz`,
//! `/status`, the OAuth protected-resource metadata, and the admin router.

use super::*;

/// What the admin router's handlers need: no sessions, no Host check.
#[derive(Debug, Clone)]
pub(super) struct Admin {
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
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
/// `/status`, for admins only (its labels name hidden tools; the router
/// puts [`layers::admin_admission`] in front of it).
pub(super) async fn metrics_checked(State(app): State<Arc<App>>) -> Response {
    metrics(&app.gateway)
}

/// The Prometheus scrape (OpenMetrics text).
pub(super) fn metrics(gateway: &Gateway) -> Response {
    let body = gateway.metrics_text();
    let content_type = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `POST /admin/reload` (admin groups only): reloads the config file and
/// answers the report — 200 when applied or unchanged, 422 when refused
/// (the config in force stays), 503 when this gateway runs no reload task.
pub(super) async fn reload(State(app): State<Arc<App>>, Extension(principal): Extension<Arc<Principal>>) -> Response {
    let Some(reloader) = app.gateway.reloader() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no reload task runs in this gateway\n").into_response();
    };
    let report = reloader.reload("admin", Some(principal.identity.clone())).await;
    let status = match report.outcome {
        crate::routing::reload::Outcome::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    let body = serde_json::to_string_pretty(&report).expect("a report serializes");
    (status, json_headers(), body).into_response()
}

/// Where RFC 9728 protected-resource metadata is looked for first.
pub(super) const WELL_KNOWN_RESOURCE: &str = "/.well-known/oauth-protected-resource";

/// RFC 9728 protected-resource metadata: public, so clients can discover
/// where to get a token.
pub(super) async fn resource_metadata(State(app): State<Arc<App>>) -> Response {
    (StatusCode::OK, json_headers(), app.auth.load().metadata().to_owned()).into_response()
}

pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    readiness(&app.gateway, &app.shutdown)
}

pub(super) fn readiness(g: &Gateway, shutdown: &CancellationToken) -> Response {
    // Ready means "serving", not "every upstream is up" (partial
    // availability is the point of the gateway): not while starting (until
    // the start-up list wait is over) or draining.
    let ready_upstreams = g.ready_upstreams();
    let draining = shutdown.is_cancelled() || g.leaving();
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

pub(super) async fn upstream_status(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
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
pub(super) fn masked(app: &App, body: &serde_json::Value) -> String {
    app.gateway.redactor().redact(&body.to_string()).into_owned()
}

/// `/status`. Pids, errors and server names are not for a DNS-rebinding
/// page; the health probes reveal nothing and stay open to orchestrators.
/// It names every tool, hidden ones too: admins only (the router puts
/// [`layers::admin_admission`] in front of it).
pub(super) async fn status(State(app): State<Arc<App>>) -> Response {
    let mut body = app.gateway.status();
    body["sessions"] = app.sessions.len().into();
    (StatusCode::OK, json_headers(), masked(&app, &body)).into_response()
}
