//! Admission: duplicate headers, Host and Origin, authentication, the
//! admin check, bodies read within their limits and the in-flight budget,
//! session lookup and the per-principal session share.

use super::*;

// === impl App ===

impl App {
    /// Checks the host the request is for ([`request_host`]) and `Origin`,
    /// then who the client is: 401 with a `WWW-Authenticate` challenge
    /// (RFC 9728 metadata URL), 403 for a missing scope, 503 when the
    /// signing keys cannot be fetched.
    pub(super) async fn admit(&self, headers: &HeaderMap, uri: &Uri) -> Result<Arc<Principal>, Response> {
        self.check_single_headers(headers)?;
        self.check_origin(headers, uri)?;
        let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        let api_key = headers.get("x-api-key").map(HeaderValue::as_bytes);
        match self.auth.authenticate(authorization, api_key).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let metrics = &self.gateway.telemetry().metrics;
                metrics.auth_failures.get_or_create(&ReasonLabels { reason: e.reason() }).inc();
                // Never the credential itself: only why it was refused.
                tracing::warn!(reason = e.reason(), error = %e, "Refused a client at authentication.");
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
                let mut resp = rpc_error(status, None, protocol::INVALID_REQUEST, &format!("Unauthorized: {e}"));
                if let Ok(v) = HeaderValue::from_str(&self.auth.challenge(&e)) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                Err(resp)
            }
        }
    }

    /// [`App::admit`], and the principal must be an admin: in one of
    /// `[auth] admin_groups`. Without authentication (`mode = "none"`, a
    /// loopback listener unless written out) nobody is told apart, so the
    /// pages stay open as everything else does.
    pub(super) async fn admin(&self, headers: &HeaderMap, uri: &Uri, what: &str) -> Result<Arc<Principal>, Response> {
        let principal = self.admit(headers, uri).await?;
        let config = self.gateway.config();
        let allowed = match principal.via {
            crate::security::auth::Via::Anonymous => true,
            _ => config.auth.admin_groups.iter().any(|g| principal.in_group(g)),
        };
        if allowed {
            return Ok(principal);
        }
        self.rejected("not_admin");
        tracing::info!(principal = %principal.identity, page = what, "Refused an admin page to a principal not in an admin group.");
        let msg = format!("Forbidden: {what} is for principals in an admin group ([auth] admin_groups)");
        Err(rpc_error(StatusCode::FORBIDDEN, None, protocol::INVALID_REQUEST, &msg))
    }

    /// Reads and parses one JSON-RPC message from an admitted request's
    /// body: 413, 408, 400 or 503 as [`Self::read_body`] says, 400 with the
    /// JSON-RPC parse error when it is not a message. The [`Held`] keeps
    /// the body's bytes counted until it is dropped.
    pub(super) async fn read_message(
        &self,
        version: Version,
        body: Body,
        principal: &Principal,
    ) -> Result<(Message, Held), Response> {
        let (body, held) = self.read_body(version, body, principal).await?;
        let msg = self
            .gateway
            .parse(Transport::Http, &body)
            .map_err(|e| (StatusCode::BAD_REQUEST, json_headers(), e.to_response()).into_response())?;
        Ok((msg, held))
    }

    /// Reads a request body of at most `max_message_bytes` within
    /// [`BODY_READ_TIMEOUT`]: 413 at once when its declared length is over
    /// the limit (nothing is kept) or as soon as it grows over it, 408 when
    /// it is too slow (and the connection is closed), 400 when the client
    /// breaks it off. Its bytes are taken from the in-flight budget (its
    /// declared length at once, or as it arrives): 503 with `Retry-After`
    /// when the principal's share or the whole budget has no room.
    pub(super) async fn read_body(
        &self,
        version: Version,
        body: Body,
        principal: &Principal,
    ) -> Result<(Bytes, Held), Response> {
        let max = self.gateway.config().gateway.max_message_bytes;
        let too_large = || {
            self.rejected("body_too_large");
            let msg = format!("Request body exceeds {max} bytes");
            rpc_error(StatusCode::PAYLOAD_TOO_LARGE, None, protocol::INVALID_REQUEST, &msg)
        };
        let declared = axum::body::HttpBody::size_hint(&body).lower();
        let mut chunks = body.into_data_stream();
        if usize::try_from(declared).map_or(true, |n| n > max) {
            return Err(refused_unread(version, chunks, too_large()));
        }
        let mut held = match self.bytes.take(principal, declared as usize) {
            Ok(h) => h,
            Err(over) => return Err(refused_unread(version, chunks, self.over_budget(over, principal))),
        };
        let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
        // The declared length is at most `max` here: one allocation for
        // the usual body that says its length.
        let mut buf = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        loop {
            match tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut chunks)).await {
                Ok(None) => return Ok((Bytes::from(buf), held)),
                Ok(Some(Ok(chunk))) if buf.len() + chunk.len() <= max => {
                    // Past its declared length (or with none), a body takes
                    // what it brings.
                    let more = (buf.len() + chunk.len()).saturating_sub(held.amount());
                    if let Err(over) = held.grow(more) {
                        return Err(refused_unread(version, chunks, self.over_budget(over, principal)));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(Some(Ok(_))) => return Err(refused_unread(version, chunks, too_large())),
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "Could not read a request body.");
                    let msg = format!("Could not read the request body: {e}");
                    return Err(rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, &msg));
                }
                Err(_) => {
                    self.rejected("body_timeout");
                    let secs = BODY_READ_TIMEOUT.as_secs();
                    tracing::warn!(timeout_s = secs, "Refused a request whose body did not arrive in time.");
                    let msg = format!("Request Timeout: the body did not arrive within {secs} s");
                    let mut resp = rpc_error(StatusCode::REQUEST_TIMEOUT, None, protocol::INVALID_REQUEST, &msg);
                    // The rest of the body may still come; only closing the
                    // connection gets rid of it, at once (no lingering for
                    // a client this slow). HTTP/2 has no such header: the
                    // stream is reset when the body is dropped.
                    if version < Version::HTTP_2 {
                        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    return Err(resp);
                }
            }
        }
    }

    /// The refusal of a body the in-flight budget has no room for: 503
    /// with `Retry-After` (bodies in flight are short-lived), counted and
    /// logged with the principal whose share, or the whole, is full.
    pub(super) fn over_budget(&self, over: Over, principal: &Principal) -> Response {
        self.rejected(over.reason("bytes"));
        let g = &self.gateway.config().gateway;
        let (msg, held) = match over {
            Over::Share => {
                let held = self.bytes.held_by(&principal.identity);
                let msg = format!(
                    "Service Unavailable: this principal's requests in flight hold {held} bytes \
                     (gateway.max_inflight_request_bytes_per_principal is {}); retry shortly",
                    g.max_inflight_request_bytes_per_principal
                );
                (msg, held)
            }
            // What others hold is not this client's business.
            Over::Whole => (
                "Service Unavailable: the gateway's budget of request bytes in flight \
                 (gateway.max_inflight_request_bytes) is full; retry shortly"
                    .to_owned(),
                self.bytes.total(),
            ),
        };
        tracing::info!(principal = %principal.identity, reason = over.reason("bytes"), held, "Refused a request: no room for its body in the in-flight budget.");
        let body = crate::error::CallError::new(crate::error::ErrorClass::Overloaded, None, msg).to_response_null();
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, json_headers(), body).into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    }

    /// Sets `mcp_gateway_downstream_sessions{transport="sse"}`: the legacy
    /// transport's sessions.
    pub(super) fn legacy_gauge(&self, open: usize) {
        let labels = crate::telemetry::metrics::TransportLabels { transport: "sse" };
        self.gateway.telemetry().metrics.sessions.get_or_create(&labels).set(open as i64);
    }

    /// Counts and logs a session refused because `max_sessions` are open.
    pub(super) fn too_many_sessions(&self) {
        self.rejected("sessions");
        let max = self.gateway.config().gateway.max_sessions;
        tracing::warn!(max, "Refused a session: max_sessions are open.");
    }

    /// A place among `principal`'s sessions, or 429 when it has
    /// `max_sessions_per_principal` open.
    pub(super) fn take_session(&self, principal: &Principal) -> Result<Held, Box<Response>> {
        self.sessions_each.take(principal, 1).map_err(|over| {
            self.rejected(over.reason("sessions"));
            let max = self.gateway.config().gateway.max_sessions_per_principal;
            tracing::info!(principal = %principal.identity, max, "Refused a session: the principal has max_sessions_per_principal open.");
            let msg = format!(
                "Too Many Requests: this principal has {max} sessions open (gateway.max_sessions_per_principal); \
                 end one (DELETE /mcp) or wait for idle ones to expire"
            );
            Box::new(rpc_error(StatusCode::TOO_MANY_REQUESTS, None, protocol::INVALID_REQUEST, &msg))
        })
    }

    /// Counts a request refused before routing, by `reason`.
    pub(super) fn rejected(&self, reason: &'static str) {
        self.gateway.telemetry().metrics.http_rejections.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Whether a session opened by `owner` may be used by `presenter`;
    /// counts and logs the refusal.
    /// A session belongs to the whole identity that opened it: an API key
    /// and a JWT with the same name are two principals (docs/design.md D12).
    pub(super) fn same_principal(&self, owner: &Principal, presenter: &Principal) -> bool {
        if owner.identity == presenter.identity {
            return true;
        }
        let metrics = &self.gateway.telemetry().metrics;
        metrics.auth_failures.get_or_create(&ReasonLabels { reason: "session_principal" }).inc();
        tracing::warn!(owner = %owner.identity, presenter = %presenter.identity, "A session id was presented by another principal.");
        false
    }

    /// The request's host ([`request_host`]) and `Origin` against the
    /// allow-lists.
    /// Refuses a request that repeats a header the gateway decides on
    /// (docs/design.md D12): a proxy in front may read the last copy where the
    /// gateway reads the first.
    #[allow(clippy::result_large_err)]
    pub(super) fn check_single_headers(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(name) = SINGLE_HEADERS.iter().find(|h| headers.get_all(**h).iter().nth(1).is_some()) else {
            return Ok(());
        };
        self.gateway.refused(Transport::Http, "duplicate_header");
        tracing::warn!(header = %name, "Refused a request that repeats a header.");
        let msg = format!("Bad Request: the {name} header occurs more than once");
        Err(rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, &msg))
    }

    #[allow(clippy::result_large_err)]
    pub(super) fn check_origin(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Response> {
        let host = match request_host(headers, uri) {
            Ok(host) => host,
            Err(why) => {
                self.rejected("authority_mismatch");
                tracing::warn!(authority = ?uri.authority().map(|a| a.as_str()), "Refused a request: {why}.");
                let msg = format!("Bad Request: {why}");
                return Err(rpc_error(StatusCode::BAD_REQUEST, None, protocol::INVALID_REQUEST, &msg));
            }
        };
        if !host_allowed(&self.hosts, host) {
            self.rejected("host");
            tracing::warn!(host = %host, "Refused a request with a Host that is not allowed.");
            return Err(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                protocol::INVALID_REQUEST,
                "Forbidden: Host not allowed",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origin_allowed(&self.origins, origin) {
                self.rejected("origin");
                tracing::warn!(origin = %origin, "Refused a request with an Origin that is not allowed.");
                return Err(rpc_error(
                    StatusCode::FORBIDDEN,
                    None,
                    protocol::INVALID_REQUEST,
                    "Forbidden: Origin not allowed",
                ));
            }
        }
        Ok(())
    }

    /// The session named by `Mcp-Session-Id`: 400 when missing or not
    /// visible ASCII, 404 when unknown, 400 when `MCP-Protocol-Version` is
    /// unsupported.
    #[allow(clippy::result_large_err)]
    pub(super) fn session(
        &self,
        headers: &HeaderMap,
        id: Option<&protocol::RawValue>,
        principal: &Arc<Principal>,
    ) -> Result<Arc<Session>, Response> {
        if let Some(v) = headers.get(VERSION_HEADER) {
            let v = v.to_str().unwrap_or("");
            if !protocol::is_supported_version(v) {
                let msg = format!("Unsupported MCP-Protocol-Version: {}", protocol::echo(v));
                return Err(rpc_error(StatusCode::BAD_REQUEST, id, protocol::INVALID_REQUEST, &msg));
            }
        }
        let Some(sid) = headers.get(SESSION_HEADER) else {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                protocol::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required",
            ));
        };
        // Session ids are visible ASCII (transports.mdx, session
        // management); anything else cannot name a session.
        let Some(sid) = sid.to_str().ok().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())) else {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                protocol::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is invalid (session ids are visible ASCII)",
            ));
        };
        // Another principal's session is answered like an unknown one: a
        // session id is not a credential of its own.
        let found = self.sessions.get(sid).filter(|s| self.same_principal(&s.client.peer.principal, principal));
        found.ok_or_else(|| {
            rpc_error(
                StatusCode::NOT_FOUND,
                id,
                protocol::INVALID_REQUEST,
                "Session not found; initialize a new session",
            )
        })
    }
}

/// The host a request is for, as `host[:port]` text: the authority of its
/// URI when it has one (HTTP/2's `:authority`, which replaces `Host`, or an
/// HTTP/1.1 absolute-form target, which overrides it: RFC 9112 §3.2.2),
/// else its `Host` (`""` when there is none, or it is not text). Refused
/// when both are there and differ (RFC 9113 §8.3.1 calls that malformed;
/// checking one and serving the other would defeat the check), and when
/// there are several `Host` lines.
pub(super) fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Result<&'a str, &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (host, more) = (hosts.next(), hosts.next());
    if more.is_some() {
        return Err("more than one Host header");
    }
    let host = host.map(|h| h.to_str().unwrap_or(""));
    match (uri.authority(), host) {
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => {
            Err("the Host header and the request's authority differ")
        }
        (Some(a), _) => Ok(a.as_str()),
        (None, h) => Ok(h.unwrap_or("")),
    }
}

pub(super) const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// `host[:port]` against entries `host` (any port) or `host:port`.
pub(super) fn host_allowed(allowed: &[String], host: &str) -> bool {
    let name = split_host(host);
    if allowed.is_empty() {
        return LOOPBACK.contains(&name);
    }
    allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
}

pub(super) fn split_host(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// An origin against exact entries or `scheme://host:*` patterns.
pub(super) fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    if allowed.is_empty() {
        let Some((scheme, rest)) = origin.split_once("://") else { return false };
        return matches!(scheme, "http" | "https") && LOOPBACK.contains(&split_host(rest));
    }
    allowed.iter().any(|a| {
        a == "*"
            || a.eq_ignore_ascii_case(origin)
            || a.strip_suffix(":*").is_some_and(|base| {
                origin.len() > base.len()
                    && origin[..base.len()].eq_ignore_ascii_case(base)
                    && (origin[base.len()..].starts_with(':') || origin.len() == base.len())
            })
            || a.strip_suffix(":*").is_some_and(|base| base.eq_ignore_ascii_case(origin))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: Vec<String> = vec![];
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:80", "[::1]"] {
            assert!(host_allowed(&none, ok), "{ok}");
        }
        for bad in ["evil.com", "evil.com:8080", "127.0.0.2:80", "", "localhost.evil.com"] {
            assert!(!host_allowed(&none, bad), "{bad}");
        }
        let cfg = vec!["gw.internal".to_owned(), "10.0.0.5:8080".to_owned()];
        assert!(host_allowed(&cfg, "gw.internal:443"));
        assert!(host_allowed(&cfg, "10.0.0.5:8080"));
        assert!(!host_allowed(&cfg, "10.0.0.5:9090"));
        assert!(!host_allowed(&cfg, "localhost"));
    }

    #[test]
    fn the_host_comes_from_the_authority_or_host() {
        let uri = |u: &str| u.parse::<Uri>().unwrap();
        let hosts = |v: &[&str]| {
            let mut h = HeaderMap::new();
            for v in v {
                h.append(header::HOST, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        // HTTP/1.1 origin form: Host.
        assert_eq!(request_host(&hosts(&["localhost:8080"]), &uri("/mcp")), Ok("localhost:8080"));
        assert_eq!(request_host(&hosts(&[]), &uri("/mcp")), Ok(""));
        // HTTP/2 (or absolute form): the authority, with or without Host.
        assert_eq!(request_host(&hosts(&[]), &uri("http://127.0.0.1:9/mcp")), Ok("127.0.0.1:9"));
        assert_eq!(request_host(&hosts(&["LOCALHOST:9"]), &uri("http://localhost:9/mcp")), Ok("localhost:9"));
        assert!(request_host(&hosts(&["evil.example"]), &uri("http://localhost:9/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost:9"]), &uri("http://evil.example/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost", "evil.example"]), &uri("/mcp")).is_err());
        assert!(request_host(&hosts(&["localhost", "localhost"]), &uri("/mcp")).is_err());
    }

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        for ok in ["http://localhost:3000", "http://127.0.0.1", "https://[::1]:8443"] {
            assert!(origin_allowed(&none, ok), "{ok}");
        }
        for bad in ["null", "http://evil.com", "file://localhost", "http://localhost.evil.com"] {
            assert!(!origin_allowed(&none, bad), "{bad}");
        }
        let cfg = vec!["https://app.example.com".to_owned(), "http://localhost:*".to_owned()];
        assert!(origin_allowed(&cfg, "https://app.example.com"));
        assert!(origin_allowed(&cfg, "http://localhost:5173"));
        assert!(origin_allowed(&cfg, "http://localhost"));
        assert!(!origin_allowed(&cfg, "http://localhostevil.com"));
        assert!(!origin_allowed(&cfg, "https://app.example.com.evil"));
    }
}
