//! Security (docs/design.md D9, issue 6): who the client is, what it may do,
//! and what the gateway refuses or masks on its behalf.
//!
//! Architecture Invariant: these modules decide; they never do I/O on the
//! request path. [`crate::downstream`] authenticates, [`crate::routing`]
//! asks them for decisions; they import only [`crate::config`] and
//! [`crate::protocol`].

pub mod access;
pub mod auth;
pub mod limits;
pub mod pins;
pub mod rules;

/// What policy knows a tool or prompt by (docs/design.md D12): its canonical
/// key `<upstream>__<original>` and, for an upstream mounted without a
/// prefix, its bare original name (the name clients see). Never the
/// shortened form of a long name: a glob written for the full name covers
/// it. Every glob of `[[access]]`, `[limits]` and the sequence rules
/// matches a tool when it matches any of these spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident<'a> {
    /// `<upstream>__<original>`.
    pub key: &'a str,
    /// The original name, for an upstream with `prefix = false`.
    pub bare: Option<&'a str>,
}

impl<'a> Ident<'a> {
    /// A name with one spelling (the gateway's own tool, a URI).
    pub fn plain(name: &'a str) -> Self {
        Ident { key: name, bare: None }
    }

    /// Every spelling, the key first.
    pub fn names(self) -> impl Iterator<Item = &'a str> {
        std::iter::once(self.key).chain(self.bare)
    }

    /// Whether `glob` matches a spelling.
    pub fn is_match(self, glob: &globset::GlobMatcher) -> bool {
        self.names().any(|n| glob.is_match(n))
    }
}

impl<'a> From<&'a str> for Ident<'a> {
    fn from(name: &'a str) -> Self {
        Ident::plain(name)
    }
}

/// Why a policy refused a call: the `reason` of
/// `mcp_gateway_policy_denials_total`, the log line and the audit record's
/// `policy` entry (`<reason>:denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// `[[access]]` does not grant it (answered like an unknown name).
    Access,
    /// `[pinning]` holds it: its definition changed since approved.
    Quarantined,
    /// An `[[access]] arguments` rule refused its arguments.
    Argument,
    /// A `[limits]` bucket is empty.
    RateLimit,
    /// A sequence rule stopped it.
    Rule,
    /// Its result was over a `[limits.results]` cap that refuses.
    ResultSize,
    /// Its session was ended on another replica (`[redis]`).
    SessionEnded,
}

impl DenyReason {
    /// The label text.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Access => "access",
            DenyReason::Quarantined => "quarantined",
            DenyReason::Argument => "argument",
            DenyReason::RateLimit => "rate_limit",
            DenyReason::Rule => "rule",
            DenyReason::ResultSize => "result_size",
            DenyReason::SessionEnded => "session_ended",
        }
    }
}
