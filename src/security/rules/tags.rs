//! Tool tags: from `[tags]` globs, from MCP tool annotations, and
//! `upstream:<id>`; compiled once per tool into the steps it can match.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::security::Ident;

use super::{RuleSet, words};

/// A tool's tags, compiled against one rule set: which steps the tool can
/// match before looking at arguments, and the tag names for the audit log.
/// Cloning is an `Arc` clone.
#[derive(Debug, Clone)]
pub struct Tags(Arc<TagsInner>);

#[derive(Debug)]
struct TagsInner {
    generation: u64,
    /// Bit per step id: the tool passes the step's `tool(s)` and `tags`.
    steps: Box<[u64]>,
    /// Sorted, without duplicates.
    names: Box<[Box<str>]>,
}

/// The tool annotations the derived tags come from (MCP `ToolAnnotations`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hints {
    read_only_hint: Option<bool>,
    destructive_hint: Option<bool>,
    idempotent_hint: Option<bool>,
    open_world_hint: Option<bool>,
}

// === impl RuleSet ===

impl RuleSet {
    /// The tags of a tool: those of every `[tags]` glob matching a
    /// spelling of `tool` (its canonical key, or its bare name on an
    /// unprefixed upstream; never a shortened name), those derived from its MCP `annotations` object with the
    /// spec's defaults (`read-only`, `destructive`, `idempotent`,
    /// `open-world`), and `upstream:<upstream>`. Meant to be computed once per
    /// tool per catalog build; this is where globs are matched.
    ///
    /// Annotations that are not a JSON object of hints count as absent.
    pub fn tags_for<'t>(&self, tool: impl Into<Ident<'t>>, upstream: &str, annotations: Option<&RawValue>) -> Tags {
        let tool = tool.into();
        let mut names = self.glob_tags(tool);
        names.extend(derived_tags(annotations).into_iter().map(Box::from));
        names.push(format!("upstream:{upstream}").into());
        self.compile_tags(tool, names)
    }

    /// Tags from names recorded earlier (an audit line's `tags`), taken as
    /// they are: nothing is derived or added.
    pub fn tags_from_names<'t, 'n>(
        &self,
        tool: impl Into<Ident<'t>>,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Tags {
        self.compile_tags(tool.into(), names.into_iter().map(Box::from).collect())
    }

    /// The `[tags]` of every glob that matches a spelling of `tool`.
    pub(super) fn glob_tags(&self, tool: Ident<'_>) -> Vec<Box<str>> {
        let mut hit = vec![false; self.tag_lists.len()];
        for name in tool.names() {
            for i in self.tag_globs.matches(name) {
                hit[i] = true;
            }
        }
        let mut names = Vec::new();
        for (i, _) in hit.iter().enumerate().filter(|(_, h)| **h) {
            names.extend(self.tag_lists[i].tags.iter().map(|t| Box::from(t.as_str())));
        }
        names
    }

    pub(super) fn compile_tags(&self, tool: Ident<'_>, mut names: Vec<Box<str>>) -> Tags {
        names.sort_unstable();
        names.dedup();
        let mut globs = vec![false; self.tool_globs.len()];
        for name in tool.names() {
            for g in self.tool_globs.matches(name) {
                globs[g] = true;
            }
        }
        let mut steps = vec![0u64; words(self.steps.len())].into_boxed_slice();
        for (id, step) in self.steps.iter().enumerate() {
            let tool = step.globs.is_empty() || step.globs.iter().any(|&g| globs[g as usize]);
            if tool && step.tags.iter().all(|t| names.binary_search(t).is_ok()) {
                steps[id / 64] |= 1 << (id % 64);
            }
        }
        Tags(Arc::new(TagsInner { generation: self.generation, steps, names: names.into_boxed_slice() }))
    }
}

// === impl Tags ===

impl Tags {
    /// The rule set these were compiled against.
    pub(super) fn generation(&self) -> u64 {
        self.0.generation
    }

    /// Bit per step id: the steps the tool can match, arguments aside.
    pub(super) fn steps(&self) -> &[u64] {
        &self.0.steps
    }

    /// The tag names, sorted: what the audit log's `tags` records. All of
    /// them, including those no rule mentions, so a replay under other rules
    /// still knows them.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.names.iter().map(|n| &**n)
    }

    /// Whether the tool has `tag`.
    pub fn contains(&self, tag: &str) -> bool {
        self.0.names.binary_search_by(|n| (**n).cmp(tag)).is_ok()
    }
}

/// The derived tags, with the spec's defaults for missing hints
/// (readOnly false, destructive true, idempotent false, openWorld true);
/// destructive and idempotent mean something only for a tool that is not
/// read-only.
fn derived_tags(annotations: Option<&RawValue>) -> Vec<&'static str> {
    let hints: Hints = annotations.and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or_default();
    let mut tags = Vec::with_capacity(3);
    let read_only = hints.read_only_hint.unwrap_or(false);
    if read_only {
        tags.push("read-only");
    } else {
        if hints.destructive_hint.unwrap_or(true) {
            tags.push("destructive");
        }
        if hints.idempotent_hint.unwrap_or(false) {
            tags.push("idempotent");
        }
    }
    if hints.open_world_hint.unwrap_or(true) {
        tags.push("open-world");
    }
    tags
}
