//! Allow/deny glob filters: `[upstreams.<id>.tools]` and the `[[access]]`
//! filters as written (`ToolFilter`), and compiled (`ToolMatcher`). Both
//! the file layout and the security sections use them, so they live below
//! both.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// `[upstreams.<id>.tools]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFilter {
    /// Only tools matching one of these globs are exposed (empty: all).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Tools matching one of these globs are never exposed. Deny wins.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A filter whose globs do not compile.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// One glob is malformed.
    #[error("invalid glob `{glob}`: {error}")]
    Glob {
        /// The glob as written.
        glob: String,
        /// globset's reason.
        error: globset::Error,
    },
    /// The set as a whole does not build.
    #[error("{0}")]
    Set(globset::Error),
}

/// Compiled allow/deny globs over an upstream's original tool names.
#[derive(Debug, Clone)]
pub struct ToolMatcher {
    allow: Option<GlobSet>,
    deny: GlobSet,
    /// The globs as written (allow, deny): what equality compares, since
    /// a compiled set cannot be (a reload tells changed filters by them).
    globs: (Option<Vec<String>>, Vec<String>),
}

impl PartialEq for ToolMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.globs == other.globs
    }
}

// === impl ToolMatcher ===

impl ToolMatcher {
    /// Compiles an allow/deny filter (errors name the bad glob).
    pub fn new(f: &ToolFilter) -> Result<Self, FilterError> {
        Ok(ToolMatcher {
            allow: if f.allow.is_empty() { None } else { Some(glob_set(&f.allow)?) },
            deny: glob_set(&f.deny)?,
            globs: ((!f.allow.is_empty()).then(|| f.allow.clone()), f.deny.clone()),
        })
    }

    /// Whether a tool of this upstream is exposed: allowed (or no allow list)
    /// and not denied. Deny wins.
    pub fn exposes(&self, tool: &str) -> bool {
        self.allow.as_ref().is_none_or(|a| a.is_match(tool)) && !self.deny.is_match(tool)
    }

    /// Whether an allow glob matches `tool` (false with no allow list).
    pub fn allow_matches(&self, tool: &str) -> bool {
        self.allow.as_ref().is_some_and(|a| a.is_match(tool))
    }

    /// Whether a deny glob matches `tool`.
    pub fn denies(&self, tool: &str) -> bool {
        self.deny.is_match(tool)
    }

    /// Matches everything.
    pub fn all() -> Self {
        ToolMatcher { allow: None, deny: GlobSet::empty(), globs: (None, Vec::new()) }
    }

    /// Matches exactly the names that match one of `globs` (none if empty).
    pub(super) fn only(globs: &[String]) -> Result<Self, FilterError> {
        Ok(ToolMatcher {
            allow: Some(glob_set(globs)?),
            deny: GlobSet::empty(),
            globs: (Some(globs.to_vec()), Vec::new()),
        })
    }

    /// Matches nothing.
    pub fn none() -> Self {
        ToolMatcher { allow: Some(GlobSet::empty()), deny: GlobSet::empty(), globs: (Some(Vec::new()), Vec::new()) }
    }
}

/// One set of `globs`; an error names the first bad one.
fn glob_set(globs: &[String]) -> Result<GlobSet, FilterError> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|error| FilterError::Glob { glob: g.clone(), error })?);
    }
    b.build().map_err(FilterError::Set)
}
