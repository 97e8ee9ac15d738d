//! The catalog as `/status` shows it (`catalog`): every routed tool with
//! its description, annotations and flags, and the quarantined ones.
//!
//! Everything here but the flags is the upstream's own words, and
//! untrusted: the annotations are only the spec's known hints, each kept
//! only when it has the spec's type, and texts are cut to a bound, so an
//! upstream cannot make `/status` hold what it likes. What reads this
//! (the status page) renders it as text, never as markup.

use super::{Catalog, UpstreamIx};
use crate::protocol::{Checked, cut};

/// Longest description kept, in characters.
const DESCRIPTION_MAX_CHARS: usize = 2000;

/// Longest annotation title kept, in characters.
const TITLE_MAX_CHARS: usize = 200;

/// The spec's boolean hints (MCP `ToolAnnotations`).
const HINTS: [&str; 4] = ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"];

// === impl Catalog ===

impl Catalog {
    /// `catalog` of `/status`: `tools` (every routed tool, hidden ones
    /// too: `name`, `upstream` (its id, from `upstream_id`), `original`,
    /// `description`, `annotations`, `hidden`, `quarantined`, `cached`)
    /// and `quarantined` (the names of those held by `[pinning]`).
    pub fn status<'a>(&self, upstream_id: impl Fn(UpstreamIx) -> &'a str) -> serde_json::Value {
        let tools: Vec<_> = self
            .tools()
            .iter()
            .map(|t| {
                let def = t.def.checked();
                let text = |c: Checked<'_>, max| c.str().map(|s| cut(&s, max).into_owned());
                let mut v = serde_json::json!({
                    "name": t.name,
                    "upstream": upstream_id(t.upstream),
                    "original": &*t.original,
                    "description": def.get("description").and_then(|d| text(d, DESCRIPTION_MAX_CHARS)),
                    "hidden": t.hidden,
                    "quarantined": t.quarantined,
                    "cached": t.cached,
                });
                if let Some(a) = def.get("annotations").and_then(Checked::object) {
                    let mut known = serde_json::Map::new();
                    if let Some(title) = a.get("title").and_then(|c| text(c, TITLE_MAX_CHARS)) {
                        known.insert("title".to_owned(), title.into());
                    }
                    for hint in HINTS {
                        if let Some(b) = a.get(hint).and_then(|c| c.value()).filter(serde_json::Value::is_boolean) {
                            known.insert(hint.to_owned(), b);
                        }
                    }
                    v["annotations"] = known.into();
                }
                v
            })
            .collect();
        let quarantined: Vec<&str> = self.tools().iter().filter(|t| t.quarantined).map(|t| t.name.as_str()).collect();
        serde_json::json!({ "tools": tools, "quarantined": quarantined })
    }
}
