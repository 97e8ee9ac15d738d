//! Rules-file errors that say where:
//! `rules.toml:12:5: rule[1].steps[0].tool: invalid glob ...`.

use std::fmt;
use std::ops::Range;
use std::path::Path;

/// A rules file that cannot be used. Its `Display` is one line meant for a
/// terminal, in the form `file:line:column: key: what is wrong`; the line,
/// column and key are left out when they are not known (an I/O error).
#[derive(Debug, thiserror::Error)]
pub struct RulesError {
    file: String,
    /// 1-based line and column.
    position: Option<(usize, usize)>,
    key: Option<String>,
    message: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        write!(f, ": {}", self.message)
    }
}

// === impl RulesError ===

impl RulesError {
    pub(super) fn io(path: &Path, e: &std::io::Error) -> Self {
        RulesError { file: path.display().to_string(), position: None, key: None, message: format!("cannot read: {e}") }
    }

    /// A TOML syntax or type error (including unknown keys); toml reports
    /// the byte span, from which the line and the dotted key are found.
    pub(super) fn syntax(path: &Path, src: &str, e: &toml::de::Error) -> Self {
        let (position, key) = match e.span() {
            Some(span) => (Some(line_col(src, span.start)), key_at(src, span.start)),
            None => (None, None),
        };
        RulesError { file: path.display().to_string(), position, key, message: e.message().trim().to_owned() }
    }

    /// A semantic error about `key`, found at `span` of `src`.
    pub(super) fn at(path: &Path, src: &str, span: Range<usize>, key: String, message: String) -> Self {
        RulesError {
            file: path.display().to_string(),
            position: Some(line_col(src, span.start)),
            key: Some(key),
            message,
        }
    }

    /// The file the error is in.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|(line, _)| line)
    }

    /// The dotted key the error is about (`rule[0].steps[1].args.url`), when known.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `file:line:column` of a byte offset, for warnings.
pub(super) fn location(path: &Path, src: &str, offset: usize) -> String {
    let (line, col) = line_col(src, offset);
    format!("{}:{line}:{col}", path.display())
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset.min(src.len())).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, col)
}

/// The dotted path of the innermost key or array element around `offset`
/// (`rule[2].steps[0].args`), found by walking toml_edit's spans. Best
/// effort: `None` when the text does not parse or nothing is near.
fn key_at(src: &str, offset: usize) -> Option<String> {
    let doc = toml_edit::Document::parse(src).ok()?;
    let mut spots = Vec::new();
    walk_table(doc.as_table(), "", &mut spots);
    // The innermost span that contains the offset starts last; when none
    // contains it (an error reported at a table's end), take the nearest
    // entry before it.
    let containing = spots.iter().filter(|s| s.span.contains(&offset)).max_by_key(|s| s.span.start);
    let before = || spots.iter().filter(|s| s.span.start <= offset).max_by_key(|s| s.span.start);
    containing.or_else(before).map(|s| s.path.clone())
}

/// One key (from the key to the end of its value) or array element.
#[derive(Debug)]
struct Spot {
    path: String,
    span: Range<usize>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

fn walk_table(table: &toml_edit::Table, path: &str, out: &mut Vec<Spot>) {
    if let Some(span) = table.span() {
        out.push(Spot { path: path.to_owned(), span });
    }
    for (name, item) in table.iter() {
        let here = join(path, name);
        let start = table.key(name).and_then(toml_edit::Key::span).map(|s| s.start);
        match item {
            toml_edit::Item::Table(t) => walk_table(t, &here, out),
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    walk_table(t, &format!("{here}[{i}]"), out);
                }
            }
            toml_edit::Item::Value(v) => walk_value(v, start, &here, out),
            toml_edit::Item::None => {}
        }
    }
}

fn walk_value(value: &toml_edit::Value, key_start: Option<usize>, path: &str, out: &mut Vec<Spot>) {
    if let Some(span) = value.span() {
        out.push(Spot { path: path.to_owned(), span: key_start.unwrap_or(span.start)..span.end });
    }
    match value {
        toml_edit::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk_value(v, None, &format!("{path}[{i}]"), out);
            }
        }
        toml_edit::Value::InlineTable(t) => {
            for (name, v) in t.iter() {
                let start = t.key(name).and_then(toml_edit::Key::span).map(|s| s.start);
                walk_value(v, start, &join(path, name), out);
            }
        }
        _ => {}
    }
}
