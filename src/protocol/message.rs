//! The JSON-RPC envelope.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::checked::{Checked, Members};
use super::scan::{self, Ambiguous, Found, Limits, Plan, ScanError};

/// One JSON-RPC message with its payload left raw and scanned (docs/design.md
/// D12): its members are read only through [`Checked`] views.
///
/// `id` is kept as the exact JSON text the peer sent (a string or an
/// integer), so the gateway answers with byte-identical ids.
#[derive(Debug)]
pub struct Message {
    /// The raw `id` (never `null`: that is rejected by [`Message::parse`]).
    pub id: Option<Box<RawValue>>,
    /// The method of a request or notification.
    pub method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
    /// How much of `result` was scanned.
    result_scan: ResultScan,
}

/// How much of an upstream's `result` the gateway checks: all of it, or
/// (for results it forwards without reading, which may be megabytes) its
/// own member names and the members it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCheck {
    /// Everything (lists, `initialize`, tasks, completions, …).
    Whole,
    /// A tool result (`tools/call`, `tasks/result`): `isError`, `_meta`,
    /// `task`, and the 2026-07-28 `resultType` and `taskId` (a task of the
    /// tasks extension) in full, the rest skimmed.
    Tool,
    /// A prompt (`prompts/get`): `_meta` in full, the rest skimmed.
    Prompt,
}

/// The members of a tool result the gateway reads.
const TOOL_RESULT: &[(&str, Plan<'static>)] = &[
    ("isError", Plan::Full),
    ("_meta", Plan::Full),
    ("task", Plan::Full),
    ("resultType", Plan::Full),
    ("taskId", Plan::Full),
    // An input-required result (2026-07-28), which the gateway answers for
    // a 2025 client.
    ("inputRequests", Plan::Full),
    ("requestState", Plan::Full),
];
/// The members of a prompt the gateway reads.
const PROMPT_RESULT: &[(&str, Plan<'static>)] = &[
    ("_meta", Plan::Full),
    // An input-required result (2026-07-28), answered for a 2025 client.
    ("resultType", Plan::Full),
    ("inputRequests", Plan::Full),
    ("requestState", Plan::Full),
];

#[derive(Debug)]
enum ResultScan {
    /// All of it (or there is none).
    Whole,
    /// Its names, and these members (found at these byte ranges).
    Members(&'static [(&'static str, Plan<'static>)], Found),
}

/// A message whose envelope was read but whose parts are not checked yet:
/// only [`Envelope::check`] makes a [`Message`] of it.
#[derive(Debug)]
pub struct Envelope<'t> {
    text: &'t str,
    id: Option<Box<RawValue>>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

/// What a [`Message`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Has `method` and `id`.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result` or `error`.
    Response,
}

/// A [`Message`] by what it is: see [`Message::classify`].
#[derive(Debug)]
pub enum Classified {
    /// Has `method` and `id`.
    Request(Request),
    /// Has `method`, no `id`.
    Notification(Message),
    /// Has `id` and `result` or `error`.
    Response(Message),
}

/// A request: a [`Message`] with a `method` and an `id` (made only by
/// [`Message::classify`], so [`Request::id`] needs no check). It reads as
/// the message it is.
#[derive(Debug)]
pub struct Request(Message);

impl Request {
    /// The request's id, as the client wrote it.
    pub fn id(&self) -> &RawValue {
        self.0.id.as_deref().expect("a Request is made only from a message with an id")
    }
}

impl std::ops::Deref for Request {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.0
    }
}

/// Why bytes are not a valid JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (-32700).
    #[error("parse error: {0}")]
    Json(#[source] serde_json::Error),
    /// Not UTF-8, so not JSON text either (-32700).
    #[error("parse error: invalid UTF-8 at byte {}", .0.valid_up_to())]
    Utf8(#[source] std::str::Utf8Error),
    /// JSON, but not a JSON-RPC 2.0 message (-32600). Carries the id when
    /// one could be read, so the error can still be correlated.
    #[error("invalid request: {reason}")]
    Invalid {
        /// What is wrong, for the peer.
        reason: &'static str,
        /// The request's id, if it had a usable one.
        id: Option<Box<RawValue>>,
    },
    /// JSON that parsers would read differently (docs/design.md D12): refused
    /// (-32600) before anything looks at it.
    #[error("invalid request: {ambiguous}")]
    Ambiguous {
        /// What and where.
        ambiguous: Ambiguous,
        /// The request's id (the envelope itself was unambiguous).
        id: Option<Box<RawValue>>,
    },
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default, deserialize_with = "present")]
    jsonrpc: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Box<RawValue>>,
}

/// Keeps an explicit `null` as `Some("null")` instead of folding it into
/// `None`, so a `null` id can be told apart from a missing one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

// === impl Envelope ===

impl<'t> Envelope<'t> {
    /// Reads the envelope of one message. Batches (arrays) are refused: MCP
    /// removed them in 2025-06-18. A member of the envelope that occurs
    /// twice is refused here (serde's derive refuses duplicate fields).
    pub fn parse(bytes: &'t [u8]) -> Result<Self, ParseError> {
        // JSON text is UTF-8 (RFC 8259 §8.1). serde_json checks that only in
        // the strings it decodes or keeps raw, not in those it skips (members
        // the envelope does not name), so one pass over the whole message
        // checks it here; parsing a `str` then checks nothing twice.
        let text = std::str::from_utf8(bytes).map_err(ParseError::Utf8)?;
        let first = text.bytes().find(|b| !b.is_ascii_whitespace());
        if first == Some(b'[') {
            // Still validate the JSON so garbage gets -32700, not -32600.
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(ParseError::Json)?;
            return Err(invalid("batches are not supported", None));
        }
        let wire: Wire = match serde_json::from_str(text) {
            Ok(w) => w,
            Err(e) if e.is_data() => {
                // A member of the envelope twice: the scan says which.
                if let Err(ScanError::Ambiguous(ambiguous)) = scan::scan(text, &Limits::default()) {
                    return Err(ParseError::Ambiguous { ambiguous, id: None });
                }
                // Valid JSON of the wrong shape (e.g. a string, or a method
                // that is a number).
                return Err(invalid("not a JSON-RPC message object", None));
            }
            Err(e) => return Err(ParseError::Json(e)),
        };
        let id = match wire.id {
            Some(id) if valid_id(id.get()) => Some(id),
            Some(_) => return Err(invalid("id must be a string or an integer (of at most 64 bits)", None)),
            None => None,
        };
        if wire.jsonrpc.as_deref().map(RawValue::get) != Some("\"2.0\"") {
            return Err(invalid("jsonrpc must be \"2.0\"", id));
        }
        let env =
            Envelope { text, id, method: wire.method, params: wire.params, result: wire.result, error: wire.error };
        kind(&env.method, &env.id, env.result.is_some(), env.error.is_some())?;
        Ok(env)
    }

    /// The id, when it is a non-negative integer (the gateway's own ids to
    /// upstreams are).
    pub fn numeric_id(&self) -> Option<u64> {
        self.id.as_deref().and_then(|id| id.get().parse().ok())
    }

    /// Whether it is a response (to look up which request it answers).
    pub fn is_response(&self) -> bool {
        self.method.is_none()
    }

    /// Scans the message: everything in full, except a `result`, which is
    /// checked as `result` says. A message that parsers would read
    /// differently is refused, naming where.
    pub fn check(self, limits: &Limits, result: ResultCheck) -> Result<Message, ParseError> {
        let listed = match (&self.result, result) {
            (Some(_), ResultCheck::Tool) => Some(TOOL_RESULT),
            (Some(_), ResultCheck::Prompt) => Some(PROMPT_RESULT),
            _ => None,
        };
        let outcome = match (&self.result, listed) {
            (Some(r), Some(listed)) => {
                // The result by its own plan (its names and the members the
                // gateway reads), then the rest with the result jumped over:
                // its length is known, so it is not read a second time.
                let jump = [("result", Plan::Jump(r.get().len()))];
                scan::scan_with(r.get(), limits, Plan::Object(listed, &Plan::Skim))
                    .map_err(|e| e.under("result"))
                    .and_then(|found| {
                        scan::scan_with(self.text, limits, Plan::Object(&jump, &Plan::Full))?;
                        Ok(ResultScan::Members(listed, found))
                    })
            }
            _ => scan::scan(self.text, limits).map(|()| ResultScan::Whole),
        };
        let id = self.id;
        let result_scan = match outcome {
            Ok(s) => s,
            Err(ScanError::Ambiguous(ambiguous)) => return Err(ParseError::Ambiguous { ambiguous, id }),
            // serde read it as JSON; the scan should agree.
            Err(ScanError::Syntax) => return Err(invalid("not a JSON-RPC message object", id)),
        };
        Ok(Message {
            id,
            method: self.method,
            params: self.params,
            result: self.result,
            error: self.error,
            result_scan,
        })
    }
}

// === impl Message ===

impl Message {
    /// Parses one message from a client and scans it in full (docs/design.md
    /// D12): every part of it is checked before anything reads it.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, ParseError> {
        Envelope::parse(bytes)?.check(limits, ResultCheck::Whole)
    }

    /// Classifies the message, rejecting impossible member combinations.
    pub fn kind(&self) -> Result<MessageKind, ParseError> {
        kind(&self.method, &self.id, self.result.is_some(), self.error.is_some())
    }

    /// Classifies the message and hands a request out as a [`Request`],
    /// whose id the type guarantees.
    pub fn classify(self) -> Result<Classified, ParseError> {
        Ok(match self.kind()? {
            MessageKind::Request => Classified::Request(Request(self)),
            MessageKind::Notification => Classified::Notification(self),
            MessageKind::Response => Classified::Response(self),
        })
    }

    /// The method, or `""` for responses.
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }

    /// `params`.
    pub fn params(&self) -> Option<Checked<'_>> {
        self.params.as_deref().map(Checked::trusted)
    }

    /// `error` of an error response.
    pub fn error(&self) -> Option<Checked<'_>> {
        self.error.as_deref().map(Checked::trusted)
    }

    /// `result`, when all of it was scanned: always for clients' messages,
    /// and for upstreams' results of every method but those whose results
    /// the gateway forwards unread ([`ResultCheck`]): read those through
    /// [`Message::result_member`].
    pub fn result(&self) -> Option<Checked<'_>> {
        match self.result_scan {
            ResultScan::Whole => self.result.as_deref().map(Checked::trusted),
            ResultScan::Members(..) => None,
        }
    }

    /// `result` as it came, to forward (not to read).
    pub fn result_raw(&self) -> Option<&RawValue> {
        self.result.as_deref()
    }

    /// A member of `result` the gateway reads (for a partly scanned result,
    /// one of those its [`ResultCheck`] names).
    pub fn result_member(&self, name: &str) -> Option<Checked<'_>> {
        let result = self.result.as_deref()?;
        match &self.result_scan {
            ResultScan::Whole => Checked::trusted(result).get(name),
            ResultScan::Members(listed, found) => {
                let (_, range) = found.iter().find(|(i, _)| listed[*i].0 == name)?;
                let text = result.get().get(range.clone())?;
                serde_json::from_str::<&RawValue>(text).ok().map(Checked::trusted)
            }
        }
    }

    /// `result` as an object, to rewrite members the gateway reads (task
    /// ids): of a partly scanned result only those members can be read,
    /// and every member is written back as it came.
    pub fn result_object(&self) -> Option<Members<'_>> {
        let result = Checked::trusted(self.result.as_deref()?).object()?;
        Some(match &self.result_scan {
            ResultScan::Whole => result,
            ResultScan::Members(listed, _) => result.partly(listed),
        })
    }

    /// The message's size on the wire (params, result and error).
    pub fn payload_len(&self) -> usize {
        [&self.params, &self.result, &self.error].iter().map(|p| p.as_deref().map_or(0, |r| r.get().len())).sum()
    }
}

fn kind(
    method: &Option<String>,
    id: &Option<Box<RawValue>>,
    has_result: bool,
    has_error: bool,
) -> Result<MessageKind, ParseError> {
    match (method, id, has_result || has_error) {
        (Some(_), _, true) => Err(invalid("a message cannot have both method and result", id.clone())),
        (Some(_), Some(_), false) => Ok(MessageKind::Request),
        (Some(_), None, false) => Ok(MessageKind::Notification),
        (None, Some(_), true) if has_result != has_error => Ok(MessageKind::Response),
        (None, _, true) => Err(invalid("a response has exactly one of result and error", id.clone())),
        (None, _, false) => Err(invalid("missing method", id.clone())),
    }
}

fn invalid(reason: &'static str, id: Option<Box<RawValue>>) -> ParseError {
    ParseError::Invalid { reason, id }
}

/// MCP ids are strings or integers (never `null`, never fractional). An
/// integer id must fit in 64 bits: two parsers would round a longer one
/// differently (JavaScript already above 2^53), and ids are routed on.
fn valid_id(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b'"') => true,
        Some(b'-' | b'0'..=b'9') => raw.parse::<i64>().is_ok() || raw.parse::<u64>().is_ok(),
        _ => false,
    }
}

// === impl ParseError ===

impl ParseError {
    /// The JSON-RPC error code this failure answers with.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Json(_) | ParseError::Utf8(_) => super::PARSE_ERROR,
            ParseError::Invalid { .. } | ParseError::Ambiguous { .. } => super::INVALID_REQUEST,
        }
    }

    /// The id to answer with (`null` when unknown).
    pub fn id(&self) -> Option<&RawValue> {
        match self {
            ParseError::Json(_) | ParseError::Utf8(_) => None,
            ParseError::Invalid { id, .. } | ParseError::Ambiguous { id, .. } => id.as_deref(),
        }
    }

    /// The `reason` label of the refusal metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Json(_) => "json",
            ParseError::Utf8(_) => "utf8",
            ParseError::Invalid { .. } => "invalid",
            ParseError::Ambiguous { ambiguous, .. } => ambiguous.reason.as_str(),
        }
    }

    /// What was ambiguous, when that is why.
    pub fn ambiguous(&self) -> Option<&Ambiguous> {
        match self {
            ParseError::Ambiguous { ambiguous, .. } => Some(ambiguous),
            _ => None,
        }
    }

    /// The error response for this failure.
    pub fn to_response(&self) -> String {
        let message = match self {
            ParseError::Json(e) => format!("Parse error: {e}"),
            ParseError::Utf8(e) => format!("Parse error: invalid UTF-8 at byte {}", e.valid_up_to()),
            ParseError::Invalid { reason, .. } => format!("Invalid request: {reason}"),
            ParseError::Ambiguous { ambiguous, .. } => format!("Invalid request: {ambiguous}"),
        };
        let data = self
            .ambiguous()
            .map(|a| serde_json::json!({ "class": "protocol", "reason": a.reason.as_str(), "path": a.path }));
        encode::error(self.id(), self.code(), &message, data.as_ref())
    }
}

/// Writers for the messages the gateway produces. Raw parts are spliced in
/// as they are; only the gateway's own strings are escaped.
pub mod encode {
    use super::RawValue;

    /// `{"jsonrpc":"2.0","id":<id>,"result":<result>}`.
    pub fn result(id: &RawValue, result: &RawValue) -> String {
        reply(id, "result", result)
    }

    /// `{"jsonrpc":"2.0","id":<id>,"error":<error>}` with a raw error object.
    pub fn raw_error(id: &RawValue, error: &RawValue) -> String {
        reply(id, "error", error)
    }

    /// A response with one raw member, spliced in without re-encoding.
    fn reply(id: &RawValue, member: &str, raw: &RawValue) -> String {
        let mut s = String::with_capacity(32 + member.len() + id.get().len() + raw.get().len());
        s.push_str(r#"{"jsonrpc":"2.0","id":"#);
        s.push_str(id.get());
        s.push_str(",\"");
        s.push_str(member);
        s.push_str("\":");
        s.push_str(raw.get());
        s.push('}');
        s
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
        let method = serde_json::to_string(method).expect("a string always serializes");
        match params {
            Some(p) => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{method},"params":{}}}"#, p.get()),
            None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{method}}}"#),
        }
    }

    /// A notification.
    pub fn notification(method: &str, params: Option<&RawValue>) -> String {
        let method = serde_json::to_string(method).expect("a string always serializes");
        match params {
            Some(p) => format!(r#"{{"jsonrpc":"2.0","method":{method},"params":{}}}"#, p.get()),
            None => format!(r#"{{"jsonrpc":"2.0","method":{method}}}"#),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        Message::parse(bytes, &Limits::default())
    }

    #[test]
    fn classify_hands_out_requests_with_their_ids() {
        let Ok(Classified::Request(r)) = parse(br#"{"jsonrpc":"2.0","id":"a-1","method":"ping"}"#).unwrap().classify()
        else {
            panic!("a request")
        };
        assert_eq!((r.id().get(), r.method()), (r#""a-1""#, "ping"));
        let n = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(n.classify(), Ok(Classified::Notification(_))));
        let a = parse(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap();
        assert!(matches!(a.classify(), Ok(Classified::Response(_))));
    }

    #[test]
    fn request_keeps_params_raw() {
        let m = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"z":1, "a" :[2]}}"#).unwrap();
        assert_eq!(m.kind().unwrap(), MessageKind::Request);
        assert_eq!(m.id.as_deref().unwrap().get(), "7");
        assert_eq!(m.params().unwrap().text(), r#"{"z":1, "a" :[2]}"#);
    }

    #[test]
    fn string_ids_are_echoed_exactly() {
        let m = parse(br#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#).unwrap();
        assert_eq!(m.kind().unwrap(), MessageKind::Response);
        let out = encode::result(m.id.as_deref().unwrap(), m.result_raw().unwrap());
        assert_eq!(out, r#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#);
    }

    #[test]
    fn classifies_bad_input() {
        let cases: &[(&[u8], i64)] = &[
            (b"{not json", -32700),
            (b"", -32700),
            (b"\"str\"", -32600),
            (b"[]", -32600),
            (br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, -32600),
            (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, -32600),
            (br#"{"id":1,"method":"ping"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, -32600),
        ];
        for (input, code) in cases {
            let err = parse(input).expect_err(std::str::from_utf8(input).unwrap());
            assert_eq!(err.code(), *code, "{}", String::from_utf8_lossy(input));
            // Every error response is itself valid JSON.
            let resp: serde_json::Value = serde_json::from_str(&err.to_response()).unwrap();
            assert_eq!(resp["error"]["code"], *code);
        }
    }

    #[test]
    fn invalid_utf8_is_a_parse_error_wherever_it_is() {
        let cases: &[&[u8]] = &[
            // In a member nobody reads: serde_json alone skips it unchecked.
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\xff\"}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":{\"\xc3\x28\":1}}",
            // In a batch, which is refused for being one only when it is JSON.
            b"[\"\xff\"]",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xed\xa0\x80\"}",
            b"\xff",
        ];
        for input in cases {
            let err = parse(input).expect_err(&String::from_utf8_lossy(input));
            assert!(matches!(err, ParseError::Utf8(_)), "{}: {err}", String::from_utf8_lossy(input));
            assert_eq!(err.code(), -32700);
            let resp: serde_json::Value = serde_json::from_str(&err.to_response()).unwrap();
            assert!(resp["id"].is_null());
            assert!(resp["error"]["message"].as_str().unwrap().starts_with("Parse error: invalid UTF-8 at byte "));
        }
        // Non-ASCII that is UTF-8 is fine anywhere.
        let m = parse("{\"jsonrpc\":\"2.0\",\"id\":\"é\",\"method\":\"ping\",\"x\":\"☃\"}".as_bytes());
        assert_eq!(m.unwrap().id.unwrap().get(), "\"é\"");
    }

    #[test]
    fn invalid_request_keeps_a_usable_id() {
        let err = parse(br#"{"jsonrpc":"1.0","id":"q","method":"ping"}"#).unwrap_err();
        assert_eq!(err.id().unwrap().get(), "\"q\"");
    }

    #[test]
    fn notification_has_no_id() {
        let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m.kind().unwrap(), MessageKind::Notification);
    }

    #[test]
    fn encoders_produce_valid_json() {
        let p = RawValue::from_string(r#"{"b":1,"a":2}"#.into()).unwrap();
        let r = encode::request(3, "tools/\"call", Some(&p));
        let m = parse(r.as_bytes()).unwrap();
        assert_eq!(m.method(), "tools/\"call");
        assert_eq!(m.params().unwrap().text(), r#"{"b":1,"a":2}"#);
        let n = encode::notification("notifications/cancelled", None);
        assert_eq!(parse(n.as_bytes()).unwrap().kind().unwrap(), MessageKind::Notification);
        let e = encode::error(None, -32601, "nope \"x\"", Some(&serde_json::json!({"class":"protocol"})));
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["error"]["data"]["class"], "protocol");
        assert!(v["id"].is_null());
    }

    #[test]
    fn a_list_result_is_written_whole_in_its_exact_size() {
        let id = RawValue::from_string(r#""q-1""#.into()).unwrap();
        let defs: Vec<Box<RawValue>> = [r#"{"name":"a","d":"\u00e9"}"#, r#"{"name":"b"}"#]
            .iter()
            .map(|d| RawValue::from_string((*d).to_owned()).unwrap())
            .collect();
        let entries: Vec<&RawValue> = defs.iter().map(|d| &**d).collect();
        for (entries, cursor) in [(&entries[..], Some("c\"1")), (&entries[..1], None), (&[][..], None)] {
            let r = encode::list_result(&id, "tools", entries, cursor);
            // Exactly the size it was given: never grown.
            assert_eq!(r.capacity(), r.len(), "{r}");
            let v: serde_json::Value = serde_json::from_str(&r).unwrap();
            assert_eq!((&v["jsonrpc"], &v["id"]), (&serde_json::json!("2.0"), &serde_json::json!("q-1")));
            assert_eq!(v["result"]["tools"].as_array().unwrap().len(), entries.len());
            assert_eq!(v["result"]["nextCursor"].as_str(), cursor);
            let l = encode::list("tools", entries, cursor);
            assert_eq!(serde_json::from_str::<serde_json::Value>(&l).unwrap(), v["result"]);
        }
    }
}
