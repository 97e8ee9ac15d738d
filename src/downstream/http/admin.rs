//! The pages for operators and probes: `/metrics`, `/healthz`, `/readyz`,
//! `/status`, the OAuth protected-resource metadata, and the admin router
//! (which serves the status page, `ui.rs`, too).

use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

use super::*;

/// What the admin router's handlers need: no HTTP sessions, no
/// authentication (its Host check, on some routes, is [`AdminHost`]).
#[derive(Debug, Clone)]
pub(super) struct Admin {
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
}

/// The router of `admin.listen`: `/metrics`, `/healthz`, `/readyz`, with no
/// Host check (bind it where only your scraper reaches); and `/status`,
/// `/status/upstreams/<id>` and the status page (`/ui`), behind the
/// `Host`/`Origin` allow-lists ([`AdminHost`]) but no authentication.
pub fn admin_router(gateway: Arc<Gateway>, shutdown: CancellationToken) -> Router {
    let hosts = || AdminHost::layer(gateway.clone());
    Router::new()
        .route("/metrics", get(|State(a): State<Admin>| async move { metrics(&a.gateway) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|State(a): State<Admin>| async move { readiness(&a.gateway, &a.shutdown) }))
        .route("/status", get(admin_status).route_layer(hosts()))
        .route("/status/upstreams/{id}", get(admin_upstream_status).route_layer(hosts()))
        .route("/ui", get(super::ui::index).route_layer(hosts()))
        .route("/ui/", get(super::ui::slash))
        .route("/ui/app.js", get(super::ui::script).route_layer(hosts()))
        .route("/ui/app.css", get(super::ui::style).route_layer(hosts()))
        .with_state(Admin { gateway, shutdown })
}

/// The `Host` and `Origin` check of `/status` and `/ui` on the admin
/// listener, against the main listener's allow-lists
/// (`gateway.allowed_hosts`, `allowed_origins`): the admin listener asks
/// for no credential, so without it a DNS-rebinding page in a browser on
/// the same host could read `/status`. `/metrics` stays unchecked, for
/// scrapers that name the listener by an address the lists leave out.
#[derive(Debug, Clone)]
pub(super) struct AdminHost {
    gateway: Arc<Gateway>,
}

// === impl AdminHost ===

impl AdminHost {
    fn layer(gateway: Arc<Gateway>) -> ValidateRequestHeaderLayer<Self> {
        ValidateRequestHeaderLayer::custom(AdminHost { gateway })
    }
}

impl ValidateRequest<Body> for AdminHost {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request) -> Result<(), Response> {
        let config = self.gateway.config_now();
        let (headers, g) = (request.headers(), &config.gateway);
        let refused = match layers::request_host(headers, request.uri()) {
            Err(_) => "authority_mismatch",
            Ok(host) if !layers::host_allowed(&g.allowed_hosts, host) => "host",
            Ok(_) => match headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("")) {
                Some(origin) if !layers::origin_allowed(&g.allowed_origins, origin) => "origin",
                _ => return Ok(()),
            },
        };
        let metrics = &self.gateway.telemetry().metrics;
        metrics.http_rejections.get_or_create(&ReasonLabels { reason: refused }).inc();
        tracing::warn!(
            reason = refused,
            path = request.uri().path(),
            "Refused an admin listener request: Host or Origin not allowed."
        );
        Err((StatusCode::FORBIDDEN, "Forbidden: Host or Origin not allowed\n").into_response())
    }
}

async fn admin_status(State(a): State<Admin>) -> Response {
    let body = status_body(&a.gateway, a.gateway.session_count());
    (StatusCode::OK, json_headers(), masked(&a.gateway, &body)).into_response()
}

async fn admin_upstream_status(
    State(a): State<Admin>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    upstream_status_of(&a.gateway, &id)
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
    upstream_status_of(&app.gateway, &id)
}

fn upstream_status_of(gateway: &Gateway, id: &str) -> Response {
    match gateway.upstream_status(id) {
        Some(body) => (StatusCode::OK, json_headers(), masked(gateway, &body)).into_response(),
        None => {
            let body = serde_json::json!({ "error": format!("no upstream `{id}`") });
            (StatusCode::NOT_FOUND, json_headers(), body.to_string()).into_response()
        }
    }
}

/// A status body with every secret value masked: an upstream's
/// `serverInfo` and instructions are its own words, and may hold one.
pub(super) fn masked(gateway: &Gateway, body: &serde_json::Value) -> String {
    gateway.redactor().redact(&body.to_string()).into_owned()
}

/// `/status`. Pids, errors and server names are not for a DNS-rebinding
/// page; the health probes reveal nothing and stay open to orchestrators.
/// It names every tool, hidden ones too: admins only (the router puts
/// [`layers::admin_admission`] in front of it).
pub(super) async fn status(State(app): State<Arc<App>>) -> Response {
    let body = status_body(&app.gateway, app.sessions.len());
    (StatusCode::OK, json_headers(), masked(&app.gateway, &body)).into_response()
}

/// `/status`'s body (before masking): every upstream's status, collisions
/// and counts ([`Gateway::status`]), `sessions`, and, for the status page,
/// `catalog` (every routed tool with its description, annotations and
/// flags; the quarantined ones) and `recent_refusals` (the last refusals
/// by policy, newest first). Keys are only ever added.
fn status_body(gateway: &Gateway, sessions: usize) -> serde_json::Value {
    let mut body = gateway.status();
    body["sessions"] = sessions.into();
    body["catalog"] = gateway.catalog_status();
    body["recent_refusals"] = gateway.recent_refusals();
    body
}
