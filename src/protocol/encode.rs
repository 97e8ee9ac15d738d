//! Writers for the messages the gateway produces. Raw parts are spliced in
//! as they are; only the gateway's own strings are escaped.

use super::RawValue;

/// `{"jsonrpc":"2.0","id":<id>,"result":<result>}`.
pub fn result(id: &RawValue, result: &RawValue) -> String {
    reply(id, "result", result.get())
}

/// [`result`] with a result forwarded as it came.
pub fn forward(id: &RawValue, result: super::Forward<'_>) -> String {
    reply(id, "result", result.text())
}

/// `{"jsonrpc":"2.0","id":<id>,"error":<error>}` with a raw error object.
pub fn raw_error(id: &RawValue, error: &RawValue) -> String {
    reply(id, "error", error.get())
}

/// A response with one raw member, spliced in without re-encoding.
fn reply(id: &RawValue, member: &str, raw: &str) -> String {
    let mut s = String::with_capacity(32 + member.len() + id.get().len() + raw.len());
    head(&mut s, id, member);
    s.push_str(raw);
    s.push('}');
    s
}

/// `{"jsonrpc":"2.0","id":<id>,"<member>":`: a response up to its one raw
/// member (which the caller writes, then `}`).
pub(super) fn head(s: &mut String, id: &RawValue, member: &str) {
    s.push_str(r#"{"jsonrpc":"2.0","id":"#);
    s.push_str(id.get());
    s.push_str(",\"");
    s.push_str(member);
    s.push_str("\":");
}

/// A list result, `{"<key>":[<entries>]}` with `"nextCursor"` when one
/// is given. Valid JSON by construction: every entry is a `RawValue`
/// (valid JSON by its type), and the key and the cursor are escaped.
pub fn list(key: &str, entries: &[&RawValue], next_cursor: Option<&str>) -> String {
    let (key, cursor) = list_parts(key, next_cursor);
    let mut s = String::with_capacity(list_len(&key, entries, cursor.as_deref()));
    write_list(&mut s, &key, entries, cursor.as_deref());
    s
}

/// `{"jsonrpc":"2.0","id":<id>,"result":<list>}` with [`list`]'s result,
/// written once into a string of its exact size: a list of 10,000
/// tools is 2.7 MB, which growing a string (or checking it again)
/// would copy over and over.
pub fn list_result(id: &RawValue, key: &str, entries: &[&RawValue], next_cursor: Option<&str>) -> String {
    const HEAD: &str = r#"{"jsonrpc":"2.0","id":"#;
    let (key, cursor) = list_parts(key, next_cursor);
    let len = HEAD.len() + id.get().len() + ",\"result\":".len() + list_len(&key, entries, cursor.as_deref()) + 1;
    let mut s = String::with_capacity(len);
    s.push_str(HEAD);
    s.push_str(id.get());
    s.push_str(",\"result\":");
    write_list(&mut s, &key, entries, cursor.as_deref());
    s.push('}');
    debug_assert_eq!(s.len(), len);
    s
}

/// The key and the cursor, escaped.
fn list_parts(key: &str, next_cursor: Option<&str>) -> (String, Option<String>) {
    let escape = |s: &str| serde_json::to_string(s).expect("a string always serializes");
    (escape(key), next_cursor.map(escape))
}

/// The length [`write_list`] writes.
fn list_len(key: &str, entries: &[&RawValue], cursor: Option<&str>) -> usize {
    let defs: usize = entries.iter().map(|e| e.get().len()).sum();
    let cursor = cursor.map_or(0, |c| ",\"nextCursor\":".len() + c.len());
    1 + key.len() + 2 + defs + entries.len().saturating_sub(1) + 1 + cursor + 1
}

/// Writes `{<key>:[<entries>],"nextCursor":<cursor>}` (`key` and
/// `cursor` already escaped).
fn write_list(s: &mut String, key: &str, entries: &[&RawValue], cursor: Option<&str>) {
    s.push('{');
    s.push_str(key);
    s.push_str(":[");
    for (n, e) in entries.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        s.push_str(e.get());
    }
    s.push(']');
    if let Some(c) = cursor {
        s.push_str(",\"nextCursor\":");
        s.push_str(c);
    }
    s.push('}');
}

/// An error response built by the gateway. `id` is `null` when unknown.
pub fn error(id: Option<&RawValue>, code: i64, message: &str, data: Option<&serde_json::Value>) -> String {
    let mut err = serde_json::json!({ "code": code, "message": message });
    if let Some(data) = data {
        err["data"] = data.clone();
    }
    format!(r#"{{"jsonrpc":"2.0","id":{},"error":{}}}"#, id.map_or("null", RawValue::get), err)
}

/// A request with a gateway-assigned numeric id.
pub fn request(id: u64, method: &str, params: Option<&RawValue>) -> String {
    let digits = Decimal::of(id);
    let id = digits.as_str();
    // Exact when the method needs no escaping: `Bytes::from` the string
    // then keeps no spare capacity (and needs no allocation of its own).
    let mut s = String::with_capacity(35 + id.len() + tail_len(method, params));
    s.push_str(r#"{"jsonrpc":"2.0","id":"#);
    s.push_str(id);
    s.push_str(r#","method":"#);
    method_and_params(s, method, params)
}

/// A notification.
pub fn notification(method: &str, params: Option<&RawValue>) -> String {
    let mut s = String::with_capacity(29 + tail_len(method, params));
    s.push_str(r#"{"jsonrpc":"2.0","method":"#);
    method_and_params(s, method, params)
}

/// What [`method_and_params`] adds beyond the method's quotes and the
/// closing brace, counted in the callers' constants.
fn tail_len(method: &str, params: Option<&RawValue>) -> usize {
    method.len() + params.map_or(0, |p| r#","params":"#.len() + p.get().len())
}

/// A `u64` in decimal on the stack (`format!` costs far more, and the
/// `itoa` crate as a direct dependency would change this crate's symbol
/// hashes, which `build/hot-text.ld` matches: see scripts/hot-order.sh).
struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    fn of(mut n: u64) -> Decimal {
        let mut buf = [0; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Decimal { buf, start };
            }
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).expect("ASCII digits")
    }
}

/// Ends a request or notification: the method as a JSON string, then
/// `params` as they are. Written by hand rather than with `format!`: the
/// gateway writes one per call (callgrind: `format!` and the method's
/// `serde_json::to_string` cost about 1,300 instructions a call).
fn method_and_params(mut s: String, method: &str, params: Option<&RawValue>) -> String {
    push_json_string(&mut s, method);
    if let Some(p) = params {
        s.push_str(r#","params":"#);
        s.push_str(p.get());
    }
    s.push('}');
    s
}

/// Appends `text` as a JSON string: as it is between quotes when nothing in
/// it needs escaping (every method name the gateway sends), else escaped by
/// serde_json.
fn push_json_string(s: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        s.push('"');
        s.push_str(text);
        s.push('"');
    } else {
        s.push_str(&serde_json::to_string(text).expect("a string always serializes"));
    }
}
