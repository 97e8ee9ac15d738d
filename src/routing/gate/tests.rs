//! The gate alone: the order of its checks, and what a refusal costs.

use std::sync::Arc;

use super::*;
use crate::config::Redactor;
use crate::protocol::Transport;

/// A gate over `extra` config, with an echo-then-sleep `block` rule of
/// `scope` and three tokens per principal.
fn gate(dir: &tempfile::TempDir, scope: &str, extra: &str) -> Gate {
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[rule]]\nid = \"echo-then-sleep\"\naction = \"block\"\nscope = \"{scope}\"\n\
             steps = [{{ tool = \"raw__echo\" }}, {{ tool = \"raw__sleep\" }}]\n"
        ),
    )
    .unwrap();
    let src = format!(
        "[limits]\nper_principal = {{ rate = 0.001, burst = 3 }}\n[rules]\nfile = {:?}\n\
         [[access]]\nprincipals = [\"key:bob\"]\ntools = {{ allow = [\"raw__*\"] }}\n\
         arguments = [{{ tools = \"raw__echo\", argument = \"path\", prefix = [\"/srv\"] }}]\n{extra}",
        rules.to_str().unwrap()
    );
    let config = Config::from_str(&src, &dir.path().join("gateway.toml"), &std::collections::BTreeMap::new())
        .expect("the test config is valid");
    Gate::new(&config, Telemetry::metrics_only(), tokio::time::Instant::now())
}

/// A session of `principal`, with the grants the gate gives it.
fn session(gate: &Gate, principal: Principal) -> Arc<Peer> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::mem::forget(rx);
    let principal = Arc::new(principal);
    let grants = gate.grants_of(&principal);
    let metrics = Arc::new(crate::telemetry::metrics::Metrics::new());
    Arc::new(Peer::new(1, tx, None, metrics, principal, grants, Redactor::default()))
}

fn caller(peer: &Arc<Peer>) -> Caller<'_> {
    Caller {
        transport: Transport::Http,
        session: Some("s"),
        traceparent: None,
        peer: Some(peer),
        stream: None,
        era: crate::protocol::Era::Legacy,
    }
}

fn tool(key: &str) -> ToolRef<'_> {
    ToolRef { ident: Ident { key, bare: None }, quarantined: false, confirmed: None, continued: false }
}

/// Checks a call of `key` with `arguments` (JSON text); the reason of a
/// refusal, or `None` when it goes ahead.
async fn check(gate: &Gate, caller: &Caller<'_>, key: &str, arguments: &str) -> Option<DenyReason> {
    let args = CheckedBox::parse(arguments, &protocol::Limits::default()).expect("valid JSON");
    let checked = gate.check_tool(caller, key, tool(key), "raw", Some(args.checked()), None).await;
    checked.err().map(|r| r.reason)
}

#[tokio::test(start_paused = true)]
async fn an_argument_refusal_spends_no_token_and_enters_no_history() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(&dir, "principal", "");
    let bob = session(&gate, Principal::new("bob", Via::ApiKey, Box::new([]), Box::new([])));
    let c = caller(&bob);
    for _ in 0..3 {
        assert_eq!(check(&gate, &c, "raw__echo", r#"{"path":"/etc/passwd"}"#).await, Some(DenyReason::Argument));
    }
    // No echo entered the history, so this sleep is no second step, and
    // it takes the first of three tokens.
    assert_eq!(check(&gate, &c, "raw__sleep", "{}").await, None);
    assert_eq!(check(&gate, &c, "raw__echo", r#"{"path":"/srv/a"}"#).await, None);
    // Now the rule refuses the sleep, and gives its token back ...
    assert_eq!(check(&gate, &c, "raw__sleep", "{}").await, Some(DenyReason::Rule));
    // ... so a third call goes ahead, and a fourth finds the bucket empty.
    assert_eq!(check(&gate, &c, "raw__echo", r#"{"path":"/srv/b"}"#).await, None);
    assert_eq!(check(&gate, &c, "raw__echo", r#"{"path":"/srv/c"}"#).await, Some(DenyReason::RateLimit));
}

#[tokio::test(start_paused = true)]
async fn principal_rules_join_sessions_of_one_principal_only() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(&dir, "principal", "");
    let bob = |gate: &Gate| session(gate, Principal::new("bob", Via::ApiKey, Box::new([]), Box::new([])));
    let (one, two) = (bob(&gate), bob(&gate));
    assert_eq!(check(&gate, &caller(&one), "raw__echo", r#"{"path":"/srv/a"}"#).await, None);
    assert_eq!(
        check(&gate, &caller(&two), "raw__sleep", "{}").await,
        Some(DenyReason::Rule),
        "the second step in another session of the same principal"
    );

    let gate = self::gate(&dir, "session", "");
    let (one, two) = (bob(&gate), bob(&gate));
    assert_eq!(check(&gate, &caller(&one), "raw__echo", r#"{"path":"/srv/a"}"#).await, None);
    assert_eq!(check(&gate, &caller(&two), "raw__sleep", "{}").await, None, "a session rule looks at one session");
    assert_eq!(check(&gate, &caller(&one), "raw__sleep", "{}").await, Some(DenyReason::Rule));
}

#[tokio::test(start_paused = true)]
async fn what_a_caller_may_not_see_answers_as_unknown_before_any_other_check() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(&dir, "principal", "");
    // Anonymous holds no grant: even a bad argument is not looked at.
    let anon = session(&gate, Principal::anonymous());
    let c = caller(&anon);
    let args = CheckedBox::parse(r#"{"path":"/etc/passwd"}"#, &protocol::Limits::default()).unwrap();
    let refused = gate.check_tool(&c, "raw__echo", tool("raw__echo"), "raw", Some(args.checked()), None).await;
    let refused = refused.expect_err("no grant");
    assert_eq!(refused.reason, DenyReason::Access);
    assert!(matches!(refused.answer, Answer::AsUnknown));

    // A quarantined tool is hidden by default, before its arguments.
    let bob = session(&gate, Principal::new("bob", Via::ApiKey, Box::new([]), Box::new([])));
    let held = ToolRef { quarantined: true, ..tool("raw__echo") };
    let refused = gate.check_tool(&caller(&bob), "raw__echo", held, "raw", Some(args.checked()), None).await;
    let refused = refused.expect_err("held");
    assert_eq!(refused.reason, DenyReason::Quarantined);
    assert!(matches!(refused.answer, Answer::AsUnknown));

    // With `on_change = "refuse"` it is named, and still before arguments.
    let gate = self::gate(&dir, "principal", "[pinning]\non_change = \"refuse\"\n");
    let bob = session(&gate, Principal::new("bob", Via::ApiKey, Box::new([]), Box::new([])));
    let refused = gate.check_tool(&caller(&bob), "raw__echo", held, "raw", Some(args.checked()), None).await;
    let refused = refused.expect_err("held");
    assert_eq!(refused.reason, DenyReason::Quarantined);
    assert!(matches!(&refused.answer, Answer::Told(e) if e.message.contains("tools approve raw__echo")));
}
