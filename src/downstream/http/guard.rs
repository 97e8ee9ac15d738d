//! Admission past the layers ([`super::layers`]): bodies read within
//! their limits and the in-flight budget, session lookup and the
//! per-principal session share.

use super::*;

// === impl App ===

impl App {
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

    /// A session this replica does not hold, rebuilt from its token
    /// (design D10): it must open under a key of the ring, name the
    /// principal presenting it, carry a supported version, and be younger
    /// than `session_idle_timeout` (an absolute age here: no replica knows
    /// its last use); the rebuilt session ends when that age is reached.
    /// It counts against the principal's sessions like a new one. What it
    /// had on another replica (subscriptions, log level, tasks, replay
    /// buffer, its own upstream connections) is not carried: see
    /// docs/operations.md "Replicas".
    fn rebuild(&self, token: &str, principal: &Arc<Principal>) -> Option<Arc<Session>> {
        use super::super::token::TokenError;
        let metrics = &self.gateway.telemetry().metrics;
        let count = |outcome: &'static str| {
            metrics.session_rebuilds.get_or_create(&crate::telemetry::metrics::Outcome { outcome }).inc();
        };
        let refuse = |outcome: &'static str| {
            count(outcome);
            None
        };
        if self.sessions.was_ended(token) {
            return refuse("ended");
        }
        let claims = match self.keyring.load().open(token) {
            Ok(c) => c,
            // An id of another format: a client's stale or invented id.
            Err(TokenError::Malformed) => return refuse("not_a_token"),
            Err(e) => {
                tracing::info!(principal = %principal.identity, error = %e, "A session token was refused.");
                return refuse(match e {
                    TokenError::UnknownKey => "unknown_key",
                    _ => "forged",
                });
            }
        };
        if !claims.opened_by(&principal.identity) {
            metrics.auth_failures.get_or_create(&ReasonLabels { reason: "session_principal" }).inc();
            tracing::warn!(presenter = %principal.identity, "A session token was presented by another principal.");
            return refuse("other_principal");
        }
        if !protocol::is_supported_version(&claims.version) {
            return refuse("unsupported_version");
        }
        let now = unix_now();
        let max_age = self.gateway.config_now().gateway.session_idle_timeout;
        // A minute of clock skew between replicas; a token from further in
        // the future was not sealed by a replica with a sane clock.
        let age = now.checked_sub(claims.created).or_else(|| (claims.created - now <= 60).then_some(0));
        let Some(left) = age.and_then(|age| max_age.as_secs().checked_sub(age)).filter(|l| *l > 0) else {
            tracing::info!(principal = %principal.identity, "A session token past session_idle_timeout was refused.");
            return refuse("expired");
        };
        let Ok(quota) = self.take_session(principal) else { return refuse("full") };
        let init = format!("{{\"capabilities\":{}}}", claims.capabilities);
        let init = crate::protocol::CheckedBox::parse(&init, &self.gateway.config_now().json_limits())?;
        let (tx, outbox) = tokio::sync::mpsc::channel(crate::routing::peer::QUEUE);
        let client = self.gateway.connect(tx, Some(init.checked()), principal.clone());
        let legacy = self.legacy.locked().len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(left);
        let Ok(session) = self.sessions.adopt(token, claims.version.clone(), client, outbox, quota, legacy, deadline)
        else {
            self.too_many_sessions();
            return refuse("full");
        };
        tracing::info!(
            principal = %principal.identity,
            version = %claims.version,
            left_s = left,
            reduced = claims.reduced(),
            "Rebuilt a session another replica opened, from its token."
        );
        count("rebuilt");
        Some(session)
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
        let found = match self.sessions.get(sid) {
            Some(s) => Some(s).filter(|s| self.same_principal(&s.client.peer.principal, principal)),
            None => self.rebuild(sid, principal),
        };
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
