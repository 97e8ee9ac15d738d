//! Secrets from a dotenv file, `${NAME}` expansion, and redaction.
//!
//! Values are held in [`Resolved`], whose `Debug` prints `***` when the
//! string contains a secret, so a config dumped into a log leaks nothing.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

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
}

/// What replaces a secret value.
pub const MASK: &str = "***";

// === impl Secrets ===

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("names", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

impl Secrets {
    /// Reads a dotenv file (`NAME=value`, quotes, `#` comments).
    pub fn load(path: &Path) -> Result<Self, String> {
        let iter =
            dotenvy::from_path_iter(path).map_err(|e| format!("cannot read secrets file {}: {e}", path.display()))?;
        let mut values = HashMap::new();
        for item in iter {
            // dotenvy's errors carry the line but never the value.
            let (k, v) = item.map_err(|e| format!("invalid secrets file {}: {e}", path.display()))?;
            values.insert(k, v);
        }
        Ok(Secrets { values })
    }

    /// Secrets given directly (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Secrets { values: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    /// Expands `${NAME}` from the secrets file, then from the process
    /// environment; `$$` is a literal `$`. An unknown name is an error that
    /// names it (never its value).
    pub fn expand(&self, input: &str) -> Result<Resolved, String> {
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
                let end = r.find('}').ok_or_else(|| format!("unterminated `${{` in `{input}`"))?;
                let name = &r[..end];
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!("invalid reference `${{{name}}}`"));
                }
                if let Some(v) = self.values.get(name) {
                    out.push_str(v);
                    secret = true;
                } else if let Ok(v) = std::env::var(name) {
                    out.push_str(&v);
                } else {
                    return Err(format!("`${{{name}}}` is not defined in the secrets file or the environment"));
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
    pub fn from_values(values: Vec<String>) -> Self {
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
        Redactor { matcher: Some(Arc::new(matcher)), values: distinct }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret value replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.redact_counted(text).0
    }

    /// [`Redactor::redact`] and how many values it masked. Borrows (no
    /// copy) when there is none, the common case on the hot path. The
    /// mask keeps JSON text valid: it replaces text within a string.
    pub fn redact_counted<'a>(&self, text: &'a str) -> (std::borrow::Cow<'a, str>, usize) {
        let Some(m) = &self.matcher else { return (std::borrow::Cow::Borrowed(text), 0) };
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
}
