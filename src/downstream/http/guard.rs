//! Admission past the layers ([`super::layers`]): bodies read within
//! their limits and the in-flight budget, session lookup and the
//! per-principal session share.

use super::*;

/// How far ahead of this replica's clock a token's creation may be (the
/// replicas' clocks differ a little).
const MAX_CLOCK_SKEW: u64 = 60;

/// The id of a reply to no request.
static NULL_ID: std::sync::LazyLock<Box<protocol::RawValue>> =
    std::sync::LazyLock::new(|| protocol::RawValue::from_string("null".into()).expect("valid"));

/// A short fingerprint of a session token, for logs (to follow one session
/// across replicas without writing the token).
fn short(token: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
}

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
            self.take_session_refused(principal)
        })
    }

    /// The 429 of a principal with `max_sessions_per_principal` open (on
    /// this replica, or on all of them together with `[redis]`).
    pub(super) fn take_session_refused(&self, principal: &Principal) -> Box<Response> {
        let max = self.gateway.config().gateway.max_sessions_per_principal;
        tracing::info!(principal = %principal.identity, max, "Refused a session: the principal has max_sessions_per_principal open.");
        let msg = format!(
            "Too Many Requests: this principal has {max} sessions open (gateway.max_sessions_per_principal); \
             end one (DELETE /mcp) or wait for idle ones to expire"
        );
        Box::new(rpc_error(StatusCode::TOO_MANY_REQUESTS, None, protocol::INVALID_REQUEST, &msg))
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

    /// The claims of `token` if a session this replica does not hold may
    /// be rebuilt from it for `principal` (design D10): it opens under a
    /// key of the ring, names the principal presenting it, carries a
    /// supported version, is not from the future (a minute of clock skew)
    /// and is younger than `session_idle_timeout`, and it was not ended
    /// here. Each refusal is counted (`mcp_gateway_session_rebuilds_total`)
    /// and, but for an id of another format, logged.
    pub(super) fn rebuildable(&self, token: &str, principal: &Principal) -> Option<Claims> {
        use super::super::token::TokenError;
        let refuse = |outcome: &'static str| {
            self.count_rebuild(outcome);
            None
        };
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
            let metrics = &self.gateway.telemetry().metrics;
            metrics.auth_failures.get_or_create(&ReasonLabels { reason: "session_principal" }).inc();
            tracing::warn!(presenter = %principal.identity, "A session token was presented by another principal.");
            return refuse("other_principal");
        }
        if self.sessions.was_ended(token) {
            return refuse("ended");
        }
        if !protocol::is_supported_version(&claims.version) {
            return refuse("unsupported_version");
        }
        let now = unix_now();
        if claims.created > now + MAX_CLOCK_SKEW {
            tracing::warn!(
                principal = %principal.identity,
                ahead_s = claims.created - now,
                "A session token from the future was refused: are the replicas' clocks in step?"
            );
            return refuse("future");
        }
        let max_age = self.gateway.config_now().gateway.session_idle_timeout.as_secs();
        // With shared state, last use decides (App::rebuild asks Redis).
        if self.gateway.shared().is_none() && now.saturating_sub(claims.created) >= max_age {
            tracing::info!(principal = %principal.identity, "A session token older than session_idle_timeout was refused.");
            return refuse("expired");
        }
        Some(claims)
    }

    /// A session this replica does not hold, rebuilt from its token
    /// ([`App::rebuildable`]). Once rebuilt it is this replica's like any
    /// other (its idle timeout slides). It counts against the principal's
    /// sessions: over that share, 429; the table full, 503. What it had on
    /// another replica (subscriptions, log level, tasks, replay buffer, its
    /// own upstream connections) is not carried: docs/operations.md
    /// "Replicas".
    #[allow(clippy::result_large_err)]
    async fn rebuild(&self, token: &str, principal: &Arc<Principal>) -> Result<Option<Arc<Session>>, Response> {
        let Some(claims) = self.rebuildable(token, principal) else { return Ok(None) };
        let mut registered = false;
        if let Some(shared) = self.gateway.shared() {
            let idle = self.gateway.config_now().gateway.session_idle_timeout;
            let old = unix_now().saturating_sub(claims.created) >= idle.as_secs();
            let key = crate::shared::key_hash(token);
            let who = self.counted_as(principal);
            // Checked before the await (no config guard is held across it).
            let open = self.open_args(old, idle);
            match shared.open(key, who, open).await {
                Ok(crate::shared::Opened::Open) => registered = true,
                Ok(crate::shared::Opened::Ended) => {
                    self.sessions.end(token, std::time::SystemTime::now() + idle);
                    self.count_rebuild("ended");
                    return Ok(None);
                }
                Ok(crate::shared::Opened::Idle) => {
                    self.count_rebuild("expired");
                    return Ok(None);
                }
                Ok(crate::shared::Opened::Full(_)) => {
                    self.count_rebuild("full");
                    return Err(*self.take_session_refused(principal));
                }
                Err(e) if shared.on_unreachable().revocation == crate::config::Fallback::Closed => {
                    self.fallback("revocation", "refused");
                    tracing::warn!(error = %e, "A session was not taken over: Redis cannot say whether it was ended (on_unreachable.revocation = closed).");
                    let msg = "Service Unavailable: this session cannot be checked now (shared state unreachable); retry shortly";
                    let mut r = rpc_error(StatusCode::SERVICE_UNAVAILABLE, None, protocol::INVALID_REQUEST, msg);
                    r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                    return Err(r);
                }
                Err(e) => {
                    self.fallback("sessions", "local");
                    tracing::warn!(error = %e, "A session was rebuilt without Redis: its age, not its last use, decides.");
                    if old {
                        self.count_rebuild("expired");
                        return Ok(None);
                    }
                }
            }
        }
        let quota = match self.take_session(principal) {
            Ok(q) => q,
            // A concurrent request may have rebuilt it meanwhile.
            Err(refusal) => return self.sessions.get(token).map(Some).ok_or(*refusal),
        };
        let init = format!("{{\"capabilities\":{}}}", claims.capabilities);
        let Some(init) = crate::protocol::CheckedBox::parse(&init, &self.gateway.config_now().json_limits()) else {
            self.count_rebuild("bad_capabilities");
            tracing::warn!(principal = %principal.identity, "A session token's capabilities do not pass gateway.max_json_depth.");
            return Ok(None);
        };
        let (tx, outbox) = tokio::sync::mpsc::channel(crate::routing::peer::QUEUE);
        let client = self.gateway.connect(tx, Some(init.checked()), principal.clone());
        let legacy = self.legacy.locked().len();
        match self.sessions.adopt(token, claims.version.clone(), client, outbox, quota, legacy) {
            Ok(Some(session)) => {
                if registered {
                    session.client.peer.set_shared_registered();
                }
                tracing::info!(
                    principal = %principal.identity,
                    session = %short(token),
                    version = %claims.version,
                    age_s = unix_now().saturating_sub(claims.created),
                    capabilities_reduced = claims.reduced(),
                    "Rebuilt a session another replica opened, from its token."
                );
                self.count_rebuild("rebuilt");
                Ok(Some(session))
            }
            Ok(None) => {
                self.count_rebuild("ended");
                Ok(None)
            }
            Err(_) => {
                self.count_rebuild("full");
                self.too_many_sessions();
                let e = crate::error::CallError::new(crate::error::ErrorClass::Overloaded, None, "Too many sessions");
                Err((StatusCode::SERVICE_UNAVAILABLE, json_headers(), e.to_response(&NULL_ID)).into_response())
            }
        }
    }

    /// The principal a session counts against in the shared state: none
    /// for the shared anonymous principal (every anonymous client would
    /// share one cap, and one client could take it all).
    pub(super) fn counted_as(&self, principal: &Principal) -> Option<crate::shared::KeyHash> {
        (principal.via != crate::security::auth::Via::Anonymous).then(|| crate::shared::key_hash(&principal.identity))
    }

    /// How [`crate::shared::Shared::open`] counts a session now.
    pub(super) fn open_args(&self, old: bool, hold: std::time::Duration) -> crate::shared::Open {
        let g = &self.gateway.config_now().gateway;
        crate::shared::Open { cap: g.max_sessions_per_principal, idle: g.session_idle_timeout, hold, old }
    }

    /// Counts a decision made without Redis.
    pub(super) fn fallback(&self, feature: &'static str, outcome: &'static str) {
        let labels = crate::telemetry::metrics::FallbackLabels { feature, outcome };
        self.gateway.telemetry().metrics.redis_fallbacks.get_or_create(&labels).inc();
    }

    fn count_rebuild(&self, outcome: &'static str) {
        let metrics = &self.gateway.telemetry().metrics;
        metrics.session_rebuilds.get_or_create(&crate::telemetry::metrics::Outcome { outcome }).inc();
    }

    /// The session named by `Mcp-Session-Id`: 400 when missing or not
    /// visible ASCII, 404 when unknown, 400 when `MCP-Protocol-Version` is
    /// unsupported.
    #[allow(clippy::result_large_err)]
    pub(super) async fn session(
        &self,
        headers: &HeaderMap,
        id: Option<&protocol::RawValue>,
        principal: &Arc<Principal>,
    ) -> Result<Arc<Session>, Response> {
        if let Some(v) = headers.get(VERSION_HEADER) {
            let v = v.to_str().unwrap_or("");
            if !protocol::is_supported_version(v) {
                // The 2026-07-28 error, which a 2025 client reads as the
                // 400 its revision asks for.
                self.rejected("protocol_version");
                let reply = protocol::modern::unsupported_version(id, v);
                return Err((StatusCode::BAD_REQUEST, json_headers(), reply).into_response());
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
            None => self.rebuild(sid, principal).await?,
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
