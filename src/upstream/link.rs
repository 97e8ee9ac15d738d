//! The transport under a [`Connection`](super::conn::Connection): one enum
//! over stdio, Streamable HTTP and legacy HTTP+SSE.

use std::sync::Arc;
use std::time::Duration;

use super::client::HttpError;
use super::inbox::Inbox;
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
    /// The connection could not be made: the request never left. (The
    /// error's URL is stripped: it may hold secrets.)
    #[error("is unreachable: {}", Chain(.0))]
    Connect(#[source] HttpError),
    /// Read or write failure after connecting. The request may have
    /// reached the upstream.
    #[error("connection failed: {}", Chain(.0))]
    Io(#[source] IoError),
    /// The upstream refused the gateway's credential, or there is no
    /// usable one (what to do is in the message; no token in it).
    #[error("{0}")]
    Auth(#[source] AuthFailure),
    /// A body over the message size limit.
    #[error("sent a message larger than {0} bytes")]
    TooLarge(usize),
}

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The process did not start.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command, as configured.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configured URL is not one.
    #[error(transparent)]
    Url(#[from] url::ParseError),
    /// The legacy SSE stream did not name its message endpoint.
    #[error("SSE endpoint {0}")]
    Sse(#[source] LinkError),
}

/// A failure after connecting, by where it came from.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IoError {
    /// The HTTP exchange (URL stripped).
    #[error(transparent)]
    Http(HttpError),
    /// A header the request needs (from a tool's `x-mcp-header` arguments)
    /// cannot be sent in HTTP; the request did not leave.
    #[error("a request header is not valid HTTP: {0}")]
    Header(&'static str),
    /// A legacy SSE server named a message endpoint that is not a URL.
    #[error("sent an invalid endpoint")]
    Endpoint(#[source] url::ParseError),
}

/// Why the gateway's credential did not get a request through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthFailure {
    /// No usable token: getting or renewing it failed.
    #[error(transparent)]
    Credential(#[from] crate::oauth::OAuthError),
    /// The upstream refused the token it was given (the message says what
    /// to do: which scope, which command).
    #[error("{0}")]
    Refused(String),
}

/// An error and its sources, `: `-separated, as one line.
struct Chain<'a, E>(&'a E);

impl<E: std::error::Error> std::fmt::Display for Chain<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The HTTP headers of one message besides the link's own: the trace
/// context, and for a 2026-07-28 upstream the request metadata headers
/// (`Mcp-Method`, `Mcp-Name`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Headers<'a> {
    /// W3C `traceparent`.
    pub(crate) traceparent: Option<&'a str>,
    /// `Mcp-Method`.
    pub(crate) method: Option<&'a str>,
    /// `Mcp-Name`, as the body has it (encoded when sent, if need be).
    pub(crate) name: Option<&'a str>,
    /// `Mcp-Param-{name}` headers, values as the body has them.
    pub(crate) params: &'a [(String, String)],
}

// === impl Link ===

impl Link {
    /// Hands one message to the transport. For HTTP this waits for the
    /// response headers (and a JSON body, which is delivered to `inbox`).
    /// `headers` go out as headers (HTTP transports only; stdio carries
    /// the trace context in `_meta`, see [`Link::carries_headers`]).
    pub(crate) async fn send(
        &self,
        inbox: &Arc<Inbox>,
        body: String,
        id: Option<u64>,
        headers: Headers<'_>,
    ) -> Result<(), LinkError> {
        match self {
            Link::Stdio(l) => l.send(body).await,
            Link::Http(l) => l.send(inbox, body, id, headers).await,
            Link::Legacy(l) => l.send(body, headers.traceparent).await,
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
            let _ = link.send(&inbox, body, None, Headers::default()).await;
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

    /// Sends no `MCP-Protocol-Version` (before a handshake settled one).
    pub(crate) fn clear_protocol_version(&self) {
        if let Link::Http(l) = self {
            l.reset_session();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_error_says_its_sources_on_one_line() {
        let e = LinkError::Io(IoError::Endpoint(url::ParseError::RelativeUrlWithoutBase));
        assert_eq!(e.to_string(), "connection failed: sent an invalid endpoint: relative URL without a base");
        assert!(std::error::Error::source(&e).is_some(), "the source is kept, typed");
        let open = OpenError::Sse(LinkError::Closed);
        assert_eq!(open.to_string(), "SSE endpoint is not running");
        let spawn = OpenError::Spawn { command: "nope".into(), source: std::io::ErrorKind::NotFound.into() };
        assert_eq!(spawn.to_string(), "cannot start `nope`: entity not found");
    }
}
