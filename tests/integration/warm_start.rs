//! Warm starts (issue 18, item 4): the last good tool lists are kept on
//! disk (`catalog-cache.json`, 0600), so after a restart the tools of an
//! upstream still on its first start are listed at once, and a call to one
//! waits for it and is then decided on the live definition: a tool that
//! did not come back is withdrawn, a changed one is quarantined by its pin,
//! an upstream removed from the config never comes back from the cache,
//! and one whose first start fails is withdrawn with `list_changed`.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::{Value, json};

use crate::support::*;

/// TOML for a stdio chaos upstream with `flags`.
fn chaos(id: &str, flags: &[&str]) -> String {
    let p = peers();
    let mut args = vec![fixture("chaos.py"), "--stdio".to_owned(), "--name".to_owned(), id.to_owned()];
    args.extend(flags.iter().map(|f| f.to_string()));
    format!("[upstreams.{id}]\ncommand = {:?}\nargs = {args:?}\n", path_str(&p.python))
}

async fn metrics(gw: &Gateway) -> String {
    gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap()
}

/// The value of the sample `name` (with its labels) in `metrics`, 0 when absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The cache file's upstream ids, once the gateway wrote it.
async fn cached_ids(path: &std::path::Path, want: &[&str]) -> Vec<String> {
    let ids = |v: &Value| -> Vec<String> {
        v["upstreams"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap().to_owned()).collect()
    };
    wait_for(PATIENCE, || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        let got = ids(&v);
        (got == want).then_some(got)
    })
    .await
    .unwrap_or_else(|| panic!("the cache never held {want:?}: {:?}", std::fs::read_to_string(path)))
}

#[tokio::test]
async fn a_slow_upstream_is_listed_at_once_after_a_restart_and_a_call_waits_for_it() {
    let (dir, path) = write_config(&chaos("slow", &[]));
    let gw = Gateway::start_at(&path, dir).await;
    gw.wait_ready("slow").await;
    let cache = gw.dir.path().join("catalog-cache.json");
    cached_ids(&cache, &["slow"]).await;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the cache is the gateway's alone");
    let dir = gw.stop_keeping_dir().await;
    assert!(!dir.path().join("catalog-cache.tmp").exists(), "written by a rename");

    // The same upstream now takes 20 s to answer `initialize`.
    std::fs::write(&path, chaos("slow", &["--init-delay", "20"])).unwrap();
    let gw = Gateway::start_at(&path, dir).await;
    let mut c = gw.client().await;
    let tools = c.tool_names().await;
    assert!(tools.contains(&"slow__work".to_owned()), "listed from the cache: {tools:?}\n{}", gw.proc.logs());
    assert_eq!(gw.upstream("slow").await["state"], "starting", "listed before the upstream is ready");
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, "mcp_gateway_tools_cached"), 5.0, "{m}");

    // The call waits for the first start and is served by the live tool.
    let r = c.call("slow__work", json!({"key": "warm"})).await;
    assert_eq!(text(&r), "ok warm 1", "{r}\n{}", gw.proc.logs());
    assert_eq!(gw.upstream("slow").await["state"], "ready");
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, "mcp_gateway_warm_start_calls_total{outcome=\"live\"}"), 1.0, "{m}");
    assert_eq!(sample(&m, "mcp_gateway_tools_cached"), 0.0, "{m}");
    assert_eq!(sample(&m, "mcp_gateway_catalog_cache_operations_total{outcome=\"loaded\"}"), 1.0, "{m}");
    assert!(gw.stop().await.success());
}

#[tokio::test]
async fn cached_tools_are_checked_against_live_ones_and_pins_and_removed_upstreams_stay_gone() {
    let pinning = "[pinning]\nfile = \"pins.json\"\n";
    let first = format!("{pinning}{}{}{}", chaos("a", &[]), chaos("b", &[]), chaos("gone", &[]));
    let (dir, path) = write_config(&first);
    let gw = Gateway::start_at(&path, dir).await;
    for id in ["a", "b", "gone"] {
        gw.wait_ready(id).await;
    }
    let cache = gw.dir.path().join("catalog-cache.json");
    cached_ids(&cache, &["a", "b", "gone"]).await;
    let dir = gw.stop_keeping_dir().await;

    // Next start: `a` is slow, lost `read` and changed `work`; `b` cannot
    // start at all: it exits after 8 s without answering `initialize`;
    // `gone` is no longer configured. `a` answers after 25 s. Both margins
    // are wide for a loaded machine: the first list must come before `b`
    // fails, and `b` must fail before `a` answers.
    let b_fails = "[upstreams.b]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"sleep 8\"]\n";
    let a_flags = ["--init-delay", "25", "--without", "read", "--describe", "Changed."];
    let second = format!("{pinning}{}{b_fails}", chaos("a", &a_flags));
    std::fs::write(&path, second).unwrap();
    let gw = Gateway::start_at(&path, dir).await;
    let mut c = gw.client().await;
    let mut stream = SseReader::open(&c).await;
    let tools = c.tool_names().await;
    for t in ["a__work", "a__read", "a__idem", "b__work"] {
        assert!(tools.contains(&t.to_owned()), "{t} listed from the cache, as pinned: {tools:?}\n{}", gw.proc.logs());
    }
    assert!(!tools.iter().any(|t| t.starts_with("gone__")), "removed upstreams never come from the cache: {tools:?}");
    // `gone` leaves the file too.
    cached_ids(&cache, &["a", "b"]).await;

    // `b`'s first start fails: its cached tools are withdrawn, and a call
    // fails at once as for any down upstream.
    stream.until(|m| is_note(m, "notifications/tools/list_changed")).await;
    gw.wait_upstream("b", |u| u["state"] == "down").await;
    for _ in 0..100 {
        if !c.tool_names().await.iter().any(|t| t.starts_with("b__")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tools = c.tool_names().await;
    assert!(!tools.iter().any(|t| t.starts_with("b__")), "{tools:?}");
    assert_eq!(gw.upstream("a").await["state"], "starting", "the calls below wait for `a`");
    let r = c.call("b__work", json!({"key": "x"})).await;
    assert_eq!(r["error"]["data"]["class"], "transport", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("upstream `b` is unavailable"), "{r}");

    // Two calls wait for `a` together. `a__read` is no longer listed by
    // it: unknown. `a__work` came back changed: quarantined by its pin
    // (hidden), not served from the cache.
    let mut c2 = gw.client().await;
    let (read, work) = tokio::join!(c.call("a__read", json!({"key": "r"})), c2.call("a__work", json!({"key": "w"})));
    let message = |r: &Value| r["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message(&read).starts_with("Unknown tool: a__read"), "withdrawn: {read}");
    assert!(message(&work).starts_with("Unknown tool: a__work"), "a changed definition is held: {work}");
    let idem = c.call("a__idem", json!({"key": "i"})).await;
    assert_eq!(text(&idem), "ok i 1", "{idem}");
    let tools = c.tool_names().await;
    assert!(tools.contains(&"a__idem".to_owned()) && !tools.contains(&"a__read".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"a__work".to_owned()), "quarantined and hidden: {tools:?}");
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, "mcp_gateway_warm_start_calls_total{outcome=\"withdrawn\"}"), 1.0, "{m}");
    assert_eq!(sample(&m, "mcp_gateway_warm_start_calls_total{outcome=\"changed\"}"), 1.0, "{m}");
    assert_eq!(sample(&m, "mcp_gateway_warm_start_calls_total{outcome=\"live\"}"), 0.0, "a__idem came after: {m}");
    assert_eq!(sample(&m, "mcp_gateway_tools_quarantined"), 1.0, "{m}");
    assert!(gw.stop().await.success());
}
