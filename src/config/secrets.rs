//! Secrets from a dotenv file, `${NAME}` expansion, and redaction.
//!
//! Values are held in [`Resolved`], whose `Debug` prints `***` when the
//! string contains a secret, so a config dumped into a log leaks nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::env::Env;
use super::error::ConfigError;

/// The contents of the secrets file.
#[derive(Default)]
pub struct Secrets {
    values: HashMap<String, String>,
}

/// A config string after `${NAME}` expansion.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    value: String,
    secret: bool,
}

/// Replaces known secret values with `***` in free-form text and in JSON
/// text (where a value may appear with JSON's escaping), in one pass over
/// the text whatever the number of secrets (Aho-Corasick).
#[derive(Clone, Default)]
pub struct Redactor {
    /// `None`: nothing to mask.
    matcher: Option<Arc<aho_corasick::AhoCorasick>>,
    /// How many distinct values it masks.
    values: usize,
    /// The values it masks (at least 4 bytes each, sorted), for
    /// [`Redactor::union`].
    masked: Arc<[String]>,
    /// A digest of the values (sorted): two redactors are equal when they
    /// mask the same values, which is how a reload tells that the
    /// secrets changed without keeping them a second time.
    fingerprint: [u8; 32],
}

impl PartialEq for Redactor {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

/// What replaces a secret value.
pub const MASK: &str = "***";

/// A secrets file that cannot be used. Its messages carry the file's path
/// and dotenvy's reason (which names a line, never a value).
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The file cannot be opened.
    #[error("cannot read secrets file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: dotenvy::Error,
    },
    /// An entry of it is not `NAME=value`. The message never quotes the
    /// file: the parser's own error carries the rest of the line (after an
    /// unclosed quote, the rest of the file), which may hold secret values.
    #[error(
        "invalid secrets file {}: entry {entry} ({}) is not NAME=value; its text is not shown, since it may hold a secret",
        path.display(),
        after.as_deref().map_or_else(|| "the first".to_owned(), |a| format!("after `{a}`"))
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// Which entry (1 = the first).
        entry: usize,
        /// The name of the last entry that parsed.
        after: Option<String>,
    },
}

/// A `${NAME}` reference that cannot be expanded. Messages name the
/// reference, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// `${` without its `}`.
    #[error("unterminated `${{` in `{input}`")]
    Unterminated {
        /// The whole string as written.
        input: String,
    },
    /// A name that is empty or not `[A-Za-z0-9_]+`.
    #[error("invalid reference `${{{name}}}`")]
    InvalidName {
        /// The name as written.
        name: String,
    },
    /// A name in neither the secrets file nor the environment.
    #[error("`${{{name}}}` is not defined in the secrets file or the environment")]
    Undefined {
        /// The name.
        name: String,
    },
}

// === impl Secrets ===

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("names", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

impl Secrets {
    /// Reads a dotenv file (`NAME=value`, quotes, `#` comments).
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let iter =
            dotenvy::from_path_iter(path).map_err(|error| SecretsError::Read { path: path.to_owned(), error })?;
        let mut values = HashMap::new();
        let mut after: Option<String> = None;
        for (i, item) in iter.enumerate() {
            let Ok((k, v)) = item else {
                return Err(SecretsError::Parse { path: path.to_owned(), entry: i + 1, after });
            };
            after = Some(k.clone());
            values.insert(k, v);
        }
        Ok(Secrets { values })
    }

    /// A value by name (`None` when the file has none).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Secrets given directly (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Secrets { values: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    /// Expands `${NAME}` from the secrets file, then from `env` (the
    /// process environment, passed in); `$$` is a literal `$`. An unknown
    /// name is an error that names it (never its value).
    pub fn expand(&self, input: &str, env: &dyn Env) -> Result<Resolved, ExpandError> {
        let mut out = String::with_capacity(input.len());
        let mut secret = false;
        let mut rest = input;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            rest = &rest[pos..];
            if let Some(r) = rest.strip_prefix("$$") {
                out.push('$');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("${") {
                let end = r.find('}').ok_or_else(|| ExpandError::Unterminated { input: input.to_owned() })?;
                let name = &r[..end];
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(ExpandError::InvalidName { name: name.to_owned() });
                }
                if let Some(v) = self.values.get(name) {
                    out.push_str(v);
                    secret = true;
                } else if let Some(v) = env.var(name) {
                    out.push_str(&v);
                } else {
                    return Err(ExpandError::Undefined { name: name.to_owned() });
                }
                rest = &r[end + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Ok(Resolved { value: out, secret })
    }

    /// A redactor for every value of the file.
    pub fn redactor(&self) -> Redactor {
        Redactor::from_values(self.values.values().cloned().collect())
    }

    /// The names of the file's values, sorted (never the values).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.values.keys().cloned().collect();
        names.sort();
        names
    }
}

/// `${NAME}` expansion as loading does it: the secrets file, then the
/// environment passed in; an error names the key the text came from.
#[derive(Clone, Copy)]
pub(super) struct Expander<'a> {
    pub(super) secrets: &'a Secrets,
    pub(super) env: &'a dyn Env,
}

impl Expander<'_> {
    /// `input` expanded; an error is at `keys`.
    pub(super) fn expand(&self, input: &str, keys: &[&str]) -> Result<Resolved, ConfigError> {
        self.secrets.expand(input, self.env).map_err(|e| ConfigError::new(keys, e.to_string()))
    }

    /// Every value of `map` expanded; an error is at `<field>.<name>`.
    pub(super) fn expand_map(
        &self,
        map: &BTreeMap<String, String>,
        field: &str,
    ) -> Result<BTreeMap<String, Resolved>, ConfigError> {
        map.iter().map(|(k, v)| Ok((k.clone(), self.expand(v, &[field, k])?))).collect()
    }
}

// === impl Resolved ===

impl Resolved {
    /// The expanded value. Call only where it is handed to the upstream,
    /// never to log or show it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether a secret went into it.
    pub fn is_secret(&self) -> bool {
        self.secret
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret { f.write_str("\"***\"") } else { fmt::Debug::fmt(&self.value, f) }
    }
}

// === impl Redactor ===

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.values)
    }
}

impl Redactor {
    /// A redactor for these values (values shorter than 4 bytes are
    /// ignored: masking every `a` would garble everything). Each value is
    /// also matched as JSON would escape it inside a string.
    pub fn from_values(mut values: Vec<String>) -> Self {
        use sha2::Digest as _;
        values.sort_unstable();
        values.dedup();
        let mut digest = sha2::Sha256::new();
        for v in values.iter().filter(|v| v.len() >= 4) {
            digest.update(v.as_bytes());
            digest.update([0]);
        }
        let fingerprint: [u8; 32] = digest.finalize().into();
        let masked: Arc<[String]> = values.iter().filter(|v| v.len() >= 4).cloned().collect();
        let mut patterns: Vec<String> = Vec::with_capacity(values.len());
        let mut distinct = 0;
        for v in values.into_iter().filter(|v| v.len() >= 4) {
            let escaped = serde_json::to_string(&v).expect("a string serializes");
            let escaped = &escaped[1..escaped.len() - 1];
            if escaped != v {
                patterns.push(escaped.to_owned());
            }
            patterns.push(v);
            distinct += 1;
        }
        if patterns.is_empty() {
            return Redactor::default();
        }
        // Leftmost-longest: a secret that contains another is masked whole.
        let matcher = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("plain string patterns build");
        Redactor { matcher: Some(Arc::new(matcher)), values: distinct, fingerprint, masked }
    }

    /// A redactor masking the values of both: what a reload puts in force
    /// while upstreams still run with the values it replaced (a rotated-out
    /// token an upstream echoes must stay masked).
    pub fn union(&self, other: &Redactor) -> Redactor {
        let mut values: Vec<String> = self.masked.iter().chain(other.masked.iter()).cloned().collect();
        values.sort_unstable();
        values.dedup();
        Redactor::from_values(values)
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret value replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.redact_counted(text).0
    }

    /// [`Redactor::redact`] and how many values it masked, in every
    /// spelling JSON has for them (docs/design.md D12): as written, and inside
    /// any string literal whose escapes decode to them (`\u00e4`, `\/`,
    /// `\u0026`, a value escaped in full or in part), also when that text
    /// is itself a JSON string inside another (a message quoted in a JSON
    /// log line). Borrows (no copy) when there is none; a text without a
    /// backslash is searched once, as it is. The mask keeps JSON text
    /// valid: a literal that held a secret is written again, masked.
    pub fn redact_counted<'a>(&self, text: &'a str) -> (std::borrow::Cow<'a, str>, usize) {
        let Some(m) = &self.matcher else { return (std::borrow::Cow::Borrowed(text), 0) };
        let (plain, n) = self.redact_plain(m, text);
        if !plain.contains('\\') {
            return (plain, n);
        }
        match self.redact_escaped(m, &plain, ESCAPE_DEPTH) {
            (Some(out), more) => (std::borrow::Cow::Owned(out), n + more),
            (None, _) => (plain, n),
        }
    }

    /// Whether [`Redactor::redact_counted`] would mask anything in the
    /// text `parts` make in order, without writing that text: each part is
    /// searched, and each joint for a value written across it. The escaped
    /// spellings are searched in each part's string literals, so a part
    /// must not end inside one (a reply's head, a whole JSON value, `}`).
    pub fn finds_in(&self, parts: &[&str]) -> bool {
        let Some(m) = &self.matcher else { return false };
        if parts.iter().any(|p| self.redact_counted(p).1 > 0) {
            return true;
        }
        // A value across a joint starts in the last `reach` bytes before it
        // and ends in the first `reach` after it.
        let reach = m.max_pattern_len().saturating_sub(1);
        // A part inside shorter than that: a value may span it whole.
        if parts.len() > 2 && parts[1..parts.len() - 1].iter().any(|p| p.len() < reach) {
            return self.redact_counted(&parts.concat()).1 > 0;
        }
        parts.windows(2).any(|w| {
            let (left, right) = (w[0], w[1]);
            let mut from = left.len().saturating_sub(reach);
            while !left.is_char_boundary(from) {
                from -= 1;
            }
            let mut to = reach.min(right.len());
            while !right.is_char_boundary(to) {
                to += 1;
            }
            let joint = [&left[from..], &right[..to]].concat();
            m.is_match(joint.as_str())
        })
    }

    /// The values as written (and as serde escapes them).
    fn redact_plain<'a>(&self, m: &aho_corasick::AhoCorasick, text: &'a str) -> (std::borrow::Cow<'a, str>, usize) {
        let mut found = m.find_iter(text).peekable();
        if found.peek().is_none() {
            return (std::borrow::Cow::Borrowed(text), 0);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut n = 0;
        for hit in found {
            out.push_str(&text[last..hit.start()]);
            out.push_str(MASK);
            last = hit.end();
            n += 1;
        }
        out.push_str(&text[last..]);
        (std::borrow::Cow::Owned(out), n)
    }

    /// The string literals of `text` that have escapes, decoded, searched,
    /// and written again masked when they held a value; `depth` more levels
    /// of JSON quoted inside a decoded literal. `None`: nothing masked.
    fn redact_escaped(&self, m: &aho_corasick::AhoCorasick, text: &str, depth: usize) -> (Option<String>, usize) {
        let bytes = text.as_bytes();
        let mut out: Option<String> = None;
        let (mut n, mut copied, mut at) = (0, 0, 0);
        while let Some(open) = memchr::memchr(b'"', &bytes[at..]).map(|i| at + i) {
            let Some(close) = string_end(bytes, open + 1) else { break };
            at = close + 1;
            let literal = &text[open..=close];
            if !literal.contains('\\') {
                continue;
            }
            // Not a JSON string (a lone surrogate, a bad escape): left as
            // it is, and its text was searched as written already.
            let Ok(decoded) = serde_json::from_str::<String>(literal) else { continue };
            let (masked, mut hits) = self.redact_plain(m, &decoded);
            let mut masked = masked.into_owned();
            if depth > 1 && masked.contains('\\') {
                let (deeper, more) = self.redact_escaped(m, &masked, depth - 1);
                if let Some(d) = deeper {
                    masked = d;
                    hits += more;
                }
            }
            if hits == 0 {
                continue;
            }
            n += hits;
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..open]);
            out.push_str(&serde_json::to_string(&masked).expect("a string serializes"));
            copied = close + 1;
        }
        match out {
            Some(mut out) => {
                out.push_str(&text[copied..]);
                (Some(out), n)
            }
            None => (None, 0),
        }
    }
}

/// How many levels of JSON quoted in JSON the escaped search decodes.
const ESCAPE_DEPTH: usize = 3;

/// Index of the quote that ends the string whose text starts at `from`.
fn string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[at] == b'"' {
            return Some(at);
        }
        i = at + 2;
    }
}

#[cfg(test)]
mod spelling_tests {
    use super::*;

    /// Every character escaped as `\uXXXX`.
    fn all_escaped(s: &str) -> String {
        let mut out = String::new();
        for u in s.encode_utf16() {
            out.push_str(&format!("\\u{u:04x}"));
        }
        out
    }

    /// Characters escaped as Python's `json.dumps` (ensure_ascii) does.
    fn python(s: &str) -> String {
        let text = serde_json::to_string(s).unwrap();
        let mut out = String::new();
        for c in text[1..text.len() - 1].chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
        out
    }

    /// As Go's `json.Marshal` writes `&`, `<`, `>`, and `/` as `\/`.
    fn go(s: &str) -> String {
        let text = serde_json::to_string(s).unwrap();
        text[1..text.len() - 1]
            .replace('&', "\\u0026")
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('/', "\\/")
    }

    #[test]
    fn secrets_are_masked_in_every_json_spelling() {
        let secrets = ["tok/en&<more>", "pa\"ss\\word", "gehëim-wört", "s3cr3t-value", "日本語の秘密"];
        let r = Redactor::from_values(secrets.iter().map(|s| (*s).to_owned()).collect());
        for secret in secrets {
            let mixed: String = secret
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        all_escaped(&c.to_string())
                    } else {
                        serde_json::to_string(&c.to_string()).unwrap().trim_matches('"').to_owned()
                    }
                })
                .collect();
            for spelling in [python(secret), go(secret), all_escaped(secret), mixed] {
                for (what, text) in [
                    ("a result", format!(r#"{{"content":[{{"type":"text","text":"key: {spelling} (ok)"}}]}}"#)),
                    (
                        "an error",
                        format!(r#"{{"code":-32603,"message":"bad {spelling}","data":{{"k":"{spelling}"}}}}"#),
                    ),
                    // A message quoted in a JSON log line.
                    ("nested", serde_json::to_string(&format!(r#"{{"x":"{spelling}"}}"#)).unwrap()),
                ] {
                    let (masked, n) = r.redact_counted(&text);
                    let decoded = |t: &str| {
                        let mut all = String::new();
                        let mut v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
                        // Decode a nested message too.
                        if let serde_json::Value::String(inner) = &v {
                            v = serde_json::from_str(inner).unwrap_or(v.clone());
                        }
                        fn walk(v: &serde_json::Value, all: &mut String) {
                            match v {
                                serde_json::Value::String(s) => all.push_str(s),
                                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, all)),
                                serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, all)),
                                _ => {}
                            }
                        }
                        walk(&v, &mut all);
                        all
                    };
                    assert!(decoded(&text).contains(secret), "the test spells it: {text}");
                    assert!(n >= 1, "{what}, {spelling}: not masked: {masked}");
                    let plain = decoded(&masked);
                    assert!(!plain.contains(secret), "{what}, {spelling}: still there: {masked}");
                    assert!(plain.contains("***"), "{what}: {masked}");
                    assert!(serde_json::from_str::<serde_json::Value>(&masked).is_ok(), "still JSON: {masked}");
                }
            }
        }
        // The fast path: no backslash, no secret, nothing copied.
        let clean = r#"{"content":[{"type":"text","text":"nothing to see"}]}"#;
        assert!(matches!(r.redact_counted(clean), (std::borrow::Cow::Borrowed(_), 0)));
        let escaped_clean = r#"{"text":"line\nline \u00e9"}"#;
        assert!(matches!(r.redact_counted(escaped_clean), (std::borrow::Cow::Borrowed(_), 0)));
    }
}
