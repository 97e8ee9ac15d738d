//! Config errors that say where: `file:line:column: key: what is wrong`.

use std::fmt;
use std::path::Path;

/// A configuration that cannot be used. Its `Display` is one line meant for
/// a terminal: `gateway.toml:12:1: upstreams.fs.command: must not be empty`.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    location: Option<String>,
    key: Option<String>,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.location {
            write!(f, "{l}: ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

// === impl ConfigError ===

impl ConfigError {
    pub(super) fn io(path: &Path, e: &std::io::Error) -> Self {
        ConfigError { location: Some(path.display().to_string()), key: None, message: format!("cannot read: {e}") }
    }

    pub(super) fn plain(message: String) -> Self {
        ConfigError { location: None, key: None, message }
    }

    /// A TOML syntax or type error; toml reports the byte span.
    pub(super) fn syntax(path: &Path, src: &str, e: &toml::de::Error) -> Self {
        let location = match e.span() {
            Some(span) => position(path, src, span.start),
            None => path.display().to_string(),
        };
        ConfigError { location: Some(location), key: None, message: e.message().trim().to_owned() }
    }

    /// A semantic error at `keys`, located with toml_edit's spans.
    pub(super) fn at(path: &Path, src: &str, keys: &[&str], message: String) -> Self {
        let location = match locate(src, keys) {
            Some(offset) => position(path, src, offset),
            None => path.display().to_string(),
        };
        ConfigError { location: Some(location), key: Some(keys.join(".")), message }
    }

    /// The dotted key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

fn position(path: &Path, src: &str, offset: usize) -> String {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    format!("{}:{line}:{col}", path.display())
}

/// Byte offset of the deepest key of `keys` that exists in `src`.
fn locate(src: &str, keys: &[&str]) -> Option<usize> {
    let doc = toml_edit::Document::parse(src).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut found = None;
    for k in keys {
        let Some((key, item)) = table.get_key_value(k) else { break };
        found = key.span().map(|s| s.start).or(found);
        match item.as_table_like() {
            Some(t) => table = t,
            None => break,
        }
    }
    found
}
