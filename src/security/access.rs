//! Per-principal authorization (`[[access]]`): which namespaced tools,
//! prompts and resources a principal may see and use, and constraints on
//! argument values.
//!
//! Semantics (written in README "Access control"):
//! - no `[[access]]` entry at all: everything is open (the default);
//! - otherwise an entry applies to a principal named in `principals`
//!   (`"*"`: everyone) or in one of its `groups`; an item is allowed when
//!   an applying entry's `allow` names it and no applying entry's `deny`
//!   does. Granting is explicit (`allow = ["*"]` for everything): an entry
//!   with only `deny` takes away and never grants, so a deny list for
//!   `"*"` cannot open everything by accident; a principal no entry
//!   grants anything gets nothing.
//!
//! A principal's [`Grants`] are computed once per session, so a request
//! pays only the glob matches of the entries that apply to it.

use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use serde_json::Value;
use serde_json::value::RawValue;

use super::auth::Principal;
use crate::config::{AccessSection, ToolMatcher};

/// The kinds of named things `[[access]]` governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A namespaced tool name.
    Tool,
    /// A namespaced prompt name.
    Prompt,
    /// An exposed resource URI or URI template.
    Resource,
}

/// Every `[[access]]` entry, compiled.
#[derive(Debug, Default)]
pub struct Access {
    entries: Vec<Arc<Entry>>,
}

#[derive(Debug)]
struct Entry {
    principals: Vec<String>,
    groups: Vec<String>,
    tools: ToolMatcher,
    prompts: ToolMatcher,
    resources: ToolMatcher,
    arguments: Vec<ArgumentCheck>,
}

#[derive(Debug)]
struct ArgumentCheck {
    tools: GlobMatcher,
    argument: String,
    prefixes: Vec<String>,
}

/// What one principal may do; shared by its sessions' requests.
#[derive(Debug)]
pub struct Grants {
    /// No `[[access]]` at all: everything.
    open: bool,
    entries: Vec<Arc<Entry>>,
}

/// An argument outside its allowed prefixes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument `{argument}` of {tool} is outside what you may use ({reason})")]
pub struct ArgumentDenied {
    /// The tool.
    pub tool: String,
    /// The argument.
    pub argument: String,
    /// Why, without echoing the value.
    pub reason: &'static str,
}

// === impl Access ===

impl Access {
    /// Compiles `[[access]]` (already checked by the config loader).
    pub fn new(sections: &[AccessSection]) -> Self {
        let entries = sections
            .iter()
            .map(|a| {
                let arguments = a
                    .arguments
                    .iter()
                    .filter_map(|r| {
                        Some(ArgumentCheck {
                            tools: Glob::new(&r.tools).ok()?.compile_matcher(),
                            argument: r.argument.clone(),
                            prefixes: r.prefix.clone(),
                        })
                    })
                    .collect();
                Arc::new(Entry {
                    principals: a.principals.clone(),
                    groups: a.groups.clone(),
                    tools: ToolMatcher::new(&a.tools).unwrap_or_else(|_| ToolMatcher::none()),
                    prompts: ToolMatcher::new(&a.prompts).unwrap_or_else(|_| ToolMatcher::none()),
                    resources: ToolMatcher::new(&a.resources).unwrap_or_else(|_| ToolMatcher::none()),
                    arguments,
                })
            })
            .collect();
        Access { entries }
    }

    /// The grants of `p`.
    pub fn grants(&self, p: &Principal) -> Arc<Grants> {
        if self.entries.is_empty() {
            return Arc::new(Grants { open: true, entries: Vec::new() });
        }
        let entries = self
            .entries
            .iter()
            .filter(|e| e.principals.iter().any(|x| x == "*" || *x == *p.id) || e.groups.iter().any(|g| p.in_group(g)))
            .cloned()
            .collect();
        Arc::new(Grants { open: false, entries })
    }
}

// === impl Grants ===

impl Grants {
    /// Everything allowed (no `[[access]]`).
    pub fn open() -> Arc<Self> {
        Arc::new(Grants { open: true, entries: Vec::new() })
    }

    /// Whether everything is allowed, so callers can skip filtering.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether the principal may see and use the `kind` item `name`.
    pub fn allows(&self, kind: Kind, name: &str) -> bool {
        if self.open {
            return true;
        }
        let filter = |e: &Entry| match kind {
            Kind::Tool => e.tools.allows(name),
            Kind::Prompt => e.prompts.allows(name),
            Kind::Resource => e.resources.allows(name),
        };
        let mut allowed = false;
        for e in &self.entries {
            match filter(e) {
                Some(false) => return false,
                Some(true) => allowed = true,
                None => {}
            }
        }
        allowed
    }

    /// Checks the argument constraints of `tool` (namespaced) against
    /// `arguments`; parses them only when a constraint applies.
    pub fn check_arguments(&self, tool: &str, arguments: Option<&RawValue>) -> Result<(), ArgumentDenied> {
        let mut checks = self.entries.iter().flat_map(|e| e.arguments.iter()).filter(|c| c.tools.is_match(tool));
        let Some(first) = checks.next() else { return Ok(()) };
        let args: Value = arguments.and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or(Value::Null);
        for c in std::iter::once(first).chain(checks) {
            let denied = |reason| ArgumentDenied { tool: tool.to_owned(), argument: c.argument.clone(), reason };
            let values: Vec<&str> = match args.get(&c.argument) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(a)) => {
                    let strings: Option<Vec<&str>> = a.iter().map(Value::as_str).collect();
                    strings.ok_or_else(|| denied("not a string or a list of strings"))?
                }
                Some(_) => return Err(denied("not a string or a list of strings")),
            };
            for v in values {
                let normal = normalize(v).ok_or_else(|| denied("not a clean path"))?;
                if !c.prefixes.iter().any(|p| under(&normal, p)) {
                    return Err(denied("not under an allowed prefix"));
                }
            }
        }
        Ok(())
    }
}

impl ToolMatcher {
    /// `Some(false)`: denied; `Some(true)`: allowed; `None`: this entry
    /// does not name it (it says nothing).
    fn allows(&self, name: &str) -> Option<bool> {
        if self.denies(name) {
            return Some(false);
        }
        self.allow_matches(name).then_some(true)
    }
}

/// `path` with `.` and `..` resolved lexically (`None` for a NUL byte or a
/// `..` above the root), so `/srv/data/../etc` cannot pass as `/srv/data`.
fn normalize(path: &str) -> Option<String> {
    if path.contains('\0') {
        return None;
    }
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    Some(if absolute { format!("/{joined}") } else { joined })
}

/// Whether `path` is `prefix` or below it (a prefix ending in `/`, or a
/// whole path component: `/srv/data` does not admit `/srv/database`).
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')) || prefix.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ArgumentRule, ToolFilter};

    fn principal(id: &str, groups: &[&str]) -> Principal {
        Principal {
            id: id.into(),
            groups: groups.iter().map(|g| Arc::from(*g)).collect(),
            scopes: Box::new([]),
            via: crate::security::auth::Via::ApiKey,
        }
    }

    fn filter(allow: &[&str], deny: &[&str]) -> ToolFilter {
        ToolFilter {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn access() -> Access {
        Access::new(&[
            AccessSection {
                groups: vec!["analysts".into()],
                tools: filter(&["filesystem__read_*", "postgres__*"], &[]),
                resources: filter(&["file+filesystem://*"], &[]),
                arguments: vec![ArgumentRule {
                    tools: "filesystem__*".into(),
                    argument: "path".into(),
                    prefix: vec!["/srv/data/".into()],
                }],
                ..AccessSection::default()
            },
            AccessSection {
                principals: vec!["*".into()],
                tools: filter(&[], &["*delete*"]),
                ..AccessSection::default()
            },
            AccessSection {
                principals: vec!["admin".into()],
                tools: filter(&["*"], &[]),
                prompts: filter(&["*"], &[]),
                ..AccessSection::default()
            },
        ])
    }

    #[test]
    fn no_entries_is_open() {
        let g = Access::new(&[]).grants(&principal("x", &[]));
        assert!(g.is_open() && g.allows(Kind::Tool, "anything__at_all"));
    }

    #[test]
    fn allow_needs_an_applying_entry_and_deny_wins() {
        let a = access();
        let analyst = a.grants(&principal("ann", &["analysts"]));
        assert!(analyst.allows(Kind::Tool, "filesystem__read_text_file"));
        assert!(analyst.allows(Kind::Tool, "postgres__query"));
        assert!(!analyst.allows(Kind::Tool, "filesystem__write_file"), "not in the analysts' allow list");
        assert!(!analyst.allows(Kind::Tool, "postgres__delete_rows"), "denied to everyone");
        assert!(!analyst.allows(Kind::Prompt, "everything__simple-prompt"), "no entry allows prompts");
        assert!(analyst.allows(Kind::Resource, "file+filesystem:///srv/data/a.txt"));

        let admin = a.grants(&principal("admin", &[]));
        assert!(admin.allows(Kind::Tool, "filesystem__write_file") && admin.allows(Kind::Prompt, "p"));
        assert!(!admin.allows(Kind::Tool, "x__delete_all"), "the deny for everyone applies to admin too");

        // Only the "*" entry applies, and a deny list grants nothing.
        let other = a.grants(&principal("bob", &[]));
        assert!(!other.allows(Kind::Tool, "filesystem__write_file") && !other.allows(Kind::Tool, "x__list"));
    }

    #[test]
    fn a_principal_no_entry_names_gets_nothing() {
        let a = Access::new(&[AccessSection {
            principals: vec!["alice".into()],
            tools: filter(&["*"], &[]),
            ..AccessSection::default()
        }]);
        let g = a.grants(&principal("mallory", &[]));
        assert!(!g.allows(Kind::Tool, "fs__read") && !g.allows(Kind::Resource, "x://y"));
    }

    #[test]
    fn path_arguments_stay_under_their_prefix() {
        let g = access().grants(&principal("ann", &["analysts"]));
        let check = |args: &str| {
            let raw = RawValue::from_string(args.to_owned()).unwrap();
            g.check_arguments("filesystem__read_text_file", Some(&raw))
        };
        assert_eq!(check(r#"{"path":"/srv/data/a.txt"}"#), Ok(()));
        assert_eq!(check(r#"{"path":"/srv/data"}"#), Ok(()));
        assert_eq!(check(r#"{"other":1}"#), Ok(()), "absent: nothing to check");
        for bad in [
            r#"{"path":"/srv/data/../../etc/passwd"}"#,
            r#"{"path":"/srv/database/x"}"#,
            r#"{"path":"relative.txt"}"#,
            r#"{"path":"/srv/data/ok","paths":1}"#.replace("\"path\":\"/srv/data/ok\",", "\"path\":7,").as_str(),
            r#"{"path":["/srv/data/a","/etc/shadow"]}"#,
            r#"{"path":"/../srv/data"}"#,
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert_eq!(check(r#"{"path":["/srv/data/a","/srv/data/b/../c"]}"#), Ok(()));
        let e = check(r#"{"path":"/etc/passwd"}"#).unwrap_err();
        assert!(!e.to_string().contains("passwd"), "the value is not echoed: {e}");
        // Other tools are unconstrained.
        let raw = RawValue::from_string(r#"{"path":"/etc"}"#.into()).unwrap();
        assert_eq!(g.check_arguments("postgres__query", Some(&raw)), Ok(()));
    }
}
