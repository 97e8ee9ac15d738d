//! What the strict scan refuses, and where: the reasons (a metric label
//! and a message each) and the path of the offending value.

use std::fmt;

/// Why a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A member name occurs twice in one object (after decoding escapes).
    DuplicateMember,
    /// Nesting deeper than the limit.
    TooDeep,
    /// A number whose value is not a finite `f64`.
    NumberOutOfRange,
    /// A lone UTF-16 surrogate escape.
    LoneSurrogate,
    /// Two member names in one object that differ only in letter case
    /// (`name` and `Name`; Unicode simple case folding, so `ſ` is `s`):
    /// case-insensitive parsers (Go's `encoding/json`, .NET with
    /// `PropertyNameCaseInsensitive`) read them as one member.
    CaseVariant,
}

impl Reason {
    /// Every reason, for metrics.
    pub const ALL: [Reason; 5] = [
        Reason::DuplicateMember,
        Reason::TooDeep,
        Reason::NumberOutOfRange,
        Reason::LoneSurrogate,
        Reason::CaseVariant,
    ];

    /// The `reason` label of the refusal metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DuplicateMember => "duplicate_member",
            Reason::TooDeep => "too_deep",
            Reason::NumberOutOfRange => "number_out_of_range",
            Reason::LoneSurrogate => "lone_surrogate",
            Reason::CaseVariant => "case_variant",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Reason::DuplicateMember => "duplicate member name",
            Reason::TooDeep => "nesting deeper than the limit",
            Reason::NumberOutOfRange => "number out of range",
            Reason::LoneSurrogate => "lone UTF-16 surrogate",
            Reason::CaseVariant => "member names that differ only in letter case",
        }
    }
}

/// A text every parser would not read the same way, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Ambiguous {
    /// What is wrong.
    pub reason: Reason,
    /// Where: `params.arguments.path`, `params.items[3]`, `$` for the
    /// root. Member names that are not plain (`[A-Za-z0-9_$-]`) are shown
    /// as the client wrote them, quoted in brackets: `["a b"]`. At most
    /// [`super::ECHO_MAX_CHARS`] characters (then cut with `…`).
    pub path: String,
}

impl fmt::Display for Ambiguous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.reason.describe(), self.path)
    }
}

/// Why [`scan`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// Not JSON (the caller's JSON parser says why).
    Syntax,
    /// JSON, but ambiguous.
    Ambiguous(Ambiguous),
}

impl ScanError {
    /// The same problem, found in the value of member `name` of a
    /// message scanned on its own.
    pub(crate) fn under(self, name: &str) -> Self {
        match self {
            ScanError::Ambiguous(Ambiguous { reason, path }) => {
                let path = match path.as_str() {
                    "$" => name.to_owned(),
                    p if p.starts_with('[') => format!("{name}{p}"),
                    p => format!("{name}.{p}"),
                };
                ScanError::Ambiguous(Ambiguous { reason, path: crate::protocol::echo(&path).into_owned() })
            }
            syntax => syntax,
        }
    }
}
