//! The background tasks alone: what the catalog task publishes and whom it
//! tells, what a new connection is told again, and the pin and rules
//! watchers (on paused time).

use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;

use super::*;
use crate::routing::gate::ToolRef;
use crate::routing::tests::{
    Mock, caller, catalog, checked, config_in, core, core_of, down, drain, eventually, methods, principal, session,
    tool_defs,
};
use crate::security::access::Grants;
use crate::security::{DenyReason, Ident};
use crate::upstream::Lists;

fn tools(names: &[&str]) -> Lists {
    Lists { tools: tool_defs(names), ..Lists::default() }
}

#[tokio::test]
async fn sessions_are_told_only_of_the_lists_they_see_change() {
    let access = "[[access]]\nprincipals = [\"key:bob\"]\ntools = { allow = [\"a__*\"] }\n\
                  resources = { allow = [\"file+a:*\"] }\n";
    let core = core(&format!("{}{}{access}", down("a", ""), down("b", "")));
    let (_root, mut root_rx) = session(&core, principal("root"), Some(Grants::open()));
    let (_bob, mut bob_rx) = session(&core, principal("bob"), None);
    let told = |rx: &mut tokio::sync::mpsc::Receiver<String>| -> Vec<String> {
        methods(&drain(rx)).into_iter().map(str::to_owned).collect()
    };
    let (a_x, b_y, b_yz, a_xw) = (tools(&["x"]), tools(&["y"]), tools(&["y", "z"]), tools(&["x", "w"]));
    let before = catalog(&core, &[(0, &a_x), (1, &b_y)]);

    // Only `b`'s tools changed: bob, who sees none of them, hears nothing.
    let after = catalog(&core, &[(0, &a_x), (1, &b_yz)]);
    announce(&core, &before, &after, &[ListKind::Tools]);
    assert_eq!(told(&mut root_rx), ["notifications/tools/list_changed"]);
    assert!(told(&mut bob_rx).is_empty(), "bob would learn of `b`");

    let after = catalog(&core, &[(0, &a_xw), (1, &b_y)]);
    announce(&core, &before, &after, &[ListKind::Tools]);
    assert_eq!(told(&mut root_rx), ["notifications/tools/list_changed"]);
    assert_eq!(told(&mut bob_rx), ["notifications/tools/list_changed"]);

    // Resources and templates share one notification, and one look.
    let with = |templates: &[&str]| Lists {
        resources: [checked(r#"{"uri":"file:///one","name":"one"}"#)].into(),
        templates: templates.iter().map(|t| checked(&format!(r#"{{"uriTemplate":"{t}","name":"t"}}"#))).collect(),
        ..Lists::default()
    };
    let (plain, templated) = (with(&[]), with(&["file:///t/{id}"]));
    let before = catalog(&core, &[(0, &plain), (1, &plain)]);
    let after = catalog(&core, &[(0, &templated), (1, &plain)]);
    announce(&core, &before, &after, &[ListKind::Resources]);
    assert_eq!(told(&mut bob_rx), ["notifications/resources/list_changed"], "a template of `a` came");
    let after_b = catalog(&core, &[(0, &plain), (1, &templated)]);
    announce(&core, &before, &after_b, &[ListKind::Resources]);
    assert!(told(&mut bob_rx).is_empty(), "one of `b` came");
    assert_eq!(told(&mut root_rx), ["notifications/resources/list_changed"; 2]);
}

#[tokio::test]
async fn sessions_that_share_grants_are_told_alike_and_only_of_what_they_see_change() {
    let access = "[[access]]\nprincipals = [\"key:bob\", \"key:carol\"]\ntools = { allow = [\"a__*\"] }\n\
                  [[access]]\nprincipals = [\"key:dave\"]\ntools = { allow = [\"b__y\", \"c__*\"] }\n";
    let core = core(&format!("{}{}{}{access}", down("a", ""), down("b", ""), down("c", "")));
    let mut sessions: Vec<_> = ["bob", "bob", "carol", "dave", "erin"]
        .into_iter()
        .map(|who| (who, session(&core, principal(who), None)))
        .collect();
    let (root, mut root_rx) = session(&core, principal("root"), Some(Grants::open()));
    assert_eq!(*sessions[0].1.0.grants(), *sessions[2].1.0.grants(), "bob's and carol's grants are one set");
    let mut told = || -> Vec<(&str, usize)> {
        let mut out: Vec<_> = sessions.iter_mut().map(|(who, (_, rx))| (*who, drain(rx).len())).collect();
        out.retain(|(_, n)| *n > 0);
        out
    };
    let (a_x, a_xw, b_y, b_yz, b_z, c_q) =
        (tools(&["x"]), tools(&["x", "w"]), tools(&["y"]), tools(&["y", "z"]), tools(&["z"]), tools(&["q"]));
    let before = catalog(&core, &[(0, &a_x), (1, &b_y), (2, &c_q)]);

    // A tool of `b` that only root sees came.
    let after = catalog(&core, &[(0, &a_x), (1, &b_yz), (2, &c_q)]);
    announce(&core, &before, &after, &[ListKind::Tools]);
    assert!(told().is_empty());
    assert_eq!(drain(&mut root_rx).len(), 1);
    // `b__y`, which dave sees, went.
    let after = catalog(&core, &[(0, &a_x), (1, &b_z), (2, &c_q)]);
    announce(&core, &before, &after, &[ListKind::Tools]);
    assert_eq!(told(), [("dave", 1)]);
    // `a` and `c` changed: each of bob's sessions, carol and dave, once each.
    let after = catalog(&core, &[(0, &a_xw), (1, &b_y), (2, &b_z)]);
    announce(&core, &before, &after, &[ListKind::Tools]);
    assert_eq!(told(), [("bob", 1), ("bob", 1), ("carol", 1), ("dave", 1)]);
    // `c` went altogether (down): dave only.
    let after = catalog(&core, &[(0, &a_x), (1, &b_y)]);
    announce(&core, &before, &after, &[ListKind::Tools]);
    assert_eq!(told(), [("dave", 1)]);
    drop(root);
}

/// An identical definition that moves between unprefixed upstreams leaves
/// the whole list as it was (its fingerprint too), but not what a session
/// that sees only one of them sees: it is told (a hostile review found the
/// catalog task announcing only when a whole list changed).
#[tokio::test]
async fn a_definition_that_moves_between_unprefixed_upstreams_is_told_to_who_sees_one_of_them() {
    let access = "[[access]]\nprincipals = [\"key:bob\"]\ntools = { allow = [\"b__*\"] }\n\
                  [[access]]\nprincipals = [\"key:carol\"]\ntools = { allow = [\"c__*\"] }\n";
    let core = core(&format!("{}{}{access}", down("b", "prefix = false"), down("c", "prefix = false")));
    let (_root, mut root_rx) = session(&core, principal("root"), Some(Grants::open()));
    let (_bob, mut bob_rx) = session(&core, principal("bob"), None);
    let (_carol, mut carol_rx) = session(&core, principal("carol"), None);
    let (echo, none) = (tools(&["echo"]), tools(&[]));
    let before = catalog(&core, &[(0, &echo), (1, &echo)]);
    let after = catalog(&core, &[(0, &none), (1, &echo)]);
    assert!(after.changed_lists(&before).is_empty(), "the whole list reads the same");
    announce(&core, &before, &after, &after.changed_lists(&before));
    assert_eq!(methods(&drain(&mut bob_rx)), ["notifications/tools/list_changed"], "bob's `echo` went");
    assert_eq!(methods(&drain(&mut carol_rx)), ["notifications/tools/list_changed"], "carol's `echo` came");
    assert!(drain(&mut root_rx).is_empty(), "root sees the same list");
}

#[tokio::test]
async fn the_catalog_follows_a_ready_upstream_and_its_new_connection_is_told_again() {
    let caps = serde_json::json!({ "tools": {}, "logging": {}, "resources": { "subscribe": true } });
    let mock = Mock::start(caps, serde_json::json!({ "tools": [{ "name": "echo", "inputSchema": {} }] })).await;
    let core = core(&mock.section("m", ""));
    let m = core.upstreams.find("m").unwrap();
    let (root, mut rx) = session(&core, principal("root"), Some(Grants::open()));
    // Asked for while the upstream was still starting.
    assert_eq!(core.levels.next(Some(1)), Some(1));
    core.subscriptions.want(root.id, (m, Arc::from("file:///watched")));

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(catalog_loop(core.clone(), shutdown.clone()));
    eventually("m__echo is published", || core.published.load().get("m__echo").is_some()).await;
    assert_eq!(core.published.load().tools().len(), 1);
    eventually("the session is told", || !rx.is_empty()).await;
    assert_eq!(methods(&drain(&mut rx)), ["notifications/tools/list_changed"]);
    let changed = core.telemetry.metrics.catalog_refreshes.get_or_create(&Outcome { outcome: "changed" }).get();
    assert_eq!(changed, 1);
    let text = core.telemetry.metrics.encode();
    let rebuilds = text.lines().find_map(|l| l.strip_prefix("mcp_gateway_catalog_rebuild_duration_seconds_count "));
    assert!(rebuilds.is_some_and(|n| n.trim().parse::<u64>().unwrap() >= 1), "each rebuild is timed: {rebuilds:?}");
    eventually("the level and the subscription are told upstream", || {
        let seen = mock.seen();
        seen.iter().any(|m| m == "logging/setLevel") && seen.iter().any(|m| m == "resources/subscribe")
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the loop ends on shutdown").unwrap();
}

/// Writes `text` to `path` with a modification time of its own, so a
/// watcher comparing times sees every write.
fn write(path: &std::path::Path, text: &str, secs: u64) {
    std::fs::write(path, text).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_approval_in_the_pin_store_is_seen_within_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_of(config_in(dir.path(), "[pinning]\nfile = \"pins.json\"\n"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watch_pins(core.clone(), shutdown.clone()));
    let start = core.changes.generation();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(core.changes.generation(), start, "nothing changed");

    // Written at 2.5 s: the poll at 4 s sees it, once.
    write(&dir.path().join("pins.json"), r#"{"version":2,"tools":{}}"#, 1_000_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(core.changes.generation(), start, "before the next poll");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(core.changes.generation(), start + 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(core.changes.generation(), start + 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task).await.expect("ends on shutdown").unwrap();
    // Without a pin store the watch still runs (a reload may add one),
    // and ends on shutdown.
    let stop = CancellationToken::new();
    let none = tokio::spawn(watch_pins(crate::routing::tests::core(""), stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!none.is_finished(), "runs without a store");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), none).await.expect("ends on shutdown").unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_changed_rules_file_is_put_in_force_and_a_bad_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    let block = |tool: &str| {
        format!("[[rule]]\nid = \"no-{tool}\"\naction = \"block\"\nsteps = [{{ tool = \"raw__{tool}\" }}]\n")
    };
    write(&rules, &block("sleep"), 1_000_000);
    let core = core_of(config_in(dir.path(), "[rules]\nfile = \"rules.toml\"\nreload_interval = \"1s\"\n"));
    let (bob, _rx) = session(&core, principal("bob"), None);
    let refused = async |tool: &str| {
        let key = format!("raw__{tool}");
        let tool =
            ToolRef { ident: Ident { key: &key, bare: None }, quarantined: false, confirmed: None, continued: false };
        let c = caller(Some(&bob));
        core.gate.check_tool(&c, &key, tool, "raw", None, None).await.err().map(|r| r.reason)
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watch_rules(core.clone(), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(refused("sleep").await, Some(DenyReason::Rule));
    assert_eq!(refused("echo").await, None);

    write(&rules, &block("echo"), 1_000_001);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refused("sleep").await, Some(DenyReason::Rule), "before the next look");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((refused("sleep").await, refused("echo").await), (None, Some(DenyReason::Rule)));

    write(&rules, "[[rule]]\nid = \"Not Valid\"\n", 1_000_002);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((refused("sleep").await, refused("echo").await), (None, Some(DenyReason::Rule)), "the rules stay");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task).await.expect("ends on shutdown").unwrap();
    // Without a rules file the watch still runs (a reload may name one).
    let stop = CancellationToken::new();
    let none = tokio::spawn(watch_rules(crate::routing::tests::core(""), stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!none.is_finished(), "runs without a rules file");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), none).await.expect("ends on shutdown").unwrap();
}

#[tokio::test]
async fn an_upstream_on_its_first_start_is_listed_from_the_cache_and_withdrawn_when_the_start_fails() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join(crate::config::CATALOG_CACHE);
    let entry = |id: &str| format!(r#"{{"id":"{id}","tools":[{{"name":"t","inputSchema":{{"type":"object"}}}}]}}"#);
    let text = format!(r#"{{"version":1,"upstreams":[{},{},{}]}}"#, entry("slow"), entry("fails"), entry("gone"));
    std::fs::write(&cache, text).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o600)).unwrap();
    // `slow` never answers `initialize` (it stays on its first start);
    // `fails` exits after a second without answering; `gone` is not
    // configured.
    let slow = "[upstreams.slow]\ncommand = \"sleep\"\nargs = [\"30\"]\n";
    let fails = "[upstreams.fails]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 1\"]\n";
    let core = core_of(config_in(dir.path(), &format!("{slow}{fails}")));
    let (_root, mut rx) = session(&core, principal("root"), Some(Grants::open()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(catalog_loop(core.clone(), shutdown.clone()));
    eventually("both are listed from the cache", || {
        let c = core.published.load();
        c.get("slow__t").is_some() && c.get("fails__t").is_some()
    })
    .await;
    assert!(core.warm.shown("fails") && core.warm.shown("slow"));
    eventually("the session is told", || !rx.is_empty()).await;
    drain(&mut rx);
    eventually("fails's first start ended", || core.upstreams.get(core.upstreams.find("fails").unwrap()).has_settled())
        .await;
    eventually("the catalog withdraws fails's tools", || core.published.load().get("fails__t").is_none()).await;
    eventually("the session is told again", || !rx.is_empty()).await;
    assert_eq!(methods(&drain(&mut rx)), ["notifications/tools/list_changed"]);
    assert!(!core.warm.shown("fails"));
    let catalog = core.published.load_full();
    assert!(catalog.get("slow__t").unwrap().cached);
    assert!(catalog.get("gone__t").is_none(), "a removed upstream never comes back from the cache");
    assert!(core.first_starts_unlisted().is_empty(), "the first list need not wait for a cached upstream");
    assert_eq!(core.telemetry.metrics.tools_cached.get(), 1);
    // What is remembered: the loaded entries of configured upstreams
    // (`fails` keeps its last good list: it may start next time).
    let snapshot = core.warm.snapshot();
    assert!(snapshot.contains("\"slow\"") && snapshot.contains("\"fails\"") && !snapshot.contains("\"gone\""));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the loop ends on shutdown").unwrap();
    for u in core.upstreams.all() {
        u.shutdown().await;
    }
}

#[tokio::test]
async fn with_a_pin_store_a_cached_definition_is_listed_only_as_approved_and_pins_nothing() {
    use crate::security::pins::{self, Pin, Store};
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let def =
        |d: &str| format!(r#"{{"name":"{d}","description":"{d} as approved","inputSchema":{{"type":"object"}}}}"#);
    let approved = |name: &str| {
        let (sha256, definition) = pins::fingerprint(&RawValue::from_string(def(name)).unwrap());
        Pin { upstream: "slow".into(), sha256, definition, pending: None }
    };
    // `same` is cached as approved, `other` cached changed, `new` never pinned.
    let store = Store {
        version: 2,
        tools: [("slow__same", approved("same")), ("slow__other", approved("other"))]
            .into_iter()
            .map(|(k, p)| (k.to_owned(), p))
            .collect(),
    };
    pins::write(&dir.path().join("pins.json"), &store).unwrap();
    let changed = r#"{"name":"other","description":"something else","inputSchema":{"type":"object"}}"#;
    let text =
        format!(r#"{{"version":1,"upstreams":[{{"id":"slow","tools":[{},{changed},{}]}}]}}"#, def("same"), def("new"));
    let cache = dir.path().join(crate::config::CATALOG_CACHE);
    std::fs::write(&cache, text).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o600)).unwrap();

    let slow = "[pinning]\nfile = \"pins.json\"\n[upstreams.slow]\ncommand = \"sleep\"\nargs = [\"30\"]\n";
    let core = core_of(config_in(dir.path(), slow));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(catalog_loop(core.clone(), shutdown.clone()));
    eventually("the cache is listed", || core.published.load().get("slow__same").is_some()).await;
    let catalog = core.published.load_full();
    let (grants, none) = (Grants::open(), None);
    let page =
        catalog.page_visible(ListKind::Tools, none, 10, &|i| grants.allows(crate::security::access::Kind::Tool, i));
    let page = page.unwrap();
    assert!(page.contains("\"slow__same\""), "{page}");
    assert!(!page.contains("slow__other") && !page.contains("slow__new"), "unverified: not listed: {page}");
    assert!(catalog.get("slow__other").unwrap().quarantined && catalog.get("slow__new").unwrap().quarantined);
    let stored = pins::read(&dir.path().join("pins.json")).unwrap();
    assert_eq!(stored.tools.len(), 2, "nothing pinned from the cache");
    assert!(stored.tools.values().all(|p| p.pending.is_none()), "no change recorded from the cache");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the loop ends on shutdown").unwrap();
    for u in core.upstreams.all() {
        u.shutdown().await;
    }
}
