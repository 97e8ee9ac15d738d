//! The rules file: errors that say file, line and key; warnings.

use std::path::Path;

use super::{error, rules};
use crate::security::rules::{Action, RuleSet, Scope};

const GOOD: &str = r#"
[tags]
"postgres__*" = ["source:database"]

[[rule]]
id = "one"
action = "block"
steps = [{ tool = "fetch__*" }]
"#;

#[test]
fn defaults_and_getters() {
    let r = rules(GOOD);
    let rule = r.rule(0);
    assert_eq!((rule.id(), rule.action(), rule.scope()), ("one", Action::Block, Scope::Session));
    assert_eq!((rule.window_calls(), rule.window_seconds(), rule.steps()), (50, None, 1));
    assert_eq!(rule.message(), "This call was refused by the gateway's sequence rule `one`.");
    assert_eq!(rule.description(), None);
    // One-step rules need no history.
    assert_eq!(r.history_calls(), 0);
    assert!(r.warnings().is_empty());
}

#[test]
fn unknown_key_in_a_rule_names_line_and_key() {
    let e = error("[[rule]]\nid = \"a\"\nactoin = \"block\"\nsteps = [{ tool = \"x\" }]\n");
    assert_eq!(e.line(), Some(3), "{e}");
    assert_eq!(e.key(), Some("rule[0].actoin"), "{e}");
    assert!(e.message().contains("unknown field `actoin`"), "{e}");
    assert!(e.to_string().starts_with("rules.toml:3:1: rule[0].actoin: unknown field"), "{e}");
}

#[test]
fn unknown_key_in_a_step_and_a_predicate() {
    let text =
        "[[rule]]\nid = \"a\"\naction = \"alert\"\nsteps = [\n  { tool = \"x\" },\n  { tool = \"y\", arsg = {} },\n]\n";
    let e = error(text);
    assert_eq!(e.line(), Some(6), "{e}");
    assert_eq!(e.key(), Some("rule[0].steps[1].arsg"), "{e}");
    assert_eq!(
        e.to_string(),
        "rules.toml:6:17: rule[0].steps[1].arsg: unknown field `arsg`, expected one of `tool`, `tools`, `tags`, `args`"
    );

    let text = "[[rule]]\nid = \"a\"\naction = \"alert\"\nsteps = [\n  { tool = \"y\", args = { url = { prefx = \"h\" } } },\n]\n";
    let e = error(text);
    assert_eq!(e.line(), Some(5), "{e}");
    assert_eq!(e.key(), Some("rule[0].steps[0].args.url.prefx"), "{e}");
}

#[test]
fn unknown_top_level_table_and_bad_values() {
    let e = error("[tag]\n\"x\" = [\"y\"]\n");
    assert_eq!(e.line(), Some(1), "{e}");
    assert!(e.message().contains("unknown field `tag`"), "{e}");

    let e = error("[[rule]]\nid = \"a\"\naction = \"deny\"\nsteps = [{ tool = \"x\" }]\n");
    assert_eq!((e.line(), e.key()), (Some(3), Some("rule[0].action")), "{e}");
    assert!(e.message().contains("block"), "lists the actions: {e}");

    let e = error("[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [{ tool = \"x\" }]\nwindow = { calls = -1 }\n");
    assert_eq!(e.line(), Some(5), "{e}");

    let e = error("[[rule]]\nid = \"a\"\naction = \"block\"\n");
    assert!(e.message().contains("missing field `steps`"), "{e}");
    assert_eq!(e.line(), Some(1), "{e}");

    let e = error("[[rule]\n");
    assert_eq!(e.line(), Some(1), "{e}");
}

#[test]
fn semantic_errors_name_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [{ tool = \"x\" }]\n[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [{ tool = \"x\" }]\n",
            6,
            "rule[1].id",
            "duplicate rule id `a` (first on line 2)",
        ),
        ("[[rule]]\nid = \"Bad Id\"\naction = \"block\"\nsteps = [{ tool = \"x\" }]\n", 2, "rule[0].id", "must match"),
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [{ tool = \"x[\" }]\n",
            4,
            "rule[0].steps[0].tool",
            "invalid glob",
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [\n {},\n]\n",
            5,
            "rule[0].steps[0]",
            "at least one condition",
        ),
        ("[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = []\n", 4, "rule[0].steps", "1 to 16 steps"),
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [{ tool = \"x\", tools = [\"y\"] }]\n",
            4,
            "rule[0].steps[0]",
            "either tool or tools",
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [{ tags = [] }]\n",
            4,
            "rule[0].steps[0].tags",
            "must not be empty",
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nwindow = { calls = 1001 }\nsteps = [{ tool = \"x\" }]\n",
            4,
            "rule[0].window.calls",
            "between 1 and 1000",
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nwindow = { seconds = 0 }\nsteps = [{ tool = \"x\" }]\n",
            4,
            "rule[0].window.seconds",
            "at least 1",
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [{ args = { url = {} } }]\n",
            4,
            "rule[0].steps[0].args.url",
            "needs one of",
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"block\"\nsteps = [{ args = { p = { glob = \"{a\" } } }]\n",
            4,
            "rule[0].steps[0].args.p.glob",
            "invalid glob",
        ),
        ("[tags]\n\"x__*\" = [\"has space\"]\n", 2, "tags.\"x__*\"", "without spaces"),
    ];
    for (text, line, key, message) in cases {
        let e = error(text);
        assert_eq!(e.line(), Some(*line), "{e}");
        assert_eq!(e.key(), Some(*key), "{e}");
        assert!(e.message().contains(message), "{e}");
        assert_eq!(e.file(), "rules.toml");
    }
}

#[test]
fn warnings_for_rules_that_can_never_hit() {
    let r = rules(
        r#"
[tags]
"fetch__*" = ["network"]

[[rule]]
id = "typo"
action = "alert"
steps = [{ tags = ["netwrok"] }]

[[rule]]
id = "short-window"
action = "alert"
window = { calls = 1 }
steps = [{ tool = "a" }, { tool = "b" }, { tool = "c" }]

[[rule]]
id = "contradiction"
action = "alert"
steps = [{ tags = ["read-only", "destructive"] }]

[[rule]]
id = "fine"
action = "alert"
steps = [{ tags = ["network", "open-world", "upstream:fetch"] }]
"#,
    );
    let w: Vec<String> = r.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 3, "{w:#?}");
    assert!(w[0].starts_with("rules.toml:8:20: rule typo: no [tags] entry gives tag `netwrok`"), "{w:#?}");
    assert!(w[1].contains("rule short-window: window.calls = 1 is fewer than the 2 earlier steps"), "{w:#?}");
    assert!(w[2].contains("rule contradiction: `destructive` is never derived for a read-only tool"), "{w:#?}");
}

#[test]
fn load_names_the_file() {
    let e = RuleSet::load(Path::new("/nonexistent/rules.toml")).expect_err("no such file");
    assert!(e.to_string().starts_with("/nonexistent/rules.toml: cannot read:"), "{e}");
    assert_eq!(e.line(), None);
}

#[test]
fn check_report_lists_rules_and_tags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.toml");
    let text = format!(
        "{GOOD}\n[[rule]]\nid = \"two\"\naction = \"shadow\"\nscope = \"principal\"\nwindow = {{ calls = 7, seconds = 60 }}\nsteps = [{{ tool = \"a\" }}, {{ tool = \"b\" }}]\n"
    );
    std::fs::write(&path, text).expect("write");
    let report = crate::security::rules::check(&path).expect("check");
    assert_eq!(report.rules.len(), 2);
    assert_eq!(report.rules[1].id, "two");
    assert_eq!((report.rules[1].scope, report.rules[1].window_seconds), (Scope::Principal, Some(60)));
    assert_eq!(report.tags[0].glob, "postgres__*");
    assert_eq!(report.history_calls, 7);
    // One entry: its time and one word of step bits.
    assert_eq!(report.history_bytes, 7 * 16);
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["rules"][0]["action"], "block");
}
