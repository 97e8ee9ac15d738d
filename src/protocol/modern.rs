//! MCP 2026-07-28, the modern era (docs/design.md D13): what a request
//! carries instead of a session (`_meta`), what a result carries that a
//! 2025 result did not (`resultType`, `ttlMs`, `cacheScope`), and the
//! request metadata headers of Streamable HTTP.
//!
//! Sources: `docs/specification/2026-07-28/basic/versioning.mdx`,
//! `basic/transports/streamable-http.mdx` and `schema/2026-07-28/schema.ts`.

use std::borrow::Cow;
use std::sync::LazyLock;

use base64::Engine as _;
use memchr::memmem::Finder;

use super::{Checked, RawValue, encode};

/// Modern revisions the gateway serves statelessly, newest first.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

/// The modern revision the gateway speaks and offers upstream.
pub const MODERN_VERSION: &str = MODERN_VERSIONS[0];

/// `_meta` member naming a request's protocol revision.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// `_meta` member with the client's capabilities for this one request.
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// `_meta` member naming the client software.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";

/// `_meta` member naming a `subscriptions/listen` stream.
pub const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

/// The HTTP header mirroring `method`.
pub const METHOD_HEADER: &str = "mcp-method";

/// The HTTP header mirroring `params.name` or `params.uri`.
pub const NAME_HEADER: &str = "mcp-name";

/// Which era a client request belongs to: it decides the methods there
/// are, how results are marked and how errors are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Era {
    /// 2024-11-05 … 2025-11-25: `initialize`, then a session.
    #[default]
    Legacy,
    /// 2026-07-28: every request stands alone and carries its `_meta`.
    Modern,
}

/// Searchers built once (`memmem::find` builds one per call, which cost
/// more than the search on every request).
static PROTOCOL_VERSION: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("protocolVersion"));
static MODERN_PREFIX: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("io.modelcontextprotocol/"));
static ANNOTATION: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(PARAM_ANNOTATION));
static UNICODE_ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(r"\u"));

/// Whether JSON `text` may hold an `x-mcp-header` annotation: as written,
/// or spelled with `\u` escapes (the only escapes its letters can have; a
/// description's `\n` does not count, so such a tool costs no parse).
pub fn may_mirror(text: &str) -> bool {
    ANNOTATION.find(text.as_bytes()).is_some() || UNICODE_ESCAPE.find(text.as_bytes()).is_some()
}

/// Whether `version` is a modern revision the gateway serves.
pub fn is_modern(version: &str) -> bool {
    MODERN_VERSIONS.contains(&version)
}

/// The revision a request names in its `_meta`, when it names one (a
/// modern request; a 2025 request never does).
pub fn meta_version<'a>(params: Option<Checked<'a>>) -> Option<Cow<'a, str>> {
    let params = params?;
    // Most 2025 requests have no `_meta` at all: no parse for them.
    // `protocolVersion` has no `/`: only `\u` escapes can spell it.
    let text = params.text().as_bytes();
    if PROTOCOL_VERSION.find(text).is_none() && UNICODE_ESCAPE.find(text).is_none() {
        return None;
    }
    params.get("_meta")?.get(META_VERSION)?.str()
}

/// The client capabilities a modern request declares in its `_meta`.
pub fn meta_capabilities(params: Option<Checked<'_>>) -> Option<Checked<'_>> {
    params?.get("_meta")?.get(META_CAPABILITIES).filter(|c| c.text().starts_with('{'))
}

/// Why a modern request's `_meta` is refused (`-32602`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// `_meta`, its revision or its client capabilities are missing.
    #[error(
        "Invalid params: a 2026-07-28 request carries _meta with {META_VERSION} (a string) and {META_CAPABILITIES} (an object)"
    )]
    Missing,
    /// The client capabilities are over the gateway's cap.
    #[error(
        "Invalid params: the client capabilities are {bytes} bytes; this gateway takes at most {max} (gateway.max_client_capabilities_bytes)"
    )]
    TooLarge {
        /// Their size.
        bytes: usize,
        /// The cap.
        max: usize,
    },
}

impl MetaError {
    /// The `reason` label a refusal is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            MetaError::Missing => "modern_meta",
            MetaError::TooLarge { .. } => "capabilities_too_large",
        }
    }
}

/// The revision a modern request's `_meta` names, once `_meta` has what
/// every modern request must carry: the revision, and client capabilities
/// of at most `max_capabilities` bytes (the same cap as `initialize`'s).
/// Whether the revision is served is the caller's next check.
pub fn check_meta(params: Option<Checked<'_>>, max_capabilities: usize) -> Result<Cow<'_, str>, MetaError> {
    let meta = params.and_then(|p| p.get("_meta")).filter(|m| m.text().starts_with('{')).ok_or(MetaError::Missing)?;
    let version = meta.get(META_VERSION).and_then(Checked::str).ok_or(MetaError::Missing)?;
    let caps = meta.get(META_CAPABILITIES).filter(|c| c.text().starts_with('{')).ok_or(MetaError::Missing)?;
    if caps.text().len() > max_capabilities {
        return Err(MetaError::TooLarge { bytes: caps.text().len(), max: max_capabilities });
    }
    Ok(version)
}

/// Which request member `Mcp-Name` mirrors for `method`, if any.
pub fn named_member(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        // The tasks extension routes by task.
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// A request metadata header's value as the body would have it: without
/// the optional white space around it (RFC 9110 §5.5), Base64-decoded when
/// it is written `=?base64?…?=`. `None` when the header is not visible
/// ASCII or its Base64 does not decode to UTF-8.
pub fn header_value(raw: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(raw).ok()?;
    let text = text.trim_matches([' ', '\t']);
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t') {
        return None;
    }
    match text.strip_prefix("=?base64?").and_then(|t| t.strip_suffix("?=")) {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok().map(Cow::Owned)
        }
        None => Some(Cow::Borrowed(text)),
    }
}

/// `value` as a request metadata header carries it: as it is when it is
/// plain visible ASCII without surrounding spaces, else Base64 in the
/// `=?base64?…?=` sentinel (also when it looks like the sentinel).
pub fn encode_header(value: &str) -> Cow<'_, str> {
    let visible = !value.is_empty() && value.bytes().all(|b| (0x20..0x7f).contains(&b));
    let padded = value.starts_with(' ') || value.ends_with(' ');
    let sentinel = value.starts_with("=?base64?") && value.ends_with("?=");
    let plain = visible && !padded && !sentinel;
    match plain {
        true => Cow::Borrowed(value),
        false => Cow::Owned(format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(value))),
    }
}

/// One tool parameter mirrored into a header (`x-mcp-header` in the
/// tool's `inputSchema`): `Mcp-Param-{name}` carries the value at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The name part, as the schema writes it.
    pub name: String,
    /// The `properties` keys from the schema's root to the parameter.
    pub path: Vec<String>,
    /// Of type integer: compared as a number (`42.0` is `42`).
    pub integer: bool,
}

/// The annotation naming a mirrored parameter.
pub const PARAM_ANNOTATION: &str = "x-mcp-header";

/// The header name prefix of a mirrored parameter.
pub const PARAM_HEADER_PREFIX: &str = "mcp-param-";

/// The mirrored parameters of a tool's `inputSchema`, checked as the
/// transport asks of clients: each name a non-empty HTTP token, unique
/// without regard to case, on a property of type integer, string or
/// boolean reached from the root through `properties` only. `Err` says
/// why the tool must be left out. Cheap for the common schema: text
/// without the annotation is not parsed.
pub fn param_headers(schema: &str) -> Result<Vec<ParamHeader>, String> {
    if !may_mirror(schema) {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_str(schema).map_err(|e| format!("inputSchema is not JSON: {e}"))?;
    let mut found = Vec::new();
    reachable(&value, &mut Vec::new(), &mut found)?;
    if count(&value) != found.len() {
        return Err(format!("an {PARAM_ANNOTATION} is not on a property reached through `properties` alone"));
    }
    let mut seen = std::collections::HashSet::new();
    for h in &found {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if h.name.is_empty() || !h.name.bytes().all(token) {
            return Err(format!("{PARAM_ANNOTATION} {:?} is not an HTTP token", super::echo(&h.name)));
        }
        if !seen.insert(h.name.to_ascii_lowercase()) {
            return Err(format!("{PARAM_ANNOTATION} {:?} appears twice", super::echo(&h.name)));
        }
    }
    Ok(found)
}

/// The annotations on properties reached through `properties` chains.
fn reachable(schema: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<ParamHeader>) -> Result<(), String> {
    let Some(obj) = schema.as_object() else { return Ok(()) };
    if let Some(name) = obj.get(PARAM_ANNOTATION) {
        let Some(name) = name.as_str().filter(|_| !path.is_empty()) else {
            return Err(format!("{PARAM_ANNOTATION} must be a string on a property"));
        };
        let kind = obj.get("type").and_then(|t| t.as_str());
        if !matches!(kind, Some("integer" | "string" | "boolean")) {
            let name = super::echo(name);
            return Err(format!("{PARAM_ANNOTATION} {name:?} is on a property that is not integer, string or boolean"));
        }
        out.push(ParamHeader { name: name.to_owned(), path: path.clone(), integer: kind == Some("integer") });
    }
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (key, sub) in props {
            path.push(key.clone());
            reachable(sub, path, out)?;
            path.pop();
        }
    }
    Ok(())
}

/// Every annotation anywhere in the schema.
fn count(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(o) => {
            usize::from(o.contains_key(PARAM_ANNOTATION)) + o.values().map(count).sum::<usize>()
        }
        serde_json::Value::Array(a) => a.iter().map(count).sum(),
        _ => 0,
    }
}

/// The header value of a mirrored parameter in `arguments`, before
/// encoding: a string as it is, an integer in decimal, a boolean as
/// `true`/`false`. `None` when the arguments have no value there (or
/// `null`), and then no header goes.
pub fn param_value(arguments: &serde_json::Value, path: &[String]) -> Option<String> {
    let mut at = arguments;
    for key in path {
        at = at.get(key)?;
    }
    match at {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        // 42.0 is the integer 42 (the transport compares numerically).
        serde_json::Value::Number(n) => {
            n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| format!("{}", f as i64))
        }
        _ => None,
    }
}

/// The `_meta` members only a 2026-07-28 request carries.
pub const MODERN_META: [&str; 4] =
    [META_VERSION, META_CAPABILITIES, META_CLIENT_INFO, "io.modelcontextprotocol/logLevel"];

/// Takes the 2026-07-28 `_meta` members off request params `obj`: what a
/// 2025 client sends there is not a revision or capabilities it may
/// declare upstream (a 2025 client declares them in `initialize`), and a
/// 2025 upstream would refuse a body naming another revision than its
/// session's. Whether anything was taken off; found without parsing for
/// nearly every request.
pub fn strip_modern_meta(obj: &mut super::Members<'_>) -> bool {
    let kept = {
        let Some(meta) = obj.get("_meta") else { return false };
        let text = meta.text().as_bytes();
        if MODERN_PREFIX.find(text).is_none() && memchr::memchr(b'\\', text).is_none() {
            return false;
        }
        let Some(mut meta) = meta.object() else { return false };
        if !MODERN_META.iter().any(|k| meta.contains(k)) {
            return false;
        }
        for k in MODERN_META {
            meta.remove(k);
        }
        meta.names().next().is_some().then(|| meta.to_checked())
    };
    match kept {
        Some(meta) => obj.set("_meta", meta),
        None => obj.remove("_meta"),
    }
    true
}

/// `-32022` UnsupportedProtocolVersion, with `data.supported` and what was
/// `requested` (cut short: it is the client's text). `supported` lists the
/// modern revisions, as `server/discover` does: those are the ones a
/// request may name; the 2025 ones are reached through `initialize`.
pub fn unsupported_version(id: Option<&RawValue>, requested: &str) -> String {
    let data = serde_json::json!({ "supported": MODERN_VERSIONS, "requested": super::echo(requested) });
    encode::error(id, super::UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", Some(&data))
}

/// How a modern result is marked: `resultType` on every result, and
/// `ttlMs` with `cacheScope` on list results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// A result of no list: `resultType` only.
    Plain,
    /// A list: also how long the client may keep it. Always `private`:
    /// what a list shows depends on who asks (per-principal policy).
    List {
        /// `ttlMs`.
        ttl_ms: u64,
    },
}

/// `reply` (one the gateway wrote with [`encode::result`] for request
/// `id`) with the members a modern result must have that it lacks:
/// `resultType: "complete"` unless the result names its own type (a
/// modern upstream's `input_required`, say), and for lists `ttlMs` and
/// `cacheScope` unless present. An error reply, or one of another shape,
/// is returned as it is.
pub fn complete(reply: String, id: &RawValue, how: Completion) -> String {
    let head = r#"{"jsonrpc":"2.0","id":"#;
    let start = head.len() + id.get().len() + r#","result":"#.len();
    let is_result = reply.starts_with(head)
        && reply[head.len()..].starts_with(id.get())
        && reply[head.len() + id.get().len()..].starts_with(r#","result":"#);
    if !is_result || reply.as_bytes().get(start) != Some(&b'{') {
        return reply;
    }
    let result = &reply[start..reply.len() - 1];
    let (mut has_type, mut has_ttl, mut has_scope) = (false, false, false);
    // One level of the result; the reply was written by the gateway from
    // scanned parts, so it parses.
    let raw: Option<&RawValue> = serde_json::from_str(result).ok();
    if let Some(members) = raw.and_then(|r| Checked::trusted(r).object()) {
        has_type = members.contains("resultType");
        has_ttl = members.contains("ttlMs");
        has_scope = members.contains("cacheScope");
    }
    let mut added = String::new();
    if !has_type {
        added.push_str(r#""resultType":"complete","#);
    }
    if let Completion::List { ttl_ms } = how {
        if !has_ttl {
            added.push_str(&format!(r#""ttlMs":{ttl_ms},"#));
        }
        if !has_scope {
            added.push_str(r#""cacheScope":"private","#);
        }
    }
    if added.is_empty() {
        return reply;
    }
    let empty = result[1..].trim_start().starts_with('}');
    if empty {
        added.pop();
    }
    let mut out = String::with_capacity(reply.len() + added.len());
    out.push_str(&reply[..=start]);
    out.push_str(&added);
    out.push_str(&reply[start + 1..]);
    out
}

/// The error code of `reply` (an error the gateway wrote for request
/// `id`), or `None` for a result.
pub fn error_code(reply: &str, id: &RawValue) -> Option<i64> {
    let head = r#"{"jsonrpc":"2.0","id":"#;
    let rest = reply.strip_prefix(head)?.strip_prefix(id.get())?.strip_prefix(r#","error":"#)?;
    let error: &RawValue = serde_json::from_str(rest.strip_suffix('}')?).ok()?;
    Checked::trusted(error).get("code")?.text().parse().ok()
}

/// `reply` with the 2025 code for a missing resource (`-32002`) made the
/// modern one (`-32602`, invalid params: SEP-2164); other replies as they
/// are.
pub fn modern_error(reply: String, id: &RawValue) -> String {
    if error_code(&reply, id) != Some(super::RESOURCE_NOT_FOUND) {
        return reply;
    }
    let head = r#"{"jsonrpc":"2.0","id":"#.len() + id.get().len() + r#","error":"#.len();
    let Ok(mut error) = serde_json::from_str::<serde_json::Value>(&reply[head..reply.len() - 1]) else { return reply };
    error["code"] = super::INVALID_PARAMS.into();
    let mut out = String::with_capacity(reply.len());
    out.push_str(&reply[..head]);
    out.push_str(&error.to_string());
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn result(id_text: &str, body: &str) -> String {
        encode::result(&id(id_text), &id(body))
    }

    #[test]
    fn a_result_gets_its_type_and_a_list_its_cache_hints() {
        let r = complete(result("1", r#"{"content":[]}"#), &id("1"), Completion::Plain);
        assert_eq!(r, r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","content":[]}}"#);
        let r = complete(result(r#""a""#, "{}"), &id(r#""a""#), Completion::List { ttl_ms: 5 });
        assert_eq!(
            r,
            r#"{"jsonrpc":"2.0","id":"a","result":{"resultType":"complete","ttlMs":5,"cacheScope":"private"}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["result"]["ttlMs"], 5);
    }

    #[test]
    fn what_an_upstream_already_says_is_kept_not_doubled() {
        let body = r#"{"resultType":"input_required","inputRequests":{}}"#;
        let r = complete(result("7", body), &id("7"), Completion::Plain);
        assert_eq!(r, result("7", body));
        let body = r#"{"tools":[],"ttlMs":10,"cacheScope":"private","resultType":"complete"}"#;
        assert_eq!(complete(result("7", body), &id("7"), Completion::List { ttl_ms: 0 }), result("7", body));
    }

    #[test]
    fn errors_are_left_alone() {
        let e = encode::error(Some(&id("3")), -32601, "Method not found", None);
        assert_eq!(complete(e.clone(), &id("3"), Completion::Plain), e);
    }

    #[test]
    fn a_missing_resource_is_invalid_params_in_the_modern_era() {
        let e = encode::error(Some(&id("4")), -32002, "Resource not found: x", Some(&serde_json::json!({"uri": "x"})));
        assert_eq!(error_code(&e, &id("4")), Some(-32002));
        let m = modern_error(e, &id("4"));
        assert_eq!(error_code(&m, &id("4")), Some(-32602));
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["error"]["data"]["uri"], "x");
        let other = encode::error(Some(&id("4")), -32601, "nope", None);
        assert_eq!(modern_error(other.clone(), &id("4")), other);
        assert_eq!(error_code(&result("4", "{}"), &id("4")), None);
    }

    #[test]
    fn a_header_value_is_encoded_when_it_is_not_plain() {
        for v in ["get_weather", "Hello, 世界", " padded ", "line1\nline2", "=?base64?literal?="] {
            assert_eq!(header_value(encode_header(v).as_bytes()).as_deref(), Some(v), "{v:?} goes and comes back");
        }
        assert_eq!(encode_header("us-west1"), "us-west1");
        assert_eq!(encode_header("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
    }

    #[test]
    fn mirrored_parameters_are_found_and_checked() {
        let ok = r#"{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},"q":{"type":"string"},"o":{"type":"object","properties":{"n":{"type":"integer","x-mcp-header":"N"}}}}}"#;
        let found = param_headers(ok).unwrap();
        assert_eq!(found.len(), 2);
        assert!(found.contains(&ParamHeader { name: "Region".into(), path: vec!["region".into()], integer: false }));
        assert!(found.contains(&ParamHeader { name: "N".into(), path: vec!["o".into(), "n".into()], integer: true }));
        assert_eq!(param_headers(r#"{"type":"object"}"#), Ok(Vec::new()));
        let bad = [
            r#"{"properties":{"a":{"type":"number","x-mcp-header":"A"}}}"#,
            r#"{"properties":{"a":{"type":"string","x-mcp-header":""}}}"#,
            r#"{"properties":{"a":{"type":"string","x-mcp-header":"A B"}}}"#,
            r#"{"properties":{"a":{"type":"string","x-mcp-header":"A"},"b":{"type":"string","x-mcp-header":"a"}}}"#,
            r#"{"properties":{"a":{"type":"array","items":{"type":"string","x-mcp-header":"A"}}}}"#,
            r#"{"oneOf":[{"properties":{"a":{"type":"string","x-mcp-header":"A"}}}]}"#,
        ];
        for b in bad {
            assert!(param_headers(b).is_err(), "{b}");
        }
        let args = serde_json::json!({"region": "us-west1", "o": {"n": 42.0}, "f": true});
        assert_eq!(param_value(&args, &["region".into()]).as_deref(), Some("us-west1"));
        assert_eq!(param_value(&args, &["o".into(), "n".into()]).as_deref(), Some("42"));
        assert_eq!(param_value(&args, &["f".into()]).as_deref(), Some("true"));
        assert_eq!(param_value(&args, &["missing".into()]), None);
    }

    #[test]
    fn the_modern_meta_members_come_off_and_the_rest_stays() {
        let limits = super::super::Limits::default();
        let strip = |t: &str| {
            let b = super::super::CheckedBox::parse(t, &limits).unwrap();
            let mut obj = b.checked().object().unwrap();
            let took = strip_modern_meta(&mut obj);
            (took, serde_json::from_str::<serde_json::Value>(obj.to_raw().get()).unwrap())
        };
        let modern = r#"{"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"progressToken":1}}"#;
        assert_eq!(strip(modern), (true, serde_json::json!({"name":"t","_meta":{"progressToken":1}})));
        let only = r#"{"name":"t","_meta":{"io.modelcontextprotocol/clientInfo":{"name":"x"}}}"#;
        assert_eq!(strip(only), (true, serde_json::json!({"name":"t"})));
        let escaped = r#"{"name":"t","_meta":{"io.modelcontextprotocol\/protocolVersion":"2026-07-28"}}"#;
        assert_eq!(strip(escaped), (true, serde_json::json!({"name":"t"})), "however it is spelled");
        let plain = r#"{"name":"t","_meta":{"progressToken":1}}"#;
        assert!(!strip(plain).0);
        assert!(!strip(r#"{"name":"t"}"#).0);
    }

    #[test]
    fn header_values_are_trimmed_and_decoded() {
        assert_eq!(header_value(b"  get_weather\t").as_deref(), Some("get_weather"));
        assert_eq!(header_value(b"=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(), Some("Hello, 世界"));
        assert_eq!(header_value(b"=?base64?!!?="), None, "bad Base64");
        assert_eq!(header_value("é".as_bytes()), None, "not ASCII");
        assert_eq!(header_value(b"a\x01b"), None, "a control character");
    }

    #[test]
    fn the_meta_version_is_read_however_it_is_spelled() {
        let limits = super::super::Limits::default();
        let p = |t: &str| super::super::CheckedBox::parse(t, &limits).unwrap();
        let plain = p(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#);
        assert_eq!(meta_version(Some(plain.checked())).as_deref(), Some("2026-07-28"));
        let escaped = p(r#"{"_meta":{"io.modelcontextprotocol/protocol\u0056ersion":"2026-07-28"}}"#);
        assert_eq!(meta_version(Some(escaped.checked())).as_deref(), Some("2026-07-28"));
        let none = p(r#"{"name":"t","arguments":{"protocolVersion":"x"}}"#);
        assert_eq!(meta_version(Some(none.checked())), None);
        assert_eq!(meta_version(None), None);
    }
}
