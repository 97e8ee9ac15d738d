//! The scale bench's clients: many sessions opened a few at a time, GET
//! streams that report every `notifications/tools/list_changed` they carry,
//! `tools/list` and `tools/call` on a session, and what `/proc` and
//! `/status` say of the gateway. Every request has a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
// tokio's Instant (clippy.toml): the real clock here, as nothing pauses time.
use tokio::time::Instant;

use super::load::{self, Session, Target};

/// What a GET stream looks for.
const LIST_CHANGED: &str = "notifications/tools/list_changed";

/// How many sessions (or streams) are opened at once.
const OPENING: usize = 16;

/// Longest wait for any one request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One principal's HTTP clients: `http` for requests (a keep-alive pool),
/// `streams` for GET streams (one connection each, no overall timeout).
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) http: reqwest::Client,
    streams: reqwest::Client,
    /// The gateway's `/mcp` URL.
    pub(crate) url: String,
}

impl Principal {
    /// Clients for `base`, presenting `key` (`Authorization: Bearer`) when
    /// given.
    pub(crate) fn new(base: &str, key: Option<&str>) -> Result<Self, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            let v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|e| e.to_string())?;
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let builder = || {
            reqwest::Client::builder()
                .default_headers(headers.clone())
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
        };
        let http = builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| e.to_string())?;
        let streams = builder().build().map_err(|e| e.to_string())?;
        Ok(Principal { http, streams, url: format!("{base}/mcp") })
    }

    /// `initialize` + `notifications/initialized`.
    pub(crate) async fn open(&self) -> Result<Session, String> {
        let target = Target { url: self.url.clone(), tool: "" };
        tokio::time::timeout(REQUEST_TIMEOUT * 2, load::open_session(&self.http, &target))
            .await
            .map_err(|_| "initialize timed out".to_owned())?
    }

    /// Opens `n` sessions, [`OPENING`] at a time.
    pub(crate) async fn open_many(&self, n: usize) -> Result<Vec<Session>, String> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..OPENING.min(n) {
            let (me, next) = (self.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    mine.push(me.open().await?);
                }
                Ok::<_, String>(mine)
            }));
        }
        let mut all = Vec::with_capacity(n);
        for w in workers {
            all.extend(w.await.map_err(|e| e.to_string())??);
        }
        Ok(all)
    }

    /// Opens the GET stream of `session`; a task reads it and sends
    /// `(tag, when)` for each `list_changed` it carries.
    pub(crate) async fn watch(&self, session: &Session, tag: usize, told: Told) -> Result<JoinHandle<()>, String> {
        let mut headers = session.headers.clone();
        headers.remove(CONTENT_TYPE);
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let send = self.streams.get(&self.url).headers(headers).send();
        let mut resp = tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .map_err(|_| "GET /mcp timed out".to_owned())?
            .map_err(|e| format!("GET /mcp: {e}"))?;
        let kind = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        if !resp.status().is_success() || !kind.starts_with("text/event-stream") {
            let status = resp.status();
            let body = tokio::time::timeout(Duration::from_secs(2), resp.text()).await.ok().and_then(Result::ok);
            return Err(format!("GET /mcp: HTTP {status} {kind}: {}", body.unwrap_or_default()));
        }
        Ok(tokio::spawn(async move {
            let mut seen = String::new();
            // Ends when the gateway ends the stream (or the task is aborted).
            while let Ok(Some(chunk)) = resp.chunk().await {
                let at = Instant::now();
                seen.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = seen.find(LIST_CHANGED) {
                    let _ = told.send((tag, at));
                    seen.drain(..i + LIST_CHANGED.len());
                }
                // Keep only what could be the start of a split match.
                if seen.len() > LIST_CHANGED.len() {
                    let mut cut = seen.len() - LIST_CHANGED.len();
                    while !seen.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    seen.drain(..cut);
                }
            }
        }))
    }

    /// Opens the GET streams of `sessions` ([`OPENING`] at a time), tagged
    /// `first_tag`, `first_tag + 1`, ...
    pub(crate) async fn watch_many(
        &self,
        sessions: &[Session],
        first_tag: usize,
        told: &Told,
    ) -> Result<Vec<JoinHandle<()>>, String> {
        let mut readers = Vec::with_capacity(sessions.len());
        for (n, chunk) in sessions.chunks(OPENING).enumerate() {
            let opening =
                chunk.iter().enumerate().map(|(i, s)| self.watch(s, first_tag + n * OPENING + i, told.clone()));
            for r in futures_util::future::join_all(opening).await {
                readers.push(r?);
            }
        }
        Ok(readers)
    }

    /// One request on `session`; the reply body, checked to be a JSON-RPC
    /// result (by its first bytes: a list reply is megabytes).
    pub(crate) async fn request(
        &self,
        session: &Session,
        id: u64,
        method: &str,
        params: &str,
    ) -> Result<bytes::Bytes, String> {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
        let resp = self
            .http
            .post(&self.url)
            .headers(session.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{method}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("{method} body: {e}"))?;
        let head = &body[..body.len().min(64)];
        if !status.is_success() || memchr::memmem::find(head, br#""result":"#).is_none() {
            let head = String::from_utf8_lossy(&body[..body.len().min(300)]);
            return Err(format!("{method}: HTTP {status}: {head}"));
        }
        Ok(body)
    }
}

/// Where GET streams report `list_changed`: (tag, when it arrived).
pub(crate) type Told = mpsc::UnboundedSender<(usize, Instant)>;

/// Calls `tool` (an upstream's `flip`) on `session`, then waits until every
/// tag in `watched.expect` was told `list_changed` (at most `patience`). Returns the
/// call's round trip and, per tag told, the time from the reply to its
/// notification; tags in `watched.silent` that were told anyway are counted (and
/// waited for no longer than `patience`, after everyone expected).
pub(crate) async fn flip(
    p: &Principal,
    session: &Session,
    id: u64,
    tool: &str,
    told: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    watched: &Watched<'_>,
) -> Result<Flip, String> {
    let Watched { expect, silent, patience } = *watched;
    // What came since the last flip; a silent tag told late counts here.
    let mut unexpected = 0;
    while let Ok((tag, _)) = told.try_recv() {
        unexpected += usize::from(silent.contains(&tag));
    }
    let started = Instant::now();
    let reply = p.request(session, id, "tools/call", &format!(r#"{{"name":"{tool}","arguments":{{}}}}"#)).await?;
    let replied = Instant::now();
    if memchr::memmem::find(&reply, b"generation").is_none() {
        return Err(format!("{tool} answered {}", String::from_utf8_lossy(&reply)));
    }
    let mut after: Vec<Duration> = Vec::with_capacity(expect.len());
    let mut waiting: std::collections::HashSet<usize> = expect.iter().copied().collect();
    let deadline = replied + patience;
    while !waiting.is_empty() {
        match tokio::time::timeout_at(deadline, told.recv()).await {
            Ok(Some((tag, at))) => {
                if waiting.remove(&tag) {
                    after.push(at.saturating_duration_since(replied));
                } else if silent.contains(&tag) {
                    unexpected += 1;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    after.sort_unstable();
    Ok(Flip { call: replied - started, after, missing: waiting.len(), unexpected })
}

/// Which streams a flip should reach, and how long to wait for them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watched<'a> {
    /// Tags that should be told.
    pub(crate) expect: &'a [usize],
    /// Tags that should not be.
    pub(crate) silent: &'a [usize],
    pub(crate) patience: Duration,
}

/// What one flip measured.
#[derive(Debug)]
pub(crate) struct Flip {
    /// The `flip` call's round trip.
    pub(crate) call: Duration,
    /// From the reply to each expected session's `list_changed`, sorted.
    pub(crate) after: Vec<Duration>,
    /// Expected sessions not told within the patience.
    pub(crate) missing: usize,
    /// Sessions that should not have been told but were.
    pub(crate) unexpected: usize,
}

/// `GET /status` as JSON.
pub(crate) async fn status(http: &reqwest::Client, base: &str) -> Result<serde_json::Value, String> {
    let resp = http.get(format!("{base}/status")).send().await.map_err(|e| format!("/status: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("/status: HTTP {}", resp.status()));
    }
    resp.json().await.map_err(|e| format!("/status: {e}"))
}

/// `runtime.alive_tasks` of `/status`.
pub(crate) async fn alive_tasks(http: &reqwest::Client, base: &str) -> Result<u64, String> {
    let v = status(http, base).await?;
    v["runtime"]["alive_tasks"].as_u64().ok_or_else(|| format!("/status without runtime.alive_tasks: {v}"))
}

/// Nearest-rank percentile of sorted `d`, in milliseconds.
pub(crate) fn pct_ms(d: &[Duration], p: f64) -> f64 {
    if d.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * d.len() as f64).ceil() as usize;
    d[rank.clamp(1, d.len()) - 1].as_secs_f64() * 1e3
}

/// `n` client connections to `base` (`http://host:port`), each after one
/// `GET /healthz` answered, then kept open and idle ([`OPENING`] opened at
/// a time): what a kept-alive connection costs the gateway, without a
/// stream.
pub(crate) async fn idle_connections(base: &str, n: usize) -> Result<Vec<tokio::net::TcpStream>, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.strip_prefix("http://").ok_or_else(|| format!("not an http:// base: {base}"))?.to_owned();
    let one = async |addr: &str| -> Result<tokio::net::TcpStream, String> {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"ok\n") {
            let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("/healthz: closed after {:?}", String::from_utf8_lossy(&got)));
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(tcp)
    };
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let batch = OPENING.min(n - all.len());
        let opening = (0..batch).map(|_| tokio::time::timeout(Duration::from_secs(5), one(&addr)));
        for r in futures_util::future::join_all(opening).await {
            all.push(r.map_err(|_| "/healthz timed out".to_owned())??);
        }
    }
    Ok(all)
}

/// `/metrics` as text.
async fn metrics(http: &reqwest::Client, base: &str) -> Result<String, String> {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("/metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("/metrics: {e}"))
}

/// The sum and the count of the unlabelled histogram `name` (with its
/// `_seconds` suffix) on `/metrics`; `None` when the gateway does not
/// export it (an older build, `BENCH_GATEWAY_BIN`).
pub(crate) async fn histogram(http: &reqwest::Client, base: &str, name: &str) -> Result<Option<(f64, u64)>, String> {
    let text = metrics(http, base).await?;
    let value = |suffix: &str| {
        let prefix = format!("{name}{suffix} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
    };
    Ok(value("_sum").zip(value("_count")).map(|(s, c)| (s, c as u64)))
}

/// Open HTTP sessions, from `/metrics`
/// (`mcp_gateway_downstream_sessions{transport="http"}`).
pub(crate) async fn open_sessions(http: &reqwest::Client, base: &str) -> Result<u64, String> {
    let text = metrics(http, base).await?;
    text.lines()
        .find(|l| l.starts_with("mcp_gateway_downstream_sessions{") && l.contains(r#"transport="http""#))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| "/metrics has no mcp_gateway_downstream_sessions{transport=\"http\"}".to_owned())
}
