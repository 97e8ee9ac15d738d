//! Offline use, for the `rules check` and `rules replay` commands: a
//! summary of a rules file, and what its rules would have done on an audit
//! log.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Action, Call, History, RuleSet, RulesError, Scope, Tags, Warning};
use crate::security::Ident;

/// How many unreadable line numbers a replay report lists.
const MAX_INVALID_LINES: usize = 20;

/// What `rules check` prints: the rules, the tag globs and the warnings.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The file checked.
    pub file: String,
    /// The rules in file order.
    pub rules: Vec<RuleSummary>,
    /// The `[tags]` entries.
    pub tags: Vec<TagSummary>,
    /// Valid but suspicious things, such as rules that can never hit.
    pub warnings: Vec<Warning>,
    /// Calls each session's (and principal's) history keeps.
    pub history_calls: usize,
    /// Bytes one full history takes.
    pub history_bytes: usize,
}

/// One rule, for listing.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSummary {
    /// The rule's id.
    pub id: String,
    /// What a hit does.
    pub action: Action,
    /// Whose calls it looks at.
    pub scope: Scope,
    /// How many steps it has.
    pub steps: usize,
    /// How many previous calls its window reaches back.
    pub window_calls: u32,
    /// How many seconds its window reaches back, if bounded in time.
    pub window_seconds: Option<u64>,
    /// Its description.
    pub description: Option<String>,
}

/// One `[tags]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct TagSummary {
    /// The glob over exposed tool names.
    pub glob: String,
    /// The tags it gives.
    pub tags: Vec<String>,
}

/// What the rules would have done on an audit log, in shadow mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Lines read, including blank and unreadable ones.
    pub lines: u64,
    /// `tools/call` lines evaluated.
    pub calls: u64,
    /// `tools/call` lines without a tool name (nothing to evaluate).
    pub skipped: u64,
    /// Evaluated calls whose line had no `arguments` (the gateway writes
    /// them only with `include_arguments = true`): `args` predicates other
    /// than `exists = false` cannot hold on those.
    pub without_arguments: u64,
    /// Lines that are not an audit record (bad JSON, a bad `time`).
    pub invalid: u64,
    /// The first few of those, 1-based.
    pub invalid_lines: Vec<u64>,
    /// `time` of the first and last call evaluated.
    pub first_time: Option<String>,
    /// See `first_time`.
    pub last_time: Option<String>,
    /// Calls by the strongest action that hit them (what live would have
    /// done outside shadow mode).
    pub calls_by_action: ActionCounts,
    /// Per rule, in file order.
    pub rules: Vec<RuleReplay>,
}

/// Counts per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ActionCounts {
    /// Shadow.
    pub shadow: u64,
    /// Alert.
    pub alert: u64,
    /// Confirm.
    pub confirm: u64,
    /// Block.
    pub block: u64,
}

/// One rule's hits in a replay.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReplay {
    /// The rule's id.
    pub id: String,
    /// Its action.
    pub action: Action,
    /// Its scope.
    pub scope: Scope,
    /// Calls it hit.
    pub hits: u64,
    /// `time` of the first hit.
    pub first_hit: Option<String>,
    /// The sessions (digests, as in the audit log) it hit in, by first hit.
    pub sessions: Vec<SubjectHits>,
    /// The principals it hit for, by first hit.
    pub principals: Vec<SubjectHits>,
}

/// A rule's hits in one session or for one principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectHits {
    /// The session digest or the principal.
    pub id: String,
    /// Calls hit.
    pub hits: u64,
    /// `time` of the first.
    pub first_hit: String,
}

/// The fields of an audit line that replay reads; the others are ignored.
#[derive(Debug, Deserialize)]
struct AuditLine<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow, default)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    principal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    upstream: Option<Cow<'a, str>>,
    /// The upstream's own name of the tool.
    #[serde(borrow, default)]
    tool: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tags: Option<Vec<Cow<'a, str>>>,
}

/// Hits of one rule in one session or for one principal, while replaying.
#[derive(Debug)]
struct Tally {
    hits: u64,
    first_ms: u64,
    first_time: String,
}

/// Replay state: one history per session and per principal, compiled tags,
/// and the tallies.
struct Replayer<'r> {
    rules: &'r RuleSet,
    report: ReplayReport,
    sessions: HashMap<String, History>,
    principals: HashMap<String, History>,
    /// Compiled tags by tool and tags (or upstream).
    tags: HashMap<String, Tags>,
    per_rule: Vec<PerRule>,
}

/// One rule's hits while replaying.
#[derive(Debug, Default)]
struct PerRule {
    hits: u64,
    first_hit: Option<String>,
    sessions: HashMap<String, Tally>,
    principals: HashMap<String, Tally>,
}

// === check ===

/// Loads a rules file and summarises it for `rules check`.
pub fn check(path: &Path) -> Result<CheckReport, RulesError> {
    Ok(RuleSet::load(path)?.report())
}

impl RuleSet {
    /// A summary of this rule set for `rules check`.
    pub fn report(&self) -> CheckReport {
        let words = self.history_steps.div_ceil(64);
        CheckReport {
            file: self.origin.display().to_string(),
            rules: self
                .rules
                .iter()
                .map(|r| RuleSummary {
                    id: r.id.clone(),
                    action: r.action,
                    scope: r.scope,
                    steps: r.steps(),
                    window_calls: r.window_calls,
                    window_seconds: r.window_seconds,
                    description: r.description.clone(),
                })
                .collect(),
            tags: self.tag_lists.clone(),
            warnings: self.warnings.clone(),
            history_calls: self.history_calls,
            history_bytes: self.history_calls * (1 + words) * 8,
        }
    }
}

// === replay ===

/// Evaluates an audit log (JSON lines) as the gateway would have live in
/// shadow mode: every `tools/call` line is evaluated, then recorded, none
/// refused; seconds windows use each line's `time`. A line's `tags` are the
/// tool's tags when present, else the `[tags]` globs plus
/// `upstream:<upstream>` (annotations are not in the log). Calls without a
/// session have no session sequence; calls without a principal fall back to
/// the session for principal-scoped rules, as live.
///
/// Unreadable lines are counted and listed, not fatal; only an I/O error is.
pub fn replay(rules: &RuleSet, mut audit: impl BufRead) -> std::io::Result<ReplayReport> {
    let mut r = Replayer {
        rules,
        report: ReplayReport::default(),
        sessions: HashMap::new(),
        principals: HashMap::new(),
        tags: HashMap::new(),
        per_rule: rules.rules.iter().map(|_| PerRule::default()).collect(),
    };
    let mut line = String::new();
    loop {
        line.clear();
        if audit.read_line(&mut line)? == 0 {
            break;
        }
        r.report.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        match read(&line) {
            Some((record, at_ms)) => r.record(&record, at_ms),
            None => {
                r.report.invalid += 1;
                if r.report.invalid_lines.len() < MAX_INVALID_LINES {
                    r.report.invalid_lines.push(r.report.lines);
                }
            }
        }
    }
    let mut report = r.report;
    report.rules = rules.rules.iter().zip(r.per_rule).map(|(rule, p)| p.finish(rule)).collect();
    Ok(report)
}

// === impl Replayer ===

impl Replayer<'_> {
    /// Evaluates and records one audit line.
    fn record(&mut self, record: &AuditLine<'_>, at_ms: u64) {
        if record.method != "tools/call" {
            return;
        }
        let Some(name) = record.name.as_deref() else {
            self.report.skipped += 1;
            return;
        };
        let report = &mut self.report;
        report.calls += 1;
        report.without_arguments += u64::from(record.arguments.is_none());
        report.first_time.get_or_insert_with(|| record.time.to_string());
        report.last_time = Some(record.time.to_string());

        let rules = self.rules;
        // The tool as the gateway matched it: `<upstream>__<tool>`, and its
        // bare name when that is what the client called (an unprefixed
        // upstream); lines without them (older logs) by the name called.
        let key;
        let ident = match (record.upstream.as_deref(), record.tool.as_deref()) {
            (Some(u), Some(t)) => {
                key = format!("{u}__{t}");
                Ident { key: &key, bare: (name == t).then_some(t) }
            }
            _ => Ident::plain(name),
        };
        let tool_tags = tags_of(rules, &mut self.tags, ident, record);
        let call = Call { tool: ident, tags: &tool_tags, arguments: record.arguments, at_ms };
        let (session, principal) = (record.session.as_deref(), record.principal.as_deref());
        let none = History::default();
        let eval = rules.evaluate(
            &call,
            session.and_then(|s| self.sessions.get(s)).unwrap_or(&none),
            principal.map(|p| self.principals.get(p).unwrap_or(&none)),
        );
        if let Some(strongest) = eval.strongest() {
            *report.calls_by_action.get_mut(strongest.action) += 1;
        }
        for hit in eval.hits() {
            let p = &mut self.per_rule[hit.rule];
            p.hits += 1;
            p.first_hit.get_or_insert_with(|| record.time.to_string());
            for (subject, map) in [(session, &mut p.sessions), (principal, &mut p.principals)] {
                if let Some(id) = subject {
                    let first = || Tally { hits: 0, first_ms: at_ms, first_time: record.time.to_string() };
                    map.entry(id.to_owned()).or_insert_with(first).hits += 1;
                }
            }
        }
        // Shadow mode: nothing was refused, so every call is remembered.
        if let Some(s) = session {
            rules.record(self.sessions.entry(s.to_owned()).or_insert_with(|| rules.new_history()), &eval);
        }
        if let Some(p) = principal {
            rules.record(self.principals.entry(p.to_owned()).or_insert_with(|| rules.new_history()), &eval);
        }
    }
}

impl PerRule {
    fn finish(self, rule: &super::Rule) -> RuleReplay {
        RuleReplay {
            id: rule.id.clone(),
            action: rule.action,
            scope: rule.scope,
            hits: self.hits,
            first_hit: self.first_hit,
            sessions: subjects(self.sessions),
            principals: subjects(self.principals),
        }
    }
}

/// Parses one line and its time (Unix milliseconds); `None` when either fails.
fn read(line: &str) -> Option<(AuditLine<'_>, u64)> {
    let record: AuditLine<'_> = serde_json::from_str(line).ok()?;
    let time = humantime::parse_rfc3339(&record.time).ok()?;
    let at_ms = time.duration_since(UNIX_EPOCH).ok()?.as_millis();
    Some((record, u64::try_from(at_ms).ok()?))
}

/// The tool's tags for a line, compiled once per distinct (tool, tags).
fn tags_of(rules: &RuleSet, cache: &mut HashMap<String, Tags>, tool: Ident<'_>, record: &AuditLine<'_>) -> Tags {
    let mut key = String::from(tool.key);
    key.push('\u{2}');
    key.push_str(tool.bare.unwrap_or(""));
    match (&record.tags, &record.upstream) {
        (Some(list), _) => list.iter().for_each(|t| {
            key.push('\0');
            key.push_str(t);
        }),
        (None, upstream) => {
            key.push('\u{1}');
            key.push_str(upstream.as_deref().unwrap_or(""));
        }
    }
    cache
        .entry(key)
        .or_insert_with(|| match (&record.tags, &record.upstream) {
            (Some(list), _) => rules.tags_from_names(tool, list.iter().map(|t| &**t)),
            (None, upstream) => {
                let mut names = rules.glob_tags(tool);
                if let Some(u) = upstream {
                    names.push(format!("upstream:{u}").into());
                }
                rules.compile_tags(tool, names)
            }
        })
        .clone()
}

/// Tallies sorted by first hit, then id.
fn subjects(map: HashMap<String, Tally>) -> Vec<SubjectHits> {
    let mut list: Vec<(u64, SubjectHits)> = map
        .into_iter()
        .map(|(id, t)| (t.first_ms, SubjectHits { id, hits: t.hits, first_hit: t.first_time }))
        .collect();
    list.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    list.into_iter().map(|(_, s)| s).collect()
}

// === impl ActionCounts ===

impl ActionCounts {
    fn get_mut(&mut self, action: Action) -> &mut u64 {
        match action {
            Action::Shadow => &mut self.shadow,
            Action::Alert => &mut self.alert,
            Action::Confirm => &mut self.confirm,
            Action::Block => &mut self.block,
        }
    }
}
