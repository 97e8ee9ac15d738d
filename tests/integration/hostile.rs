//! Hostile input (issue 6 item 9): malformed JSON, invalid UTF-8, deep
//! nesting, huge bodies, wrong content types, bad or missing credentials,
//! replayed and foreign sessions, header tricks, raw wire garbage, slow
//! clients and cleartext HTTP/2, on the HTTP front end and on
//! `mcp-gateway stdio` (up to EOF).
//!
//! Every matrix is a table of named cases against the real binary. After
//! each case the gateway must still be healthy: `/healthz` answers, a
//! session opened before the barrage still gets its `raw__echo` answered,
//! and a call that was in flight during the barrage gets its reply. At the
//! end the gateway exits cleanly and its log has no `panicked`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::keys::*;
use crate::support::*;

/// Most characters an error message may have: the gateway repeats at most
/// 128 characters of a client's text (a method, a name) in one.
const ECHOED: usize = 300;

/// `gateway.max_message_bytes` of the HTTP gateways here.
const MAX: usize = 65536;

fn http_config(auth: &str) -> String {
    format!("[gateway]\nmax_message_bytes = {MAX}\n{auth}{}", raw_stdio("raw", ""))
}

// === what a case expects ===

#[derive(Debug, Clone)]
enum Expect {
    /// This HTTP status and a JSON-RPC error with this code whose message
    /// contains this text.
    Error(u16, i64, &'static str),
    /// 200 with a `result`.
    Result,
    /// 200 with a `raw__echo` result whose `args` are these.
    Echo(Value),
    /// 200 with a `result`, the id echoed byte for byte (this raw text).
    SameId(&'static str),
    /// 202, no body to speak of.
    Accepted,
}

fn body_json(name: &str, r: &Raw) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{name}: body is not JSON ({e}): {:?}", r.body))
}

/// Whether `r` is what `want` says; why not, otherwise.
fn verdict(r: &Raw, want: &Expect) -> Result<(), String> {
    let short: String = r.body.chars().take(400).collect();
    let fail = |what: &str| Err(format!("{what}; got {} {short:?}", r.status));
    let json = || serde_json::from_str::<Value>(&r.body).ok();
    let status = |s: u16| if r.status == s { Ok(()) } else { fail(&format!("status should be {s}")) };
    match want {
        Expect::Error(s, code, says) => {
            status(*s)?;
            let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok());
            if ct != Some("application/json") {
                return fail(&format!("content type {ct:?}"));
            }
            let Some(v) = json() else { return fail("body is not JSON") };
            if v["jsonrpc"] != "2.0" || v["error"]["code"] != *code || v.get("result").is_some() {
                return fail(&format!("should be a JSON-RPC error {code}"));
            }
            let msg = v["error"]["message"].as_str().unwrap_or_default();
            if !msg.contains(says) {
                return fail(&format!("the message should say {says:?}"));
            }
            // Whatever the client sent, the gateway repeats little of it.
            if msg.chars().count() > ECHOED {
                return fail(&format!("the message has {} characters", msg.chars().count()));
            }
            Ok(())
        }
        Expect::Result => {
            status(200)?;
            if json().is_some_and(|v| v.get("result").is_some()) { Ok(()) } else { fail("no result") }
        }
        Expect::Echo(args) => {
            status(200)?;
            if json().is_some_and(|v| &v["result"]["args"] == args) {
                Ok(())
            } else {
                fail(&format!("args should be {args}"))
            }
        }
        Expect::SameId(id) => {
            status(200)?;
            let same = r.body.starts_with(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},"));
            if same && json().is_some_and(|v| v.get("result").is_some()) {
                Ok(())
            } else {
                fail(&format!("a result for id {id}"))
            }
        }
        Expect::Accepted => status(202),
    }
}

fn check(name: &str, r: &Raw, want: &Expect) {
    if let Err(e) = verdict(r, want) {
        panic!("{name}: {e}");
    }
}

/// Panics with every failed case at once.
fn all_passed(what: &str, failures: &[String]) {
    assert!(failures.is_empty(), "{} {what} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

// === requests with any bytes ===

/// One POST: the body (sent chunked, without a length, when `chunked`)
/// and every header, duplicates and non-ASCII bytes included.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    body: Vec<u8>,
    content_type: Option<Vec<u8>>,
    accept: Option<Vec<u8>>,
    chunked: bool,
    want: Expect,
}

fn case(name: impl Into<String>, body: impl Into<Vec<u8>>, want: Expect) -> Case {
    Case {
        name: name.into(),
        body: body.into(),
        content_type: Some(b"application/json".to_vec()),
        accept: Some(b"application/json, text/event-stream".to_vec()),
        chunked: false,
        want,
    }
}

impl Case {
    fn content_type(mut self, ct: Option<&[u8]>) -> Self {
        self.content_type = ct.map(<[u8]>::to_vec);
        self
    }
    fn accept(mut self, a: Option<&[u8]>) -> Self {
        self.accept = a.map(<[u8]>::to_vec);
        self
    }
    fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

type Headers = Vec<(String, Vec<u8>)>;

fn header(name: &str, value: impl AsRef<[u8]>) -> (String, Vec<u8>) {
    (name.to_owned(), value.as_ref().to_vec())
}

/// POSTs (or `method`s) `body` to `url` with exactly `headers` (reqwest
/// adds only `accept: */*` when none is given, and host/length).
async fn send_raw(method: reqwest::Method, url: &str, headers: &Headers, body: Vec<u8>, chunked: bool) -> Raw {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap();
        let value = reqwest::header::HeaderValue::from_bytes(v).unwrap_or_else(|e| panic!("header {k}: {e}"));
        map.append(name, value);
    }
    let body = if chunked {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            body.chunks(4096).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    } else {
        reqwest::Body::from(body)
    };
    let resp =
        tokio::time::timeout(PATIENCE, reqwest::Client::new().request(method, url).headers(map).body(body).send())
            .await
            .expect("an answer in time")
            .unwrap_or_else(|e| panic!("request to {url} failed: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned();
    Raw { status, headers, body }
}

async fn post_case(url: &str, base: &Headers, c: &Case) -> Raw {
    let mut headers = base.clone();
    if let Some(ct) = &c.content_type {
        headers.push(header("content-type", ct));
    }
    if let Some(a) = &c.accept {
        headers.push(header("accept", a));
    }
    send_raw(reqwest::Method::POST, url, &headers, c.body.clone(), c.chunked).await
}

/// The headers of a request on `c`'s session, presenting `token` if any.
fn session_headers(c: &McpHttp, token: Option<&str>) -> Headers {
    let mut h =
        vec![header("mcp-session-id", c.session.as_deref().unwrap()), header("mcp-protocol-version", "2025-11-25")];
    if let Some(t) = token {
        h.push(header("authorization", format!("Bearer {t}")));
    }
    h
}

fn msg(id: &str, method: &str, params: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#).into_bytes()
}

fn ping(id: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#).into_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// === the health the barrage must not take away ===

/// What must survive: the gateway answers `/healthz`, and `keeper` (a
/// session opened before the barrage) still gets `raw__echo` answered.
async fn still_healthy(gw: &Gateway, keeper: &mut McpHttp, after: &str) {
    let r = tokio::time::timeout(PATIENCE, reqwest::get(format!("http://{}/healthz", gw.addr)))
        .await
        .unwrap_or_else(|_| panic!("after {after}: /healthz hangs"))
        .unwrap_or_else(|e| panic!("after {after}: /healthz failed: {e}\n{}", gw.proc.logs()));
    assert_eq!(r.status(), 200, "after {after}");
    assert_eq!(r.text().await.unwrap(), "ok\n", "after {after}");
    let r = keeper.call("raw__echo", json!({"after": after})).await;
    assert_eq!(r["result"]["args"], json!({"after": after}), "after {after}: the earlier session lost: {r}");
    assert!(alive(gw.proc.pid()), "after {after}: the gateway is gone\n{}", gw.proc.logs());
}

/// A call that runs while the barrage goes on; it must get its own reply.
fn in_flight(keeper: &McpHttp, tag: &'static str) -> tokio::task::JoinHandle<Value> {
    let c = McpHttp { http: keeper.http.clone(), url: keeper.url.clone(), session: keeper.session.clone(), next: 0 };
    tokio::spawn(async move {
        let body = json!({"jsonrpc":"2.0","id":tag,"method":"tools/call",
            "params":{"name":"raw__sleep","arguments":{"ms":2500,"tag":tag}}});
        c.post(&body.to_string(), &[]).await.json()
    })
}

/// Stops the gateway: a clean exit, and no panic anywhere in its log.
async fn stops_cleanly(gw: Gateway) {
    let logs = gw.proc.stderr.clone();
    let status = gw.stop().await;
    let logs = logs.lock().unwrap().clone();
    assert!(status.success(), "gateway exit: {status}\n{logs}");
    assert!(!logs.contains("panicked"), "the gateway panicked:\n{logs}");
}

/// No metric label took a client's made-up method name.
async fn metrics_bounded(gw: &Gateway, marker: &str) {
    let m = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    assert!(!m.contains(marker), "a client's method name became a metric label");
    assert!(m.len() < 512 * 1024, "metrics grew to {} bytes", m.len());
}

// === the body matrix ===

/// Method names of the "huge method" case start with this.
const HUGE_METHOD: &str = "hostile-method-";

fn body_cases() -> Vec<Case> {
    use Expect::*;
    let parse = |says| Error(400, -32700, says);
    let invalid = |says| Error(400, -32600, says);
    let cases = vec![
        // --- not JSON ---
        case("malformed JSON", "{oops", parse("Parse error")),
        case("truncated JSON", r#"{"jsonrpc":"2.0","id":"t","method":"pi"#, parse("EOF")),
        case("empty body", "", parse("Parse error")),
        case("whitespace only", " \n\t\r ", parse("Parse error")),
        case("trailing garbage", cat(&[&ping("1"), b" x"]), parse("trailing characters")),
        case("two messages in one body", cat(&[&ping("1"), &ping("2")]), parse("trailing characters")),
        case("a lone 0xFF byte", b"\xff".to_vec(), parse("invalid UTF-8 at byte 0")),
        case(
            "invalid UTF-8 in the method",
            cat(&[br#"{"jsonrpc":"2.0","id":1,"method":"p"#, b"\xff\xfe", br#""}"#]),
            parse("invalid UTF-8 at byte 35"),
        ),
        case(
            "invalid UTF-8 in params",
            cat(&[br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":""#, b"\xc3\x28", br#""}}"#]),
            parse("invalid UTF-8"),
        ),
        // serde_json alone does not check UTF-8 inside strings it skips
        // (members the envelope does not name); the gateway does.
        case(
            "invalid UTF-8 in an unknown member",
            cat(&[br#"{"jsonrpc":"2.0","id":"u8","method":"ping","x":""#, b"\xff", br#""}"#]),
            parse("invalid UTF-8"),
        ),
        case(
            "invalid UTF-8 in an unknown member's key",
            cat(&[br#"{"jsonrpc":"2.0","id":"u8","method":"ping","x"#, b"\xc3\x28", br#"":1}"#]),
            parse("invalid UTF-8"),
        ),
        case("invalid UTF-8 in a batch", cat(&[br#"[""#, b"\xff", br#""]"#]), parse("invalid UTF-8")),
        case("UTF-8 byte order mark", cat(&[b"\xef\xbb\xbf", &ping("1")]), parse("Parse error")),
        case(
            "overlong UTF-8 (0xC0 0xAF)",
            cat(&[br#"{"jsonrpc":"2.0","id":1,"method":""#, b"\xc0\xaf", br#""}"#]),
            parse("invalid UTF-8"),
        ),
        case(
            "UTF-8-encoded surrogate (0xED 0xA0 0x80)",
            cat(&[br#"{"jsonrpc":"2.0","id":1,"method":""#, b"\xed\xa0\x80", br#""}"#]),
            parse("invalid UTF-8"),
        ),
        case(
            "lone surrogate escape in the method",
            r#"{"jsonrpc":"2.0","id":1,"method":"\ud800"}"#,
            parse("hex escape"),
        ),
        case(
            "raw NUL inside a string",
            cat(&[br#"{"jsonrpc":"2.0","id":1,"method":"pi"#, b"\x00", br#"ng"}"#]),
            parse("control character"),
        ),
        case("raw NUL between tokens", cat(&[b"{\x00", &ping("1")[1..]]), parse("Parse error")),
        // --- JSON, not one JSON-RPC message ---
        case("JSON-RPC batch", cat(&[b"[", &ping("1"), b",", &ping("2"), b"]"]), invalid("batches are not supported")),
        case("empty batch", "[]", invalid("batches are not supported")),
        case("unterminated batch", "[1,", parse("Parse error")),
        case("number at top level", "42", invalid("not a JSON-RPC message object")),
        case("string at top level", r#""ping""#, invalid("not a JSON-RPC message object")),
        case("null at top level", "null", invalid("not a JSON-RPC message object")),
        case("true at top level", "true", invalid("not a JSON-RPC message object")),
        // --- deep nesting (each under the body limit) ---
        case("60 000 unclosed [", "[".repeat(60_000), parse("EOF")),
        case("30 000 nested [ ]", format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)), invalid("batches")),
        case("12 000 nested objects at top level", r#"{"a":"#.repeat(12_000), parse("Parse error")),
        // Past `max_json_depth` (64) anywhere: refused with the path, the id kept (design.md D12).
        case(
            "deep nesting in ping params",
            deep_in(r#""id":"deep-p","method":"ping","params""#),
            invalid("nesting deeper than the limit at params[0].a[0].a"),
        ),
        case(
            "deep nesting in an unknown member",
            deep_in(r#""id":"deep-x","method":"ping","x""#),
            invalid("nesting deeper than the limit at x[0].a"),
        ),
        case(
            "deep nesting in tools/list params",
            deep_in(r#""id":"deep-l","method":"tools/list","params""#),
            invalid("nesting deeper than the limit"),
        ),
        case(
            "deep nesting as the id",
            deep_in(r#""method":"ping","id""#),
            invalid("id must be a string or an integer"),
        ),
        case(
            "deep nesting as the method",
            deep_in(r#""id":1,"method""#),
            invalid("nesting deeper than the limit at method[0]"),
        ),
        // --- size ---
        case(
            "one byte over max_message_bytes",
            padded_ping("over", MAX + 1),
            Error(413, -32600, "exceeds 65536 bytes"),
        ),
        case("four times max_message_bytes", padded_ping("over4", 4 * MAX), Error(413, -32600, "exceeds 65536 bytes")),
        case("exactly max_message_bytes", padded_ping("\"at-limit\"", MAX), SameId("\"at-limit\"")),
        case(
            "chunked, over the limit",
            padded_ping("chunk-over", MAX + 4096),
            Error(413, -32600, "exceeds 65536 bytes"),
        )
        .chunked(),
        case("chunked, under the limit", padded_ping("\"chunk-ok\"", 9000), SameId("\"chunk-ok\"")).chunked(),
        // --- content type and accept ---
        case("no Content-Type", ping("1"), Error(415, -32600, "Content-Type must be application/json"))
            .content_type(None),
        case("Content-Type text/plain", ping("1"), Error(415, -32600, "Content-Type"))
            .content_type(Some(b"text/plain")),
        case("Content-Type form", ping("1"), Error(415, -32600, "Content-Type"))
            .content_type(Some(b"application/x-www-form-urlencoded")),
        case("Content-Type multipart", ping("1"), Error(415, -32600, "Content-Type"))
            .content_type(Some(b"multipart/form-data; boundary=x")),
        case("empty Content-Type", ping("1"), Error(415, -32600, "Content-Type")).content_type(Some(b"")),
        case("Content-Type with non-ASCII bytes", ping("1"), Error(415, -32600, "Content-Type"))
            .content_type(Some(b"application/json\xff")),
        case("Content-Type with charset", ping("\"cs\""), SameId("\"cs\""))
            .content_type(Some(b"application/json; charset=utf-8")),
        case("Content-Type in capitals", ping("\"up\""), SameId("\"up\"")).content_type(Some(b"APPLICATION/JSON")),
        case("Content-Type with charset, no space", ping("\"cs2\""), SameId("\"cs2\""))
            .content_type(Some(b"application/json;charset=UTF-8")),
        case("text/plain naming application/json in a parameter", ping("1"), Error(415, -32600, "Content-Type"))
            .content_type(Some(b"text/plain; x=application/json")),
        case("Content-Type application/jsonx", ping("1"), Error(415, -32600, "Content-Type"))
            .content_type(Some(b"application/jsonx")),
        case("Content-Type application/json-seq", ping("1"), Error(415, -32600, "Content-Type"))
            .content_type(Some(b"application/json-seq")),
        case("Content-Type x-application/json", ping("1"), Error(415, -32600, "Content-Type"))
            .content_type(Some(b"x-application/json")),
        case("Accept text/html", ping("1"), Error(406, -32600, "Accept must allow")).accept(Some(b"text/html")),
        case("Accept application/xml", ping("1"), Error(406, -32600, "Accept")).accept(Some(b"application/xml")),
        case("Accept with non-ASCII bytes", ping("1"), Error(406, -32600, "Accept")).accept(Some(b"\xfftext/html")),
        case("Accept */*", ping("\"any\""), SameId("\"any\"")).accept(Some(b"*/*")),
        case("Accept application/*", ping("\"app\""), SameId("\"app\"")).accept(Some(b"application/*")),
        case("Accept in capitals", ping("\"acc\""), SameId("\"acc\"")).accept(Some(b"APPLICATION/JSON")),
        case("Accept */* with q=0", ping("1"), Error(406, -32600, "Accept")).accept(Some(b"*/*;q=0")),
        case("Accept application/json with q=0", ping("1"), Error(406, -32600, "Accept"))
            .accept(Some(b"application/json; q=0")),
        case("Accept JSON refused, anything else taken", ping("1"), Error(406, -32600, "Accept"))
            .accept(Some(b"*/*, application/json;q=0")),
        case("Accept JSON refused, SSE named", ping("\"q0\""), Result)
            .accept(Some(b"application/json;q=0, text/event-stream")),
        case("Accept application/jsonx", ping("1"), Error(406, -32600, "Accept")).accept(Some(b"application/jsonx")),
        case("Accept text/*", ping("1"), Error(406, -32600, "Accept")).accept(Some(b"text/*")),
        case("Accept naming JSON in a quoted parameter", ping("1"), Error(406, -32600, "Accept"))
            .accept(Some(b"text/html; x=\"application/json, text/event-stream\"")),
        case("no Accept (reqwest sends */*)", ping("\"none\""), SameId("\"none\"")).accept(None),
        case("Accept text/event-stream only", ping("\"sse\""), Result).accept(Some(b"text/event-stream")),
        // --- the JSON-RPC envelope ---
        case("jsonrpc missing", r#"{"id":1,"method":"ping"}"#, invalid("jsonrpc must be \"2.0\"")),
        case("jsonrpc 1.0", r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, invalid("jsonrpc must be")),
        case("jsonrpc as a number", r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#, invalid("jsonrpc must be")),
        case("jsonrpc with a space", r#"{"jsonrpc":"2.0 ","id":1,"method":"ping"}"#, invalid("jsonrpc must be")),
        case("jsonrpc null", r#"{"jsonrpc":null,"id":1,"method":"ping"}"#, invalid("jsonrpc must be")),
        case(
            "id is an object",
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            invalid("id must be a string or an integer"),
        ),
        case("id is an array", r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#, invalid("id must be")),
        case("id is a bool", r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#, invalid("id must be")),
        case("id is null", r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, invalid("id must be")),
        case("id is a fraction", r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, invalid("id must be")),
        case("id with an exponent", r#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#, invalid("id must be")),
        case("method is a number", r#"{"jsonrpc":"2.0","id":1,"method":7}"#, invalid("not a JSON-RPC message object")),
        case("method is an object", r#"{"jsonrpc":"2.0","id":1,"method":{"m":"ping"}}"#, invalid("not a JSON-RPC")),
        case("method is an array", r#"{"jsonrpc":"2.0","id":1,"method":["ping"]}"#, invalid("not a JSON-RPC")),
        case("method is null", r#"{"jsonrpc":"2.0","id":1,"method":null}"#, invalid("missing method")),
        case("no method", r#"{"jsonrpc":"2.0","id":1,"params":{}}"#, invalid("missing method")),
        case(
            "method and result",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
            invalid("both method and result"),
        ),
        case(
            "result and error",
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            invalid("exactly one of result and error"),
        ),
        case("a response without an id", r#"{"jsonrpc":"2.0","result":{}}"#, invalid("exactly one")),
        case(
            "duplicate id members",
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            invalid("duplicate member name at id"),
        ),
        case(
            "duplicate method members",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#,
            invalid("duplicate member name at method"),
        ),
        case("unknown method", msg("\"um\"", "no/such", "{}"), Error(200, -32601, "Method not found: no/such")),
        case("method with a NUL escape", msg("\"nul-m\"", r"ping\u0000", "{}"), Error(200, -32601, "Method not found")),
        case(
            "60 000-character method name",
            msg("\"huge-m\"", &format!("{HUGE_METHOD}{}", "m".repeat(60_000)), "{}"),
            Error(200, -32601, "Method not found: hostile-method-mmm"),
        ),
        case(
            "tools/call params is an array",
            msg("\"pa\"", "tools/call", "[1,2]"),
            Error(200, -32602, "params must be an object"),
        ),
        case(
            "tools/call params is a string",
            msg("\"ps\"", "tools/call", r#""raw__echo""#),
            Error(200, -32602, "must be an object"),
        ),
        case("tools/call params is null", msg("\"pn\"", "tools/call", "null"), Error(200, -32602, "")),
        case(
            "tools/call without params",
            r#"{"jsonrpc":"2.0","id":"np","method":"tools/call"}"#,
            Error(200, -32602, "needs params"),
        ),
        case(
            "tools/call name is a number",
            msg("\"nn\"", "tools/call", r#"{"name":5}"#),
            Error(200, -32602, "needs a string `name`"),
        ),
        case(
            "tools/call name with a NUL",
            msg("\"tn\"", "tools/call", r#"{"name":"raw__echo\u0000"}"#),
            Error(200, -32602, "Unknown tool"),
        ),
        case(
            "tools/call name with a lone surrogate",
            msg("\"ts\"", "tools/call", r#"{"name":"raw__echo\udc00"}"#),
            invalid("lone UTF-16 surrogate at params.name"),
        ),
        case(
            "tools/list params is a number",
            msg("\"ln\"", "tools/list", "5"),
            Error(200, -32602, "params must be an object"),
        ),
        case(
            "tools/list with a non-string cursor",
            msg("\"lc\"", "tools/list", r#"{"cursor":{"a":1}}"#),
            Error(200, -32602, "Invalid cursor"),
        ),
        case(
            "tools/list with a forged cursor",
            msg("\"lf\"", "tools/list", r#"{"cursor":"../../etc\u0000"}"#),
            Error(200, -32602, ""),
        ),
        case("ping with array params", msg("\"pp\"", "ping", "[]"), SameId("\"pp\"")),
        case(
            "NUL and escapes in arguments are relayed intact",
            msg(
                "\"esc\"",
                "tools/call",
                r#"{"name":"raw__echo","arguments":{"s":"a\u0000b\"c\\d\ud83d\ude00\u2028"}}"#,
            ),
            Echo(json!({"s":"a\u{0}b\"c\\d\u{1F600}\u{2028}"})),
        ),
        // Two parsers round it differently (JavaScript already past 2^53).
        case(
            "a 40-digit integer id",
            ping("1234567890123456789012345678901234567890"),
            invalid("id must be a string or an integer"),
        ),
        case("the largest 64-bit id", ping("18446744073709551615"), SameId("18446744073709551615")),
        case("the smallest 64-bit id", ping("-9223372036854775808"), SameId("-9223372036854775808")),
        case("a negative id", ping("-7"), SameId("-7")),
        case("a string id full of escapes", ping(r#""\"\\\u0000\n<>&""#), SameId(r#""\"\\\u0000\n<>&""#)),
        case("a 30 000-character string id", ping(&format!("\"{}\"", "i".repeat(30_000))), Result),
        // --- messages that need no answer ---
        case("a response nobody waits for", r#"{"jsonrpc":"2.0","id":"nobody","result":{}}"#, Accepted),
        case(
            "an error response nobody waits for",
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"x"}}"#,
            Accepted,
        ),
        case("an unknown notification", r#"{"jsonrpc":"2.0","method":"notifications/hostile","params":[1]}"#, Accepted),
        case(
            "cancelling an unknown request",
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}"#,
            Accepted,
        ),
        case(
            "cancelling with an object requestId",
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{"a":[1]}}}"#,
            Accepted,
        ),
        case(
            "cancelling with array params",
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":[1]}"#,
            Accepted,
        ),
    ];
    for c in &cases {
        assert!(c.name.len() < 80, "name the case shortly: {}", c.name);
    }
    cases
}

/// `{"jsonrpc":"2.0",<prefix>:<6 000 levels of [ and {"a": ...>}`: deep,
/// valid JSON well under the body limit.
fn deep_in(prefix: &str) -> Vec<u8> {
    let n = 6_000;
    let open = r#"[{"a":"#.repeat(n);
    let close = "}]".repeat(n);
    format!(r#"{{"jsonrpc":"2.0",{prefix}:{open}1{close}}}"#).into_bytes()
}

/// A ping with id `id` padded to exactly `len` bytes.
fn padded_ping(id: &str, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping","params":{{"pad":""#);
    let tail = r#""}}"#;
    let pad = len - head.len() - tail.len();
    let s = format!("{head}{}{tail}", "p".repeat(pad));
    assert_eq!(s.len(), len);
    s.into_bytes()
}

/// Runs every body case on `keeper`'s session (with `token`), checking the
/// gateway after each one.
async fn run_body_matrix(gw: &Gateway, keeper: &mut McpHttp, token: Option<&str>) -> usize {
    let cases = body_cases();
    let base = session_headers(keeper, token);
    let mut failures = Vec::new();
    for c in &cases {
        let r = post_case(&gw.url(), &base, c).await;
        if let Err(e) = verdict(&r, &c.want) {
            failures.push(format!("{}: {e}", c.name));
        }
        still_healthy(gw, keeper, &c.name).await;
    }
    all_passed("body", &failures);
    cases.len()
}

#[tokio::test]
async fn hostile_bodies_with_api_keys() {
    let mut gw = Gateway::start(&http_config(&keys())).await;
    gw.authorize(OPS);
    gw.wait_ready("raw").await;
    let mut keeper = McpHttp::connect_as(&gw.url(), ALICE).await;
    still_healthy(&gw, &mut keeper, "start").await;
    let survivor = in_flight(&keeper, "survivor-auth");

    let n = run_body_matrix(&gw, &mut keeper, Some(ALICE)).await;
    assert!(n > 80, "{n} cases");
    eprintln!("hostile: {n} body cases passed");

    // Without credentials nothing is read: 401 and a challenge, whatever
    // the body, before the body. The client here keeps most of its body
    // back and never closes; the answer must come anyway.
    let addr = gw.addr;
    for (name, declared) in
        [("unauthenticated, body held back", MAX - 10), ("unauthenticated, 16 MiB declared", 16 << 20)]
    {
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {declared}\r\n\r\n"
        );
        let answer = held_open(gw.addr, &cat(&[head.as_bytes(), &[b' '; 1000]]), None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(statuses(&answer), [401], "{name}: {answer}");
        assert!(answer.contains("authentication required"), "{name}: {answer}");
        still_healthy(&gw, &mut keeper, name).await;
    }
    let json = vec![header("content-type", "application/json"), header("accept", "application/json")];
    let n = refused_unread(&gw, &json, 401).await;
    eprintln!("hostile: {n} unauthenticated POSTs answered");
    still_healthy(&gw, &mut keeper, "the unauthenticated bodies").await;
    let unauth = [
        case(
            "unauthenticated malformed JSON",
            "{oops",
            Expect::Error(401, -32600, "Unauthorized: authentication required"),
        ),
        case("unauthenticated batch", "[1,2]", Expect::Error(401, -32600, "authentication required")),
        case("unauthenticated deep nesting", "[".repeat(60_000), Expect::Error(401, -32600, "authentication required")),
        case(
            "unauthenticated over the limit",
            padded_ping("1", MAX * 2),
            Expect::Error(401, -32600, "authentication required"),
        ),
        case("unauthenticated text/plain", ping("1"), Expect::Error(401, -32600, "authentication required"))
            .content_type(Some(b"text/plain")),
        case(
            "unauthenticated invalid UTF-8",
            b"\xff\xfe".to_vec(),
            Expect::Error(401, -32600, "authentication required"),
        ),
    ];
    for c in &unauth {
        let base = vec![header("mcp-session-id", keeper.session.as_deref().unwrap())];
        let r = post_case(&gw.url(), &base, c).await;
        check(&c.name, &r, &c.want);
        let challenge = r.headers.get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer resource_metadata=")), "{}: challenge", c.name);
        still_healthy(&gw, &mut keeper, &c.name).await;
    }

    let r = survivor.await.unwrap();
    assert_eq!(text(&r), "survivor-auth", "the call in flight during the barrage: {r}");
    // A new session works too, and made-up methods made no metric labels.
    let mut fresh = McpHttp::connect_as(&gw.url(), ALICE).await;
    assert_eq!(fresh.call("raw__echo", json!({"fresh":true})).await["result"]["args"], json!({"fresh":true}));
    metrics_bounded(&gw, HUGE_METHOD).await;
    stops_cleanly(gw).await;
}

#[tokio::test]
async fn hostile_bodies_and_wire_garbage_without_auth() {
    let gw = Gateway::start(&http_config("")).await;
    gw.wait_ready("raw").await;
    let mut keeper = gw.client().await;
    let survivor = in_flight(&keeper, "survivor-open");

    // Connections that take their time hold nothing for long: they run
    // during both matrices and are checked at the end.
    let slow = tokio::spawn(slow_clients(gw.addr));

    let n = run_body_matrix(&gw, &mut keeper, None).await;
    assert!(n > 80, "{n} cases");
    eprintln!("hostile: {n} body cases passed");
    let n = run_wire_matrix(&gw, &mut keeper).await;
    assert!(n >= 15, "{n} wire cases");
    eprintln!("hostile: {n} wire cases passed");

    // Cleartext HTTP/2 with prior knowledge: no Host, only :authority,
    // which the Host check reads; a Host that differs from it is refused.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut c = McpHttp::connect_via(&gw.url(), json!({}), h2.clone()).await;
    assert_eq!(c.call("raw__echo", json!({"h2":true})).await["result"]["args"], json!({"h2":true}));
    let status = format!("http://{}/status", gw.addr);
    let r = h2.get(&status).send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    for (host, want) in [("evil.example", 400), (gw.addr.to_string().as_str(), 200)] {
        let r = h2.get(&status).header("host", host).send().await.unwrap();
        let (version, code) = (r.version(), r.status().as_u16());
        let body = r.text().await.unwrap();
        assert_eq!((version, code), (reqwest::Version::HTTP_2, want), "h2 with Host {host}: {body}");
        assert!(want == 200 || body.contains("Host header and the request's authority differ"), "{body}");
    }
    // An :authority that is not allowed (the name resolves to us here).
    let rebound =
        reqwest::Client::builder().http2_prior_knowledge().resolve("localhost.evil.example", gw.addr).build().unwrap();
    let r = rebound.get(format!("http://localhost.evil.example:{}/status", gw.addr.port())).send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 403), "an :authority not allowed");
    let raw = send_raw(reqwest::Method::GET, &status, &vec![header("host", "evil.example")], vec![], false).await;
    assert_eq!(raw.status, 403, "HTTP/1.1 with a Host that is not allowed: {}", raw.body);

    let json = vec![header("content-type", "application/json"), header("accept", "application/json")];
    let n = refused_unread(&gw, &json, 413).await;
    let n = n + refused_unread(&gw, &vec![header("content-type", "text/plain")], 415).await;
    eprintln!("hostile: {n} refused-unread POSTs answered");
    still_healthy(&gw, &mut keeper, "the refused unread bodies").await;

    let n = slow.await.unwrap();
    eprintln!("hostile: {n} slow-client cases passed");
    still_healthy(&gw, &mut keeper, "the slow clients").await;
    let m = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    for reason in ["header_timeout", "body_timeout", "body_too_large", "content_type", "accept"] {
        let series = format!("mcp_gateway_http_rejections_total{{reason=\"{reason}\"}}");
        assert!(m.contains(&series), "no {series} in the metrics");
    }

    let r = survivor.await.unwrap();
    assert_eq!(text(&r), "survivor-open", "the call in flight during the barrage: {r}");
    let mut fresh = gw.client().await;
    assert_eq!(fresh.call("raw__echo", json!({"fresh":1})).await["result"]["args"], json!({"fresh":1}));
    metrics_bounded(&gw, HUGE_METHOD).await;
    stops_cleanly(gw).await;
}

// === raw bytes on the wire: what reqwest refuses to send ===

/// What the server did with a raw request.
#[derive(Debug)]
enum Wire {
    /// These status codes, in order (several for pipelined requests).
    Statuses(&'static [u16]),
    /// Any 4xx, or the connection closed without an answer (hyper drops
    /// some garbage silently); never a 5xx, never a hang.
    Refused,
}

/// Sends `first` on a fresh connection, then (with `trickle`) one more
/// byte of it every second, never closing its side; returns what the
/// server sent until it closed the connection, or why not within PATIENCE.
async fn held_open(addr: std::net::SocketAddr, first: &[u8], trickle: Option<u8>) -> Result<String, String> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = s.into_split();
    tx.write_all(first).await.unwrap();
    let writer = tokio::spawn(async move {
        if let Some(b) = trickle {
            // Stops when the server has closed the connection.
            while tx.write_all(&[b]).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        // Held (not dropped) so the client never closes its side.
        std::future::pending::<()>().await;
    });
    let mut out = Vec::new();
    // A reset after the answer counts as closed: what came before it is in
    // `out` either way.
    let read = tokio::time::timeout(PATIENCE, rx.read_to_end(&mut out)).await;
    writer.abort();
    let answer = String::from_utf8_lossy(&out).into_owned();
    match read {
        Ok(_) => Ok(answer),
        Err(_) => Err(format!("the connection is still open after {PATIENCE:?}; got so far: {answer:?}")),
    }
}

/// Many clients at once POST bodies that are refused before they are read
/// (too large, wrong Content-Type, no credentials...), each from its own
/// connection: every one must read its answer (`want`), none may see its
/// connection reset instead. Returns how many there were.
async fn refused_unread(gw: &Gateway, headers: &Headers, want: u16) -> usize {
    let n = 48;
    let runs = (0..n).map(|i| {
        let (url, headers) = (gw.url(), headers.clone());
        async move {
            // Over the limit 1 to 16 times: some clients finish sending, some not.
            let body = padded_ping(&i.to_string(), MAX * (1 + i % 16) + 1);
            let mut map = reqwest::header::HeaderMap::new();
            for (k, v) in &headers {
                map.append(
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    reqwest::header::HeaderValue::from_bytes(v).unwrap(),
                );
            }
            let sent = reqwest::Client::new().post(&url).headers(map).body(body).send();
            match tokio::time::timeout(PATIENCE, sent).await {
                Ok(Ok(r)) if r.status().as_u16() == want => None,
                Ok(Ok(r)) => Some(format!("#{i}: status {}", r.status())),
                Ok(Err(e)) => Some(format!("#{i}: {e:?}")),
                Err(_) => Some(format!("#{i}: no answer in time")),
            }
        }
    });
    let failures: Vec<String> = futures_util::future::join_all(runs).await.into_iter().flatten().collect();
    all_passed(&format!("refused-unread ({want})"), &failures);
    n
}

/// Clients that are slow on purpose, all at once: each connection must be
/// closed by the gateway (within PATIENCE), with 408 when a request was
/// already admitted. Returns how many cases passed.
async fn slow_clients(addr: std::net::SocketAddr) -> usize {
    let post = |len: usize| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    type Check = fn(&str) -> bool;
    let timed_out: Check = |a| {
        statuses(a) == [408] && a.contains("did not arrive") && a.to_ascii_lowercase().contains("connection: close")
    };
    // Closed without an answer, or with 408 at most.
    let closed: Check = |a| statuses(a).iter().all(|s| *s == 408);
    let too_large: Check = |a| statuses(a) == [413] && a.contains("exceeds 65536 bytes");
    let cases: Vec<(&str, Vec<u8>, Option<u8>, Check)> = vec![
        ("a connection that sends nothing", vec![], None, closed),
        (
            "a request head sent a byte a second",
            format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").into_bytes(),
            Some(b'a'),
            closed,
        ),
        (
            "a request head that stops halfway",
            format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\n").into_bytes(),
            None,
            closed,
        ),
        ("an HTTP/2 preface that stops halfway", b"PRI * HTTP/2.0\r\n".to_vec(), None, closed),
        ("a body that stops", cat(&[post(1000).as_bytes(), b"{\"jsonrpc\""]), None, timed_out),
        ("a body sent a byte a second", post(60_000).into_bytes(), Some(b' '), closed),
        ("16 MiB declared, 1000 bytes sent", cat(&[post(16 << 20).as_bytes(), &[b' '; 1000]]), None, too_large),
    ];
    let n = cases.len();
    let runs = cases.into_iter().map(|(name, first, trickle, check)| async move {
        match held_open(addr, &first, trickle).await {
            Ok(a) if check(&a) => None,
            Ok(a) => Some(format!("{name}: unexpected answer {a:?}")),
            Err(e) => Some(format!("{name}: {e}")),
        }
    });
    let failures: Vec<String> = futures_util::future::join_all(runs).await.into_iter().flatten().collect();
    all_passed("slow-client", &failures);
    n
}

/// Sends `bytes` on a fresh connection (then half-closes it when `eof`),
/// reads everything until the server closes, within 10 s.
async fn raw_exchange(gw: &Gateway, bytes: &[u8], eof: bool) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = s.write_all(bytes).await;
    if eof {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => Err(format!("no end within 10 s; got so far: {:?}", String::from_utf8_lossy(&out))),
    }
}

/// The status codes of every response in `answer` (pipelined responses
/// follow each other's bodies directly).
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.")
        .filter_map(|(at, _)| answer.get(at + "HTTP/1.1 ".len()..at + "HTTP/1.1 ".len() + 3)?.parse().ok())
        .collect()
}

async fn run_wire_matrix(gw: &Gateway, keeper: &mut McpHttp) -> usize {
    let sid = keeper.session.clone().unwrap();
    let host = format!("127.0.0.1:{}", gw.addr.port());
    let body = ping("\"wire\"");
    let post = |extra: &str, body: &[u8]| {
        let mut r = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let head = |lines: &str, body: &[u8]| {
        let mut r = format!("POST /mcp HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n").into_bytes();
        r.extend_from_slice(body);
        r
    };
    let std = format!("Content-Type: application/json\r\nMcp-Session-Id: {sid}\r\nConnection: close\r\n");
    let cases: Vec<(&str, Vec<u8>, bool, Wire)> = vec![
        ("a well-formed raw request", post("", &body), false, Wire::Statuses(&[200])),
        (
            "two pipelined requests",
            {
                let mut two = head(
                    &format!(
                        "Content-Type: application/json\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\n",
                        body.len()
                    ),
                    &body,
                );
                two.extend(post("", &body));
                two
            },
            false,
            Wire::Statuses(&[200, 200]),
        ),
        ("bare CR inside a header value", post("X-Note: a\rInjected: 1\r\n", &body), false, Wire::Statuses(&[400])),
        ("NUL inside a header value", post("X-Note: a\0b\r\n", &body), false, Wire::Statuses(&[400])),
        ("obs-fold continuation line", post("X-Note: a\r\n  folded\r\n", &body), false, Wire::Statuses(&[400])),
        ("space inside a header name", post("X Note: a\r\n", &body), false, Wire::Statuses(&[400])),
        // A bare LF ends a header line for HTTP/1 parsers: the injected
        // session id is a second Mcp-Session-Id, and two are refused.
        (
            "bare LF injecting a session id",
            {
                let mut r = format!(
                "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nMcp-Session-Id: nope\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ).into_bytes();
                r.extend_from_slice(&body);
                r
            },
            false,
            Wire::Statuses(&[400]),
        ),
        (
            "two different Content-Lengths",
            head(&format!("{std}Content-Length: {}\r\nContent-Length: 3\r\n", body.len()), &body),
            false,
            Wire::Statuses(&[400]),
        ),
        (
            "Content-Length and Transfer-Encoding",
            head(&format!("{std}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), b"0\r\n\r\n"),
            false,
            Wire::Refused,
        ),
        (
            "non-numeric Content-Length",
            head(&format!("{std}Content-Length: abc\r\n"), &body),
            false,
            Wire::Statuses(&[400]),
        ),
        (
            "negative Content-Length",
            head(&format!("{std}Content-Length: -1\r\n"), &body),
            false,
            Wire::Statuses(&[400]),
        ),
        (
            "Content-Length over 2^64",
            head(&format!("{std}Content-Length: 99999999999999999999999\r\n"), &body),
            false,
            Wire::Statuses(&[400]),
        ),
        (
            "body shorter than Content-Length, then EOF",
            head(&format!("{std}Content-Length: 100\r\n"), b"{\"jsonrpc\""),
            true,
            Wire::Refused,
        ),
        (
            "invalid chunk size",
            head(&format!("{std}Transfer-Encoding: chunked\r\n"), b"zz\r\nabc\r\n0\r\n\r\n"),
            true,
            Wire::Refused,
        ),
        (
            "chunk size overflowing 64 bits",
            head(&format!("{std}Transfer-Encoding: chunked\r\n"), b"fffffffffffffffffffff\r\n"),
            true,
            Wire::Refused,
        ),
        ("unknown Transfer-Encoding", head(&format!("{std}Transfer-Encoding: gzip\r\n"), &body), true, Wire::Refused),
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), false, Wire::Statuses(&[400])),
        ("binary garbage", (0u8..=255).cycle().take(4096).collect(), true, Wire::Refused),
        // The listener also speaks cleartext HTTP/2 (prior knowledge): a
        // bare preface gets its SETTINGS frame (no HTTP/1 status line), and
        // the connection ends with the client's.
        ("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), true, Wire::Refused),
        (
            "a 70 KiB path",
            format!("GET /{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            false,
            Wire::Refused,
        ),
        ("a 512 KiB header", post(&format!("X-Big: {}\r\n", "b".repeat(512 * 1024)), &body), false, Wire::Refused),
        ("150 headers", post(&"X-Many: 1\r\n".repeat(150), &body), false, Wire::Refused),
        (
            "unknown HTTP method",
            format!("BREW /mcp HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
            false,
            Wire::Statuses(&[405]),
        ),
        (
            "HTTP/1.0 without Host",
            format!("POST /mcp HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes()
                .into_iter()
                .chain(body.iter().copied())
                .collect(),
            false,
            Wire::Statuses(&[403]),
        ),
        ("Expect: 100-continue", post("Expect: 100-continue\r\n", &body), false, Wire::Statuses(&[200])),
        // An absolute-form target's authority is the host (RFC 9112
        // §3.2.2); a Host beside it must agree, and there is one Host.
        (
            "absolute-form target, the same Host",
            {
                let mut r = post("", &body);
                let at = r.windows(5).position(|w| w == b"/mcp ").unwrap();
                r.splice(at..at, format!("http://{host}").into_bytes());
                r
            },
            false,
            Wire::Statuses(&[200]),
        ),
        (
            "absolute-form target naming another host",
            {
                let mut r = post("", &body);
                let at = r.windows(5).position(|w| w == b"/mcp ").unwrap();
                r.splice(at..at, b"http://evil.example".iter().copied());
                r
            },
            false,
            Wire::Statuses(&[400]),
        ),
        ("two Host headers", post("Host: evil.example\r\n", &body), false, Wire::Statuses(&[400])),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, bytes, eof, want) in cases {
        let answer = match raw_exchange(gw, &bytes, eof).await {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        // 100 Continue is an interim answer, not one of the replies.
        let got: Vec<u16> = statuses(&answer).into_iter().filter(|c| *c != 100).collect();
        let short: String = answer.chars().take(300).collect();
        let ok = match want {
            Wire::Statuses(s) => got == s,
            Wire::Refused => got.len() <= 1 && got.iter().all(|c| (400..500).contains(c)),
        };
        if !ok {
            failures.push(format!("{name}: want {want:?}, got {got:?} {short:?}"));
        }
        still_healthy(gw, keeper, name).await;
    }
    all_passed("wire", &failures);
    n
}

// === headers, sessions and tokens ===

/// A JWT-shaped token with any header and payload and a junk signature
/// (the gateway must refuse it before or at the signature check).
fn forged_jwt(header: &Value, payload: &Value) -> String {
    format!("{}.{}.{}", b64url(header.to_string().as_bytes()), b64url(payload.to_string().as_bytes()), b64url(b"junk"))
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn hostile_headers_sessions_and_tokens() {
    use Expect::*;
    let idp = Fixture::python("jwt_issuer.py", &[]).await;
    let issuer = format!("http://127.0.0.1:{}", idp.port);
    let jwt = format!("[auth.jwt]\nissuer = \"{issuer}\"\njwks_url = \"{issuer}/jwks.json\"\n");
    let mut gw = Gateway::start(&http_config(&keys_with(&jwt))).await;
    gw.authorize(OPS);
    gw.wait_ready("raw").await;
    let mint = |q: String| {
        let url = format!("{issuer}/mint?{q}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let aud = urlencode(RESOURCE);

    let mut keeper = McpHttp::connect_as(&gw.url(), ALICE).await;
    let survivor = in_flight(&keeper, "survivor-headers");
    let sid = keeper.session.clone().unwrap();
    // A session that is ended before it is replayed.
    let ended = McpHttp::connect_as(&gw.url(), ALICE).await;
    let ended_sid = ended.session.clone().unwrap();
    let r = send_raw(
        reqwest::Method::DELETE,
        &gw.url(),
        &vec![header("authorization", format!("Bearer {ALICE}")), header("mcp-session-id", &ended_sid)],
        vec![],
        false,
    )
    .await;
    assert_eq!(r.status, 200, "DELETE: {}", r.body);
    // A JWT session of alice's (the same principal as her API key).
    let bob_jwt = mint(format!("sub=bob&aud={aud}")).await;
    let expired = mint(format!("sub=alice&aud={aud}&exp_in=-120")).await;
    let wrong_aud = mint(format!("sub=alice&aud={}", urlencode("http://other.example/mcp"))).await;
    let wrong_iss = mint(format!("sub=alice&aud={aud}&iss=http://evil.example")).await;
    let rogue = mint(format!("sub=alice&aud={aud}&kid=k1&key=rogue")).await;
    let no_aud = mint("sub=alice".to_owned()).await;

    let auth = |v: &str| header("authorization", v);
    let on = |s: &str| header("mcp-session-id", s);
    let version = header("mcp-protocol-version", "2025-11-25");
    let alice = auth(&format!("Bearer {ALICE}"));
    let needs_session = Error(400, -32600, "Mcp-Session-Id header is required");
    let invalid_session = Error(400, -32600, "Mcp-Session-Id header is invalid");
    let unknown = Error(404, -32600, "Session not found");
    let unauthorized = |says| Error(401, -32600, says);
    let huge_kid = forged_jwt(&json!({"alg":"RS256","kid":"k".repeat(20_000)}), &json!({"sub":"alice"}));

    let mut cases: Vec<(String, Headers, Expect)> = vec![
        // --- sessions ---
        ("no session id".into(), vec![alice.clone()], needs_session.clone()),
        ("garbage session id".into(), vec![alice.clone(), on("not-a-session")], unknown.clone()),
        ("8 KiB session id".into(), vec![alice.clone(), on(&"f".repeat(8192))], unknown.clone()),
        ("session id with spaces".into(), vec![alice.clone(), on("a b c")], invalid_session.clone()),
        ("empty session id".into(), vec![alice.clone(), on("")], invalid_session.clone()),
        ("session id of path traversal".into(), vec![alice.clone(), on("../../../../etc/passwd")], unknown.clone()),
        ("session id with %00".into(), vec![alice.clone(), on("%00%0d%0a")], unknown.clone()),
        ("session id in upper case".into(), vec![alice.clone(), on(&sid.to_uppercase())], unknown.clone()),
        ("session id less its last digit".into(), vec![alice.clone(), on(&sid[..sid.len() - 1])], unknown.clone()),
        ("session id twice".into(), vec![alice.clone(), on(&format!("{sid}{sid}"))], unknown.clone()),
        // Not visible ASCII, so no session id at all.
        (
            "session id with non-ASCII bytes".into(),
            vec![alice.clone(), header("mcp-session-id", b"\xe2\x98\x83snow")],
            invalid_session.clone(),
        ),
        ("replayed session after DELETE".into(), vec![alice.clone(), on(&ended_sid)], unknown.clone()),
        (
            "another principal's session (API key)".into(),
            vec![auth(&format!("Bearer {BOB}")), on(&sid)],
            unknown.clone(),
        ),
        (
            "another principal's session (JWT)".into(),
            vec![auth(&format!("Bearer {bob_jwt}")), on(&sid)],
            unknown.clone(),
        ),
        // Duplicated: refused, whichever copy is real (a proxy in front may
        // read the other one; design.md D12).
        (
            "two session ids, the real one first".into(),
            vec![alice.clone(), on(&sid), on("garbage")],
            Error(400, -32600, "the mcp-session-id header occurs more than once"),
        ),
        (
            "two session ids, the real one second".into(),
            vec![alice.clone(), on("garbage"), on(&sid)],
            Error(400, -32600, "the mcp-session-id header occurs more than once"),
        ),
        (
            "two protocol versions".into(),
            vec![
                alice.clone(),
                on(&sid),
                header("mcp-protocol-version", "2025-11-25"),
                header("mcp-protocol-version", "2025-06-18"),
            ],
            Error(400, -32600, "the mcp-protocol-version header occurs more than once"),
        ),
        (
            "two X-API-Keys".into(),
            vec![header("x-api-key", ALICE), header("x-api-key", BOB), on(&sid)],
            Error(400, -32600, "the x-api-key header occurs more than once"),
        ),
        (
            "unsupported protocol version".into(),
            vec![alice.clone(), on(&sid), header("mcp-protocol-version", "1999-01-01")],
            Error(400, -32022, "Unsupported protocol version"),
        ),
        (
            "8 KiB protocol version".into(),
            vec![alice.clone(), on(&sid), header("mcp-protocol-version", "9".repeat(8192))],
            Error(400, -32022, "Unsupported"),
        ),
        (
            "protocol version with non-ASCII bytes".into(),
            vec![alice.clone(), on(&sid), header("mcp-protocol-version", b"2025-11-25\xff")],
            Error(400, -32022, "Unsupported"),
        ),
        // --- credentials ---
        ("no credentials".into(), vec![on(&sid)], unauthorized("authentication required")),
        ("Bearer with no token".into(), vec![auth("Bearer"), on(&sid)], unauthorized("authentication required")),
        ("Bearer and spaces".into(), vec![auth("Bearer    "), on(&sid)], unauthorized("authentication required")),
        ("empty Authorization".into(), vec![auth(""), on(&sid)], unauthorized("authentication required")),
        ("lower-case bearer".into(), vec![auth(&format!("bearer {ALICE}")), on(&sid)], Result),
        ("upper-case BEARER".into(), vec![auth(&format!("BEARER {ALICE}")), on(&sid)], Result),
        ("two spaces after Bearer".into(), vec![auth(&format!("Bearer  {ALICE}")), on(&sid)], Result),
        (
            "Basic credentials".into(),
            vec![auth("Basic YWxpY2U6c2VjcmV0"), on(&sid)],
            unauthorized("authentication required"),
        ),
        ("a key without a scheme".into(), vec![auth(ALICE), on(&sid)], unauthorized("authentication required")),
        (
            "the key and trailing junk".into(),
            vec![auth(&format!("Bearer {ALICE} junk")), on(&sid)],
            unauthorized("unknown API key"),
        ),
        (
            "a key with a NUL-like escape".into(),
            vec![auth(&format!("Bearer {ALICE}%00")), on(&sid)],
            unauthorized("unknown API key"),
        ),
        (
            "Authorization with non-ASCII bytes".into(),
            vec![header("authorization", b"Bearer \xff\xfe"), on(&sid)],
            unauthorized("authentication required"),
        ),
        (
            "a 60 KiB bearer token".into(),
            vec![auth(&format!("Bearer {}", "t".repeat(60_000))), on(&sid)],
            unauthorized("unknown API key"),
        ),
        // Two Authorization headers: refused before either is read.
        (
            "two Authorizations, a wrong one first".into(),
            vec![auth("Bearer wrong-key"), alice.clone(), on(&sid)],
            Error(400, -32600, "the authorization header occurs more than once"),
        ),
        (
            "two Authorizations, the right one first".into(),
            vec![alice.clone(), auth("Bearer wrong-key"), on(&sid)],
            Error(400, -32600, "the authorization header occurs more than once"),
        ),
        ("X-API-Key".into(), vec![header("x-api-key", ALICE), on(&sid)], Result),
        ("empty X-API-Key".into(), vec![header("x-api-key", ""), on(&sid)], unauthorized("authentication required")),
        (
            "X-API-Key with non-UTF-8 bytes".into(),
            vec![header("x-api-key", b"\xff\xfe\xfd"), on(&sid)],
            unauthorized("unknown API key"),
        ),
        // Two credentials: which one a proxy checked cannot be told.
        (
            "a wrong bearer and a right X-API-Key".into(),
            vec![auth("Bearer wrong-key"), header("x-api-key", ALICE), on(&sid)],
            unauthorized("two credentials"),
        ),
        (
            "a right bearer and a wrong X-API-Key".into(),
            vec![alice.clone(), header("x-api-key", "wrong"), on(&sid)],
            unauthorized("two credentials"),
        ),
        // --- JWTs ---
        ("expired JWT".into(), vec![auth(&format!("Bearer {expired}")), on(&sid)], unauthorized("token expired")),
        (
            "JWT for another audience".into(),
            vec![auth(&format!("Bearer {wrong_aud}")), on(&sid)],
            unauthorized("audience"),
        ),
        ("JWT without an audience".into(), vec![auth(&format!("Bearer {no_aud}")), on(&sid)], unauthorized("audience")),
        (
            "JWT from another issuer".into(),
            vec![auth(&format!("Bearer {wrong_iss}")), on(&sid)],
            unauthorized("issuer"),
        ),
        (
            "JWT signed by a rogue key".into(),
            vec![auth(&format!("Bearer {rogue}")), on(&sid)],
            unauthorized("invalid token"),
        ),
        ("JWT-shaped garbage a.b.c".into(), vec![auth("Bearer a.b.c"), on(&sid)], unauthorized("invalid token")),
        ("three empty JWT parts".into(), vec![auth("Bearer .."), on(&sid)], unauthorized("invalid token")),
        (
            "JWT with a 20 000-character kid".into(),
            vec![auth(&format!("Bearer {huge_kid}")), on(&sid)],
            unauthorized("invalid token"),
        ),
        (
            "JWT with alg none".into(),
            vec![
                auth(&format!("Bearer {}", forged_jwt(&json!({"alg":"none"}), &json!({"sub":"alice","aud":RESOURCE})))),
                on(&sid),
            ],
            unauthorized("invalid token"),
        ),
        (
            "JWT header that is not JSON".into(),
            vec![auth(&format!("Bearer {}.{}.x", b64url(b"{\"alg\":"), b64url(b"{}"))), on(&sid)],
            unauthorized("invalid token"),
        ),
        // --- other headers ---
        ("a 100 KiB header".into(), vec![alice.clone(), on(&sid), header("x-junk", "j".repeat(100_000))], Result),
        (
            "90 extra headers".into(),
            std::iter::once(alice.clone())
                .chain(std::iter::once(on(&sid)))
                .chain((0..90).map(|i| header(&format!("x-h{i}"), "v")))
                .collect(),
            Result,
        ),
        (
            "a header with non-ASCII bytes".into(),
            vec![alice.clone(), on(&sid), header("x-note", b"caf\xc3\xa9 \xff")],
            Result,
        ),
        ("a garbage traceparent".into(), vec![alice.clone(), on(&sid), header("traceparent", "00-zz-zz-zz")], Result),
        (
            "an 8 KiB traceparent".into(),
            vec![
                alice.clone(),
                on(&sid),
                header("traceparent", format!("00-{}-{}-01", "a".repeat(4096), "b".repeat(4000))),
            ],
            Result,
        ),
        (
            "Origin null".into(),
            vec![alice.clone(), on(&sid), header("origin", "null")],
            Error(403, -32600, "Origin not allowed"),
        ),
        (
            "Origin with non-ASCII bytes".into(),
            vec![alice.clone(), on(&sid), header("origin", b"http://localhost\xff")],
            Error(403, -32600, "Origin not allowed"),
        ),
        (
            "Host with a userinfo trick".into(),
            vec![alice.clone(), on(&sid), header("host", "localhost@evil.example")],
            Error(403, -32600, "Host not allowed"),
        ),
    ];
    // Tokens with a new random kid each: refused, and the JWKS is not
    // fetched again for every one of them (refetches are rate-limited).
    for i in 0..20 {
        let t = forged_jwt(&json!({"alg":"RS256","kid":format!("kid-{i}")}), &json!({"sub":"alice","aud":RESOURCE}));
        cases.push((
            format!("JWT with unknown kid #{i}"),
            vec![auth(&format!("Bearer {t}")), on(&sid)],
            unauthorized("invalid token"),
        ));
    }

    let body = msg("\"h\"", "tools/call", r#"{"name":"raw__echo","arguments":{"h":1}}"#);
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, headers, want) in &cases {
        let mut all = headers.clone();
        all.push(version.clone());
        // Some cases bring their own version header; the first one counts.
        if headers.iter().any(|(k, _)| k == "mcp-protocol-version") {
            all.pop();
        }
        all.push(header("content-type", "application/json"));
        all.push(header("accept", "application/json, text/event-stream"));
        let r = send_raw(reqwest::Method::POST, &gw.url(), &all, body.clone(), false).await;
        let mut v = verdict(&r, want);
        if v.is_ok() && matches!(want, Error(401, ..)) && r.headers.get("www-authenticate").is_none() {
            v = Err("no WWW-Authenticate challenge".into());
        }
        if v.is_ok() && matches!(want, Result) && body_json(name, &r)["result"]["args"] != json!({"h":1}) {
            v = Err(format!("not the echo: {}", r.body));
        }
        if let Err(e) = v {
            failures.push(format!("{name}: {e}"));
        }
        still_healthy(&gw, &mut keeper, name).await;
    }
    all_passed("header", &failures);
    assert!(n > 70, "{n} cases");
    eprintln!("hostile: {n} header, session and token cases passed");

    // The ended session stays ended, for DELETE too; GET on it is refused.
    let r = send_raw(reqwest::Method::DELETE, &gw.url(), &vec![alice.clone(), on(&ended_sid)], vec![], false).await;
    assert_eq!(r.status, 404, "DELETE again: {}", r.body);
    let r = send_raw(
        reqwest::Method::GET,
        &gw.url(),
        &vec![alice.clone(), on(&ended_sid), header("accept", "text/event-stream")],
        vec![],
        false,
    )
    .await;
    check("GET on an ended session", &r, &Error(404, -32600, "Session not found"));
    // GET gets a stream only for a client that names text/event-stream.
    for accept in [&b"*/*"[..], b"text/*", b"text/event-stream;q=0", b"text/event-streamx", b"application/json"] {
        let name = format!("GET with Accept {}", String::from_utf8_lossy(accept));
        let r = send_raw(
            reqwest::Method::GET,
            &gw.url(),
            &vec![alice.clone(), on(&sid), version.clone(), header("accept", accept)],
            vec![],
            false,
        )
        .await;
        check(&name, &r, &Error(406, -32600, "Accept must include text/event-stream"));
    }
    let listener = McpHttp::connect_as(&gw.url(), ALICE).await;
    let r = tokio::time::timeout(
        PATIENCE,
        listener
            .http
            .get(&listener.url)
            .header("mcp-session-id", listener.session.as_deref().unwrap())
            .header("accept", "Text/Event-Stream; q=0.5")
            .send(),
    )
    .await
    .expect("an answer in time")
    .unwrap();
    assert_eq!(r.status(), 200, "GET with Accept Text/Event-Stream; q=0.5");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    drop(r);
    // Resuming a request stream that never existed ends at once.
    let r = send_raw(
        reqwest::Method::GET,
        &gw.url(),
        &vec![alice.clone(), on(&sid), header("accept", "text/event-stream"), header("last-event-id", "987654-1")],
        vec![],
        false,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, ""), "resuming an unknown stream");
    let stats = idp.get("/control/stats").await;
    assert!(stats["jwks_fetches"].as_u64().unwrap() <= 3, "the JWKS was fetched per hostile token: {stats}");

    let r = survivor.await.unwrap();
    assert_eq!(text(&r), "survivor-headers", "the call in flight during the barrage: {r}");
    still_healthy(&gw, &mut keeper, "the end").await;
    let logs = gw.proc.logs();
    assert!(!logs.contains(ALICE) && !logs.contains(&expired), "a credential reached the log");
    stops_cleanly(gw).await;
}

// === stdio ===

struct Stdio {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: BufReader<tokio::process::ChildStdout>,
    stderr: Arc<Mutex<String>>,
    /// The text of the last message [`Stdio::next`] returned.
    last: String,
    /// The reply to the call left in flight during the barrage, once seen.
    survivor: Option<Value>,
    _dir: tempfile::TempDir,
}

impl Stdio {
    fn start(toml: &str) -> Stdio {
        let (dir, path) = write_config(toml);
        let mut child = tokio::process::Command::new(gateway_bin())
            .arg("stdio")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        Stdio { child, stdin, out, stderr, last: String::new(), survivor: None, _dir: dir }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next message that is not a notification from the gateway.
    async fn next(&mut self, after: &str) -> Value {
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(PATIENCE, self.out.read_until(b'\n', &mut line))
                .await
                .unwrap_or_else(|_| panic!("{after}: no message in time"))
                .unwrap();
            assert!(n > 0, "{after}: stdout closed\n{}", self.stderr.lock().unwrap());
            let text = std::str::from_utf8(&line).unwrap_or_else(|e| panic!("{after}: stdout is not UTF-8: {e}"));
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{after}: not JSON ({e}): {text}"));
            if v["id"] == STDIO_SURVIVOR {
                assert!(self.survivor.replace(v).is_none(), "two replies to the call in flight");
                continue;
            }
            if v.get("id").is_some() {
                self.last = text.trim_end().to_owned();
                return v;
            }
        }
    }

    /// A ping that must be the very next thing answered.
    async fn ping_answered(&mut self, tag: &str) {
        self.write(&cat(&[&ping(&json!(tag).to_string()), b"\n"])).await;
        let r = self.next(tag).await;
        assert_eq!(r, json!({"jsonrpc":"2.0","id":tag,"result":{}}), "after {tag}: something else came first");
    }
}

/// The id of the stdio call left in flight during the barrage.
const STDIO_SURVIVOR: &str = "survivor-stdio";

#[derive(Debug)]
enum Line {
    /// A JSON-RPC error with this code, this id and a message saying this.
    Error(i64, Value, &'static str),
    /// No answer at all (skipped or a notification).
    Nothing,
    /// An answer with this id and a result.
    Reply(Value),
    /// An answer with a result, starting with this text (for an id that
    /// only its text shows exactly).
    ReplyText(&'static str),
}

#[tokio::test]
async fn hostile_stdio_lines_keep_the_session() {
    let max = 4096;
    let mut gw = Stdio::start(&format!("[gateway]\nmax_message_bytes = {max}\n{}", raw_stdio("raw", "")));
    // Before initialize: answered, not fatal.
    gw.write(b"{\"jsonrpc\":\"2.0\",\"id\":\"early\",\"method\":\"ping\"}\n").await;
    assert_eq!(gw.next("early ping").await["id"], "early");
    gw.write(b"{oops before initialize\n").await;
    assert_eq!(gw.next("early garbage").await["error"]["code"], -32700);
    gw.write(&cat(&[
        &msg(
            "0",
            "initialize",
            r#"{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}"#,
        ),
        b"\n",
    ]))
    .await;
    assert_eq!(gw.next("initialize").await["result"]["serverInfo"]["name"], "mcp-gateway");
    gw.write(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n").await;
    // The upstream is up before the barrage, so every echo below is real.
    for i in 0.. {
        gw.write(&cat(&[
            &msg(&format!("\"warm-{i}\""), "tools/call", r#"{"name":"raw__echo","arguments":{}}"#),
            b"\n",
        ]))
        .await;
        let r = gw.next("warm-up").await;
        if r.get("result").is_some() {
            break;
        }
        assert!(i < 600, "raw__echo never became callable: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A call that runs while the barrage goes on; its reply may come
    // between any two others and is set aside by `next`.
    let call = json!({"jsonrpc":"2.0","id":STDIO_SURVIVOR,"method":"tools/call",
        "params":{"name":"raw__sleep","arguments":{"ms":2500,"tag":STDIO_SURVIVOR}}});
    gw.write(format!("{call}\n").as_bytes()).await;

    let parse = |says| Line::Error(-32700, Value::Null, says);
    let invalid = |id: Value, says| Line::Error(-32600, id, says);
    let cases: Vec<(&str, Vec<u8>, Line)> = vec![
        ("malformed JSON", b"{oops\n".to_vec(), parse("Parse error")),
        ("truncated JSON", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"meth\n".to_vec(), parse("EOF")),
        ("invalid UTF-8 bytes", b"\xff\xfe\xfd\n".to_vec(), parse("invalid UTF-8 at byte 0")),
        (
            "invalid UTF-8 in the method",
            cat(&[br#"{"jsonrpc":"2.0","id":1,"method":"p"#, b"\xc3\x28", b"\"}\n"]),
            parse("invalid UTF-8"),
        ),
        (
            "invalid UTF-8 in an unknown member",
            cat(&[br#"{"jsonrpc":"2.0","id":"u8","method":"ping","x":""#, b"\xff", b"\"}\n"]),
            parse("invalid UTF-8"),
        ),
        ("UTF-8 byte order mark", cat(&[b"\xef\xbb\xbf", &ping("1"), b"\n"]), parse("Parse error")),
        ("raw NUL bytes", b"\0\0\0\n".to_vec(), parse("Parse error")),
        (
            "raw NUL inside a string",
            cat(&[br#"{"jsonrpc":"2.0","id":1,"method":"pi"#, b"\0", b"ng\"}\n"]),
            parse("control character"),
        ),
        ("empty line", b"\n".to_vec(), Line::Nothing),
        ("whitespace-only line", b"  \t   \n".to_vec(), Line::Nothing),
        ("CR-only line", b"\r\n".to_vec(), Line::Nothing),
        ("many empty lines", b"\n".repeat(10_000), Line::Nothing),
        ("form feed line", b"\x0c \x0c\n".to_vec(), Line::Nothing),
        ("vertical tab line", b"\x0b\n".to_vec(), parse("Parse error")),
        ("CRLF-terminated request", cat(&[&ping("\"crlf\""), b"\r\n"]), Line::Reply(json!("crlf"))),
        ("two requests on one line", cat(&[&ping("1"), &ping("2"), b"\n"]), parse("trailing characters")),
        ("JSON-RPC batch", cat(&[b"[", &ping("1"), b"]\n"]), invalid(Value::Null, "batches are not supported")),
        ("number at top level", b"42\n".to_vec(), invalid(Value::Null, "not a JSON-RPC message object")),
        ("null at top level", b"null\n".to_vec(), invalid(Value::Null, "not a JSON-RPC message object")),
        (
            "jsonrpc 1.0 keeps its id",
            br#"{"jsonrpc":"1.0","id":"v1","method":"ping"}"#.iter().chain(b"\n").copied().collect(),
            invalid(json!("v1"), "jsonrpc must be"),
        ),
        (
            "id is an object",
            b"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}\n".to_vec(),
            invalid(Value::Null, "id must be"),
        ),
        (
            "method is a number",
            b"{\"jsonrpc\":\"2.0\",\"id\":\"mn\",\"method\":7}\n".to_vec(),
            invalid(Value::Null, "not a JSON-RPC"),
        ),
        (
            "deep nesting, closed",
            format!("{}{}\n", "[".repeat(2000), "]".repeat(2000)).into_bytes(),
            invalid(Value::Null, "batches"),
        ),
        ("deep nesting, unclosed", format!("{}\n", "[".repeat(4000)).into_bytes(), parse("EOF")),
        (
            "deep nesting in ping params",
            format!(
                r#"{{"jsonrpc":"2.0","id":"dp","method":"ping","params":{}1{}}}"#,
                r#"{"a":"#.repeat(600),
                "}".repeat(600)
            )
            .into_bytes()
            .into_iter()
            .chain(*b"\n")
            .collect(),
            invalid(json!("dp"), "nesting deeper than the limit at params.a.a.a"),
        ),
        (
            "deep nesting over the limit",
            format!("{}\n", "[".repeat(100_000)).into_bytes(),
            invalid(Value::Null, "exceeds 4096 bytes"),
        ),
        (
            "over the limit, its id in the head",
            format!(r#"{{"jsonrpc":"2.0","id":77,"method":"ping","params":{{"pad":"{}"}}}}"#, "z".repeat(10_000))
                .into_bytes()
                .into_iter()
                .chain(*b"\n")
                .collect(),
            invalid(json!(77), "exceeds 4096 bytes"),
        ),
        (
            "over the limit, a value \"id\" before the id",
            format!(r#"{{"jsonrpc":"2.0","method":"id","id":78,"params":{{"pad":"{}"}}}}"#, "z".repeat(10_000))
                .into_bytes()
                .into_iter()
                .chain(*b"\n")
                .collect(),
            invalid(json!(78), "exceeds 4096 bytes"),
        ),
        (
            "over the limit, the id's name escaped",
            format!(r#"{{"jsonrpc":"2.0","\u0069d":"esc","params":{{"pad":"{}"}}}}"#, "z".repeat(10_000))
                .into_bytes()
                .into_iter()
                .chain(*b"\n")
                .collect(),
            invalid(json!("esc"), "exceeds 4096 bytes"),
        ),
        ("a 16 MiB line", [vec![b'x'; 16 << 20], b"\n".to_vec()].concat(), invalid(Value::Null, "exceeds 4096 bytes")),
        (
            "a 16 MiB line of newlines-free JSON",
            [b"{\"a\":\"".to_vec(), vec![b'y'; 16 << 20], b"\"}\n".to_vec()].concat(),
            invalid(Value::Null, "exceeds"),
        ),
        (
            "huge method name",
            cat(&[&msg("\"hm\"", &"m".repeat(3000), "{}"), b"\n"]),
            Line::Error(-32601, json!("hm"), "Method not found: mmm"),
        ),
        (
            "a 40-digit integer id",
            cat(&[&ping("1234567890123456789012345678901234567890"), b"\n"]),
            invalid(Value::Null, "id must be a string or an integer"),
        ),
        (
            "the largest 64-bit id",
            cat(&[&ping("18446744073709551615"), b"\n"]),
            Line::ReplyText(r#"{"jsonrpc":"2.0","id":18446744073709551615,"result""#),
        ),
        (
            "a response nobody waits for",
            b"{\"jsonrpc\":\"2.0\",\"id\":\"nobody\",\"result\":{}}\n".to_vec(),
            Line::Nothing,
        ),
        (
            "an unknown notification",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/hostile\"}\n".to_vec(),
            Line::Nothing,
        ),
        (
            "cancelling with garbage",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":[1]}\n".to_vec(),
            Line::Nothing,
        ),
        (
            "tools/call params is an array",
            cat(&[&msg("\"pa\"", "tools/call", "[1]"), b"\n"]),
            Line::Error(-32602, json!("pa"), "must be an object"),
        ),
    ];
    let n = cases.len();
    for (name, bytes, want) in cases {
        gw.write(&bytes).await;
        match want {
            Line::Nothing => {}
            Line::Error(code, id, says) => {
                let r = gw.next(name).await;
                assert_eq!((&r["error"]["code"], &r["id"]), (&json!(code), &id), "{name}: {r}");
                let m = r["error"]["message"].as_str().unwrap_or_default();
                assert!(m.contains(says), "{name}: {m:?} should say {says:?}");
                assert!(m.chars().count() <= ECHOED, "{name}: a message of {} characters", m.chars().count());
            }
            Line::Reply(id) => {
                let r = gw.next(name).await;
                assert_eq!(r["id"], id, "{name}: {r}");
                assert!(r.get("result").is_some(), "{name}: {r}");
            }
            Line::ReplyText(head) => {
                let r = gw.next(name).await;
                assert!(gw.last.starts_with(head) && r.get("result").is_some(), "{name}: {}", gw.last);
            }
        }
        gw.ping_answered(&format!("after {name}")).await;
        let id = format!("echo after {name}");
        gw.write(&cat(&[
            &msg(
                &json!(id).to_string(),
                "tools/call",
                &json!({"name":"raw__echo","arguments":{"after":name}}).to_string(),
            ),
            b"\n",
        ]))
        .await;
        let r = gw.next(name).await;
        assert_eq!((&r["id"], &r["result"]["args"]), (&json!(id), &json!({"after":name})), "{name}: {r}");
    }
    assert!(n >= 30, "{n} cases");
    eprintln!("hostile: {n} stdio cases passed");

    // The call in flight got its own reply (waiting for it if the barrage
    // was quicker).
    while gw.survivor.is_none() {
        gw.ping_answered("waiting for the call in flight").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = gw.survivor.take().unwrap();
    assert_eq!(text(&r), STDIO_SURVIVOR, "the call in flight during the barrage: {r}");

    // Then the client closes stdin and waits for the exit (lifecycle.mdx):
    // every request read before EOF is answered first, a call that takes a
    // second included, and the last line even without its newline.
    let mut last = Vec::new();
    let mut want: Vec<(Value, bool)> = Vec::new();
    for i in 0..20 {
        let id = json!(format!("eof-{i}"));
        last.extend(cat(&[&ping(&id.to_string()), b"\n"]));
        want.push((id, true));
    }
    let sleep = json!({"jsonrpc":"2.0","id":"eof-sleep","method":"tools/call",
        "params":{"name":"raw__sleep","arguments":{"ms":1000,"tag":"eof-sleep"}}});
    let echo = json!({"jsonrpc":"2.0","id":"eof-echo","method":"tools/call",
        "params":{"name":"raw__echo","arguments":{"eof":true}}});
    last.extend(format!("{sleep}\n{echo}\n").into_bytes());
    last.extend(br#"{"jsonrpc":"1.0","id":"eof-bad","method":"ping"}"#.iter().chain(b"\n"));
    last.extend(ping("\"eof-last\""));
    want.extend([(json!("eof-sleep"), true), (json!("eof-echo"), true), (json!("eof-bad"), false)]);
    want.push((json!("eof-last"), true));
    gw.write(&last).await;
    let Stdio { mut child, stdin, mut out, stderr, .. } = gw;
    drop(stdin);
    let mut rest = String::new();
    tokio::time::timeout(PATIENCE, out.read_to_string(&mut rest)).await.expect("stdout ends").unwrap();
    let replies: Vec<Value> =
        rest.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &Value| v.get("id").is_some()).collect();
    for (id, ok) in &want {
        let got: Vec<&Value> = replies.iter().filter(|r| r["id"] == *id).collect();
        assert_eq!(got.len(), 1, "one reply to {id} after EOF; got {got:?}\n{rest}");
        match ok {
            true => assert!(got[0].get("result").is_some(), "{id}: {}", got[0]),
            false => assert_eq!(got[0]["error"]["code"], -32600, "{id}: {}", got[0]),
        }
    }
    assert_eq!(replies.len(), want.len(), "{rest}");
    let r = replies.iter().find(|r| r["id"] == "eof-sleep").unwrap();
    assert_eq!(text(r), "eof-sleep", "{r}");
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("exits").unwrap();
    let logs = stderr.lock().unwrap().clone();
    assert!(status.success(), "{status}\n{logs}");
    assert!(!logs.contains("panicked"), "the gateway panicked:\n{logs}");
}
