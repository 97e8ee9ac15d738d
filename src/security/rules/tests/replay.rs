//! Replay of an audit log, in shadow mode.

use super::rules;
use crate::security::rules::{ActionCounts, SubjectHits, replay};

const RULES: &str = r#"
[tags]
"db__*" = ["source:database"]
"web__*" = ["sink:external"]

[[rule]]
id = "db-then-web"
action = "block"
window = { seconds = 60 }
steps = [{ tags = ["source:database"] }, { tags = ["sink:external"] }]

[[rule]]
id = "principal-db-then-web"
action = "alert"
scope = "principal"
steps = [{ tags = ["source:database"] }, { tags = ["sink:external"] }]

[[rule]]
id = "any-open-world"
action = "shadow"
steps = [{ tags = ["open-world"] }]
"#;

fn line(time: &str, session: Option<&str>, principal: Option<&str>, name: &str, extra: &str) -> String {
    let opt = |v: Option<&str>| v.map_or("null".to_owned(), |s| format!("\"{s}\""));
    format!(
        r#"{{"time":"{time}","session":{},"principal":{},"transport":"http","method":"tools/call","name":"{name}","upstream":"{}","class":"ok"{extra}}}"#,
        opt(session),
        opt(principal),
        name.split("__").next().unwrap_or(""),
    )
}

#[test]
fn replay_reports_hits_per_rule_session_and_principal() {
    let r = rules(RULES);
    let log = [
        line("2026-11-21T10:00:00.000Z", Some("aaaa"), Some("alice"), "db__query", ""),
        r#"{"time":"2026-11-21T10:00:00.500Z","session":"aaaa","principal":"alice","method":"tools/list","name":null}"#
            .to_owned(),
        "not json".to_owned(),
        String::new(),
        line("2026-11-21T10:00:30.000Z", Some("aaaa"), Some("alice"), "web__post", ""),
        // A second session of alice: the session rule does not hit, the principal rule does.
        line("2026-11-21T10:00:31.000Z", Some("bbbb"), Some("alice"), "web__post", ""),
        // Two minutes after the read: out of the seconds window.
        line("2026-11-21T10:02:00.000Z", Some("aaaa"), Some("alice"), "web__post", ""),
        // The line's tags are the tool's tags at call time: open-world here.
        line("2026-11-21T10:03:00.000Z", None, None, "other__tool", r#","tags":["open-world","upstream:other"]"#),
        r#"{"time":"2026-11-21T10:04:00.000Z","session":"aaaa","principal":null,"method":"tools/call","name":null}"#
            .to_owned(),
        r#"{"time":"yesterday","session":"aaaa","principal":null,"method":"tools/call","name":"db__query"}"#.to_owned(),
    ];
    let text = log.join("\n") + "\n";
    let report = replay(&r, text.as_bytes()).expect("replay");

    assert_eq!((report.lines, report.calls, report.skipped, report.invalid), (10, 5, 1, 2));
    assert_eq!(report.invalid_lines, [3, 10]);
    assert_eq!(report.without_arguments, 5);
    assert_eq!(report.first_time.as_deref(), Some("2026-11-21T10:00:00.000Z"));
    assert_eq!(report.last_time.as_deref(), Some("2026-11-21T10:03:00.000Z"));
    assert_eq!(report.calls_by_action, ActionCounts { shadow: 1, alert: 2, confirm: 0, block: 1 });

    let by_id = |id: &str| report.rules.iter().find(|r| r.id == id).expect("rule");
    let session = by_id("db-then-web");
    assert_eq!(session.hits, 1);
    assert_eq!(session.first_hit.as_deref(), Some("2026-11-21T10:00:30.000Z"));
    let hit = |id: &str, hits, first: &str| SubjectHits { id: id.to_owned(), hits, first_hit: first.to_owned() };
    assert_eq!(session.sessions, [hit("aaaa", 1, "2026-11-21T10:00:30.000Z")]);
    assert_eq!(session.principals, [hit("alice", 1, "2026-11-21T10:00:30.000Z")]);

    let principal = by_id("principal-db-then-web");
    assert_eq!(principal.hits, 3, "no seconds bound: all three web posts");
    assert_eq!(
        principal.sessions,
        [hit("aaaa", 2, "2026-11-21T10:00:30.000Z"), hit("bbbb", 1, "2026-11-21T10:00:31.000Z")]
    );
    assert_eq!(principal.principals, [hit("alice", 3, "2026-11-21T10:00:30.000Z")]);

    // Without `tags` in the line, only [tags] globs and the upstream count,
    // so only the line that carried `open-world` hits.
    let open = by_id("any-open-world");
    assert_eq!((open.hits, open.sessions.len(), open.principals.len()), (1, 0, 0));

    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["rules"][0]["sessions"][0]["id"], "aaaa");
    assert_eq!(json["rules"][0]["action"], "block");
    assert_eq!(json["calls_by_action"]["block"], 1);
}

#[test]
fn replay_uses_arguments_when_logged() {
    let r = rules(
        "[[rule]]\nid = \"env\"\naction = \"block\"\nsteps = [{ tool = \"fs__*\", args = { path = { glob = \"*.env\" } } }]\n",
    );
    let log = [
        line("2026-11-21T10:00:00.000Z", Some("s"), None, "fs__read", r#","arguments":{"path":"/a/.env"}"#),
        line("2026-11-21T10:00:01.000Z", Some("s"), None, "fs__read", r#","arguments":{"path":"/a/b"}"#),
        line("2026-11-21T10:00:02.000Z", Some("s"), None, "fs__read", ""),
    ]
    .join("\n");
    let report = replay(&r, log.as_bytes()).expect("replay");
    assert_eq!((report.calls, report.without_arguments, report.rules[0].hits), (3, 1, 1));
}
