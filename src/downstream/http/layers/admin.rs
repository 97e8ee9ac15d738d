//! The admin check of `/status` and `/metrics` on the main listener: the
//! principal found by [`super::Authenticate`] must be in one of
//! `[auth] admin_groups`.
//!
//! Guarantees: a principal not in an admin group gets 403, counted as
//! `not_admin` in `mcp_gateway_http_rejections_total` and logged, and the
//! page is not built. Without authentication (`mode = "none"`, a loopback
//! listener unless written out) nobody is told apart, so the pages stay
//! open as everything else does.
//!
//! Precondition: runs inside [`super::Authenticate`]; a request without a
//! principal in its extensions is refused.

use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

use super::super::*;

/// Lets only admins through to the page it guards.
#[derive(Debug, Clone)]
pub(in super::super) struct RequireAdmin {
    app: Arc<App>,
    /// The page, as the refusal names it.
    page: &'static str,
}

// === impl RequireAdmin ===

impl RequireAdmin {
    /// The layer that runs this check in front of `page`'s route.
    pub(in super::super) fn layer(app: Arc<App>, page: &'static str) -> ValidateRequestHeaderLayer<Self> {
        ValidateRequestHeaderLayer::custom(RequireAdmin { app, page })
    }
}

impl ValidateRequest<Body> for RequireAdmin {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request) -> Result<(), Response> {
        let principal = request.extensions().get::<Arc<Principal>>();
        let allowed = principal.is_some_and(|p| match p.via {
            crate::security::auth::Via::Anonymous => true,
            _ => self.app.gateway.config().auth.admin_groups.iter().any(|g| p.in_group(g)),
        });
        if allowed {
            return Ok(());
        }
        self.app.rejected("not_admin");
        let identity = principal.map_or("", |p| &*p.identity);
        tracing::info!(principal = %identity, page = self.page, "Refused an admin page to a principal not in an admin group.");
        let msg = format!("Forbidden: {} is for principals in an admin group ([auth] admin_groups)", self.page);
        Err(rpc_error(StatusCode::FORBIDDEN, None, protocol::INVALID_REQUEST, &msg))
    }
}
