//! The JSON-RPC envelope.

use std::ops::Range;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::checked::{Checked, Members};
use super::scan::{self, Found, Limits, Plan, ScanError};

mod error;

pub use self::error::ParseError;

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
    result: Option<Payload>,
    error: Option<Box<RawValue>>,
}

/// A response's `result`, as much of it as was scanned.
#[derive(Debug)]
enum Payload {
    /// All of it.
    Whole(Box<RawValue>),
    /// Its grammar, its names, and these members (found at these byte
    /// ranges of it); its text was never given to serde, which would read
    /// all of it (a tool's result may be megabytes).
    Members(Part, &'static [(&'static str, Plan<'static>)], Found),
}

/// The text of a result forwarded unread.
#[derive(Debug)]
enum Part {
    /// A copy of it.
    Copy(Box<str>),
    /// The whole message it came in (given away by the reader: no copy),
    /// and where in it the result is.
    In(String, Range<usize>),
}

impl Part {
    fn text(&self) -> &str {
        match self {
            Part::Copy(t) => t,
            Part::In(message, range) => &message[range.clone()],
        }
    }
}

/// A result to forward as it came: JSON text whose grammar was checked,
/// so every parser finds the same end and the same members the gateway
/// read, but which may be scanned only in part (docs/design.md D12): it
/// is forwarded, never read. Read results through [`Message::result`] and
/// [`Message::result_member`].
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a>(&'a str);

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

/// A message whose envelope was read but whose parts are not checked yet:
/// only [`Envelope::check`] makes a [`Message`] of it.
#[derive(Debug)]
pub struct Envelope<'t> {
    text: &'t str,
    id: Option<Box<RawValue>>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    /// Where `result` is in `text`.
    result: Option<Range<usize>>,
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

impl<'a> Forward<'a> {
    /// The JSON text, to forward or measure (not to read).
    pub fn text(self) -> &'a str {
        self.0
    }
}

impl<'a> From<&'a RawValue> for Forward<'a> {
    fn from(raw: &'a RawValue) -> Self {
        Forward(raw.get())
    }
}

/// The envelope as serde reads it: only when the scan's own read
/// ([`Envelope::parse`]) did not succeed, to refuse with the same errors as
/// always.
#[derive(Deserialize)]
struct Wire<'t> {
    #[serde(default, deserialize_with = "present")]
    jsonrpc: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Box<RawValue>>,
    #[serde(default, borrow, deserialize_with = "present_borrowed")]
    result: Option<&'t RawValue>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Box<RawValue>>,
}

/// Keeps an explicit `null` as `Some("null")` instead of folding it into
/// `None`, so a `null` id can be told apart from a missing one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// [`present`], borrowed from the text.
fn present_borrowed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The envelope's members, as the scan reads them: their own names once
/// each (the root object's names are checked), their values skimmed;
/// [`Envelope::check`] then scans them by their plans. Only `result` has
/// its grammar checked here: serde reads every other member's text whole
/// ([`Envelope::read`]), which checks it, so the scan only finds where it
/// ends (for valid JSON the loose skim's end is exact, and text that is not
/// JSON fails serde's read). Checking it here too was a third pass over a
/// request's `params` (about 5,000 instructions a `tools/call`).
const ENVELOPE: &[(&str, Plan<'static>)] = &[
    ("jsonrpc", Plan::Skim),
    ("id", Plan::Skim),
    ("method", Plan::Skim),
    ("params", Plan::Skim),
    ("result", Plan::Grammar),
    ("error", Plan::Skim),
];

// === impl Envelope ===

impl<'t> Envelope<'t> {
    /// Reads the envelope of one message. Batches (arrays) are refused: MCP
    /// removed them in 2025-06-18. A member of the envelope that occurs
    /// twice is refused here (serde's derive refuses duplicate fields).
    pub fn parse(bytes: &'t [u8]) -> Result<Self, ParseError> {
        // JSON text is UTF-8 (RFC 8259 §8.1): one pass over the whole
        // message checks it, since the scan reads bytes.
        Self::parse_str(std::str::from_utf8(bytes).map_err(ParseError::Utf8)?)
    }

    /// [`Envelope::parse`] of a text known to be UTF-8.
    pub fn parse_str(text: &'t str) -> Result<Self, ParseError> {
        // The scan reads the envelope (its grammar whole, its names once
        // each), so serde reads only the small members, never a result's
        // text (megabytes of a tool's result would cost 2 instructions a
        // byte in serde's string reader, ten times the scan's). Anything it
        // does not take, serde reads as before, to refuse it with the same
        // error as always.
        match Self::read(text) {
            Some(env) => Ok(env),
            None => Self::parse_refused(text),
        }
    }

    /// The envelope as the scan reads it; `None` for anything but a valid
    /// JSON-RPC message object.
    fn read(text: &'t str) -> Option<Self> {
        let found = scan::scan_with(text, &Limits::default(), Plan::Object(ENVELOPE, &Plan::Grammar)).ok()?;
        let mut env = Envelope { text, id: None, method: None, params: None, result: None, error: None };
        let mut jsonrpc = false;
        for (i, range) in found {
            let part = &text[range.clone()];
            match ENVELOPE[i].0 {
                // Compared whole: nothing but this exact text is taken.
                "jsonrpc" => jsonrpc = part == "\"2.0\"",
                "id" if valid_id(part) => env.id = Some(serde_json::from_str(part).ok()?),
                // `null`, a fraction, an object: serde's read says which.
                "id" => return None,
                "method" => env.method = Some(serde_json::from_str(part).ok()?),
                "params" => env.params = Some(serde_json::from_str(part).ok()?),
                "result" => env.result = Some(range),
                _ => env.error = Some(serde_json::from_str(part).ok()?),
            }
        }
        (jsonrpc && kind(&env.method, &env.id, env.result.is_some(), env.error.is_some()).is_ok()).then_some(env)
    }

    /// Reads with serde what [`Envelope::read`] did not take: a message it
    /// refuses (naming why), or, should the two ever disagree, one that is
    /// then checked like any other.
    fn parse_refused(text: &'t str) -> Result<Self, ParseError> {
        let first = text.bytes().find(|b| !b.is_ascii_whitespace());
        if first == Some(b'[') {
            // Still validate the JSON so garbage gets -32700, not -32600.
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(ParseError::Json)?;
            return Err(invalid("batches are not supported", None));
        }
        let wire: Wire<'_> = match serde_json::from_str(text) {
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
        // Where `result` is: serde borrowed it from `text`.
        let result = wire.result.map(|r| {
            let start = r.get().as_ptr() as usize - text.as_ptr() as usize;
            start..start + r.get().len()
        });
        let env = Envelope { text, id, method: wire.method, params: wire.params, result, error: wire.error };
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
        self.check_keeping(limits, result, false)
    }

    /// [`Envelope::check`]; with `keep`, a result forwarded unread is left
    /// as a place in the message's text, which the caller then gives to
    /// the message ([`Message::parse_owned`]).
    fn check_keeping(self, limits: &Limits, result: ResultCheck, keep: bool) -> Result<Message, ParseError> {
        let range = self.result.clone();
        let text = range.clone().map(|r| &self.text[r]);
        let listed = match (text, result) {
            (Some(_), ResultCheck::Tool) => Some(TOOL_RESULT),
            (Some(_), ResultCheck::Prompt) => Some(PROMPT_RESULT),
            _ => None,
        };
        let outcome = match (text, listed) {
            (Some(r), Some(listed)) => {
                // The result by its own plan (its names and the members the
                // gateway reads), then the rest with the result jumped over:
                // its length is known, so it is not read a second time.
                let jump = [("result", Plan::Jump(r.len()))];
                scan::scan_with(r, limits, Plan::Object(listed, &Plan::Skim)).map_err(|e| e.under("result")).and_then(
                    |found| {
                        scan::scan_with(self.text, limits, Plan::Object(&jump, &Plan::Full))?;
                        let part = match (keep, range) {
                            (true, Some(range)) => Part::In(String::new(), range),
                            _ => Part::Copy(r.into()),
                        };
                        Ok(Some(Payload::Members(part, listed, found)))
                    },
                )
            }
            _ => scan::scan(self.text, limits).map(|()| None),
        };
        let id = self.id;
        let payload = match outcome {
            Ok(p) => p,
            Err(ScanError::Ambiguous(ambiguous)) => {
                // An id that is itself what was refused (a lone surrogate)
                // is not echoed: the gateway's reply would carry it.
                let id = id.filter(|_| ambiguous.path != "id");
                return Err(ParseError::Ambiguous { ambiguous, id });
            }
            // The envelope's read found it JSON; the scan should agree.
            Err(ScanError::Syntax) => return Err(invalid("not a JSON-RPC message object", id)),
        };
        let result = match (payload, text) {
            (Some(p), _) => Some(p),
            // Scanned whole: the text is what serde will read the same way.
            (None, Some(r)) => Some(Payload::Whole(
                serde_json::from_str(r).map_err(|_| invalid("not a JSON-RPC message object", id.clone()))?,
            )),
            (None, None) => None,
        };
        Ok(Message { id, method: self.method, params: self.params, result, error: self.error })
    }
}

// === impl Message ===

impl Message {
    /// Parses one message from a client and scans it in full (docs/design.md
    /// D12): every part of it is checked before anything reads it.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, ParseError> {
        Envelope::parse(bytes)?.check(limits, ResultCheck::Whole)
    }

    /// [`Message::parse`] of a text the reader gives away (an upstream's
    /// body or event), checked as `check` says once its envelope is read
    /// (what a reply needs depends on the request it answers). A result
    /// forwarded unread then stays in this text: a tool's result of
    /// megabytes is not copied.
    pub fn parse_owned(
        text: String,
        limits: &Limits,
        check: impl FnOnce(&Envelope<'_>) -> ResultCheck,
    ) -> Result<Self, ParseError> {
        let env = Envelope::parse_str(&text)?;
        let how = check(&env);
        let mut msg = env.check_keeping(limits, how, true)?;
        if let Some(Payload::Members(Part::In(message, _), ..)) = &mut msg.result {
            *message = text;
        }
        Ok(msg)
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
        match self.result.as_ref()? {
            Payload::Whole(r) => Some(Checked::trusted(r)),
            Payload::Members(..) => None,
        }
    }

    /// `result` as it came, to forward (not to read).
    pub fn result_raw(&self) -> Option<Forward<'_>> {
        Some(Forward(match self.result.as_ref()? {
            Payload::Whole(r) => r.get(),
            Payload::Members(part, ..) => part.text(),
        }))
    }

    /// A member of `result` the gateway reads (for a partly scanned result,
    /// one of those its [`ResultCheck`] names).
    pub fn result_member(&self, name: &str) -> Option<Checked<'_>> {
        match self.result.as_ref()? {
            Payload::Whole(result) => Checked::trusted(result).get(name),
            Payload::Members(part, listed, found) => {
                let (_, range) = found.iter().find(|(i, _)| listed[*i].0 == name)?;
                let text = part.text().get(range.clone())?;
                serde_json::from_str::<&RawValue>(text).ok().map(Checked::trusted)
            }
        }
    }

    /// `result` as an object, to rewrite members the gateway reads (task
    /// ids): of a partly scanned result only those members can be read,
    /// and every member is written back as it came.
    pub fn result_object(&self) -> Option<Members<'_>> {
        match self.result.as_ref()? {
            Payload::Whole(result) => Checked::trusted(result).object(),
            // serde reads its one level here, and so all of its text: only
            // results that may be tasks or input-required come here.
            Payload::Members(part, listed, _) => {
                let result = serde_json::from_str::<&RawValue>(part.text()).ok()?;
                Some(Checked::trusted(result).object()?.partly(listed))
            }
        }
    }

    /// Takes the message this result came in and where the result is in
    /// it, when it is still there (forwarded unread, given away by its
    /// reader) and at least `min` bytes long: to send from, not copied. The
    /// message then has no result.
    pub(crate) fn take_forwarded(&mut self, min: usize) -> Option<(String, Range<usize>)> {
        match self.result.take() {
            Some(Payload::Members(Part::In(message, range), ..)) if range.len() >= min => Some((message, range)),
            other => {
                self.result = other;
                None
            }
        }
    }

    /// The message's size on the wire (params, result and error).
    pub fn payload_len(&self) -> usize {
        let raw = |p: &Option<Box<RawValue>>| p.as_deref().map_or(0, |r| r.get().len());
        raw(&self.params) + raw(&self.error) + self.result_raw().map_or(0, |r| r.0.len())
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

#[cfg(test)]
mod tests {
    use super::super::encode;
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

    /// The scan reads the envelope instead of serde (a tool's result is
    /// never given to serde, docs/benchmarks.md says why): it must take
    /// nothing a JSON parser refuses, and read the same members from what
    /// it takes. Seeds mutated many ways, deterministically.
    #[test]
    fn the_scans_envelope_takes_only_json_and_reads_what_serde_reads() {
        let seeds = [
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a\"b\u00e9"}],"isError":false}}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"n","arguments":{"a":[1,-2.5e3,true,null]}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"no","data":{"k":[{}]}}}"#,
            r#" {"jsonrpc" : "2.0" , "method":"notifications/progress","params":{"progress":0.5}} "#,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let alphabet = b"{}[]\":,\\ 0123-+.eEtrufalsnu\t\n\x01\x1f";
        let (mut taken, mut refused) = (0, 0);
        for _ in 0..60_000 {
            let mut b = seeds[next() % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let at = next() % (b.len() + 1);
                let c = alphabet[next() % alphabet.len()];
                match next() % 3 {
                    0 if at < b.len() => b[at] = c,
                    1 if at < b.len() => drop(b.remove(at)),
                    _ => b.insert(at, c),
                }
            }
            let text = std::str::from_utf8(&b).expect("ASCII");
            let Some(env) = Envelope::read(text) else {
                refused += 1;
                continue;
            };
            taken += 1;
            serde_json::from_str::<serde::de::IgnoredAny>(text).unwrap_or_else(|e| panic!("{e}: {text}"));
            let wire: Wire<'_> = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
            let get = |r: &Option<Box<RawValue>>| r.as_ref().map(|r| r.get().to_owned());
            assert_eq!(
                (get(&env.id), get(&env.params), get(&env.error)),
                (get(&wire.id), get(&wire.params), get(&wire.error))
            );
            assert_eq!(env.method, wire.method, "{text}");
            assert_eq!(env.result.map(|r| &text[r]), wire.result.map(RawValue::get), "{text}");
        }
        // Both sides were exercised.
        assert!(taken > 1_000 && refused > 10_000, "taken {taken}, refused {refused}");
    }

    #[test]
    fn a_tool_results_text_is_json_though_serde_never_reads_it() {
        let limits = Limits::default();
        let ok = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x"}],"isError":true}}"#;
        let m = Envelope::parse(ok).unwrap().check(&limits, ResultCheck::Tool).unwrap();
        assert_eq!(m.result_member("isError").map(|v| v.is_true()), Some(true));
        assert_eq!(m.result_raw().unwrap().text(), r#"{"content":[{"type":"text","text":"x"}],"isError":true}"#);
        assert!(m.result().is_none(), "a partly scanned result is not read whole");
        // Not JSON inside the part that is only skimmed: a parse error, as
        // when serde read it, never forwarded.
        for bad in ["[1 2]", "[01]", "[1,]", "{\"a\" 1}", "\"a\u{1}b\"", "\"\\x\"", "tru", "[nul]"] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":{bad},"isError":false}}}}"#);
            let e = Envelope::parse(text.as_bytes()).map(|_| ()).unwrap_err();
            assert_eq!(e.code(), crate::protocol::PARSE_ERROR, "{text}");
        }
    }

    #[test]
    fn a_message_given_away_forwards_its_result_from_its_own_text() {
        let text = r#"{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"big"}],"isError":true,"_meta":{"a":1}} }"#;
        let result = &text[text.find(r#"{"content"#).unwrap()..text.len() - 2];
        let limits = Limits::default();
        let owned = Message::parse_owned(text.to_owned(), &limits, |env| {
            assert!(env.is_response() && env.numeric_id() == Some(4));
            ResultCheck::Tool
        })
        .unwrap();
        assert!(matches!(owned.result, Some(Payload::Members(Part::In(..), ..))), "not copied");
        let copied = Envelope::parse(text.as_bytes()).unwrap().check(&limits, ResultCheck::Tool).unwrap();
        for m in [&owned, &copied] {
            assert_eq!(m.result_raw().unwrap().text(), result);
            assert_eq!(m.result_member("isError").map(Checked::is_true), Some(true));
            assert_eq!(m.result_member("_meta").unwrap().text(), r#"{"a":1}"#);
            assert_eq!(m.result_object().unwrap().names().collect::<Vec<_>>(), ["content", "isError", "_meta"]);
            assert_eq!(m.payload_len(), result.len());
        }
        // Refused as the borrowed parse refuses.
        let dup = r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"isError":false}}"#;
        let e = Message::parse_owned(dup.to_owned(), &limits, |_| ResultCheck::Tool).unwrap_err();
        assert_eq!((e.reason(), e.id().map(RawValue::get)), ("duplicate_member", Some("1")));
        let e = Message::parse_owned("{".to_owned(), &limits, |_| unreachable!("no envelope")).unwrap_err();
        assert_eq!(e.code(), crate::protocol::PARSE_ERROR);
    }

    #[test]
    fn a_refused_id_is_not_echoed() {
        // Found by a hostile review: the reply carried the lone surrogate.
        let e = parse(br#"{"jsonrpc":"2.0","id":"\ud800","method":"ping"}"#).unwrap_err();
        assert_eq!(e.ambiguous().map(|a| a.path.as_str()), Some("id"));
        let v: serde_json::Value = serde_json::from_str(&e.to_response()).unwrap();
        assert!(v["id"].is_null(), "{v}");
        // Another member refused: the id is still echoed.
        let e = parse(br#"{"jsonrpc":"2.0","id":"a","method":"ping","params":{"x":"\ud800"}}"#).unwrap_err();
        let v: serde_json::Value = serde_json::from_str(&e.to_response()).unwrap();
        assert_eq!(v["id"], "a");
    }

    #[test]
    fn string_ids_are_echoed_exactly() {
        let m = parse(br#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#).unwrap();
        assert_eq!(m.kind().unwrap(), MessageKind::Response);
        let out = encode::forward(m.id.as_deref().unwrap(), m.result_raw().unwrap());
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
    fn requests_and_notifications_match_serde_json_byte_for_byte() {
        let p = RawValue::from_string(r#"{"b":1,"a":[2]}"#.into()).unwrap();
        let methods = [
            "tools/call",
            "",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\n\r\x08\x0c",
            "nul\u{0}",
            "\u{1f}x",
            "del\u{7f}",
            "é/ü",
            "\u{2028}\u{2029}",
            "😀",
        ];
        for method in methods {
            // The writers as they were (format! and serde_json) are the reference.
            let quoted = serde_json::to_string(method).unwrap();
            for id in [0, 9, 10, 999, 1000, 123_456, u64::MAX] {
                let want = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{quoted},"params":{}}}"#, p.get());
                let got = encode::request(id, method, Some(&p));
                assert_eq!(got, want, "{method:?} {id}");
                if quoted.len() == method.len() + 2 {
                    assert_eq!(got.capacity(), got.len(), "{method:?} {id}: sized exactly");
                }
                let want = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{quoted}}}"#);
                assert_eq!(encode::request(id, method, None), want, "{method:?} {id}");
            }
            let want = format!(r#"{{"jsonrpc":"2.0","method":{quoted},"params":{}}}"#, p.get());
            assert_eq!(encode::notification(method, Some(&p)), want, "{method:?}");
            assert_eq!(encode::notification(method, None), format!(r#"{{"jsonrpc":"2.0","method":{quoted}}}"#));
        }
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
