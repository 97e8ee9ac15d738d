//! The "direct" baseline: a lean Streamable HTTP MCP server with the tool
//! `echo`, whose result is a ~1 KiB text block, and the tool `hang`, which
//! never answers (the isolation bench's stuck upstream). Runs as its own
//! process (the bench binary started with `--echo-upstream <max lifetime
//! secs>`), prints `LISTENING <port>` on stdout and stops when its stdin
//! closes or the lifetime runs out.
//!
//! `POST /mcp` answers JSON only: `initialize` (echoes the client's
//! `protocolVersion`, sets `Mcp-Session-Id`), notifications → 202,
//! `tools/list`, `tools/call`, `ping`; anything else is "method not found".
//! `GET /mcp` → 405 (no server stream), `DELETE /mcp` → 200. `GET /stats`
//! reports accepted TCP connections and requests, so the bench can tell
//! whether the gateway reuses its upstream connections, and the `hang`
//! calls being held open now.
//!
//! A `hang` call holds its HTTP request open until the client goes away or
//! the process ends, without blocking anything else (the handler just
//! awaits a future that never completes). Telling it from `echo` costs an
//! `echo` call one substring scan of its raw params, so `echo`'s figures stay
//! what they were with one tool.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Bytes of text in a `tools/call` result.
pub(crate) const RESULT_TEXT_BYTES: usize = 1024;

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");
const FALLBACK_VERSION: &str = "2025-06-18";
const PREFIX: &[u8] = br#"{"jsonrpc":"2.0","id":"#;
const TOOLS_LIST: &[u8] = br#","result":{"tools":[{"name":"echo","description":"Returns 1 KiB of text.","inputSchema":{"type":"object","properties":{"text":{"type":"string"}}}},{"name":"hang","description":"Never answers.","inputSchema":{"type":"object"}}]}}"#;
const EMPTY_RESULT: &[u8] = br#","result":{}}"#;
const NOT_FOUND: &[u8] = br#","error":{"code":-32601,"message":"Method not found"}}"#;

#[derive(Debug)]
struct Echo {
    connections: AtomicU64,
    requests: AtomicU64,
    sessions: AtomicU64,
    /// `hang` calls whose request is still open.
    hanging: AtomicU64,
    /// Everything of a `tools/call` reply after the id.
    call_suffix: Box<[u8]>,
}

/// Only what routing needs; `params` stays unparsed unless required.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// `tools/call` params, as far as telling `hang` from `echo` needs.
#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: &'a str,
}

#[derive(Deserialize)]
struct InitParams<'a> {
    #[serde(rename = "protocolVersion", borrow)]
    protocol_version: Option<&'a str>,
}

/// Runs the server until stdin closes or `max_lifetime` passes.
pub(crate) fn run(max_lifetime: Duration) -> Result<(), String> {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: it may still sit in read() when we return, which a
    // runtime's blocking pool would wait for.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed_tx.send(());
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let result = rt.block_on(serve(max_lifetime, closed_rx));
    rt.shutdown_background();
    result
}

/// The result's text size: [`RESULT_TEXT_BYTES`], or `ECHO_RESULT_BYTES`
/// from the environment (the large-result bench sets 10 MiB).
fn result_text_bytes() -> usize {
    std::env::var("ECHO_RESULT_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(RESULT_TEXT_BYTES)
}

async fn serve(max_lifetime: Duration, stdin_closed: tokio::sync::oneshot::Receiver<()>) -> Result<(), String> {
    let text: String = "0123456789abcdef".repeat(result_text_bytes() / 16);
    let suffix = format!(r#","result":{{"content":[{{"type":"text","text":"{text}"}}],"isError":false}}}}"#);
    let echo = Arc::new(Echo {
        connections: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        sessions: AtomicU64::new(0),
        hanging: AtomicU64::new(0),
        call_suffix: suffix.into_bytes().into_boxed_slice(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "LISTENING {port}").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    }
    let counted = echo.clone();
    let listener = listener.tap_io(move |tcp| {
        let _ = tcp.set_nodelay(true);
        counted.connections.fetch_add(1, Ordering::Relaxed);
    });
    let app = Router::new()
        .route(
            "/mcp",
            post(post_mcp).get(|| async { StatusCode::METHOD_NOT_ALLOWED }).delete(|| async { StatusCode::OK }),
        )
        .route("/stats", get(stats))
        .with_state(echo);
    tokio::select! {
        r = async { axum::serve(listener, app).await } => r.map_err(|e| e.to_string()),
        _ = stdin_closed => Ok(()),
        () = tokio::time::sleep(max_lifetime) => {
            eprintln!("echo upstream: max lifetime reached, exiting");
            Ok(())
        }
    }
}

async fn post_mcp(State(echo): State<Arc<Echo>>, body: Bytes) -> Response {
    echo.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(req) = serde_json::from_slice::<Request<'_>>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON-RPC message").into_response();
    };
    let Some(id) = req.id else {
        // A notification (or a response): nothing to say.
        return StatusCode::ACCEPTED.into_response();
    };
    match req.method {
        "tools/call" if is_hang(req.params) => hang(&echo).await,
        "tools/call" => json(reply(id, &echo.call_suffix)),
        "tools/list" => json(reply(id, TOOLS_LIST)),
        "ping" => json(reply(id, EMPTY_RESULT)),
        "initialize" => {
            let version = req
                .params
                .and_then(|p| serde_json::from_str::<InitParams<'_>>(p.get()).ok())
                .and_then(|p| p.protocol_version)
                .unwrap_or(FALLBACK_VERSION);
            let suffix = format!(
                r#","result":{{"protocolVersion":"{version}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"bench-echo","version":"0.1.0"}}}}}}"#
            );
            let n = echo.sessions.fetch_add(1, Ordering::Relaxed);
            let sid = HeaderValue::from_str(&format!("echo-session-{n}")).expect("ASCII");
            let mut resp = json(reply(id, suffix.as_bytes()));
            resp.headers_mut().insert(SESSION, sid);
            resp
        }
        _ => json(reply(id, NOT_FOUND)),
    }
}

/// Whether a `tools/call` is for `hang`: only params that mention it at all
/// are parsed, so `echo` calls pay one substring scan.
fn is_hang(params: Option<&RawValue>) -> bool {
    params.is_some_and(|p| {
        p.get().contains("\"hang\"") && serde_json::from_str::<CallParams<'_>>(p.get()).is_ok_and(|c| c.name == "hang")
    })
}

/// Never answers: the request stays open until the client goes away (the
/// handler is then dropped) or the process ends.
async fn hang(echo: &Echo) -> Response {
    /// Counts the call as hanging while the handler lives.
    struct Hanging<'a>(&'a AtomicU64);
    impl Drop for Hanging<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    echo.hanging.fetch_add(1, Ordering::Relaxed);
    let _hanging = Hanging(&echo.hanging);
    std::future::pending().await
}

async fn stats(State(echo): State<Arc<Echo>>) -> String {
    format!(
        r#"{{"connections":{},"requests":{},"hanging":{}}}"#,
        echo.connections.load(Ordering::Relaxed),
        echo.requests.load(Ordering::Relaxed),
        echo.hanging.load(Ordering::Relaxed)
    )
}

/// The same echo server over stdio (`--echo-stdio`), for the stdio path's
/// instruction count (scripts/callgrind-hop.sh with `HOP_TRANSPORT=stdio`):
/// one JSON-RPC message per line, the same replies; it stops when stdin
/// closes. Blocking and single-threaded: the lean stdio server an upstream
/// process is.
///
/// `--echo-stdio --tools <n>` (`tools: Some(n)`, the scale bench's large
/// catalog) lists `n` tools instead: `t000` … and `flip`, each with a
/// description and a small input schema (about 270 bytes of definition),
/// and declares `tools.listChanged`. Calling `flip` answers, then changes
/// the list (the generation in `t000`'s description goes up by one) and
/// sends `notifications/tools/list_changed`. Any other tool answers as
/// `echo` does. Without `--tools` nothing of this runs: the replies are
/// byte for byte those above.
pub(crate) fn run_stdio(tools: Option<usize>) -> Result<(), String> {
    use std::io::BufRead as _;
    let text: String = "0123456789abcdef".repeat(RESULT_TEXT_BYTES / 16);
    let call = format!(r#","result":{{"content":[{{"type":"text","text":"{text}"}}],"isError":false}}}}"#);
    let capabilities = if tools.is_some() { r#"{"tools":{"listChanged":true}}"# } else { r#"{"tools":{}}"# };
    // The generation `flip` moves, and the tools/list reply of the current one.
    let mut generation = 0u64;
    let mut listed = match tools {
        Some(n) => many_tools(n, generation).into_bytes(),
        None => TOOLS_LIST.to_vec(),
    };
    let stdin = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    for line in stdin.lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Ok(req) = serde_json::from_str::<Request<'_>>(&line) else { continue };
        // Notifications get no answer.
        let Some(id) = req.id else { continue };
        let mut flipped = false;
        let body = match req.method {
            "initialize" => {
                let asked = req.params.and_then(|p| serde_json::from_str::<InitParams<'_>>(p.get()).ok());
                let version = asked.and_then(|i| i.protocol_version).unwrap_or(FALLBACK_VERSION);
                let suffix = format!(
                    r#","result":{{"protocolVersion":{},"capabilities":{capabilities},"serverInfo":{{"name":"echo-stdio","version":"0"}}}}}}"#,
                    serde_json::to_string(version).map_err(|e| e.to_string())?
                );
                reply(id, suffix.as_bytes())
            }
            "tools/list" => reply(id, &listed),
            "tools/call" if tools.is_some() && is_named(req.params, "flip") => {
                generation += 1;
                listed = many_tools(tools.unwrap_or_default(), generation).into_bytes();
                flipped = true;
                let said = format!(r#","result":{{"content":[{{"type":"text","text":"generation {generation}"}}]}}}}"#);
                reply(id, said.as_bytes())
            }
            "tools/call" => reply(id, call.as_bytes()),
            "ping" => reply(id, EMPTY_RESULT),
            _ => reply(id, NOT_FOUND),
        };
        out.write_all(&body).and_then(|()| out.write_all(b"\n")).map_err(|e| e.to_string())?;
        if flipped {
            // After the answer, so the caller's reply comes first.
            out.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n")
                .map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Whether a `tools/call` names `tool`.
fn is_named(params: Option<&RawValue>, tool: &str) -> bool {
    params.is_some_and(|p| serde_json::from_str::<CallParams<'_>>(p.get()).is_ok_and(|c| c.name == tool))
}

/// Everything of a `tools/list` reply after the id, with `n` tools: `t000`
/// … and the last one `flip`; `t000`'s description names `generation`.
pub(crate) fn many_tools(n: usize, generation: u64) -> String {
    let mut out = String::from(r#","result":{"tools":["#);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let (name, what) = match i {
            _ if i + 1 == n => ("flip".to_owned(), "Changes this server's tool list and says so.".to_owned()),
            0 => ("t000".to_owned(), format!("Returns 1 KiB of text; tool list generation {generation}.")),
            _ => (format!("t{i:03}"), format!("Returns 1 KiB of text (tool {i} of {n}), like echo.")),
        };
        out.push_str(&format!(
            r#"{{"name":"{name}","description":"{what}","inputSchema":{{"type":"object","properties":{{"text":{{"type":"string","description":"The text to send back."}},"times":{{"type":"integer","minimum":1,"maximum":10}}}},"required":["text"]}}}}"#
        ));
    }
    out.push_str("]}}");
    out
}

fn reply(id: &RawValue, suffix: &[u8]) -> Vec<u8> {
    let id = id.get().as_bytes();
    let mut out = Vec::with_capacity(PREFIX.len() + id.len() + suffix.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(id);
    out.extend_from_slice(suffix);
    out
}

fn json(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}
