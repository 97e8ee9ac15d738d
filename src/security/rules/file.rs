//! The rules file as written (serde structs, every table
//! `deny_unknown_fields`), and its compilation into a [`RuleSet`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use globset::{Glob, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use super::args::{ArgPred, Test};
use super::error::{RulesError, location};
use super::{
    Action, DEFAULT_WINDOW_CALLS, DERIVED_TAGS, MAX_STEPS, MAX_WINDOW_CALLS, Rule, RuleSet, Scope, Step, TagSummary,
    Warning, next_generation,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDe {
    /// Glob over exposed tool names → tags.
    #[serde(default)]
    tags: TagsDe,
    #[serde(default)]
    rule: Vec<Spanned<RuleDe>>,
}

type TagsDe = BTreeMap<Spanned<String>, Vec<Spanned<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDe {
    id: Spanned<String>,
    description: Option<String>,
    action: Action,
    #[serde(default)]
    scope: Scope,
    window: Option<WindowDe>,
    message: Option<String>,
    steps: Spanned<Vec<Spanned<StepDe>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowDe {
    calls: Option<Spanned<u64>>,
    seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDe {
    tool: Option<Spanned<String>>,
    tools: Option<Spanned<Vec<Spanned<String>>>>,
    tags: Option<Spanned<Vec<Spanned<String>>>>,
    args: Option<Spanned<BTreeMap<String, Spanned<PredDe>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredDe {
    equals: Option<serde_json::Value>,
    prefix: Option<String>,
    not_prefix: Option<String>,
    contains: Option<String>,
    glob: Option<Spanned<String>>,
    exists: Option<bool>,
}

/// Compilation state: where errors point, and what is compiled so far.
struct Compiler<'s> {
    src: &'s str,
    origin: &'s Path,
    tool_globs: GlobSetBuilder,
    glob_ids: HashMap<String, u32>,
    /// Tags some `[tags]` entry gives.
    given: HashSet<String>,
    /// Rule id → the line it was first defined on.
    ids: HashMap<String, usize>,
    /// Steps that a later step follows, by step id.
    history: Vec<Step>,
    /// The last step of each rule, in rule order.
    last: Vec<Step>,
    warnings: Vec<Warning>,
}

/// Compiles a rules file.
pub(super) fn compile(src: &str, origin: &Path) -> Result<RuleSet, RulesError> {
    let file: FileDe = toml::from_str(src).map_err(|e| RulesError::syntax(origin, src, &e))?;
    let mut c = Compiler {
        src,
        origin,
        tool_globs: GlobSetBuilder::new(),
        glob_ids: HashMap::new(),
        given: HashSet::new(),
        ids: HashMap::new(),
        history: Vec::new(),
        last: Vec::new(),
        warnings: Vec::new(),
    };
    // [tags] first: rules are checked against the tags it gives.
    let (tag_globs, tag_lists) = c.tags(file.tags)?;
    let rules = file.rule.into_iter().enumerate().map(|(i, r)| c.rule(i, r)).collect::<Result<Vec<_>, _>>()?;

    let history_calls =
        rules.iter().filter(|r| !r.earlier.is_empty()).map(|r| r.window_calls as usize).max().unwrap_or(0);
    // Every glob compiled alone already, so building the sets cannot
    // really fail; if it does, say so without a position.
    let build = |b: GlobSetBuilder, what: &str| {
        b.build().map_err(|e| RulesError::at(origin, src, 0..0, what.to_owned(), e.to_string()))
    };
    let tool_globs = build(c.tool_globs, "rule")?;
    let tag_globs = build(tag_globs, "tags")?;
    let history_steps = c.history.len();
    let mut steps = c.history;
    steps.extend(c.last);
    Ok(RuleSet {
        origin: origin.to_owned(),
        generation: next_generation(),
        rules,
        steps,
        history_steps,
        tool_globs,
        tag_globs,
        tag_lists,
        history_calls,
        warnings: c.warnings,
        fingerprint: fingerprint(src),
    })
}

// === impl Compiler ===

impl Compiler<'_> {
    fn tags(&mut self, tags: TagsDe) -> Result<(GlobSetBuilder, Vec<TagSummary>), RulesError> {
        let mut globs = GlobSetBuilder::new();
        let mut lists = Vec::with_capacity(tags.len());
        for (glob, tags) in tags {
            let key = format!("tags.\"{}\"", glob.get_ref());
            globs.add(self.glob(&glob, &key)?);
            for tag in &tags {
                self.tag_name(tag, &key)?;
                self.given.insert(tag.get_ref().clone());
            }
            let tags = tags.into_iter().map(Spanned::into_inner).collect();
            lists.push(TagSummary { glob: glob.into_inner(), tags });
        }
        Ok((globs, lists))
    }

    fn rule(&mut self, i: usize, spanned: Spanned<RuleDe>) -> Result<Rule, RulesError> {
        let rule_span = spanned.span();
        let de = spanned.into_inner();
        let key = format!("rule[{i}]");
        let id = de.id.get_ref().clone();
        if id.is_empty() || !id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.')) {
            return Err(self.err(de.id.span(), format!("{key}.id"), format!("`{id}` must match [a-z0-9-_.]+")));
        }
        if let Some(line) = self.ids.insert(id.clone(), line_of(self.src, de.id.span().start)) {
            let msg = format!("duplicate rule id `{id}` (first on line {line})");
            return Err(self.err(de.id.span(), format!("{key}.id"), msg));
        }
        let (window_calls, window_seconds) = self.window(de.window.as_ref(), &key)?;
        let steps_span = de.steps.span();
        let steps = de.steps.into_inner();
        let n = steps.len();
        if n == 0 || n > MAX_STEPS {
            return Err(self.err(steps_span, format!("{key}.steps"), format!("must have 1 to {MAX_STEPS} steps")));
        }
        let mut earlier = Vec::with_capacity(n - 1);
        for (j, step) in steps.into_iter().enumerate() {
            let compiled = self.step(step, i as u32, &format!("{key}.steps[{j}]"), &id)?;
            if j + 1 < n {
                earlier.push(self.history.len() as u32);
                self.history.push(compiled);
            } else {
                self.last.push(compiled);
            }
        }
        if (window_calls as usize) < n - 1 {
            let msg =
                format!("window.calls = {window_calls} is fewer than the {} earlier steps; it can never hit", n - 1);
            self.warn(rule_span.start, &id, msg);
        }
        let message = de
            .message
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("This call was refused by the gateway's sequence rule `{id}`."));
        let (description, action, scope) = (de.description, de.action, de.scope);
        Ok(Rule { id, description, action, scope, message, window_calls, window_seconds, earlier })
    }

    fn err(&self, span: Range<usize>, key: String, message: String) -> RulesError {
        RulesError::at(self.origin, self.src, span, key, message)
    }

    fn warn(&mut self, offset: usize, rule: &str, message: String) {
        let location = location(self.origin, self.src, offset);
        self.warnings.push(Warning { location, rule: rule.to_owned(), message });
    }

    fn glob(&self, glob: &Spanned<String>, key: &str) -> Result<Glob, RulesError> {
        Glob::new(glob.get_ref())
            .map_err(|e| self.err(glob.span(), key.to_owned(), format!("invalid glob: {}", e.kind())))
    }

    fn tag_name(&self, tag: &Spanned<String>, key: &str) -> Result<(), RulesError> {
        let t = tag.get_ref();
        if t.is_empty() || t.chars().any(char::is_whitespace) {
            return Err(self.err(tag.span(), key.to_owned(), format!("tag `{t}` must be non-empty without spaces")));
        }
        Ok(())
    }

    fn window(&self, window: Option<&WindowDe>, key: &str) -> Result<(u32, Option<u64>), RulesError> {
        let Some(w) = window else { return Ok((DEFAULT_WINDOW_CALLS, None)) };
        let calls = match &w.calls {
            Some(c) if !(1..=u64::from(MAX_WINDOW_CALLS)).contains(c.get_ref()) => {
                let msg = format!("must be between 1 and {MAX_WINDOW_CALLS}");
                return Err(self.err(c.span(), format!("{key}.window.calls"), msg));
            }
            Some(c) => *c.get_ref() as u32,
            None => DEFAULT_WINDOW_CALLS,
        };
        let seconds = match &w.seconds {
            Some(s) if *s.get_ref() == 0 => {
                return Err(self.err(s.span(), format!("{key}.window.seconds"), "must be at least 1".to_owned()));
            }
            s => s.as_ref().map(|s| *s.get_ref()),
        };
        Ok((calls, seconds))
    }

    fn step(&mut self, step: Spanned<StepDe>, rule: u32, key: &str, id: &str) -> Result<Step, RulesError> {
        let span = step.span();
        let de = step.into_inner();
        if de.tool.is_none() && de.tools.is_none() && de.tags.is_none() && de.args.is_none() {
            let msg = "a step needs at least one condition: tool, tools, tags or args".to_owned();
            return Err(self.err(span, key.to_owned(), msg));
        }
        if de.tool.is_some() && de.tools.is_some() {
            return Err(self.err(span, key.to_owned(), "give either tool or tools, not both".to_owned()));
        }
        let mut globs = Vec::new();
        if let Some(tool) = &de.tool {
            globs.push(self.tool_glob(tool, &format!("{key}.tool"))?);
        }
        if let Some(tools) = &de.tools {
            self.not_empty(tools, &format!("{key}.tools"))?;
            for (k, tool) in tools.get_ref().iter().enumerate() {
                globs.push(self.tool_glob(tool, &format!("{key}.tools[{k}]"))?);
            }
        }
        let mut tags = Vec::new();
        if let Some(list) = &de.tags {
            self.not_empty(list, &format!("{key}.tags"))?;
            for tag in list.get_ref() {
                self.tag_name(tag, &format!("{key}.tags"))?;
                tags.push(Box::from(tag.get_ref().as_str()));
            }
            self.check_tags(list, id);
        }
        let mut args = Vec::new();
        if let Some(map) = &de.args {
            if map.get_ref().is_empty() {
                return Err(self.err(map.span(), format!("{key}.args"), "must not be empty".to_owned()));
            }
            for (name, pred) in map.get_ref() {
                args.push(self.pred(name, pred, &format!("{key}.args.{name}"))?);
            }
        }
        Ok(Step { rule, globs, tags, args })
    }

    fn not_empty<T>(&self, list: &Spanned<Vec<T>>, key: &str) -> Result<(), RulesError> {
        if list.get_ref().is_empty() {
            return Err(self.err(list.span(), key.to_owned(), "must not be empty".to_owned()));
        }
        Ok(())
    }

    /// The id of a tool glob, shared by every step that uses the same text.
    fn tool_glob(&mut self, glob: &Spanned<String>, key: &str) -> Result<u32, RulesError> {
        if let Some(&id) = self.glob_ids.get(glob.get_ref()) {
            return Ok(id);
        }
        let compiled = self.glob(glob, key)?;
        let id = self.glob_ids.len() as u32;
        self.tool_globs.add(compiled);
        self.glob_ids.insert(glob.get_ref().clone(), id);
        Ok(id)
    }

    fn pred(&self, name: &str, pred: &Spanned<PredDe>, key: &str) -> Result<ArgPred, RulesError> {
        let p = pred.get_ref();
        let mut tests = Vec::new();
        if let Some(v) = &p.equals {
            tests.push(Test::Equals(v.clone()));
        }
        if let Some(s) = &p.prefix {
            tests.push(Test::Prefix(s.as_str().into()));
        }
        if let Some(s) = &p.not_prefix {
            tests.push(Test::NotPrefix(s.as_str().into()));
        }
        if let Some(s) = &p.contains {
            tests.push(Test::Contains(s.as_str().into()));
        }
        if let Some(g) = &p.glob {
            tests.push(Test::Glob(self.glob(g, &format!("{key}.glob"))?.compile_matcher()));
        }
        if let Some(b) = p.exists {
            tests.push(Test::Exists(b));
        }
        if tests.is_empty() {
            let msg = "needs one of equals, prefix, not_prefix, contains, glob, exists".to_owned();
            return Err(self.err(pred.span(), key.to_owned(), msg));
        }
        Ok(ArgPred::new(name, tests))
    }

    /// Warns about tag conditions no tool can meet.
    fn check_tags(&mut self, list: &Spanned<Vec<Spanned<String>>>, id: &str) {
        let has = |t: &str| list.get_ref().iter().any(|s| s.get_ref() == t);
        for tag in list.get_ref() {
            let t = tag.get_ref().as_str();
            let known = self.given.contains(t) || DERIVED_TAGS.contains(&t) || t.starts_with("upstream:");
            if !known {
                let msg = format!("no [tags] entry gives tag `{t}` and it is not derived; this rule can never hit");
                self.warn(tag.span().start, id, msg);
            }
        }
        // Derived tags never put these together; only [tags] can.
        for other in ["destructive", "idempotent"] {
            if has("read-only") && has(other) && !self.given.contains("read-only") && !self.given.contains(other) {
                let msg = format!("`{other}` is never derived for a read-only tool; this rule can never hit");
                self.warn(list.span().start, id, msg);
            }
        }
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src.get(..offset).unwrap_or(src).matches('\n').count() + 1
}

/// What the rules say, hashed: the file read as TOML and written back as
/// JSON with sorted keys, so a comment, spacing or the order of keys in a
/// table do not split the histories replicas share (the order of rules and
/// steps, which gives each step its bit, does).
fn fingerprint(src: &str) -> u64 {
    use sha2::Digest as _;
    let canonical = toml::from_str::<serde_json::Value>(src).map_or_else(|_| src.to_owned(), |v| v.to_string());
    let d = sha2::Sha256::digest(canonical.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
}
