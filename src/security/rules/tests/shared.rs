//! Histories as replicas share them (`crate::shared`): a call's entry
//! written by one replica and read back by another decides the same as
//! the history of the replica that saw every call.

use super::{Sim, rules};
use crate::security::rules::{Call, History};

const RULES: &str = r#"
[[rule]]
id = "a-then-b"
action = "block"
window = { calls = 3 }
steps = [{ tool = "x__a" }, { tool = "x__b" }]

[[rule]]
id = "c-then-d-in-a-minute"
action = "confirm"
window = { seconds = 60 }
steps = [{ tool = "x__c" }, { tool = "x__d" }]

[[rule]]
id = "any-e"
action = "alert"
steps = [{ tool = "x__e" }]
"#;

/// What Redis sends back of `entries` (newest first): their number, and
/// the place and text of those with step bits.
fn sparse(entries: &[String]) -> (usize, Vec<(usize, String)>) {
    let marked = entries.iter().enumerate().filter(|(_, e)| !e.contains("||")).map(|(i, e)| (i, e.clone())).collect();
    (entries.len(), marked)
}

fn read_back(r: &crate::security::rules::RuleSet, entries: &[String]) -> History {
    let (len, marked) = sparse(entries);
    r.history_from(len, &marked)
}

/// Plays `calls` (tool, time) as one replica would record them, and keeps
/// each one's shared entry (`<time><entry>`), newest first as Redis's
/// `LRANGE` returns them.
fn play(r: &crate::security::rules::RuleSet, calls: &[(&str, u64)]) -> (History, Vec<String>) {
    let mut live = r.new_history();
    let mut shared = Vec::new();
    let sim = Sim::new(r).without_principal();
    for (i, (tool, at)) in calls.iter().enumerate() {
        let tags = sim.tags(tool);
        let call = Call { tool: (*tool).into(), tags: &tags, arguments: None, at_ms: *at };
        let eval = r.evaluate(&call, &live, None);
        r.record(&mut live, &eval);
        shared.insert(0, format!("{at}{}", eval.entry(i as u64)));
    }
    (live, shared)
}

fn hits(r: &crate::security::rules::RuleSet, history: &History, tool: &str, at: u64) -> Vec<String> {
    let sim = Sim::new(r).without_principal();
    let tags = sim.tags(tool);
    let call = Call { tool: tool.into(), tags: &tags, arguments: None, at_ms: at };
    r.evaluate(&call, history, None).hits().iter().map(|h| r.rule(h.rule).id().to_owned()).collect()
}

#[test]
fn a_history_read_back_from_entries_decides_as_the_live_one() {
    let r = rules(RULES);
    let sequences: &[&[(&str, u64)]] = &[
        &[("x__a", 0)],
        &[("x__a", 0), ("x__z", 1), ("x__z", 2)],
        &[("x__a", 0), ("x__z", 1), ("x__z", 2), ("x__z", 3)],
        &[("x__c", 0)],
        &[("x__c", 0), ("x__z", 30_000)],
        &[("x__c", 0), ("x__a", 1), ("x__z", 2)],
        &[],
    ];
    for calls in sequences {
        let (live, shared) = play(&r, calls);
        let read = read_back(&r, &shared);
        for (tool, at) in [("x__b", 10), ("x__d", 40_000), ("x__d", 70_000), ("x__e", 10), ("x__z", 10)] {
            assert_eq!(hits(&r, &read, tool, at), hits(&r, &live, tool, at), "{calls:?} then {tool} at {at}");
        }
    }
    // And the cases are not all empty: the read history does see a
    // sequence.
    let (_, shared) = play(&r, &[("x__a", 0)]);
    assert_eq!(hits(&r, &read_back(&r, &shared), "x__b", 1), ["a-then-b"]);
}

#[test]
fn entries_of_another_shape_are_skipped() {
    let r = rules(RULES);
    let (_, mut shared) = play(&r, &[("x__c", 0)]);
    let good = shared[0].clone();
    // A time that is not a number, bits of another width, no bits, junk:
    // each still a call (a place in the window), matching nothing.
    let width = good.split('|').nth(1).unwrap().len();
    shared.insert(0, format!("x{good}"));
    shared.insert(0, format!("5|{}|1", "0".repeat(width + 16)));
    shared.insert(0, "7".to_owned());
    shared.insert(0, "8|".to_owned());
    shared.insert(0, format!("9|{}|1", "g".repeat(width)));
    let read = read_back(&r, &shared);
    assert_eq!(hits(&r, &read, "x__d", 10), ["c-then-d-in-a-minute"], "the good entry still counts");
    let junk_only: Vec<String> = shared[..5].to_vec();
    assert!(hits(&r, &read_back(&r, &junk_only), "x__d", 10).is_empty());
    // Places past the history's length, or a length past its capacity,
    // are not trusted.
    let (len, marked) = sparse(&shared);
    assert!(hits(&r, &r.history_from(0, &marked), "x__d", 10).is_empty(), "no calls: nothing marked counts");
    assert_eq!(hits(&r, &r.history_from(len + 1_000_000, &marked), "x__d", 10), ["c-then-d-in-a-minute"]);
}

/// Calls that matched nothing keep their places: a window of calls counts
/// them, and a time window is not cut short by them.
#[test]
fn unmarked_calls_keep_their_places_and_do_not_end_a_time_window() {
    let r = rules(RULES);
    let (_, shared) = play(&r, &[("x__a", 0), ("x__z", 1), ("x__z", 2)]);
    let (len, marked) = sparse(&shared);
    assert_eq!((len, marked.len()), (3, 1), "only the step is sent back: {shared:?}");
    assert_eq!(hits(&r, &read_back(&r, &shared), "x__b", 3), ["a-then-b"], "a is the third call back");
    let (_, shared) = play(&r, &[("x__a", 0), ("x__z", 1), ("x__z", 2), ("x__z", 3)]);
    assert!(hits(&r, &read_back(&r, &shared), "x__b", 4).is_empty(), "a is the fourth call back");
    let calls: Vec<(&str, u64)> =
        std::iter::once(("x__c", 50_000)).chain((0..20).map(|i| ("x__z", 50_001 + i))).collect();
    let (_, shared) = play(&r, &calls);
    assert_eq!(hits(&r, &read_back(&r, &shared), "x__d", 100_000), ["c-then-d-in-a-minute"]);
    assert!(hits(&r, &read_back(&r, &shared), "x__d", 111_000).is_empty(), "c is out of the minute");
}

#[test]
fn an_entry_is_its_bits_and_a_nonce() {
    let r = rules(RULES);
    let sim = Sim::new(&r).without_principal();
    let tags = sim.tags("x__a");
    let call = Call { tool: "x__a".into(), tags: &tags, arguments: None, at_ms: 0 };
    let eval = r.evaluate(&call, &History::default(), None);
    let (a, b) = (eval.entry(1), eval.entry(0xff));
    assert!(a.starts_with('|') && a.ends_with("|1"), "{a}");
    assert!(b.ends_with("|ff"), "{b}");
    assert_eq!(a.split('|').nth(1), b.split('|').nth(1), "the same bits");
    assert_ne!(a.split('|').nth(1).unwrap().trim_start_matches('0'), "", "x__a is a step: a bit is set");
    // A call that matches no earlier step has no bits at all.
    let tags = sim.tags("x__z");
    let call = Call { tool: "x__z".into(), tags: &tags, arguments: None, at_ms: 0 };
    assert_eq!(r.evaluate(&call, &History::default(), None).entry(0x2a), "||2a");
}

#[test]
fn could_complete_names_the_rules_a_call_ends_whatever_came_before() {
    let r = rules(RULES);
    let sim = Sim::new(&r).without_principal();
    let ids = |tool: &str| {
        let tags = sim.tags(tool);
        let call = Call { tool: tool.into(), tags: &tags, arguments: None, at_ms: 0 };
        r.could_complete(&call).hits().iter().map(|h| r.rule(h.rule).id().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(ids("x__b"), ["a-then-b"]);
    assert_eq!(ids("x__d"), ["c-then-d-in-a-minute"]);
    assert_eq!(ids("x__e"), ["any-e"]);
    assert!(ids("x__a").is_empty(), "a first step completes nothing");
    assert!(ids("x__z").is_empty());
}

#[test]
fn merged_hits_are_the_union_in_rule_order() {
    let r = rules(RULES);
    let sim = Sim::new(&r).without_principal();
    let (with_a, _) = play(&r, &[("x__a", 0)]);
    let tags = sim.tags("x__b");
    let call = Call { tool: "x__b".into(), tags: &tags, arguments: None, at_ms: 1 };
    let mut none = r.evaluate(&call, &History::default(), None);
    assert!(none.hits().is_empty());
    let hit = r.evaluate(&call, &with_a, None);
    none.merge_hits(&hit);
    none.merge_hits(&hit);
    assert_eq!(none.hits().len(), 1, "merged once");
    assert_eq!(none.strongest().map(|h| r.rule(h.rule).id()), Some("a-then-b"));
}

#[test]
fn the_fingerprint_is_what_the_rules_say_not_how_the_file_is_written() {
    assert_eq!(rules(RULES).fingerprint(), rules(RULES).fingerprint());
    // Comments, spacing and the order of keys in a table do not matter.
    let reworded =
        RULES.replace("action = \"block\"\nwindow = { calls = 3 }", "window = {calls=3}   # three\naction = \"block\"");
    assert_ne!(reworded, RULES);
    assert_eq!(rules(&format!("# a comment\n{reworded}\n\n")).fingerprint(), rules(RULES).fingerprint());
    // What a rule says does.
    assert_ne!(rules(RULES).fingerprint(), rules(&RULES.replace("calls = 3", "calls = 4")).fingerprint());
    assert_ne!(rules(RULES).fingerprint(), rules(&RULES.replace("x__b", "x__bb")).fingerprint());
}

#[test]
fn what_needs_the_shared_history_is_known() {
    let r = rules(RULES);
    assert!(!r.has_principal_scope(), "every rule is per session");
    assert_eq!(r.longest_window(), std::time::Duration::from_secs(60));
    let p = rules(&format!(
        "{RULES}\n[[rule]]\nid = \"p\"\naction = \"alert\"\nscope = \"principal\"\nwindow = {{ seconds = 7200 }}\nsteps = [{{ tool = \"y__a\" }}, {{ tool = \"y__b\" }}]\n"
    ));
    assert!(p.has_principal_scope());
    assert_eq!(p.longest_window(), std::time::Duration::from_secs(7200));
    // Earlier steps of stopping rules: what must reach every replica.
    let sim = Sim::new(&r).without_principal();
    let starts = |tool: &str| {
        let tags = sim.tags(tool);
        let call = Call { tool: tool.into(), tags: &tags, arguments: None, at_ms: 0 };
        r.starts_stopping_rule(&r.could_complete(&call))
    };
    assert!(starts("x__a") && starts("x__c"));
    assert!(!starts("x__b") && !starts("x__e") && !starts("x__z"));
    // An alert rule's first step need not reach every replica.
    let alert = rules(&RULES.replace("action = \"block\"", "action = \"alert\""));
    let tags = Sim::new(&alert).without_principal().tags("x__a");
    let call = Call { tool: "x__a".into(), tags: &tags, arguments: None, at_ms: 0 };
    assert!(!alert.starts_stopping_rule(&alert.could_complete(&call)));
}
