//! Per-principal authorization (`[[access]]`): which namespaced tools,
//! prompts and resources a principal may see and use, and constraints on
//! argument values.
//!
//! Semantics (written in docs/security.md, "What a principal may use"):
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

use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};
use serde_json::Value;

use super::Ident;
use super::auth::Principal;
use crate::config::{AccessSection, ToolMatcher};
use crate::protocol::Checked;

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
    arguments: Vec<String>,
    prefixes: Vec<String>,
    resolve: bool,
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
                            arguments: r.argument.clone(),
                            prefixes: r.prefix.clone(),
                            resolve: r.resolve,
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
            .filter(|e| e.principals.iter().any(|x| p.is_named(x)) || e.groups.iter().any(|g| p.in_group(g)))
            .cloned()
            .collect();
        Arc::new(Grants { open: false, entries })
    }
}

// === impl Grants ===

/// Grants are equal when they are made of the same compiled entries (of
/// the same [`Access`], so the same entries apply): they then allow
/// exactly the same, whoever they belong to. Many principals share a few
/// such sets (a group's, everyone's), so what a set sees can be worked out
/// once per set rather than once per session. Grants of different
/// `Access`es (before and after a reload) are never equal, even when the
/// entries read alike: a cache that misses, never one that lies.
impl PartialEq for Grants {
    fn eq(&self, other: &Self) -> bool {
        self.open == other.open
            && self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl Eq for Grants {}

impl std::hash::Hash for Grants {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.open.hash(state);
        for e in &self.entries {
            std::ptr::hash(Arc::as_ptr(e), state);
        }
    }
}

impl Grants {
    /// Nothing allowed: the grants of a session whose API key a reload
    /// removed.
    pub fn none() -> Arc<Self> {
        Arc::new(Grants { open: false, entries: Vec::new() })
    }

    /// Everything allowed (no `[[access]]`).
    pub fn open() -> Arc<Self> {
        Arc::new(Grants { open: true, entries: Vec::new() })
    }

    /// Whether everything is allowed, so callers can skip filtering.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether the principal may see and use the `kind` item `name` (a
    /// tool or prompt by every spelling of its identity, a resource by its
    /// exposed URI).
    pub fn allows<'n>(&self, kind: Kind, name: impl Into<Ident<'n>>) -> bool {
        let name = name.into();
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

    /// Checks the argument constraints of `tool` against `arguments`
    /// (parsed only when a constraint applies). Fails closed: a named
    /// argument that is present must be a string or an array of strings,
    /// each under an allowed prefix; `null`, any other type, or arguments
    /// that are not an object are refused. An absent argument passes.
    ///
    /// `local` is the working directory of a stdio upstream (its files are
    /// this machine's): rules with `resolve` then check the canonical path
    /// of the longest existing prefix of each value. Elsewhere the check
    /// is lexical. Every refusal of a path says the same, whether or not
    /// the file exists.
    pub fn check_arguments(
        &self,
        tool: Ident<'_>,
        arguments: Option<Checked<'_>>,
        local: Option<&Path>,
    ) -> Result<(), ArgumentDenied> {
        let mut checks =
            self.entries.iter().flat_map(|e| e.arguments.iter()).filter(|c| tool.is_match(&c.tools)).peekable();
        let Some(first) = checks.peek() else { return Ok(()) };
        let denied = |argument: &str, reason| ArgumentDenied {
            tool: tool.key.to_owned(),
            argument: argument.to_owned(),
            reason,
        };
        // No arguments at all: every named one is absent.
        let Some(arguments) = arguments else { return Ok(()) };
        // Checked text always parses; anything but an object cannot be checked.
        let Some(Value::Object(args)) = arguments.value() else {
            return Err(denied(&first.arguments[0], "the arguments are not an object"));
        };
        for c in checks {
            for name in &c.arguments {
                let values: Vec<&str> = match args.get(name) {
                    None => continue,
                    Some(Value::String(s)) => vec![s.as_str()],
                    Some(Value::Array(a)) => {
                        let strings: Option<Vec<&str>> = a.iter().map(Value::as_str).collect();
                        strings.ok_or_else(|| denied(name, "not a string or a list of strings"))?
                    }
                    Some(_) => return Err(denied(name, "not a string or a list of strings")),
                };
                for v in values {
                    let normal = normalize(v).ok_or_else(|| denied(name, "not a clean path"))?;
                    let inside = match (c.resolve, local) {
                        (true, Some(base)) => {
                            // Relative to the upstream's working directory.
                            let lexical = match Path::new(&normal).is_absolute() {
                                true => Some(normal.clone()),
                                false => normalize(&format!("{}/{normal}", base.display())),
                            };
                            lexical.is_some_and(|l| c.prefixes.iter().any(|p| under(&l, p)))
                                && resolved_under(v, &normal, base, &c.prefixes)
                        }
                        _ => c.prefixes.iter().any(|p| under(&normal, p)),
                    };
                    if !inside {
                        return Err(denied(name, "not under an allowed prefix"));
                    }
                }
            }
        }
        Ok(())
    }
}

impl ToolMatcher {
    /// `Some(false)`: a deny glob matches a spelling; `Some(true)`: an allow
    /// glob does; `None`: this entry does not name it (it says nothing).
    fn allows(&self, name: Ident<'_>) -> Option<bool> {
        if name.names().any(|n| self.denies(n)) {
            return Some(false);
        }
        name.names().any(|n| self.allow_matches(n)).then_some(true)
    }
}

/// Longest path value a `resolve` rule looks up on disk, and most
/// components: a real path is shorter (`PATH_MAX` is 4096), and the walk
/// costs a `lstat` per component on the request path.
const RESOLVE_MAX_BYTES: usize = 4096;
const RESOLVE_MAX_COMPONENTS: usize = 256;

/// Whether `raw` (as the client sent it; `normal` its lexical form,
/// already under a prefix) is under a prefix once symlinks are followed,
/// however the upstream opens it: walked on disk component by component
/// as the kernel does (a link followed before a `..` after it), and its
/// lexical form walked (what Node's `path.resolve` then opens). Both must
/// land under a prefix. A link that leads nowhere, a `..` below a part
/// that does not exist, or a value too long to walk cannot be checked:
/// not under.
fn resolved_under(raw: &str, normal: &str, base: &Path, prefixes: &[String]) -> bool {
    if raw.len() > RESOLVE_MAX_BYTES || Path::new(raw).components().count() > RESOLVE_MAX_COMPONENTS {
        return false;
    }
    let prefixes: Vec<PathBuf> = prefixes
        .iter()
        .map(|p| {
            let p = p.trim_end_matches('/');
            let p = if p.is_empty() { "/" } else { p };
            walk(Path::new(p), base).unwrap_or_else(|| base.join(p))
        })
        .collect();
    let inside = |real: Option<PathBuf>| real.is_some_and(|r| prefixes.iter().any(|p| r.starts_with(p)));
    inside(walk(Path::new(raw), base)) && inside(walk(Path::new(normal), base))
}

/// Where `path` (relative to `base`) leads on disk: each existing
/// component followed (symlinks resolved), `..` applied to what the
/// component before led to, the part that does not exist appended as it
/// is. `None` when a symlink leads nowhere (or loops) or a `..` follows a
/// part that does not exist. One `lstat` per component: linear.
fn walk(path: &Path, base: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut real = if path.is_absolute() { PathBuf::from("/") } else { std::fs::canonicalize(base).ok()? };
    let mut missing = false;
    for part in path.components() {
        match part {
            Component::RootDir | Component::Prefix(_) => real = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir if missing => return None,
            Component::ParentDir => {
                real.pop();
            }
            Component::Normal(name) => {
                let next = real.join(name);
                if missing {
                    real = next;
                    continue;
                }
                real = match std::fs::symlink_metadata(&next) {
                    Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(&next).ok()?,
                    Ok(_) => next,
                    Err(_) => {
                        missing = true;
                        next
                    }
                };
            }
        }
    }
    Some(real)
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
mod tests;
