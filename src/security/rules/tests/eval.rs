//! Evaluation: sequences, windows, arguments, tags, actions, scopes.

use super::{Sim, raw, rules};
use crate::security::rules::args::PARSES;
use crate::security::rules::{Action, Call, History};

const A_THEN_B: &str = r#"
[[rule]]
id = "a-then-b"
action = "alert"
steps = [{ tool = "x__a" }, { tool = "x__b" }]
"#;

#[test]
fn subsequence_with_other_calls_between() {
    let r = rules(A_THEN_B);
    let mut s = Sim::new(&r);
    assert!(s.call("x__b", None, 0).is_empty(), "b before any a");
    assert!(s.call("x__a", None, 1).is_empty());
    assert!(s.call("x__c", None, 2).is_empty());
    assert!(s.call("x__d", None, 3).is_empty());
    assert_eq!(s.call("x__b", None, 4), ["a-then-b"]);
    // The a is still in the window: it hits again.
    assert_eq!(s.call("x__b", None, 5), ["a-then-b"]);
}

#[test]
fn steps_match_in_order() {
    let r = rules(
        r#"
[[rule]]
id = "abc"
action = "alert"
steps = [{ tool = "x__a" }, { tool = "x__b" }, { tool = "x__c" }]
"#,
    );
    let mut s = Sim::new(&r);
    for tool in ["x__b", "x__a", "x__c"] {
        assert!(s.call(tool, None, 0).is_empty());
    }
    assert!(s.call("x__c", None, 0).is_empty(), "b came before a");
    s.call("x__b", None, 0);
    assert_eq!(s.call("x__c", None, 0), ["abc"]);
}

#[test]
fn call_window_counts_previous_calls() {
    let text = |calls: u32| format!("{A_THEN_B}window = {{ calls = {calls} }}\n");
    for (calls, hits) in [(2, false), (3, true)] {
        let r = rules(&text(calls));
        let mut s = Sim::new(&r);
        s.call("x__a", None, 0);
        s.call("x__c", None, 0);
        s.call("x__c", None, 0);
        // The a is the third call back.
        assert_eq!(!s.call("x__b", None, 0).is_empty(), hits, "calls = {calls}");
    }
    // The history keeps only what the largest window needs.
    let r = rules(&text(3));
    let mut s = Sim::new(&r);
    for i in 0..10 {
        s.call("x__c", None, i);
    }
    assert_eq!(s.sessions["s1"].len(), 3);
}

#[test]
fn seconds_window_uses_call_times() {
    let r = rules(&format!("{A_THEN_B}window = {{ seconds = 60 }}\n"));
    let mut s = Sim::new(&r);
    s.call("x__a", None, 1_000);
    assert_eq!(s.call("x__b", None, 61_000), ["a-then-b"], "exactly 60 s later is inside");
    assert!(s.call("x__b", None, 61_001).is_empty(), "a millisecond later is not");
    s.call("x__a", None, 100_000);
    s.call("x__c", None, 150_000);
    assert_eq!(s.call("x__b", None, 159_000), ["a-then-b"]);
}

#[test]
fn one_step_rule_hits_on_every_matching_call() {
    let r = rules("[[rule]]\nid = \"any-delete\"\naction = \"shadow\"\nsteps = [{ tool = \"*__delete*\" }]\n");
    let mut s = Sim::new(&r);
    assert_eq!(s.call("db__delete_rows", None, 0), ["any-delete"]);
    assert_eq!(s.call("fs__delete_file", None, 0), ["any-delete"]);
    assert!(s.call("fs__read", None, 0).is_empty());
}

#[test]
fn tools_and_tags_conditions() {
    let r = rules(
        r#"
[tags]
"db__*" = ["source:database", "pii"]
"db__admin_*" = ["admin"]

[[rule]]
id = "admin-pii"
action = "alert"
steps = [{ tools = ["db__*", "warehouse__*"], tags = ["pii", "admin"] }]
"#,
    );
    let mut s = Sim::new(&r);
    assert_eq!(s.call("db__admin_drop", None, 0), ["admin-pii"]);
    assert!(s.call("db__query", None, 0).is_empty(), "no admin tag");
    let tags = s.tags("db__admin_drop");
    let names: Vec<&str> = tags.names().collect();
    assert_eq!(names, ["admin", "destructive", "open-world", "pii", "source:database", "upstream:db"]);
    assert!(tags.contains("pii") && !tags.contains("network"));
}

#[test]
fn argument_predicates() {
    let r = rules(
        r#"
[[rule]]
id = "external-url"
action = "alert"
steps = [{ tool = "fetch__*", args = { url = { prefix = "https://", not_prefix = "https://intranet." } } }]

[[rule]]
id = "drop-table"
action = "block"
steps = [{ tool = "db__*", args = { sql = { contains = "DROP TABLE" }, dry_run = { exists = false } } }]

[[rule]]
id = "env-file"
action = "alert"
steps = [{ tool = "fs__*", args = { path = { glob = "*.env" } } }]

[[rule]]
id = "equals"
action = "alert"
steps = [{ tool = "x__*", args = { mode = { equals = "force" }, level = { equals = 3 }, opts = { equals = { a = [1, true] } } } }]
"#,
    );
    let mut s = Sim::new(&r);
    assert_eq!(s.call("fetch__fetch", Some(r#"{"url":"https://example.com/x"}"#), 0), ["external-url"]);
    assert!(s.call("fetch__fetch", Some(r#"{"url":"https://intranet.corp/x"}"#), 0).is_empty());
    assert!(s.call("fetch__fetch", Some(r#"{"url":"ftp://x"}"#), 0).is_empty());
    assert!(s.call("fetch__fetch", Some(r#"{"url":42}"#), 0).is_empty(), "not a string");
    assert!(s.call("fetch__fetch", Some("{}"), 0).is_empty(), "missing key");
    assert!(s.call("fetch__fetch", None, 0).is_empty(), "no arguments");
    // Escapes are decoded, in keys and values.
    assert_eq!(s.call("fetch__fetch", Some(r#"{"u\u0072l":"https:\/\/example.com"}"#), 0), ["external-url"]);

    assert_eq!(s.call("db__exec", Some(r#"{"sql":"DROP TABLE users"}"#), 0), ["drop-table"]);
    assert!(s.call("db__exec", Some(r#"{"sql":"DROP TABLE users","dry_run":true}"#), 0).is_empty());

    assert_eq!(s.call("fs__read", Some(r#"{"path":"/srv/app/.env"}"#), 0), ["env-file"]);
    assert_eq!(
        s.call("fs__read", Some(r#"{"path":["/a/README.md","/srv/prod.env"]}"#), 0),
        ["env-file"],
        "any element"
    );
    assert!(s.call("fs__read", Some(r#"{"path":"/srv/app/.envrc"}"#), 0).is_empty());

    let all = r#"{"mode":"force","level":3,"opts":{"a":[1,true]}}"#;
    assert_eq!(s.call("x__y", Some(all), 0), ["equals"]);
    assert!(s.call("x__y", Some(r#"{"mode":"force","level":3.5,"opts":{"a":[1,true]}}"#), 0).is_empty());
    assert!(s.call("x__y", Some(r#"{"mode":"forced","level":3,"opts":{"a":[1,true]}}"#), 0).is_empty());
}

#[test]
fn not_prefix_on_arrays_means_none_has_it() {
    let r = rules(
        "[[rule]]\nid = \"r\"\naction = \"alert\"\nsteps = [{ tool = \"*\", args = { to = { not_prefix = \"team@\" } } }]\n",
    );
    let mut s = Sim::new(&r);
    assert_eq!(s.call("mail__send", Some(r#"{"to":["a@x","b@y"]}"#), 0), ["r"]);
    assert!(s.call("mail__send", Some(r#"{"to":["a@x","team@y"]}"#), 0).is_empty());
}

#[test]
fn arguments_parsed_lazily_and_once() {
    let r = rules(
        r#"
[[rule]]
id = "one"
action = "alert"
steps = [{ tool = "fetch__*", args = { url = { prefix = "https://" } } }]

[[rule]]
id = "two"
action = "alert"
steps = [{ tool = "db__*" }, { tool = "fetch__*", args = { url = { contains = "paste" } } }]

[[rule]]
id = "tool-only"
action = "shadow"
steps = [{ tool = "*" }]
"#,
    );
    let mut s = Sim::new(&r);
    let parses = || PARSES.with(std::cell::Cell::get);
    let before = parses();
    s.call("db__query", Some(r#"{"sql":"select 1"}"#), 0);
    assert_eq!(parses(), before, "no step of db__query has args predicates");
    assert_eq!(s.call("fetch__fetch", Some(r#"{"url":"https://paste.example"}"#), 0), ["one", "two", "tool-only"]);
    assert_eq!(parses(), before + 1, "two steps with args, one parse");
}

#[test]
fn arguments_that_are_not_an_object_match_no_predicate() {
    let r = rules(
        r#"
[[rule]]
id = "absent"
action = "alert"
steps = [{ tool = "x__*", args = { url = { exists = false } } }]

[[rule]]
id = "tool-only"
action = "shadow"
steps = [{ tool = "x__*" }]
"#,
    );
    let mut s = Sim::new(&r);
    for bad in [r#""a string""#, "[1,2]", "42", "true"] {
        assert_eq!(s.call("x__y", Some(bad), 0), ["tool-only"], "{bad}");
    }
    // No arguments, or null: no keys at all.
    assert_eq!(s.call("x__y", None, 0), ["absent", "tool-only"]);
    assert_eq!(s.call("x__y", Some("null"), 0), ["absent", "tool-only"]);
}

#[test]
fn derived_tags_follow_the_spec_defaults() {
    let r = rules("[[rule]]\nid = \"r\"\naction = \"alert\"\nsteps = [{ tool = \"*\" }]\n");
    let tags = |annotations: Option<&str>| -> Vec<String> {
        let a = annotations.map(raw);
        r.tags_for("up__tool", "up", a.as_deref()).names().map(str::to_owned).collect()
    };
    assert_eq!(tags(None), ["destructive", "open-world", "upstream:up"]);
    assert_eq!(tags(Some("{}")), ["destructive", "open-world", "upstream:up"]);
    assert_eq!(tags(Some(r#"{"title":"T"}"#)), ["destructive", "open-world", "upstream:up"]);
    // Destructive and idempotent mean nothing for a read-only tool.
    let ro = r#"{"readOnlyHint":true,"destructiveHint":true,"idempotentHint":true}"#;
    assert_eq!(tags(Some(ro)), ["open-world", "read-only", "upstream:up"]);
    let write = r#"{"readOnlyHint":false,"destructiveHint":false,"idempotentHint":true,"openWorldHint":false}"#;
    assert_eq!(tags(Some(write)), ["idempotent", "upstream:up"]);
    // Hints of the wrong type: as if there were none.
    assert_eq!(tags(Some(r#"{"readOnlyHint":"yes"}"#)), ["destructive", "open-world", "upstream:up"]);
    assert_eq!(tags(Some("[]")), ["destructive", "open-world", "upstream:up"]);
}

#[test]
fn several_hits_and_the_strongest_action() {
    let r = rules(
        r#"
[[rule]]
id = "shadow"
action = "shadow"
steps = [{ tool = "x__*" }]

[[rule]]
id = "confirm"
action = "confirm"
steps = [{ tool = "x__*" }]

[[rule]]
id = "block-1"
action = "block"
message = "No."
steps = [{ tool = "x__a" }]

[[rule]]
id = "alert"
action = "alert"
steps = [{ tool = "x__*" }]

[[rule]]
id = "block-2"
action = "block"
steps = [{ tool = "x__*" }]
"#,
    );
    let s = Sim::new(&r);
    let eval = s.evaluate("s1", "x__a", None, 0);
    let ids: Vec<&str> = eval.hits().iter().map(|h| r.rule(h.rule).id()).collect();
    assert_eq!(ids, ["shadow", "confirm", "block-1", "alert", "block-2"]);
    let strongest = eval.strongest().expect("a hit");
    assert_eq!((r.rule(strongest.rule).id(), strongest.action), ("block-1", Action::Block), "first of equals");
    assert_eq!(r.rule(strongest.rule).message(), "No.");

    let eval = s.evaluate("s1", "x__b", None, 0);
    assert_eq!(r.rule(eval.strongest().expect("a hit").rule).id(), "block-2");
    assert!(s.evaluate("s1", "y__b", None, 0).strongest().is_none());

    assert!(Action::Shadow < Action::Alert && Action::Alert < Action::Confirm && Action::Confirm < Action::Block);
    assert_eq!(Action::strongest([Action::Alert, Action::Confirm, Action::Shadow]), Some(Action::Confirm));
    assert_eq!(Action::strongest([]), None);
    assert!(Action::Confirm.stops_call() && !Action::Alert.stops_call());
}

#[test]
fn a_blocked_call_is_not_recorded() {
    let r = rules(
        r#"
[[rule]]
id = "no-b-after-a"
action = "block"
steps = [{ tool = "x__a" }, { tool = "x__b" }]

[[rule]]
id = "c-after-b"
action = "alert"
steps = [{ tool = "x__b" }, { tool = "x__c" }]
"#,
    );
    let mut s = Sim::new(&r);
    s.call("x__a", None, 0);
    assert_eq!(s.call("x__b", None, 1), ["no-b-after-a"]);
    assert_eq!(s.sessions["s1"].len(), 1, "only the a");
    assert!(s.call("x__c", None, 2).is_empty(), "the b did not happen");
}

#[test]
fn principal_scope_spans_sessions() {
    let r = rules(
        r#"
[[rule]]
id = "per-session"
action = "alert"
steps = [{ tool = "x__a" }, { tool = "x__b" }]

[[rule]]
id = "per-principal"
action = "alert"
scope = "principal"
steps = [{ tool = "x__a" }, { tool = "x__b" }]
"#,
    );
    let mut s = Sim::new(&r);
    s.call_in("s1", "x__a", None, 0);
    assert_eq!(s.call_in("s2", "x__b", None, 1), ["per-principal"]);
    assert_eq!(s.call_in("s1", "x__b", None, 2), ["per-session", "per-principal"]);

    // Without a principal, principal rules look at the session.
    let mut s = Sim::new(&r).without_principal();
    s.call_in("s1", "x__a", None, 0);
    assert!(s.call_in("s2", "x__b", None, 1).is_empty());
    assert_eq!(s.call_in("s1", "x__b", None, 2), ["per-session", "per-principal"]);
}

#[test]
fn a_reloaded_rule_set_starts_histories_afresh_and_reads_old_tags() {
    let old = rules(A_THEN_B);
    let new = rules(A_THEN_B);
    let mut history = old.new_history();
    let old_a = old.tags_for("x__a", "x", None);
    let eval = old.evaluate(&Call { tool: "x__a".into(), tags: &old_a, arguments: None, at_ms: 0 }, &history, None);
    old.record(&mut history, &eval);
    assert_eq!(history.len(), 1);

    // The new rule set does not read the old step bits...
    let old_b = old.tags_for("x__b", "x", None);
    let call = Call { tool: "x__b".into(), tags: &old_b, arguments: None, at_ms: 1 };
    assert!(new.evaluate(&call, &history, None).hits().is_empty());
    // ...ignores evaluations of the old one...
    let stale = old.evaluate(&call, &history, None);
    assert_eq!(stale.hits().len(), 1);
    new.record(&mut history, &stale);
    assert_eq!(history.len(), 1);
    // ...and starts the history afresh at its first record; tags compiled
    // by the old rule set still work, through their names.
    let eval = new.evaluate(&Call { tool: "x__a".into(), tags: &old_a, arguments: None, at_ms: 2 }, &history, None);
    new.record(&mut history, &eval);
    assert_eq!(history.len(), 1);
    assert_eq!(new.evaluate(&call, &history, None).hits().len(), 1);

    // A default history works too: it belongs to no rule set yet.
    let mut fresh = History::default();
    new.record(&mut fresh, &eval);
    assert_eq!(new.evaluate(&call, &fresh, None).hits().len(), 1);
}

#[test]
fn many_steps_spill_to_the_heap() {
    // 300 two-step rules: 300 remembered steps, more than the inline 256.
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!(
            "[[rule]]\nid = \"r{i}\"\naction = \"alert\"\nsteps = [{{ tool = \"a__{i}\" }}, {{ tool = \"b__x\" }}]\n"
        ));
    }
    let r = rules(&text);
    let mut s = Sim::new(&r);
    s.call("a__299", None, 0);
    s.call("a__3", None, 0);
    assert_eq!(s.call("b__x", None, 0), ["r3", "r299"]);
}
