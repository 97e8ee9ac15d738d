//! Authentication (design.md D9): who the client is, from its
//! `Authorization` bearer token or `X-Api-Key`, after the host check and
//! before any body is read, so that a client who may not post cannot make
//! the gateway buffer one.
//!
//! Guarantees: a request that passes carries its [`Principal`] in its
//! extensions (`Arc<Principal>`), which is where handlers take it from; one
//! that does not is answered 401 with a `WWW-Authenticate` challenge (the
//! RFC 9728 metadata URL), 403 for a missing scope or 503 when the signing
//! keys cannot be fetched, counted in `mcp_gateway_auth_failures_total`
//! and logged without the credential. The inner service is not called.
//!
//! The check is tower-http's [`AsyncRequireAuthorizationLayer`] with
//! [`Authenticate`] as its authorizer: validating a JWT may fetch the
//! issuer's keys, so the check is asynchronous.

use futures_util::future::BoxFuture;
use tower_http::auth::{AsyncAuthorizeRequest, AsyncRequireAuthorizationLayer};

use super::super::*;
use crate::security::auth::AuthError;

/// Authenticates a request with the [`App`]'s [`Authenticator`] and puts
/// the [`Principal`] in its extensions.
#[derive(Debug, Clone)]
pub(in super::super) struct Authenticate {
    app: Arc<App>,
}

// === impl Authenticate ===

impl Authenticate {
    /// The layer that runs this check in front of a route.
    pub(in super::super) fn layer(app: Arc<App>) -> AsyncRequireAuthorizationLayer<Self> {
        AsyncRequireAuthorizationLayer::new(Authenticate { app })
    }
}

impl AsyncAuthorizeRequest<Body> for Authenticate {
    type RequestBody = Body;
    type ResponseBody = Body;
    // Boxed: `Authenticator::authenticate` is an `async fn`, whose future
    // has no name to put here.
    type Future = BoxFuture<'static, Result<Request, Response>>;

    fn authorize(&mut self, mut request: Request) -> Self::Future {
        let app = self.app.clone();
        Box::pin(async move {
            let headers = request.headers();
            let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
            let api_key = headers.get("x-api-key").map(HeaderValue::as_bytes);
            match app.auth.authenticate(authorization, api_key).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    Ok(request)
                }
                Err(e) => {
                    let resp = refusal(&app, &e);
                    let (parts, body) = request.into_parts();
                    Err(refused_unread(parts.version, body.into_data_stream(), resp))
                }
            }
        })
    }
}

/// The answer to a client refused at authentication, counted and logged.
fn refusal(app: &App, e: &AuthError) -> Response {
    let metrics = &app.gateway.telemetry().metrics;
    metrics.auth_failures.get_or_create(&ReasonLabels { reason: e.reason() }).inc();
    // Never the credential itself: only why it was refused.
    tracing::warn!(reason = e.reason(), error = %e, "Refused a client at authentication.");
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut resp = rpc_error(status, None, protocol::INVALID_REQUEST, &format!("Unauthorized: {e}"));
    if let Ok(v) = HeaderValue::from_str(&app.auth.challenge(e)) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}
