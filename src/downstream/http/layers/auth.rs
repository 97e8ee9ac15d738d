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
//! A layer of our own rather than tower-http's `AsyncRequireAuthorization`
//! (design.md, "Tower at the edges"): that one boxes a future and clones
//! the inner route on every request, about 2 % of a proxied call's
//! instructions. Here everything but a bearer JWT is decided at once
//! ([`Authenticator::decide`]: `mode = "none"`, API keys, every refusal)
//! and the inner service is called directly; only a JWT, whose issuer's
//! keys may have to be fetched, waits in a boxed future.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either, Ready};
use tower::{Layer, Service};

use super::super::*;
use crate::security::auth::{AuthError, Decided};

/// The layer that authenticates with the [`App`]'s [`Authenticator`].
#[derive(Debug, Clone)]
pub(in super::super) struct Authenticate {
    app: Arc<App>,
}

/// [`Authenticate`] in front of `S`.
#[derive(Debug, Clone)]
pub(in super::super) struct Authenticated<S> {
    app: Arc<App>,
    inner: S,
}

// === impl Authenticate ===

impl Authenticate {
    /// The layer that runs this check in front of a route.
    pub(in super::super) fn layer(app: Arc<App>) -> Self {
        Authenticate { app }
    }
}

impl<S> Layer<S> for Authenticate {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated { app: self.app.clone(), inner }
    }
}

// === impl Authenticated ===

impl<S> Service<Request> for Authenticated<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    /// The inner call (decided at once), a refusal, or a JWT being verified.
    type Future = Either<
        Either<S::Future, Ready<Result<Response, Infallible>>>,
        BoxFuture<'static, Result<Response, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let headers = request.headers();
        let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        let api_key = headers.get("x-api-key").map(HeaderValue::as_bytes);
        let decided = match self.app.auth.load().decide(authorization, api_key) {
            Decided::Now(decided) => decided,
            Decided::Jwt(token) => {
                // The service that was made ready goes into the future; a
                // clone stays here for the next request.
                let token = token.to_owned();
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                return Either::Right(Box::pin(verify_then_call(self.app.clone(), inner, token, request)));
            }
        };
        match decided {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Either::Left(Either::Left(self.inner.call(request)))
            }
            Err(e) => Either::Left(Either::Right(futures_util::future::ready(Ok(refuse(&self.app, &e, request))))),
        }
    }
}

/// Verifies the request's bearer JWT `token` (which `decide` found), then
/// calls `inner` with its principal, or answers the refusal.
async fn verify_then_call<S>(
    app: Arc<App>,
    mut inner: S,
    token: String,
    mut request: Request,
) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    // The authenticator in force when the request came: a reload may swap
    // it while the JWKS is fetched.
    let auth = app.auth.load_full();
    match auth.verify_jwt(&token).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            inner.call(request).await
        }
        Err(e) => Ok(refuse(&app, &e, request)),
    }
}

/// The answer to a client refused at authentication, counted and logged;
/// the body it did not read is drained for a moment ([`refused_unread`]).
fn refuse(app: &App, e: &AuthError, request: Request) -> Response {
    let metrics = &app.gateway.telemetry().metrics;
    metrics.auth_failures.get_or_create(&ReasonLabels { reason: e.reason() }).inc();
    // Never the credential itself: only why it was refused.
    tracing::warn!(reason = e.reason(), error = %e, "Refused a client at authentication.");
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut resp = rpc_error(status, None, protocol::INVALID_REQUEST, &format!("Unauthorized: {e}"));
    if let Ok(v) = HeaderValue::from_str(&app.auth.load().challenge(e)) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    let (parts, body) = request.into_parts();
    refused_unread(parts.version, body.into_data_stream(), resp)
}
