//! The load client: N virtual MCP clients, each with its own session,
//! calling one tool back to back; per-call latency of the measured window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
// tokio's Instant (clippy.toml): the real clock here, as nothing pauses time.
use tokio::time::Instant;

use super::echo_upstream::RESULT_TEXT_BYTES;

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const CLIENT_VERSION: &str = "2025-06-18";

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Where the calls go.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The `/mcp` URL.
    pub(crate) url: String,
    /// The tool name as this target exposes it.
    pub(crate) tool: &'static str,
}

/// What one (target, concurrency) run measured.
#[derive(Debug)]
pub(crate) struct Measurement {
    /// Latencies of the successful calls of the measured window, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Failed calls in the measured window.
    pub(crate) errors: u64,
    /// Length of the measured window.
    pub(crate) elapsed: Duration,
    /// CPU ticks each watched process used in the window (same order as
    /// `watch`; `None` if `/proc` could not be read).
    pub(crate) cpu_ticks: Vec<Option<u64>>,
    /// CPU ticks the whole machine was busy in the window.
    pub(crate) machine_ticks: Option<u64>,
}

impl Measurement {
    pub(crate) fn calls(&self) -> usize {
        self.latencies.len()
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.calls() as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile in milliseconds.
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1].as_secs_f64() * 1e3
    }
}

/// One virtual client's session.
#[derive(Debug)]
pub(crate) struct Session {
    /// What every request of the session carries: content type, accept,
    /// session id, protocol version.
    pub(crate) headers: HeaderMap,
}

/// Opens `clients` sessions on `target`, runs them for `warmup`, then
/// measures for `measure` while sampling the CPU time of the `watch` PIDs.
pub(crate) async fn run(
    http: &reqwest::Client,
    target: &Target,
    clients: usize,
    warmup: Duration,
    measure: Duration,
    watch: &[u32],
) -> Result<Measurement, String> {
    let mut opening = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (http, target) = (http.clone(), target.clone());
        opening.push(tokio::spawn(async move { open_session(&http, &target).await }));
    }
    let mut sessions = Vec::with_capacity(clients);
    for task in opening {
        sessions.push(task.await.map_err(|e| format!("session task: {e}"))??);
    }

    let phase = Arc::new(AtomicU8::new(WARMUP));
    let target = Arc::new(target.clone());
    let mut loops = Vec::with_capacity(clients);
    for session in sessions {
        let (http, target, phase) = (http.clone(), target.clone(), phase.clone());
        loops.push(tokio::spawn(async move { call_loop(&http, &target, &session, &phase).await }));
    }

    tokio::time::sleep(warmup).await;
    let machine_before = super::procs::machine_busy_ticks();
    let before: Vec<_> = watch.iter().map(|pid| super::procs::cpu_ticks(*pid)).collect();
    let started = Instant::now();
    phase.store(MEASURE, Ordering::Release);
    tokio::time::sleep(measure).await;
    phase.store(STOP, Ordering::Release);
    let elapsed = started.elapsed();
    let after: Vec<_> = watch.iter().map(|pid| super::procs::cpu_ticks(*pid)).collect();
    let machine_after = super::procs::machine_busy_ticks();

    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in loops {
        let r = task.await.map_err(|e| format!("client task: {e}"))?;
        latencies.extend_from_slice(&r.latencies);
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    if latencies.is_empty() {
        return Err(format!("no successful call in the measured window; first error: {first_error:?}"));
    }
    if let Some(e) = first_error {
        eprintln!("  {errors} failed calls; first: {e}");
    }
    latencies.sort_unstable();
    let cpu_ticks = before.iter().zip(&after).map(|(b, a)| Some(a.as_ref()?.saturating_sub((*b)?))).collect();
    let machine_ticks = machine_before.zip(machine_after).map(|(b, a)| a.saturating_sub(b));
    Ok(Measurement { latencies, errors, elapsed, cpu_ticks, machine_ticks })
}

/// `initialize` + `notifications/initialized`.
pub(crate) async fn open_session(http: &reqwest::Client, target: &Target) -> Result<Session, String> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{CLIENT_VERSION}","capabilities":{{}},"clientInfo":{{"name":"proxy_hop","version":"0.1.0"}}}}}}"#
    );
    let resp = http
        .post(&target.url)
        .headers(headers.clone())
        .body(init)
        .send()
        .await
        .map_err(|e| format!("initialize at {}: {e}", target.url))?;
    let status = resp.status();
    let sid = resp.headers().get(SESSION).cloned();
    let body = resp.bytes().await.map_err(|e| format!("initialize body: {e}"))?;
    if !status.is_success() {
        return Err(format!("initialize at {}: HTTP {status}: {}", target.url, String::from_utf8_lossy(&body)));
    }
    let reply: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("initialize reply is not JSON ({e}): {body:?}"))?;
    let version = reply["result"]["protocolVersion"]
        .as_str()
        .ok_or_else(|| format!("initialize reply without result.protocolVersion: {reply}"))?;
    if let Some(sid) = sid {
        headers.insert(SESSION, sid);
    }
    headers.insert(VERSION, HeaderValue::from_str(version).map_err(|e| e.to_string())?);

    let resp = http
        .post(&target.url)
        .headers(headers.clone())
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .map_err(|e| format!("notifications/initialized: {e}"))?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return Err(format!("notifications/initialized: HTTP {}", resp.status()));
    }
    Ok(Session { headers })
}

#[derive(Debug, Default)]
struct LoopResult {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

async fn call_loop(http: &reqwest::Client, target: &Target, session: &Session, phase: &AtomicU8) -> LoopResult {
    let mut out = LoopResult { latencies: Vec::with_capacity(16 * 1024), ..LoopResult::default() };
    let mut id = 0u64;
    let mut checked = false;
    loop {
        let p = phase.load(Ordering::Acquire);
        if p == STOP {
            return out;
        }
        id += 1;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{}","arguments":{{"text":"hello"}}}}}}"#,
            target.tool
        );
        let started = Instant::now();
        let result = call(http, target, session, body, !checked).await;
        let took = started.elapsed();
        // Only calls that started and ended inside the measured window count.
        let counted = p == MEASURE && phase.load(Ordering::Acquire) == MEASURE;
        match result {
            Ok(()) => {
                checked = true;
                if counted {
                    out.latencies.push(took);
                }
            }
            Err(e) => {
                if counted {
                    out.errors += 1;
                }
                out.first_error.get_or_insert(e);
                // Do not spin on a broken target.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One `tools/call`; `verify` parses the reply fully (done once per client),
/// otherwise a 200 with a body the size of the result counts as success.
async fn call(
    http: &reqwest::Client,
    target: &Target,
    session: &Session,
    body: String,
    verify: bool,
) -> Result<(), String> {
    let resp =
        http.post(&target.url).headers(session.headers.clone()).body(body).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() || bytes.len() < RESULT_TEXT_BYTES {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    if verify {
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("reply is not JSON: {e}"))?;
        let text = v["result"]["content"][0]["text"].as_str().unwrap_or_default();
        if text.len() != RESULT_TEXT_BYTES {
            return Err(format!("unexpected tools/call reply: {v}"));
        }
    }
    Ok(())
}
