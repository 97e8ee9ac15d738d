//! The merged tool catalog (design.md D4).
//!
//! Built from every ready upstream's raw tool list, in upstream-id order, so
//! the result is deterministic. Exposed names are `<id>__<tool>` (or the bare
//! name with `prefix = false`); a name longer than the maximum is shortened
//! to a stable `<head>-<8 hex of SHA-256>` and still routes. A name that
//! would collide is refused and logged, never silently shadowed: prefixed
//! names are unique by construction, so they take precedence, then
//! unprefixed upstreams in id order.
//!
//! Each definition is rewritten only in its `name`; every other member is
//! forwarded byte-for-byte. The `tools/list` result is rendered once per
//! change, so serving it costs one copy.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::ToolMatcher;
use crate::protocol::RawObject;
use crate::upstream::ToolHints;

/// Separator between the upstream id and the tool name.
pub const SEPARATOR: &str = "__";

/// The input for one upstream.
#[derive(Debug)]
pub struct Source<'a> {
    /// Index of the upstream in the gateway's list.
    pub upstream: usize,
    /// Its id.
    pub id: &'a str,
    /// Whether its tools are prefixed.
    pub prefix: bool,
    /// Its allow/deny globs.
    pub filter: &'a ToolMatcher,
    /// Its raw tool definitions.
    pub tools: &'a [Box<RawValue>],
    /// All its tools are hidden (its breaker is not closed).
    pub hidden: bool,
    /// Its tools (original names) hidden by their own breaker.
    pub hidden_tools: &'a [String],
}

/// One exposed tool.
#[derive(Debug)]
pub struct Tool {
    /// The name clients see.
    pub name: String,
    /// Index of the owning upstream.
    pub upstream: usize,
    /// The name the upstream knows it by (shared: it is also a metric
    /// label).
    pub original: std::sync::Arc<str>,
    /// The definition as exposed (renamed).
    pub def: Box<RawValue>,
    /// What its annotations claim (for retry safety).
    pub hints: ToolHints,
    /// Left out of `tools/list` while a breaker is open, but still routed,
    /// so a call fails fast with `breaker_open` rather than "unknown".
    pub hidden: bool,
}

/// A tool that was not exposed because its name was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The refused name.
    pub name: String,
    /// The upstream whose tool was refused.
    pub refused: String,
    /// The upstream that owns the name.
    pub owner: String,
}

/// The merged catalog.
#[derive(Debug)]
pub struct Catalog {
    tools: Vec<Tool>,
    by_name: HashMap<String, usize>,
    list_result: Box<RawValue>,
    /// Tools refused for a name collision.
    pub collisions: Vec<Collision>,
}

// === impl Catalog ===

impl Catalog {
    /// An empty catalog.
    pub fn empty() -> Self {
        Self::build(&[], 128)
    }

    /// Merges `sources` (in the order given) under `max_len`.
    pub fn build(sources: &[Source<'_>], max_len: usize) -> Self {
        let mut tools: Vec<Tool> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut collisions = Vec::new();
        // Prefixed upstreams first: their names cannot collide with each
        // other, so they always win over an unprefixed upstream.
        let ordered = sources.iter().filter(|s| s.prefix).chain(sources.iter().filter(|s| !s.prefix));
        for src in ordered {
            for def in src.tools {
                let Ok(mut obj) = RawObject::parse(def.get()) else {
                    tracing::warn!(upstream = %src.id, "Skipped a tool definition that is not a JSON object.");
                    continue;
                };
                let Some(original) = obj.get_str("name") else {
                    tracing::warn!(upstream = %src.id, "Skipped a tool without a string name.");
                    continue;
                };
                if !src.filter.exposes(&original) {
                    continue;
                }
                let full = if src.prefix { format!("{}{SEPARATOR}{original}", src.id) } else { original.clone() };
                let name = shorten(&full, max_len);
                match by_name.entry(name) {
                    Entry::Occupied(e) => {
                        let owner =
                            sources.iter().find(|s| s.upstream == tools[*e.get()].upstream).map_or("", |s| s.id);
                        tracing::error!(
                            upstream = %src.id, tool = %original, owner = %owner,
                            "Tool name collides with an exposed tool; refused (set `prefix = true` or a deny glob)."
                        );
                        collisions.push(Collision {
                            name: e.key().clone(),
                            refused: src.id.to_owned(),
                            owner: owner.to_owned(),
                        });
                    }
                    Entry::Vacant(e) => {
                        obj.set_str("name", e.key());
                        let hints = hints(&obj);
                        let hidden = src.hidden || src.hidden_tools.contains(&original);
                        let def = obj.to_raw();
                        tools.push(Tool {
                            name: e.key().clone(),
                            upstream: src.upstream,
                            original: original.as_str().into(),
                            def,
                            hints,
                            hidden,
                        });
                        e.insert(tools.len() - 1);
                    }
                }
            }
        }
        let list_result = render(&tools);
        Catalog { tools, by_name, list_result, collisions }
    }

    /// Looks up an exposed name.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.by_name.get(name).map(|&i| &self.tools[i])
    }

    /// Every routed tool, in catalog order, hidden ones included.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// The rendered `tools/list` result.
    pub fn list_result(&self) -> &RawValue {
        &self.list_result
    }

    /// Whether clients would see the same list.
    pub fn same_as(&self, other: &Catalog) -> bool {
        self.list_result.get() == other.list_result.get()
    }
}

/// `annotations.readOnlyHint` and `annotations.idempotentHint`.
fn hints(def: &RawObject) -> ToolHints {
    let Some(a) = def.get("annotations").and_then(|a| RawObject::parse(a.get()).ok()) else {
        return ToolHints::default();
    };
    let yes = |k: &str| a.get(k).is_some_and(|v| v.get() == "true");
    ToolHints { read_only: yes("readOnlyHint"), idempotent: yes("idempotentHint") }
}

fn render(tools: &[Tool]) -> Box<RawValue> {
    let len = tools.iter().map(|t| t.def.get().len() + 1).sum::<usize>();
    let mut s = String::with_capacity(len + 16);
    s.push_str(r#"{"tools":["#);
    for (i, t) in tools.iter().filter(|t| !t.hidden).enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(t.def.get());
    }
    s.push_str("]}");
    RawValue::from_string(s).expect("definitions are valid JSON")
}

/// Shortens `name` to at most `max` bytes, deterministically: the head of
/// the name, `-`, and the first 8 hex digits of its SHA-256.
pub fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut head = max.saturating_sub(hash.len() + 1);
    while !name.is_char_boundary(head) {
        head -= 1;
    }
    format!("{}-{hash}", &name[..head])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(names: &[&str]) -> Vec<Box<RawValue>> {
        names
            .iter()
            .map(|n| {
                RawValue::from_string(format!(
                    r#"{{"name":"{n}","x-extra":{{"b":1,"a":2}},"inputSchema":{{"type":"object"}}}}"#
                ))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn prefixes_and_keeps_other_members() {
        let all = ToolMatcher::all();
        let t = defs(&["read_file", "a.b-c_d"]);
        let c = Catalog::build(
            &[Source {
                upstream: 0,
                id: "fs",
                prefix: true,
                filter: &all,
                tools: &t,
                hidden: false,
                hidden_tools: &[],
            }],
            128,
        );
        let names: Vec<_> = c.tools().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fs__read_file", "fs__a.b-c_d"]);
        assert_eq!(&*c.get("fs__a.b-c_d").unwrap().original, "a.b-c_d");
        assert_eq!(
            c.list_result().get(),
            r#"{"tools":[{"name":"fs__read_file","x-extra":{"b":1,"a":2},"inputSchema":{"type":"object"}},{"name":"fs__a.b-c_d","x-extra":{"b":1,"a":2},"inputSchema":{"type":"object"}}]}"#
        );
    }

    #[test]
    fn unprefixed_collisions_are_refused_not_shadowed() {
        let all = ToolMatcher::all();
        let (a, b, c) = (defs(&["echo", "only_b"]), defs(&["echo", "x"]), defs(&["echo"]));
        let cat = Catalog::build(
            &[
                Source {
                    upstream: 0,
                    id: "b",
                    prefix: false,
                    filter: &all,
                    tools: &a,
                    hidden: false,
                    hidden_tools: &[],
                },
                Source {
                    upstream: 1,
                    id: "c",
                    prefix: false,
                    filter: &all,
                    tools: &b,
                    hidden: false,
                    hidden_tools: &[],
                },
                Source {
                    upstream: 2,
                    id: "d",
                    prefix: true,
                    filter: &all,
                    tools: &c,
                    hidden: false,
                    hidden_tools: &[],
                },
            ],
            128,
        );
        assert_eq!(cat.get("echo").unwrap().upstream, 0);
        assert_eq!(cat.get("d__echo").unwrap().upstream, 2);
        assert_eq!(cat.collisions, vec![Collision { name: "echo".into(), refused: "c".into(), owner: "b".into() }]);
        assert_eq!(cat.tools().len(), 4);
    }

    #[test]
    fn hidden_tools_route_but_are_not_listed() {
        let all = ToolMatcher::all();
        let (a, b) = (defs(&["x", "y"]), defs(&["z"]));
        let hidden_y = ["y".to_owned()];
        let cat = Catalog::build(
            &[
                Source {
                    upstream: 0,
                    id: "a",
                    prefix: true,
                    filter: &all,
                    tools: &a,
                    hidden: false,
                    hidden_tools: &hidden_y,
                },
                Source { upstream: 1, id: "b", prefix: true, filter: &all, tools: &b, hidden: true, hidden_tools: &[] },
            ],
            128,
        );
        assert!(cat.get("a__y").unwrap().hidden && cat.get("b__z").unwrap().hidden);
        assert!(!cat.get("a__x").unwrap().hidden);
        let listed: serde_json::Value = serde_json::from_str(cat.list_result().get()).unwrap();
        assert_eq!(listed["tools"].as_array().unwrap().len(), 1);
        assert_eq!(listed["tools"][0]["name"], "a__x");
    }

    #[test]
    fn annotations_become_hints() {
        let all = ToolMatcher::all();
        let t: Vec<_> = [
            r#"{"name":"r","annotations":{"readOnlyHint":true}}"#,
            r#"{"name":"i","annotations":{"idempotentHint":true,"readOnlyHint":false}}"#,
            r#"{"name":"n","annotations":{"readOnlyHint":"yes"}}"#,
        ]
        .iter()
        .map(|d| RawValue::from_string((*d).to_owned()).unwrap())
        .collect();
        let c = Catalog::build(
            &[Source { upstream: 0, id: "s", prefix: true, filter: &all, tools: &t, hidden: false, hidden_tools: &[] }],
            128,
        );
        assert_eq!(c.get("s__r").unwrap().hints, ToolHints { read_only: true, idempotent: false });
        assert_eq!(c.get("s__i").unwrap().hints, ToolHints { read_only: false, idempotent: true });
        assert_eq!(c.get("s__n").unwrap().hints, ToolHints::default());
    }

    #[test]
    fn long_names_are_shortened_stably_and_route() {
        let long = "t".repeat(128);
        let all = ToolMatcher::all();
        let t = defs(&[&long]);
        let c = Catalog::build(
            &[Source {
                upstream: 0,
                id: "srv",
                prefix: true,
                filter: &all,
                tools: &t,
                hidden: false,
                hidden_tools: &[],
            }],
            64,
        );
        let name = &c.tools()[0].name;
        assert_eq!(name.len(), 64);
        assert_eq!(name, &shorten(&format!("srv__{long}"), 64));
        assert_eq!(*c.get(name).unwrap().original, *long);
        assert_ne!(shorten(&format!("srv__{long}a"), 64), *name);
        assert_eq!(shorten("short", 64), "short");
    }
}
