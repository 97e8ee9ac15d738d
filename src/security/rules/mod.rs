//! Sequence rules (issue 6 item 7): decisions over the *sequence* of tool
//! calls in a session or of a principal, such as "rows read from a database
//! must not leave through an external sink".
//!
//! The format and semantics are documented for operators in
//! `docs/sequence-rules.md`; this is the engine.
//!
//! # How the gateway uses it
//!
//! 1. [`RuleSet::load`] once (and again on reload); share it in an `Arc`.
//! 2. [`RuleSet::tags_for`] once per tool per catalog build, cached next to
//!    the catalog entry. Rebuild that cache whenever the rule set changes:
//!    [`Tags`] are compiled against one rule set.
//! 3. On every `tools/call`: [`RuleSet::evaluate`] with the session's
//!    [`History`] and the principal's, apply [`Evaluation::strongest`], and
//!    unless the call is refused, [`RuleSet::record`] the evaluation into both
//!    histories. A refused call is never recorded: it did not happen.
//!
//! Histories are the caller's: one per session (owned by the session) and
//! one per principal (shared by its sessions, so behind the caller's lock,
//! taken for `evaluate` and again for `record`, never across the confirm
//! prompt). A sessionless call evaluates against an empty history
//! (`History::default()`). Without a principal, principal-scoped rules look
//! at the session's history.
//!
//! # Guarantees
//!
//! - No I/O, no locks, no global state besides a generation counter. The
//!   caller owns each [`History`] and decides how to share it.
//! - Per call: bit tests over precomputed step matches. Globs were matched
//!   when the [`Tags`] were built; the arguments are parsed only when a step
//!   the tool could match has `args` predicates, at most once per call; no
//!   allocation unless the call hits or arguments are parsed.
//! - A [`History`] keeps, per call, its time and one bit per step that some
//!   later step follows, never the arguments. It holds at most the largest
//!   `window.calls` of the rule set (at most 1000) calls.
//! - A [`History`] belongs to one rule set (its *generation*). Used with
//!   another one it counts as empty, and recording into it starts it afresh:
//!   a reload forgets sequences in progress rather than misreading step bits
//!   that meant other steps.

mod args;
mod error;
mod file;
mod history;
mod replay;
mod tags;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use globset::GlobSet;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use self::args::{ArgPred, LazyArgs};

pub use self::error::RulesError;
pub use self::history::{Evaluation, History};
pub use self::replay::{
    ActionCounts, CheckReport, ReplayReport, RuleReplay, RuleSummary, SubjectHits, TagSummary, check, replay,
};
pub use self::tags::Tags;

/// The largest `window.calls` a rule may ask for: it bounds every history.
pub const MAX_WINDOW_CALLS: u32 = 1000;
/// `window.calls` when a rule does not say.
pub const DEFAULT_WINDOW_CALLS: u32 = 50;
/// The most steps one rule may have.
pub const MAX_STEPS: usize = 16;
/// Tags the engine derives itself, besides `upstream:<id>`.
pub const DERIVED_TAGS: [&str; 4] = ["read-only", "destructive", "idempotent", "open-world"];

/// A compiled rules file. Immutable, `Send + Sync`, cheap to share in an
/// `Arc`; every [`Tags`] and [`History`] is bound to the rule set that made
/// it.
#[derive(Debug)]
pub struct RuleSet {
    origin: PathBuf,
    generation: u64,
    rules: Vec<Rule>,
    /// Every step of every rule, by step id. Steps that a later step of
    /// their rule follows (the ones histories remember) come first, ids
    /// `0..history_steps`; then the last step of each rule, in rule order,
    /// so rule `i`'s last step is `history_steps + i`.
    steps: Vec<Step>,
    history_steps: usize,
    /// The distinct tool globs of all steps; a step refers to them by index.
    tool_globs: GlobSet,
    /// `[tags]`: globs over exposed tool names, and what each gives.
    tag_globs: GlobSet,
    tag_lists: Vec<TagSummary>,
    /// How many calls a history keeps: the largest `window.calls` among
    /// rules with more than one step (one-step rules need no history).
    history_calls: usize,
    warnings: Vec<Warning>,
    /// A hash of the file's text: replicas with the same file share
    /// histories under it (`crate::shared`); another file starts afresh.
    fingerprint: u64,
}

/// One rule, as written in the file.
#[derive(Debug)]
pub struct Rule {
    id: String,
    description: Option<String>,
    action: Action,
    scope: Scope,
    message: String,
    window_calls: u32,
    window_seconds: Option<u64>,
    /// Step ids of all but the last step, in order.
    earlier: Vec<u32>,
}

/// What the gateway does when a rule hits. Ordered from weakest to
/// strongest, so `max` picks the one to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Record the hit (audit log, metrics) and nothing else: for tuning.
    Shadow,
    /// Record it, and the gateway logs a warning.
    Alert,
    /// Ask the user; if they refuse or cannot be asked, block.
    Confirm,
    /// Refuse the call; the agent gets the rule's message.
    Block,
}

/// Whose calls form the sequence a rule looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The calls of one downstream session.
    #[default]
    Session,
    /// The calls of one authenticated principal, across its sessions.
    Principal,
}

/// A rule that hits on the call being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Index of the rule in [`RuleSet::rules`].
    pub rule: usize,
    /// The rule's action.
    pub action: Action,
}

/// One `tools/call` as the engine sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The tool: its canonical key `<upstream>__<original>` (e.g.
    /// `postgres__query`) and, on an unprefixed upstream, its bare name.
    pub tool: crate::security::Ident<'a>,
    /// The tool's tags from [`RuleSet::tags_for`] of the same rule set.
    pub tags: &'a Tags,
    /// The call's `arguments` as the client sent them; parsed only when
    /// a step needs them.
    pub arguments: Option<&'a RawValue>,
    /// Milliseconds on a clock of the caller's choice that does not go
    /// backwards within one history: seconds windows compare these. The
    /// gateway can use the time since it started; replay uses Unix time.
    pub at_ms: u64,
}

/// Something in a rules file that is valid but probably wrong, such as a
/// rule that can never hit.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// `file:line:column`.
    pub location: String,
    /// The rule's id.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

/// One compiled step; `RuleSet.steps` explains the ids.
#[derive(Debug)]
struct Step {
    rule: u32,
    /// Tool glob ids, any of which must match; empty: no tool condition.
    globs: Vec<u32>,
    /// Tags that must all be present.
    tags: Vec<Box<str>>,
    /// Argument predicates that must all hold.
    args: Vec<ArgPred>,
}

/// Sets each rule set apart from the ones before it; 0 is no rule set.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

// === impl RuleSet ===

impl RuleSet {
    /// Compiles the text of a rules file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<RuleSet, RulesError> {
        file::compile(text, origin)
    }

    /// Reads and compiles a rules file.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RulesError::io(path, &e))?;
        Self::parse(&text, path)
    }

    /// The file this rule set came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The rules in file order; a [`Hit`]'s `rule` indexes this.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule a [`Hit`] names.
    ///
    /// # Panics
    ///
    /// When `index` is not from this rule set.
    pub fn rule(&self, index: usize) -> &Rule {
        &self.rules[index]
    }

    /// Valid but suspicious things found while compiling (a rule that can
    /// never hit); the gateway logs them at load, `rules check` prints them.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// How many calls each [`History`] keeps (0 when no rule has more than
    /// one step: then histories stay empty).
    pub fn history_calls(&self) -> usize {
        self.history_calls
    }

    /// An empty history for one session or one principal. `History::default()`
    /// works as well; this one just knows its size up front.
    pub fn new_history(&self) -> History {
        History::new(self.generation, self.history_calls, words(self.history_steps))
    }

    /// Which rules hit on `call`.
    ///
    /// A rule hits when `call` matches its last step and earlier calls in
    /// its window matched its other steps in order (other calls may lie
    /// between). Session-scoped rules look at `session`; principal-scoped
    /// rules at `principal`, or at `session` when the caller has no
    /// principal. A sessionless call passes an empty history.
    ///
    /// Nothing is recorded: pass the result to [`RuleSet::record`] once the
    /// call goes ahead.
    pub fn evaluate(&self, call: &Call<'_>, session: &History, principal: Option<&History>) -> Evaluation {
        self.evaluate_with(call, |rule| {
            let history = match rule.scope {
                Scope::Session => session,
                Scope::Principal => principal.unwrap_or(session),
            };
            history.has_sequence(self.generation, &rule.earlier, rule.window_calls, rule.window_ms(), call.at_ms)
        })
    }

    /// The rules `call` could complete whatever came before: as
    /// [`RuleSet::evaluate`] with histories holding every sequence. What
    /// is refused when the histories cannot be read (shared state down,
    /// fail closed) is the `block` and `confirm` rules among these.
    pub fn could_complete(&self, call: &Call<'_>) -> Evaluation {
        self.evaluate_with(call, |_| true)
    }

    /// [`RuleSet::evaluate`] with `found` saying whether a multi-step
    /// rule's earlier steps are in the history.
    fn evaluate_with(&self, call: &Call<'_>, mut found: impl FnMut(&Rule) -> bool) -> Evaluation {
        let retagged;
        let statics = if call.tags.generation() == self.generation {
            call.tags.steps()
        } else {
            // Tags from an earlier rule set: the caller's cache is not
            // rebuilt yet after a reload. Their names still say what the
            // tool was tagged, so compile them again: slower, and a changed
            // [tags] table applies only once the cache is rebuilt.
            retagged = self.tags_from_names(call.tool, call.tags.names());
            retagged.steps()
        };
        let mut args = LazyArgs::new(call.arguments);
        let mut eval = Evaluation::new(self.generation, call.at_ms, words(self.history_steps));
        for id in ones(statics) {
            let step = &self.steps[id];
            if !step.args.is_empty() && !args::all_hold(&step.args, &mut args) {
                continue;
            }
            if id < self.history_steps {
                eval.set(id);
                continue;
            }
            let index = step.rule as usize;
            let rule = &self.rules[index];
            if rule.earlier.is_empty() || found(rule) {
                eval.push_hit(Hit { rule: index, action: rule.action });
            }
        }
        eval
    }

    /// Whether a multi-step rule looks at the principal's history (else
    /// only sessions' histories are needed).
    pub fn has_principal_scope(&self) -> bool {
        self.rules.iter().any(|r| r.scope == Scope::Principal && !r.earlier.is_empty())
    }

    /// The longest time window of a multi-step rule (zero when none is
    /// bounded in time).
    pub fn longest_window(&self) -> std::time::Duration {
        let secs = self.rules.iter().filter(|r| !r.earlier.is_empty()).filter_map(|r| r.window_seconds).max();
        std::time::Duration::from_secs(secs.unwrap_or(0))
    }

    /// Whether `eval` (of a call) matches an earlier step of a multi-step
    /// rule that stops calls (`block`, `confirm`): a call whose record
    /// must reach every replica for the rule to hold.
    pub fn starts_stopping_rule(&self, eval: &Evaluation) -> bool {
        eval.bits().iter().enumerate().any(|(w, word)| {
            (0..64)
                .filter(|b| word >> b & 1 == 1)
                .map(|b| w * 64 + b)
                .any(|id| id < self.history_steps && self.rules[self.steps[id].rule as usize].action.stops_call())
        })
    }

    /// The file's fingerprint: histories shared between replicas are kept
    /// under it.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// A history made of shared entries: `len` calls, newest first as
    /// Redis lists them, of which `marked` are those with step bits (their
    /// place, counted from the newest, and [`Evaluation::entry`] after the
    /// time); the others matched no earlier step. A marked entry of another
    /// shape or size counts as a call that matched nothing.
    pub fn history_from(&self, len: usize, marked: &[(usize, String)]) -> History {
        let mut history = self.new_history();
        // No call that matched a step (the usual case): nothing to find.
        if marked.is_empty() {
            return history;
        }
        let words = words(self.history_steps);
        let zero = vec![0u64; words];
        let mut bits = vec![0u64; words];
        let len = len.min(self.history_calls.max(1));
        // `marked` comes newest first: walk both from the oldest.
        let mut next = marked.iter().rev().peekable();
        let mut older_ms = 0;
        for place in (0..len).rev() {
            while next.peek().is_some_and(|(at, _)| *at > place) {
                next.next();
            }
            let entry = next.peek().filter(|(at, _)| *at == place).map(|(_, e)| e.as_str());
            let parsed = entry.and_then(|e| {
                let mut parts = e.split('|');
                let at_ms = parts.next()?.parse::<u64>().ok()?;
                let hex = parts.next().filter(|h| h.len() == 16 * words)?;
                (0..words)
                    .all(|w| u64::from_str_radix(&hex[w * 16..(w + 1) * 16], 16).map(|v| bits[w] = v).is_ok())
                    .then_some(at_ms)
            });
            // A call that matched nothing takes the time of the marked one
            // before it: never later than the truth, and a scan that stops
            // at it (out of a time window) would have stopped at that one.
            match parsed {
                Some(at_ms) => {
                    older_ms = at_ms;
                    history.push_bits(self.generation, self.history_calls, words, at_ms, &bits);
                }
                None => history.push_bits(self.generation, self.history_calls, words, older_ms, &zero),
            }
        }
        history
    }

    /// Appends an evaluated call to a history (the session's, then the
    /// principal's). Only for calls that went ahead. A history of another
    /// rule set starts afresh; an evaluation of another one is ignored.
    pub fn record(&self, history: &mut History, eval: &Evaluation) {
        if eval.generation() != self.generation {
            return;
        }
        history.push(self.generation, self.history_calls, words(self.history_steps), eval);
    }
}

// === impl Rule ===

impl Rule {
    /// The rule's unique id (`[a-z0-9-_.]+`): metrics label and audit entry.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the rule is for, if the file says.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// What a hit does.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Whose calls the rule looks at.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// What the agent is told when the rule blocks (and the user is asked
    /// when it confirms): the file's `message`, or a default naming the rule.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How many steps the rule has.
    pub fn steps(&self) -> usize {
        self.earlier.len() + 1
    }

    /// How many previous calls the window reaches back.
    pub fn window_calls(&self) -> u32 {
        self.window_calls
    }

    /// How many seconds the window reaches back, if bounded in time.
    pub fn window_seconds(&self) -> Option<u64> {
        self.window_seconds
    }

    fn window_ms(&self) -> Option<u64> {
        self.window_seconds.map(|s| s.saturating_mul(1000))
    }
}

// === impl Action ===

impl Action {
    /// The strongest of some actions (block > confirm > alert > shadow).
    pub fn strongest(actions: impl IntoIterator<Item = Action>) -> Option<Action> {
        actions.into_iter().max()
    }

    /// The name used in the rules file, metrics and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Shadow => "shadow",
            Action::Alert => "alert",
            Action::Confirm => "confirm",
            Action::Block => "block",
        }
    }

    /// Whether the call may not go ahead as it is (block or confirm).
    pub fn stops_call(self) -> bool {
        self >= Action::Confirm
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Scope ===

impl Scope {
    /// The name used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Session => "session",
            Scope::Principal => "principal",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Warning ===

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: rule {}: {}", self.location, self.rule, self.message)
    }
}

// === helpers ===

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// 64-bit words for `bits` bits.
fn words(bits: usize) -> usize {
    bits.div_ceil(64)
}

/// The indices of the set bits, in increasing order.
fn ones(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(w, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(w * 64 + bit)
        })
    })
}
