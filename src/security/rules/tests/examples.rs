//! The shipped `examples/rules.toml`, each rule on a realistic sequence.

use std::path::Path;

use super::Sim;
use crate::security::rules::RuleSet;

fn shipped() -> RuleSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules.toml");
    match RuleSet::load(&path) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// Annotations as well-behaved upstreams would list them.
fn annotated(rules: &RuleSet) -> Sim<'_> {
    Sim::new(rules)
        .annotate("postgres__query", r#"{"readOnlyHint":true,"openWorldHint":false}"#)
        .annotate("fetch__fetch", r#"{"readOnlyHint":true,"openWorldHint":true}"#)
        .annotate("filesystem__read_text_file", r#"{"readOnlyHint":true,"openWorldHint":false}"#)
        .annotate("filesystem__list_directory", r#"{"readOnlyHint":true,"openWorldHint":false}"#)
        .annotate(
            "filesystem__write_file",
            r#"{"readOnlyHint":false,"destructiveHint":true,"idempotentHint":true,"openWorldHint":false}"#,
        )
}

#[test]
fn the_example_file_loads_without_warnings() {
    let r = shipped();
    assert!(r.warnings().is_empty(), "{:?}", r.warnings());
    let ids: Vec<&str> = r.rules().iter().map(|r| r.id()).collect();
    assert_eq!(ids, ["db-read-then-external-write", "secret-read-then-network", "destructive-after-untrusted-content"]);
}

#[test]
fn database_read_then_external_write() {
    let r = shipped();
    let mut s = annotated(&r);
    assert!(s.call("postgres__query", Some(r#"{"sql":"SELECT email FROM customers"}"#), 0).is_empty());
    assert!(s.call("everything__echo", Some(r#"{"message":"summarise"}"#), 1_000).is_empty());
    // The intranet is allowed...
    assert!(s.call("fetch__fetch", Some(r#"{"url":"https://intranet.example.com/wiki"}"#), 2_000).is_empty());
    // ...anything else is not.
    let hits = s.call("fetch__fetch", Some(r#"{"url":"https://paste.example.net/new"}"#), 3_000);
    assert_eq!(hits, ["db-read-then-external-write"]);
    // Ten minutes later the read is out of the window.
    assert!(s.call("fetch__fetch", Some(r#"{"url":"https://paste.example.net/new"}"#), 603_001).is_empty());
}

#[test]
fn secret_file_read_then_a_network_tool() {
    let r = shipped();
    for path in ["/home/dev/app/.env", "/srv/app/.env.production", "/secrets/db-password", "deploy/secrets/key"] {
        let mut s = annotated(&r);
        let args = format!(r#"{{"path":"{path}"}}"#);
        assert!(s.call("filesystem__read_text_file", Some(&args), 0).is_empty());
        assert!(s.call("filesystem__list_directory", Some(r#"{"path":"/srv"}"#), 1).is_empty());
        // A new session of the same principal: the rule's scope is the principal.
        let hits = s.call_in("s2", "fetch__fetch", Some(r#"{"url":"https://intranet.example.com"}"#), 2);
        assert_eq!(hits, ["secret-read-then-network"], "{path}");
        assert!(s.sessions.get("s2").is_none_or(|h| h.is_empty()), "the blocked call was not recorded");
    }
    let mut s = annotated(&r);
    s.call("filesystem__read_text_file", Some(r#"{"path":"/home/dev/app/README.md"}"#), 0);
    assert!(s.call("fetch__fetch", Some(r#"{"url":"https://docs.rs"}"#), 1).is_empty());
}

#[test]
fn destructive_call_after_open_world_content() {
    let r = shipped();
    let mut s = annotated(&r);
    assert!(s.call("fetch__fetch", Some(r#"{"url":"https://blog.example.org/post"}"#), 0).is_empty());
    assert!(s.call("filesystem__read_text_file", Some(r#"{"path":"/w/notes.md"}"#), 1).is_empty());
    let hits = s.call("filesystem__write_file", Some(r#"{"path":"/w/run.sh","content":"curl … | sh"}"#), 2);
    assert_eq!(hits, ["destructive-after-untrusted-content"]);

    // Without open-world content first, writing is fine; an unannotated
    // tool (everything__*) is destructive by default but not read-only, so
    // it does not count as reading the open world.
    let mut s = annotated(&r);
    assert!(s.call("filesystem__read_text_file", Some(r#"{"path":"/w/notes.md"}"#), 0).is_empty());
    assert!(s.call("everything__echo", Some(r#"{"message":"hi"}"#), 1).is_empty());
    assert!(s.call("filesystem__write_file", Some(r#"{"path":"/w/a.txt","content":"x"}"#), 2).is_empty());
    // But an unannotated tool after open-world content is destructive.
    s.call("fetch__fetch", Some(r#"{"url":"https://example.org"}"#), 3);
    assert_eq!(s.call("everything__add", Some(r#"{"a":1,"b":2}"#), 4), ["destructive-after-untrusted-content"]);
}
