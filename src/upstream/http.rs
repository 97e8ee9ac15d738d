//! A Streamable HTTP upstream (2025-03-26 and later).
//!
//! Every message is a POST; the reply comes back as one JSON body or on an
//! SSE stream. The session id from the `initialize` response is sent on
//! every later request together with `MCP-Protocol-Version`; a 404 for that
//! session means the upstream forgot it, which [`LinkError::SessionExpired`]
//! reports so the connection can re-initialise. Stateless servers (no
//! session id) work too. After `initialize` a GET stream carries
//! server-initiated messages when the server offers one (405 otherwise).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use tokio::task::JoinHandle;

use super::client::{self, HttpError, Plain, Reply};
use super::inbox::Inbox;
use super::link::{AuthFailure, IoError, LinkError};
use super::sse;
use crate::error::{CallError, ErrorClass};
use crate::oauth::Credential;
use crate::sync::{Locked, RwLocked};

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// A Streamable HTTP endpoint and our session with it.
#[derive(Debug)]
pub(crate) struct HttpLink {
    client: reqwest::Client,
    /// The POSTs' client when the endpoint is plain `http://` (see
    /// [`client`]); `None`: reqwest carries them.
    plain: Option<Plain>,
    url: reqwest::Url,
    headers: HeaderMap,
    session: RwLock<Option<HeaderValue>>,
    version: RwLock<Option<HeaderValue>>,
    generation: AtomicU64,
    max_bytes: usize,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// The gateway's own OAuth credential for this upstream, if any.
    auth: Option<Arc<Credential>>,
}

// === impl HttpLink ===

impl HttpLink {
    pub(crate) fn new(
        client: reqwest::Client,
        url: reqwest::Url,
        headers: HeaderMap,
        max_bytes: usize,
        auth: Option<Arc<Credential>>,
    ) -> Self {
        HttpLink {
            client,
            plain: Plain::for_url(&url),
            url,
            headers,
            session: RwLock::new(None),
            version: RwLock::new(None),
            generation: AtomicU64::new(0),
            max_bytes,
            listener: Mutex::new(None),
            auth,
        }
    }

    /// The bearer token to send, when the upstream uses OAuth.
    async fn bearer(&self) -> Result<Option<HeaderValue>, LinkError> {
        match &self.auth {
            // Boxed: the credential's future (~1.8 KB) would otherwise sit
            // in every call's future, OAuth or not, and be copied with it.
            Some(c) => Box::pin(c.bearer()).await.map(Some).map_err(|e| LinkError::Auth(e.into())),
            None => Ok(None),
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        accept: &'static str,
        bearer: Option<&HeaderValue>,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, self.url.clone()).headers(self.session_headers(accept, bearer))
    }

    /// The configured headers plus this session's, for a request that
    /// accepts `accept`.
    fn session_headers(&self, accept: &'static str, bearer: Option<&HeaderValue>) -> HeaderMap {
        let mut h = self.headers.clone();
        h.insert(ACCEPT, HeaderValue::from_static(accept));
        if let Some(b) = bearer {
            h.insert(AUTHORIZATION, b.clone());
        }
        if let Some(s) = read(&self.session) {
            h.insert(SESSION, s);
        }
        if let Some(v) = read(&self.version) {
            h.insert(VERSION, v);
        }
        h
    }

    /// A POST's headers: the session's, the content type, and what the
    /// message asks for (trace context, the 2026-07-28 routing headers).
    fn post_headers(
        &self,
        bearer: Option<&HeaderValue>,
        headers: &super::link::Headers<'_>,
    ) -> Result<HeaderMap, LinkError> {
        let invalid = |what| LinkError::Io(IoError::Header(what));
        let mut h = self.session_headers("application/json, text/event-stream", bearer);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(tp) = headers.traceparent {
            h.insert(
                crate::telemetry::trace::TRACEPARENT,
                HeaderValue::from_str(tp).map_err(|_| invalid("traceparent"))?,
            );
        }
        if let Some(m) = headers.method {
            h.insert(
                crate::protocol::modern::METHOD_HEADER,
                HeaderValue::from_str(m).map_err(|_| invalid("Mcp-Method"))?,
            );
        }
        if let Some(n) = headers.name {
            let v = crate::protocol::modern::encode_header(n);
            h.insert(crate::protocol::modern::NAME_HEADER, HeaderValue::from_str(&v).map_err(|_| invalid("Mcp-Name"))?);
        }
        for (name, value) in headers.params {
            let value = crate::protocol::modern::encode_header(value);
            let name = HeaderName::try_from(format!("Mcp-Param-{name}")).map_err(|_| invalid("Mcp-Param-*"))?;
            h.append(name, HeaderValue::from_str(&value).map_err(|_| invalid("Mcp-Param-*"))?);
        }
        Ok(h)
    }

    /// Sends one POST with the headers `headers` makes: through [`Plain`]
    /// when it serves this endpoint, else (or when hyper's answer is a
    /// redirect, which reqwest follows) through reqwest. The headers are
    /// made again for that rare second send rather than copied on every one.
    pub(super) async fn post(
        &self,
        headers: impl Fn() -> Result<HeaderMap, LinkError>,
        body: &bytes::Bytes,
    ) -> Result<Reply, LinkError> {
        if let Some(plain) = &self.plain {
            let resp = plain.post(headers()?, body.clone()).await.map_err(io_error)?;
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
        }
        let resp = self.client.post(self.url.clone()).headers(headers()?).body(body.clone()).send().await;
        Ok(client::from_reqwest(resp.map_err(|e| io_error(e.into()))?))
    }

    pub(crate) async fn send(
        &self,
        inbox: &Arc<Inbox>,
        body: String,
        id: Option<u64>,
        headers: super::link::Headers<'_>,
    ) -> Result<(), LinkError> {
        let had_session = read(&self.session).is_some();
        // Bytes: a resend after a refused token copies nothing.
        let body = bytes::Bytes::from(body);
        let mut bearer = self.bearer().await?;
        let mut renewed = false;
        let resp = loop {
            let resp = self.post(|| self.post_headers(bearer.as_ref(), &headers), &body).await?;
            // A refused token was refused before the request was processed,
            // so sending it again with another token is safe (once). 401:
            // the token expired early or was revoked: renew it. 403: only a
            // login with more scope since (step-up) can help.
            let another = match (resp.status(), renewed, &self.auth, &bearer) {
                (StatusCode::UNAUTHORIZED, false, Some(cred), Some(old)) => {
                    let renewed = Box::pin(cred.rejected(old, resp.headers())).await;
                    Some(renewed.map_err(|e| LinkError::Auth(e.into()))?)
                }
                (StatusCode::FORBIDDEN, false, Some(cred), Some(old)) => cred.stepped_up(old).await,
                _ => None,
            };
            match another {
                Some(b) => {
                    renewed = true;
                    bearer = Some(b);
                }
                None => break resp,
            }
        };
        let status = resp.status();
        if status == StatusCode::NOT_FOUND && had_session {
            return Err(LinkError::SessionExpired);
        }
        if let Some(cred) = self.auth.as_ref().filter(|_| matches!(status.as_u16(), 401 | 403)) {
            return Err(LinkError::Auth(AuthFailure::Refused(refusal(cred, &resp))));
        }
        // A 2026-07-28 server answers its protocol errors (-32020, -32021,
        // -32022, -32601) with a 4xx and a JSON-RPC error for the request:
        // that is the reply, not a transport failure.
        let refused = id.filter(|_| matches!(status.as_u16(), 400 | 404));
        let json = |resp: &Reply| {
            let ct = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            ct.is_some_and(|v| v.starts_with("application/json"))
        };
        if let Some(id) = refused.filter(|_| json(&resp)) {
            let body = read_body(resp, self.max_bytes).await?;
            inbox.deliver_owned(body, None);
            if !inbox.is_pending(id) {
                return Ok(());
            }
            return Err(LinkError::Status { status: status.as_u16(), retry_after: None });
        }
        let resp = success(resp)?;
        if let Some(sid) = resp.headers().get(SESSION) {
            let mut s = self.session.write_locked();
            if s.as_ref() != Some(sid) {
                *s = Some(sid.clone());
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_sse {
            // The reply (and messages related to it) arrive on the stream.
            let (inbox, max, reopen) = (inbox.clone(), self.max_bytes, self.reopen());
            tokio::spawn(async move {
                let outcome = follow(resp, &inbox, max, id, reopen).await;
                if let Some(id) = id.filter(|id| inbox.is_pending(*id)) {
                    let why = match outcome {
                        Ok(_) => "ended the response stream without a reply".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let msg = format!("upstream `{}` {why}", inbox.upstream());
                    inbox.fail(id, CallError::new(ErrorClass::Transport, Some(inbox.upstream()), msg));
                }
            });
            return Ok(());
        }
        let body = read_body(resp, self.max_bytes).await?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            inbox.deliver_owned(body, None);
        }
        // A JSON body must carry the reply (transports.mdx); without it the
        // caller would wait for its deadline, so fail it now.
        if let Some(id) = id.filter(|id| inbox.is_pending(*id)) {
            let msg = format!("upstream `{}` answered without a valid JSON-RPC reply", inbox.upstream());
            inbox.fail(id, CallError::new(ErrorClass::UpstreamInternal, Some(inbox.upstream()), msg));
        }
        Ok(())
    }

    /// What it takes to reopen a response stream later: this session's
    /// request, as it stands now.
    fn reopen(&self) -> Reopen {
        let mut headers = self.headers.clone();
        if let Some(s) = read(&self.session) {
            headers.insert(SESSION, s);
        }
        if let Some(v) = read(&self.version) {
            headers.insert(VERSION, v);
        }
        Reopen { client: self.client.clone(), url: self.url.clone(), headers, auth: self.auth.clone() }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_session(&self) {
        *self.session.write_locked() = None;
        *self.version.write_locked() = None;
        self.stop_listening();
    }

    pub(crate) fn set_protocol_version(&self, v: &str) {
        if let Ok(v) = HeaderValue::from_str(v) {
            *self.version.write_locked() = Some(v);
        }
    }

    /// Opens the GET stream for server-initiated messages (list_changed,
    /// requests outside any call's stream), reconnecting while the session
    /// lives. Only with a session: stateless servers have nothing to push.
    /// Returns once the stream is open, or the server says it offers none
    /// (405), at most after [`LISTEN_WAIT`]: a server sends what it has
    /// outside a call only on that stream, and a message sent before it is
    /// open is lost (the TypeScript SDK drops it), so the connection is not
    /// called ready before then.
    pub(crate) async fn start_listening(self: &Arc<Self>, inbox: &Arc<Inbox>) {
        if read(&self.session).is_none() {
            return;
        }
        let (this, inbox) = (self.clone(), inbox.clone());
        let (opened, first) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut opened = Some(opened);
            let mut failures = 0u32;
            while failures < 5 {
                let Ok(bearer) = this.bearer().await else {
                    failures += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let resp = this
                    .request(reqwest::Method::GET, "text/event-stream", bearer.as_ref())
                    .send()
                    .await
                    .map(client::from_reqwest);
                // Open, or none offered: start-up may go on. A failure is
                // retried first (start-up waits, within its bound).
                let settled = resp
                    .as_ref()
                    .is_ok_and(|r| r.status().is_success() || r.status() == StatusCode::METHOD_NOT_ALLOWED);
                if settled && let Some(o) = opened.take() {
                    let _ = o.send(());
                }
                match resp {
                    Ok(r) if r.status().is_success() => {
                        failures = 0;
                        let _ = read_events(r, &inbox, this.max_bytes, None, Resume::default()).await;
                    }
                    // 405: the server offers no GET stream. That is allowed.
                    Ok(r) if r.status() == StatusCode::METHOD_NOT_ALLOWED => return,
                    Ok(r) => {
                        failures += 1;
                        tracing::debug!(upstream = %inbox.upstream(), status = r.status().as_u16(), "The upstream refused its GET stream.");
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::debug!(upstream = %inbox.upstream(), error = %io_error(e.into()), "The upstream's GET stream failed.");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        if let Some(old) = self.listener.locked().replace(task) {
            old.abort();
        }
        let _ = tokio::time::timeout(LISTEN_WAIT, first).await;
    }

    fn stop_listening(&self) {
        if let Some(t) = self.listener.locked().take() {
            t.abort();
        }
    }

    /// Ends the session: stop listening and DELETE it (best effort).
    pub(crate) async fn shutdown(&self) {
        self.stop_listening();
        if read(&self.session).is_some() {
            let bearer = self.bearer().await.ok().flatten();
            let req = self
                .request(reqwest::Method::DELETE, "application/json", bearer.as_ref())
                .timeout(Duration::from_secs(2));
            let _ = req.send().await;
        }
    }
}

/// What to tell the operator when the upstream refuses the gateway's
/// token: a missing scope (step-up needs a person) or a token refused even
/// after renewal.
fn refusal(cred: &Credential, resp: &Reply) -> String {
    let challenge = resp
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(crate::oauth::parse_challenge)
        .unwrap_or_default();
    let login = crate::oauth::login_command(cred.upstream(), cred.principal());
    if resp.status() == StatusCode::FORBIDDEN {
        let scope = challenge.scope.unwrap_or_default();
        if challenge.error.as_deref() == Some("insufficient_scope") && !scope.is_empty() {
            return format!(
                "upstream `{}` needs scope `{scope}`, which the gateway's token lacks (403 insufficient_scope); \
                 run `{login} --scope \"{scope}\"`",
                cred.upstream()
            );
        }
        return format!("upstream `{}` refused the gateway's token (HTTP 403)", cred.upstream());
    }
    format!(
        "upstream `{}` refused the gateway's token even after renewing it (HTTP 401); run `{login}`",
        cred.upstream()
    )
}

fn read(lock: &RwLock<Option<HeaderValue>>) -> Option<HeaderValue> {
    lock.read_locked().clone()
}

/// A failed exchange as a [`LinkError`] (no URL in it: it may carry a
/// secret; [`HttpError`] has none).
pub(crate) fn io_error(e: HttpError) -> LinkError {
    if e.is_connect() { LinkError::Connect(e) } else { LinkError::Io(IoError::Http(e)) }
}

/// The response when its status is 2xx, else [`LinkError::Status`].
pub(crate) fn success(resp: Reply) -> Result<Reply, LinkError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    Err(LinkError::Status { status: status.as_u16(), retry_after: retry_after(resp.headers()) })
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads a whole body, refusing more than `max` bytes.
pub(crate) async fn read_body(mut resp: Reply, max: usize) -> Result<Vec<u8>, LinkError> {
    let declared = client::content_length(resp.headers());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(LinkError::TooLarge(max));
    }
    // The declared length (within `max`) is reserved at once: a large
    // result is copied once, not through a doubling buffer.
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = resp.body_mut().chunk().await.map_err(io_error)? {
        if body.len() + chunk.len() > max {
            return Err(LinkError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Longest the start of an upstream waits for the server to answer its GET
/// stream (see [`HttpLink::start_listening`]).
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// Where a closed response stream can be picked up again: the last event
/// id it carried and the reconnection time the server asked for.
#[derive(Debug, Default, Clone)]
pub(crate) struct Resume {
    last_id: Option<String>,
    retry: Option<Duration>,
}

/// A request's response stream that ended before its reply is resumed
/// (transports.mdx §Resumability; SEP-1699 polling): after the server's
/// `retry` time, a GET with `Last-Event-ID` picks it up where it stopped,
/// as often as the server closes it, for as long as the call waits. Without
/// an event id there is nothing to resume: the call fails.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// Bounds on the server's `retry`: a hostile or broken server can neither
/// make the gateway reconnect in a tight loop nor park the call (its own
/// deadline still ends it).
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The session's request headers and credential, taken when the call was
/// sent, to reopen its stream with.
#[derive(Debug)]
struct Reopen {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    auth: Option<Arc<Credential>>,
}

/// Reads request `id`'s response stream, resuming it while the call is
/// still waiting for its reply; see [`DEFAULT_RETRY`].
async fn follow(
    resp: Reply,
    inbox: &Arc<Inbox>,
    max: usize,
    id: Option<u64>,
    reopen: Reopen,
) -> Result<Resume, LinkError> {
    let Some(id) = id else {
        return read_events(resp, inbox, max, None, Resume::default()).await;
    };
    // Every step (reading, reconnecting, a server that sends no headers)
    // ends when the call stops waiting (answered, timed out, cancelled), so
    // no stream or task outlives its call.
    let answered = async {
        while inbox.is_pending(id) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        r = resume_until_answered(resp, inbox, max, id, reopen) => r,
        () = answered => Ok(Resume::default()),
    }
}

async fn resume_until_answered(
    resp: Reply,
    inbox: &Arc<Inbox>,
    max: usize,
    id: u64,
    reopen: Reopen,
) -> Result<Resume, LinkError> {
    let mut resume = read_events(resp, inbox, max, Some(id), Resume::default()).await?;
    while let Some(last) = resume.last_id.clone() {
        if !inbox.is_pending(id) {
            break;
        }
        let wait = resume.retry.unwrap_or(DEFAULT_RETRY).clamp(MIN_RETRY, MAX_RETRY);
        tokio::time::sleep(wait).await;
        if !inbox.is_pending(id) {
            break;
        }
        tracing::debug!(upstream = %inbox.upstream(), last_event_id = %last, "Resuming a response stream the upstream closed before its reply.");
        let mut req = reopen.client.get(reopen.url.clone()).headers(reopen.headers.clone());
        req = req.header(ACCEPT, "text/event-stream").header("last-event-id", last.as_str());
        if let Some(c) = &reopen.auth {
            let bearer = c.bearer().await.map_err(|e| LinkError::Auth(e.into()))?;
            req = req.header(AUTHORIZATION, bearer);
        }
        let resp = success(client::from_reqwest(req.send().await.map_err(|e| io_error(e.into()))?))?;
        resume = read_events(resp, inbox, max, Some(id), resume).await?;
    }
    Ok(resume)
}

/// Delivers every `message` event of an SSE body to `inbox`; `related` is
/// the request whose response stream this is (None: the GET stream).
/// Returns where the stream could be resumed (`resume`, carried over from
/// an earlier part of the same stream, updated by this one). A request's
/// stream is left as soon as its reply is in: a resumed one may be a GET
/// stream the server keeps open.
pub(crate) async fn read_events(
    mut resp: Reply,
    inbox: &Inbox,
    max: usize,
    related: Option<u64>,
    mut resume: Resume,
) -> Result<Resume, LinkError> {
    let mut decoder = sse::Decoder::new(max);
    while let Some(chunk) = resp.body_mut().chunk().await.map_err(io_error)? {
        let events = decoder.feed(&chunk).map_err(|_| LinkError::TooLarge(max))?;
        for ev in events {
            if let Some(id) = ev.id {
                resume.last_id = Some(id).filter(|id| !id.is_empty());
            }
            if let Some(ms) = ev.retry {
                resume.retry = Some(Duration::from_millis(ms));
            }
            // Priming events carry an id and empty data (SEP-1699).
            if matches!(ev.event.as_deref(), None | Some("message")) && !ev.data.trim().is_empty() {
                inbox.deliver_owned(ev.data.into_bytes(), related);
            }
        }
        if related.is_some_and(|id| !inbox.is_pending(id)) {
            break;
        }
    }
    Ok(resume)
}
