//! Unit tests of the sequence-rule engine, with a small harness that plays
//! calls through one session (and its principal) as the gateway will.

mod eval;
mod examples;
mod parse;
mod replay;
mod shared;

use std::collections::HashMap;
use std::path::Path;

use serde_json::value::RawValue;

use super::{Evaluation, History, RuleSet, RulesError, Tags};

fn rules(text: &str) -> RuleSet {
    match RuleSet::parse(text, Path::new("rules.toml")) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn error(text: &str) -> RulesError {
    match RuleSet::parse(text, Path::new("rules.toml")) {
        Ok(_) => panic!("parsed, but should not:\n{text}"),
        Err(e) => e,
    }
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("raw JSON")
}

/// One principal's calls, in one or more sessions, played as live: each
/// call is evaluated, then recorded in its session's and the principal's
/// history unless a hit stops it.
struct Sim<'r> {
    rules: &'r RuleSet,
    sessions: HashMap<&'static str, History>,
    principal: Option<History>,
    /// Annotations by tool, as the upstream listed them.
    annotations: HashMap<&'static str, &'static str>,
}

impl<'r> Sim<'r> {
    fn new(rules: &'r RuleSet) -> Self {
        Sim { rules, sessions: HashMap::new(), principal: Some(rules.new_history()), annotations: HashMap::new() }
    }

    fn without_principal(mut self) -> Self {
        self.principal = None;
        self
    }

    fn annotate(mut self, tool: &'static str, annotations: &'static str) -> Self {
        self.annotations.insert(tool, annotations);
        self
    }

    fn tags(&self, tool: &str) -> Tags {
        let upstream = tool.split("__").next().unwrap_or(tool);
        let annotations = self.annotations.get(tool).map(|a| raw(a));
        self.rules.tags_for(tool, upstream, annotations.as_deref())
    }

    /// A call in session `s1` at `at_ms`; the ids of the rules it hit.
    fn call(&mut self, tool: &str, args: Option<&str>, at_ms: u64) -> Vec<&'r str> {
        self.call_in("s1", tool, args, at_ms)
    }

    fn call_in(&mut self, session: &'static str, tool: &str, args: Option<&str>, at_ms: u64) -> Vec<&'r str> {
        let eval = self.evaluate(session, tool, args, at_ms);
        if !eval.strongest().is_some_and(|h| h.action.stops_call()) {
            let history = self.sessions.entry(session).or_insert_with(|| self.rules.new_history());
            self.rules.record(history, &eval);
            if let Some(p) = &mut self.principal {
                self.rules.record(p, &eval);
            }
        }
        eval.hits().iter().map(|h| self.rules.rule(h.rule).id()).collect()
    }

    fn evaluate(&self, session: &str, tool: &str, args: Option<&str>, at_ms: u64) -> Evaluation {
        let tags = self.tags(tool);
        let args = args.map(raw);
        let call = super::Call { tool: tool.into(), tags: &tags, arguments: args.as_deref(), at_ms };
        let empty = History::default();
        let history = self.sessions.get(session).unwrap_or(&empty);
        self.rules.evaluate(&call, history, self.principal.as_ref())
    }
}

#[test]
fn shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RuleSet>();
    send_sync::<Tags>();
    send_sync::<History>();
    send_sync::<Evaluation>();
}
