//! Config errors that say where: `file:line:column: key: what is wrong`.

use std::fmt;
use std::path::Path;

/// A configuration that cannot be used. Its `Display` is one line meant for
/// a terminal: `gateway.toml:12:1: upstreams.fs.command: must not be empty`.
///
/// A section's `validate()` returns one with its key relative to the section
/// and no location; the caller puts it `under` the section's own key, and
/// loading `locate`s it in the file once, at the end.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    location: Option<String>,
    /// The key as path components: a component may itself hold a `.` (a
    /// header name, a glob), so the file is searched by components.
    keys: Vec<String>,
    /// `keys` joined with `.`, as shown.
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
        ConfigError {
            location: Some(path.display().to_string()),
            keys: Vec::new(),
            key: None,
            message: format!("cannot read: {e}"),
        }
    }

    pub(super) fn plain(message: String) -> Self {
        ConfigError { location: None, keys: Vec::new(), key: None, message }
    }

    /// A semantic error at `keys` (relative to the section that found it),
    /// not yet located in the file.
    pub(super) fn new(keys: &[&str], message: impl Into<String>) -> Self {
        let mut e = ConfigError { location: None, keys: Vec::new(), key: None, message: message.into() };
        e.set_keys(keys.iter().map(|k| (*k).to_owned()).collect());
        e
    }

    /// The same error with `prefix` put before its key: a section's
    /// `validate()` names keys within it, its caller knows where it is.
    pub(super) fn under(mut self, prefix: &[&str]) -> Self {
        let keys = prefix.iter().map(|k| (*k).to_owned()).chain(std::mem::take(&mut self.keys)).collect();
        self.set_keys(keys);
        self
    }

    /// Finds the error's key in `src` for its `file:line:col` (the file
    /// alone when the key is not written there). Errors without a key, and
    /// errors already located, are left as they are.
    pub(super) fn locate(mut self, path: &Path, src: &str) -> Self {
        if self.location.is_none() && !self.keys.is_empty() {
            let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
            self.location = Some(match locate(src, &keys) {
                Some(offset) => position(path, src, offset),
                None => path.display().to_string(),
            });
        }
        self
    }

    fn set_keys(&mut self, keys: Vec<String>) {
        self.key = if keys.is_empty() { None } else { Some(keys.join(".")) };
        self.keys = keys;
    }

    /// A TOML syntax or type error; toml reports the byte span.
    pub(super) fn syntax(path: &Path, src: &str, e: &toml::de::Error) -> Self {
        let (location, key) = match e.span() {
            Some(span) => (position(path, src, span.start), key_at(src, span.start)),
            None => (path.display().to_string(), None),
        };
        // Already located: no path components to search for.
        ConfigError { location: Some(location), keys: Vec::new(), key, message: e.message().trim().to_owned() }
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

/// The dotted key at `offset`: the last `[table]` header before it plus the
/// key on that line (`upstreams.fs.request_timout`). Best effort: `None`
/// when the line has no `key =`.
fn key_at(src: &str, offset: usize) -> Option<String> {
    let before = &src[..offset.min(src.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = src[line_start..].lines().next().unwrap_or("");
    let header = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_owned());
    let trimmed = line.trim();
    if trimmed.starts_with('[') {
        return header.or_else(|| Some(trimmed.trim_matches(|c| c == '[' || c == ']').trim().to_owned()));
    }
    let key = trimmed.split('=').next()?.trim();
    if key.is_empty() || !line.contains('=') {
        return header;
    }
    Some(match header {
        Some(h) if !h.is_empty() => format!("{h}.{key}"),
        _ => key.to_owned(),
    })
}
