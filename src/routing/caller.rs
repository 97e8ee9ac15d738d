//! Who sent a request, and how.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::peer::Peer;
use crate::protocol;

/// Who sent a request, and how: for metrics, traces and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// How the request came.
    pub transport: protocol::Transport,
    /// The downstream session id, when there is one.
    pub session: Option<&'a str>,
    /// The client's W3C `traceparent` header (HTTP).
    pub traceparent: Option<&'a str>,
    /// The session's peer (notifications, cancellation, subscriptions).
    pub peer: Option<&'a Arc<Peer>>,
    /// The request's own stream (an HTTP POST answered as SSE): messages
    /// about this call go there rather than to the session stream.
    pub stream: Option<&'a mpsc::Sender<String>>,
    /// The request's protocol era: a 2025 session's, or a stateless
    /// 2026-07-28 request (docs/design.md D13).
    pub era: protocol::Era,
}

// === impl Caller ===

impl Caller<'_> {
    /// The principal's id as rate limits and logs know it (`anonymous`
    /// without a session).
    pub(crate) fn principal_id(&self) -> Arc<str> {
        self.peer.map_or_else(|| Arc::from("anonymous"), |p| p.principal.identity.clone())
    }
}
