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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::Source;
    use super::*;
    use crate::config::ToolMatcher;
    use crate::protocol::CheckedBox;
    use crate::upstream::Lists;

    #[test]
    fn tools_carry_their_texts_cut_known_annotations_and_flags() {
        let long = "d".repeat(3 * DESCRIPTION_MAX_CHARS);
        let defs = [
            format!(r#"{{"name":"long","description":"{long}","inputSchema":{{"type":"object"}}}}"#),
            // Unknown annotations and ones of the wrong type are left out.
            r#"{"name":"read","description":"<b>x</b>","inputSchema":{"type":"object"},
               "annotations":{"title":"Read","readOnlyHint":true,"destructiveHint":"yes","x":{"big":[1,2]}}}"#
                .to_owned(),
            r#"{"name":"plain","inputSchema":{"type":"object"}}"#.to_owned(),
        ];
        let lists = Lists {
            tools: defs.iter().map(|d| CheckedBox::parse(d, &Default::default()).unwrap()).collect::<Arc<[_]>>(),
            ..Lists::default()
        };
        let all = ToolMatcher::all();
        let source = Source {
            upstream: UpstreamIx::new(0),
            id: "fs",
            prefix: true,
            filter: &all,
            lists: &lists,
            hidden: false,
            hidden_tools: &[],
            cached: false,
        };
        let mut catalog = Catalog::build(&[source], 128, &[]);
        catalog.quarantine(&["fs__read".to_owned()].into(), true);
        let s = catalog.status(|_| "fs");
        let tools = s["tools"].as_array().unwrap();
        let by_name = |n: &str| tools.iter().find(|t| t["name"] == n).unwrap();

        let read = by_name("fs__read");
        assert_eq!(read["description"], "<b>x</b>", "as it came: the reader shows it as text");
        assert_eq!(read["annotations"], serde_json::json!({ "title": "Read", "readOnlyHint": true }));
        assert_eq!(
            (&read["quarantined"], &read["hidden"], &read["cached"]),
            (&true.into(), &true.into(), &false.into())
        );
        assert_eq!((&read["upstream"], &read["original"]), (&"fs".into(), &"read".into()));
        assert_eq!(s["quarantined"], serde_json::json!(["fs__read"]));

        let cut = by_name("fs__long")["description"].as_str().unwrap().chars().count();
        assert_eq!(cut, DESCRIPTION_MAX_CHARS + 1, "cut, with `…`");
        let plain = by_name("fs__plain");
        assert!(plain["description"].is_null() && plain.get("annotations").is_none(), "{plain}");
        assert_eq!(plain["quarantined"], false);
    }
}
