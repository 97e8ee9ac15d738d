//! The transport under a [`Connection`](super::conn::Connection): one enum
//! over stdio, Streamable HTTP and legacy HTTP+SSE.

use std::sync::Arc;
use std::time::Duration;

use super::conn::Inbox;
use super::{http::HttpLink, legacy::LegacyLink, stdio::StdioLink};

/// A transport link. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    /// A child process.
    Stdio(Arc<StdioLink>),
    /// Streamable HTTP.
    Http(Arc<HttpLink>),
    /// Legacy HTTP+SSE.
    Legacy(Arc<LegacyLink>),
}

/// Why a message could not be handed to the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The process or stream is gone.
    #[error("is not running")]
    Closed,
    /// HTTP 404 for our session id: the upstream forgot the session.
    #[error("expired our session")]
    SessionExpired,
    /// A non-success HTTP status.
    #[error("answered HTTP {status}")]
    Status {
        /// The status code.
        status: u16,
        /// `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// The connection could not be made: the request never left.
    #[error("is unreachable: {0}")]
    Connect(String),
    /// Read or write failure after connecting (URL stripped: it may hold
    /// secrets). The request may have reached the upstream.
    #[error("connection failed: {0}")]
    Io(String),
    /// The upstream refused the gateway's credential, or there is no
    /// usable one (what to do is in the message; no token in it).
    #[error("{0}")]
    Auth(String),
    /// A body over the message size limit.
    #[error("sent a message larger than {0} bytes")]
    TooLarge(usize),
}

// === impl Link ===

impl Link {
    /// Hands one message to the transport. For HTTP this waits for the
    /// response headers (and a JSON body, which is delivered to `inbox`).
    /// `traceparent` goes out as a header (HTTP transports only; stdio
    /// carries it in `_meta`, see [`Link::carries_headers`]).
    pub(crate) async fn send(
        &self,
        inbox: &Arc<Inbox>,
        body: String,
        id: Option<u64>,
        traceparent: Option<&str>,
    ) -> Result<(), LinkError> {
        match self {
            Link::Stdio(l) => l.send(body).await,
            Link::Http(l) => l.send(inbox, body, id, traceparent).await,
            Link::Legacy(l) => l.send(body, traceparent).await,
        }
    }

    /// Whether requests carry HTTP headers (else trace context goes in
    /// `_meta`).
    pub(crate) fn carries_headers(&self) -> bool {
        !matches!(self, Link::Stdio(_))
    }

    /// Sends without waiting (cancellations from a `Drop`).
    pub(crate) fn send_detached(&self, inbox: &Arc<Inbox>, body: String) {
        if let Link::Stdio(l) = self {
            l.try_send(body);
            return;
        }
        let (link, inbox) = (self.clone(), inbox.clone());
        tokio::spawn(async move {
            let _ = link.send(&inbox, body, None, None).await;
        });
    }

    /// Increases each time an HTTP upstream hands out a new session.
    pub(crate) fn generation(&self) -> u64 {
        match self {
            Link::Http(l) => l.generation(),
            _ => 0,
        }
    }

    /// Forgets an expired HTTP session.
    pub(crate) fn reset_session(&self) {
        if let Link::Http(l) = self {
            l.reset_session();
        }
    }

    /// Records the negotiated revision (sent as `MCP-Protocol-Version`).
    pub(crate) fn set_protocol_version(&self, v: &str) {
        if let Link::Http(l) = self {
            l.set_protocol_version(v);
        }
    }

    /// After `initialize`: open the stream for server-initiated messages.
    pub(crate) async fn start_listening(&self, inbox: &Arc<Inbox>) {
        if let Link::Http(l) = self {
            l.start_listening(inbox).await;
        }
    }

    /// The child's process id, for stdio.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Link::Stdio(l) => l.pid(),
            _ => None,
        }
    }

    /// Shuts the transport down as the spec says (stdio: close stdin →
    /// SIGTERM → SIGKILL; HTTP: DELETE the session).
    pub(crate) async fn shutdown(&self) {
        match self {
            Link::Stdio(l) => l.shutdown().await,
            Link::Http(l) => l.shutdown().await,
            Link::Legacy(l) => l.shutdown(),
        }
    }
}
