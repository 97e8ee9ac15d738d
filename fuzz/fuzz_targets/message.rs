//! Fuzzes the JSON-RPC envelope parser and the framing helpers of
//! `mcp_gateway::protocol` with arbitrary bytes. See ../README.md for what
//! each check means and how to run it.
//!
//! Every check below is an invariant the gateway relies on; any panic
//! (ours or the library's) is a finding. Two of them were once off by
//! default (`MCP_FUZZ_STRICT`) because they described reported defects;
//! both are fixed and the checks always run:
//! - accepted input is UTF-8 (`Message::parse` checks the whole message,
//!   members it does not name included);
//! - `framing::id_in_head` finds the id `Message::parse` reads (when that
//!   id has no escapes), whatever comes before it.

#![no_main]

use std::future::Future;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use mcp_gateway::protocol::framing::{self, Line};
use mcp_gateway::protocol::{CheckedBox, Limits, Message, MessageKind, ParseError, RawValue, encode};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    message(data);
    if let Ok(text) = std::str::from_utf8(data) {
        members(text);
        one_line(text);
        error_encoding(text);
    }
    id_in_head(data);
    read_line(data);
});

/// `text` is one JSON value (any depth: this never recurses).
fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// `Message::parse`: no panic; an error answers with a valid JSON-RPC
/// error; an accepted message is classified consistently, its id is a
/// string or an integer, and re-encoding it gives back the same message.
fn parse(data: &[u8]) -> Result<Message, ParseError> {
    Message::parse(data, &Limits::default())
}

fn message(data: &[u8]) {
    let m = match parse(data) {
        Ok(m) => m,
        Err(e) => return parse_error(&e),
    };
    assert!(std::str::from_utf8(data).is_ok(), "accepted input that is not UTF-8");
    let kind = m.kind().expect("parse only accepts what kind() accepts");
    let has = (m.method.is_some(), m.id.is_some(), m.result().is_some(), m.error().is_some());
    match kind {
        MessageKind::Request => assert_eq!(has, (true, true, false, false)),
        MessageKind::Notification => assert_eq!(has, (true, false, false, false)),
        MessageKind::Response => {
            assert!(!has.0 && has.1 && (has.2 != has.3), "{has:?}");
        }
    }
    if let Some(id) = &m.id {
        let t = id.get();
        // A string (escapes kept as sent) or an integer of at most 64
        // bits; never null, a fraction or an exponent.
        assert!(is_json(t), "id {t}");
        if !t.starts_with('"') {
            assert!(t.bytes().all(|b| b == b'-' || b.is_ascii_digit()), "id {t} is not an integer");
            assert!(t.parse::<i64>().is_ok() || t.parse::<u64>().is_ok(), "id {t} is over 64 bits");
        }
        if !t.contains('\\') {
            assert_eq!(framing::id_in_head(data), Some(t), "id_in_head misses the id");
        }
    }
    for raw in [m.params(), m.result(), m.error()].into_iter().flatten() {
        assert!(is_json(raw.text()), "a raw member is not JSON: {raw}");
    }
    // Re-encoding what was accepted gives back the same message.
    let again = match kind {
        MessageKind::Request => encode::request(7, m.method(), m.params().map(|p| p.raw())),
        MessageKind::Notification => encode::notification(m.method(), m.params().map(|p| p.raw())),
        MessageKind::Response => match (m.result_raw(), m.error()) {
            (Some(r), _) => encode::result(m.id.as_deref().unwrap(), r),
            (_, Some(e)) => encode::raw_error(m.id.as_deref().unwrap(), e.raw()),
            _ => unreachable!(),
        },
    };
    let n = parse(again.as_bytes()).unwrap_or_else(|e| panic!("re-encoded message refused ({e}): {again}"));
    assert_eq!(n.kind().unwrap(), kind);
    assert_eq!(n.method, m.method);
    // A response's `params` (JSON-RPC has none) is accepted and ignored,
    // so it is not written back.
    let text = |c: Option<mcp_gateway::protocol::Checked<'_>>| c.map(|c| c.text().to_owned());
    if kind != MessageKind::Response {
        assert_eq!(text(n.params()), text(m.params()));
    }
    assert_eq!(text(n.result()), text(m.result()));
    assert_eq!(text(n.error()), text(m.error()));
    if kind != MessageKind::Request {
        assert_eq!(raw(&n.id), raw(&m.id));
    }
    // What a proxy writes on a stdio line or an SSE `data:` field.
    let flat = framing::one_line(again);
    assert!(!flat.contains(['\n', '\r']));
    assert!(parse(flat.as_bytes()).is_ok(), "{flat}");
    // The gateway's own error reply for this id.
    if let Some(id) = m.id.as_deref() {
        let e = encode::error(Some(id), -32603, "x", None);
        let back = parse(e.as_bytes()).unwrap_or_else(|err| panic!("{err}: {e}"));
        assert_eq!(back.kind().unwrap(), MessageKind::Response);
        assert_eq!(raw(&back.id), Some(id.get()));
    }
}

fn raw(v: &Option<Box<RawValue>>) -> Option<&str> {
    v.as_deref().map(RawValue::get)
}

/// An error is -32700 or -32600 and its response is a JSON-RPC error
/// object with that code and the id it names (or null).
fn parse_error(e: &ParseError) {
    let code = e.code();
    assert!(code == -32700 || code == -32600, "{code}");
    if matches!(e, ParseError::Json(_) | ParseError::Utf8(_)) {
        assert_eq!(code, -32700);
        assert!(e.id().is_none());
    }
    let resp = e.to_response();
    let v: Value =
        serde_json::from_str(&resp).unwrap_or_else(|err| panic!("error response is not JSON ({err}): {resp}"));
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["error"]["code"], code);
    assert!(v["error"]["message"].is_string());
    match e.id() {
        Some(id) => assert_eq!(v["id"], serde_json::from_str::<Value>(id.get()).unwrap()),
        None => assert!(v["id"].is_null()),
    }
    // And it is itself a message the gateway accepts, as a response.
    let m = parse(resp.as_bytes());
    match e.id() {
        Some(_) => assert_eq!(m.unwrap().kind().unwrap(), MessageKind::Response),
        // An id-less error response is refused ("id" null): never a panic.
        None => assert!(m.is_err()),
    }
}

/// `Members` (over a text the scan accepted): what it reads it writes back
/// as an object that parses to the same members; get/set/remove behave.
fn members(text: &str) {
    let Some(checked) = CheckedBox::parse(text, &Limits::default()) else { return };
    let Some(mut o) = checked.checked().object() else { return };
    let out = o.to_raw();
    assert!(is_json(out.get()));
    let again = CheckedBox::parse(out.get(), &Limits::default()).expect("to_raw() of checked members is checked");
    assert_eq!(again.checked().object().expect("an object").to_raw().get(), out.get(), "to_raw() is not stable");
    if let Some(v) = o.get("name") {
        let decoded = serde_json::from_str::<String>(v.text()).ok();
        assert_eq!(o.str("name"), decoded);
    }
    o.set_str("name", "fuzz\u{0}\"\\é");
    assert_eq!(o.str("name").as_deref(), Some("fuzz\u{0}\"\\é"));
    let set = o.to_checked();
    assert_eq!(set.checked().object().unwrap().str("name").as_deref(), Some("fuzz\u{0}\"\\é"));
    o.remove("name");
    assert!(o.get("name").is_none());
}

/// `one_line`: no CR or LF left, same length, same JSON meaning.
fn one_line(text: &str) {
    let flat = framing::one_line(text.to_owned());
    assert_eq!(flat.len(), text.len());
    assert!(!flat.contains(['\n', '\r']));
    if let Ok(a) = serde_json::from_str::<Value>(text) {
        let b: Value = serde_json::from_str(&flat).expect("one_line broke valid JSON");
        assert_eq!(a, b);
    }
}

/// `encode::error` with any message: valid JSON, the message intact.
fn error_encoding(text: &str) {
    let e = encode::error(None, -32000, text, Some(&Value::String(text.to_owned())));
    let v: Value = serde_json::from_str(&e).expect("encode::error is JSON");
    assert_eq!(v["error"]["message"], text);
    assert_eq!(v["error"]["data"], text);
}

/// `id_in_head`: no panic; what it returns is a piece of the input that is
/// a plain string or a run of digits and minus signs.
fn id_in_head(data: &[u8]) {
    let Some(id) = framing::id_in_head(data) else { return };
    assert!(!id.is_empty());
    let at = data.windows(id.len()).position(|w| w == id.as_bytes());
    assert!(at.is_some(), "{id} is not in the input");
    if id.starts_with('"') {
        assert!(id.len() >= 2 && id.ends_with('"') && !id[1..id.len() - 1].contains(['"', '\\']), "{id}");
    } else {
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_digit()), "{id}");
    }
}

/// `read_line` against a model: split on LF; a line of at most `max`
/// bytes comes whole (one trailing CR dropped, except on a last line
/// without LF), a longer one as `TooLong` with its first
/// `min(HEAD, max)` bytes; whatever the read sizes are.
fn read_line(data: &[u8]) {
    let (Some(&a), Some(&b)) = (data.first(), data.get(1)) else { return };
    let max = 1 + usize::from(a) * 3; // 1..=766, around HEAD (256)
    let capacity = 1 + usize::from(b % 64);
    let input = &data[2..];

    let mut expected = Vec::new();
    let mut parts: Vec<&[u8]> = input.split(|&c| c == b'\n').collect();
    let last = parts.pop().expect("split yields at least one part");
    for p in parts {
        expected.push(if p.len() > max {
            (Line::TooLong, p[..framing::HEAD.min(max)].to_vec())
        } else {
            (Line::Ok, p.strip_suffix(b"\r").unwrap_or(p).to_vec())
        });
    }
    if !last.is_empty() {
        expected.push(if last.len() > max {
            (Line::TooLong, last[..framing::HEAD.min(max)].to_vec())
        } else {
            (Line::Ok, last.to_vec())
        });
    }

    let mut reader = tokio::io::BufReader::with_capacity(capacity, input);
    let mut buf = Vec::new();
    let mut got = Vec::new();
    loop {
        let line = now(framing::read_line(&mut reader, &mut buf, max)).expect("reading a slice cannot fail");
        if line == Line::Eof {
            break;
        }
        got.push((line, buf.clone()));
        assert!(got.len() <= expected.len(), "more lines than the input has");
    }
    assert_eq!(got, expected);
}

/// Polls a future that never waits (it reads from memory) to completion.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("reading from memory waited"),
    }
}
