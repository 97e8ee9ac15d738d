//! Hot reload (issue 18, first part): `POST /admin/reload` and `mcp-gateway
//! reload`, SIGHUP, and a Kubernetes ConfigMap's `..data` symlink swap
//! reload the config as a diff; a bad file is refused whole with the
//! loader's `file:line:col` and the old config keeps serving; open
//! sessions keep going, get the new policy at their next request and
//! `list_changed` when what they see changed; an unchanged upstream keeps
//! its process; what needs a restart is named, not ignored.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::keys::*;
use crate::support::*;

/// The config of the first test: alice (analysts) may use `raw__pid` and
/// `raw__sleep`, or only `raw__sleep` with `alice_pid = false`.
fn access_config(alice_pid: bool, max_sessions: usize) -> String {
    let allow = if alice_pid { "\"raw__pid\", \"raw__sleep\"" } else { "\"raw__sleep\"" };
    format!(
        "[gateway]\nmax_sessions = {max_sessions}\nwatch_config = false\n{}\
         [[access]]\ngroups = [\"analysts\"]\ntools = {{ allow = [{allow}] }}\n\
         [[access]]\nprincipals = [\"ops\"]\ntools = {{ allow = [\"*\"] }}\n{}",
        keys(),
        raw_stdio("raw", "")
    )
}

async fn post_reload(gw: &Gateway, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/reload", gw.addr))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// `mcp-gateway reload` against `gw`, presenting `key`.
async fn cli_reload(gw: &Gateway, key: &str) -> std::process::Output {
    tokio::process::Command::new(gateway_bin())
        .args(["reload", "--url", &format!("http://{}", gw.addr)])
        .env("MCP_GATEWAY_API_KEY", key)
        .output()
        .await
        .unwrap()
}

async fn metrics(gw: &Gateway) -> String {
    gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap()
}

fn reloads(metrics: &str, outcome: &str) -> u64 {
    let line = format!("mcp_gateway_config_reloads_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_reload_applies_policy_to_open_sessions_keeps_upstreams_and_refuses_a_bad_file_whole() {
    let (dir, path) = write_config(&access_config(true, 1000));
    let audit = dir.path().join("audit.jsonl");
    let with_audit = |toml: String| format!("[audit]\npath = {:?}\n{toml}", path_str(&audit));
    std::fs::write(&path, with_audit(access_config(true, 1000))).unwrap();
    let mut gw = Gateway::start_at(&path, dir).await;
    gw.authorize(OPS);
    gw.wait_ready("raw").await;

    let mut alice = McpHttp::connect_as(&gw.url(), ALICE).await;
    let mut stream = SseReader::open(&alice).await;
    let before = alice.call("raw__pid", json!({})).await;
    let pid = text(&before);
    assert!(pid.parse::<u32>().is_ok(), "{before}");

    // Only an admin may reload.
    let (status, _) = post_reload(&gw, ALICE).await;
    assert_eq!(status, 403);

    // A call of several seconds in flight across the reload succeeds.
    let url = gw.url();
    let slow = tokio::spawn(async move {
        let mut c = McpHttp::connect_as(&url, ALICE).await;
        c.call("raw__sleep", json!({"ms": 2000, "tag": "slow"})).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // alice loses raw__pid; max_sessions changes too, which needs a restart.
    std::fs::write(&path, with_audit(access_config(false, 999))).unwrap();
    let (status, report) = post_reload(&gw, OPS).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["outcome"], "applied", "{report}");
    assert_eq!(report["applied"], json!(["access"]), "{report}");
    assert_eq!(report["needs_restart"], json!(["gateway.max_sessions"]), "{report}");

    // The open session sees the new policy at once, and is told.
    let told = stream.until(|m| m["method"] == "notifications/tools/list_changed").await;
    assert!(!told.is_empty());
    assert_eq!(alice.tool_names().await, vec!["raw__sleep".to_owned()]);
    let refused = alice.call("raw__pid", json!({})).await;
    assert_eq!(refused["error"]["message"], "Unknown tool: raw__pid", "refused as unknown: {refused}");
    let slow = slow.await.unwrap();
    assert!(slow.get("result").is_some(), "the call in flight finished: {slow}");

    // The unchanged upstream kept its process.
    let mut ops = McpHttp::connect_as(&gw.url(), OPS).await;
    assert_eq!(text(&ops.call("raw__pid", json!({})).await), pid, "the upstream was not restarted");

    // A bad file is refused with where it is wrong; the config in force stays.
    std::fs::write(&path, with_audit(access_config(true, 1000)).replace("max_sessions =", "max_sesions =")).unwrap();
    let (status, report) = post_reload(&gw, OPS).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["outcome"], "refused");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("gateway.toml:") && error.contains("max_sesions"), "{error}");
    assert_eq!(alice.tool_names().await, vec!["raw__sleep".to_owned()], "the old config still serves");

    // `mcp-gateway reload` says the same, and exits 1.
    let out = cli_reload(&gw, OPS).await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("reload: refused") && printed.contains("max_sesions"), "{printed}");

    // Fixed: applied, and the CLI prints what changed.
    std::fs::write(&path, with_audit(access_config(true, 999))).unwrap();
    let out = cli_reload(&gw, OPS).await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("reload: applied") && printed.contains("applied: access"), "{printed}");
    assert!(text(&alice.call("raw__pid", json!({})).await) == pid, "alice may call raw__pid again");

    // What a truncated or wrong file must not do by a reload: turn
    // authentication off, or open every tool by dropping [[access]].
    let no_auth = with_audit(access_config(true, 999)).replace(&keys(), "");
    std::fs::write(&path, no_auth).unwrap();
    let (status, report) = post_reload(&gw, OPS).await;
    assert_eq!(status, 422, "{report}");
    assert!(report["error"].as_str().unwrap().contains("turn client authentication off"), "{report}");
    let open = with_audit(access_config(true, 999));
    let open = &open[..open.find("[[access]]").unwrap()];
    std::fs::write(&path, format!("{open}{}", raw_stdio("raw", ""))).unwrap();
    let (status, report) = post_reload(&gw, OPS).await;
    assert_eq!(status, 422, "{report}");
    assert!(report["error"].as_str().unwrap().contains("remove every [[access]] entry"), "{report}");
    std::fs::write(&path, with_audit(access_config(true, 999))).unwrap();
    // A key that may not reload: the CLI says so and fails.
    let out = cli_reload(&gw, ALICE).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));

    let m = metrics(&gw).await;
    assert_eq!((reloads(&m, "applied"), reloads(&m, "refused")), (2, 4), "{m}");
    assert!(m.contains("mcp_gateway_config_last_reload_success_timestamp_seconds "), "{m}");

    // Each reload is in the audit log.
    let records: Vec<Value> = wait_for(Duration::from_secs(10), || {
        let lines: Vec<Value> = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &Value| r["method"] == "gateway/config_reload")
            .collect();
        (lines.len() == 6).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("six reload records: {}", std::fs::read_to_string(&audit).unwrap_or_default()));
    assert_eq!(records[0]["name"], "admin");
    assert_eq!(records[0]["principal"], "key:ops", "who reloaded");
    assert!(records[1]["is_error"] == true && records[1]["cause"] == "config_refused", "{}", records[1]);
    gw.stop().await;
}

/// A ConfigMap as the kubelet writes it: the files live in a timestamped
/// folder, `..data` points at it, and `gateway.toml` points into `..data`.
/// An update writes a new folder and swaps `..data` by a rename.
#[tokio::test]
async fn a_configmap_symlink_swap_and_sighup_reload_and_a_secrets_change_is_seen() {
    let dir = tempfile::Builder::new().prefix("mcpgw-cm").tempdir_in(root().join("target")).unwrap();
    let d = dir.path().to_path_buf();
    let secrets = d.join("secrets.env");
    std::fs::write(&secrets, "FIRST_TOKEN=first-secret-value\n").unwrap();
    // The upstream's environment takes a secret: changing its value in
    // the secrets file replaces the upstream.
    let config = |page: usize, list: bool| {
        format!(
            "[gateway]\nsecrets_file = {:?}\npage_size = {page}\nlist_secret_names = {list}\n{}",
            path_str(&secrets),
            raw_stdio("raw", "env = { UPSTREAM_TOKEN = \"${FIRST_TOKEN}\" }")
        )
    };
    let version = |name: &str, toml: String| {
        std::fs::create_dir(d.join(name)).unwrap();
        std::fs::write(d.join(name).join("gateway.toml"), toml).unwrap();
    };
    version("..2026_12_06_a", config(100, false));
    std::os::unix::fs::symlink("..2026_12_06_a", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/gateway.toml", d.join("gateway.toml")).unwrap();
    let path = d.join("gateway.toml");
    let gw = Gateway::start_at(&path, dir).await;
    gw.wait_ready("raw").await;
    let mut c = gw.client().await;
    let mut stream = SseReader::open(&c).await;
    assert!(!c.tool_names().await.iter().any(|n| n == "gateway__list_secret_names"));

    // The kubelet's update: a new folder, a new link, renamed over `..data`.
    version("..2026_12_06_b", config(100, true));
    std::os::unix::fs::symlink("..2026_12_06_b", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let applied = async {
        loop {
            let m = metrics(&gw).await;
            if reloads(&m, "applied") >= 1 {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), applied).await.expect("the swap was seen and applied");
    stream.until(|m| m["method"] == "notifications/tools/list_changed").await;
    let listed = c.call("gateway__list_secret_names", json!({})).await;
    assert_eq!(listed["result"]["structuredContent"]["names"], json!(["FIRST_TOKEN"]), "{listed}");

    // The secrets file is watched too: a new name is seen, and a changed
    // value the upstream uses replaces it.
    let pid = text(&c.call("raw__pid", json!({})).await);
    std::fs::write(&secrets, "FIRST_TOKEN=rotated-secret-value\nSECOND_TOKEN=second-secret-value\n").unwrap();
    let names = async {
        loop {
            let listed = c.call("gateway__list_secret_names", json!({})).await;
            if listed["result"]["structuredContent"]["names"] == json!(["FIRST_TOKEN", "SECOND_TOKEN"]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), names).await.expect("the secrets change was applied");
    let replaced = async {
        loop {
            let now = text(&c.call("raw__pid", json!({})).await);
            if now.parse::<u32>().is_ok() && now != pid {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), replaced).await.expect("the upstream using the secret was replaced");

    // An edit the watch does not see (inside the versioned folder), then
    // SIGHUP: reloaded.
    let before = reloads(&metrics(&gw).await, "applied");
    std::fs::write(d.join("..2026_12_06_b").join("gateway.toml"), config(3, true)).unwrap();
    gw.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let sighup = async {
        loop {
            if reloads(&metrics(&gw).await, "applied") > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), sighup).await.expect("SIGHUP reloaded");
    assert!(gw.proc.logs().contains("SIGHUP received: reloading the config."));
    assert!(gw.proc.logs().contains("applied=gateway.page_size"), "{}", gw.proc.logs());
    let page = c.request("tools/list", json!({})).await;
    assert!(page["result"]["nextCursor"].is_string(), "page_size 3 pages the list now: {page}");
    let status = gw.stop().await;
    assert!(status.success(), "SIGHUP did not end the process");
}

/// Steady calls of 3 s to `swap` and quick ones to `raw` from three
/// sessions until `stop`; returns the calls made and those that failed.
async fn load(url: String, stop: tokio::sync::watch::Receiver<bool>) -> (u32, Vec<Value>) {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..3u32 {
        let (url, stop) = (url.clone(), stop.clone());
        workers.spawn(async move {
            let mut c = McpHttp::connect(&url).await;
            let (mut n, mut failed) = (0u32, Vec::new());
            while !*stop.borrow() {
                n += 1;
                let (tool, args) = match w {
                    0 => ("raw__echo", json!({"n": n})),
                    _ => ("swap__sleep", json!({"ms": 3000, "tag": format!("{w}-{n}")})),
                };
                let r = c.call(tool, args).await;
                if r.get("result").is_none() || r["result"]["isError"] == true {
                    failed.push(json!({"tool": tool, "reply": r}));
                }
            }
            (n, failed)
        });
    }
    let (mut calls, mut failed) = (0, Vec::new());
    while let Some(r) = workers.join_next().await {
        let (n, f) = r.unwrap();
        calls += n;
        failed.extend(f);
    }
    (calls, failed)
}

#[tokio::test]
async fn upstreams_are_added_replaced_and_removed_by_a_reload_without_a_failed_call() {
    let config = |name: &str, replace: &str, added: bool| {
        let mut toml = format!("[gateway]\nwatch_config = false\n{}", raw_stdio("raw", ""));
        // A grace shorter than a call: only the drain lets calls in flight
        // on a replaced process finish.
        let swap = format!("env = {{ RAW_STDIO_SERVER_NAME = {name:?} }}\nshutdown_grace = \"500ms\"\n{replace}");
        toml += &raw_stdio("swap", &swap);
        if added {
            toml += &raw_stdio("added", "");
        }
        toml
    };
    let (dir, path) = write_config(&config("one", "", false));
    let gw = Gateway::start_at(&path, dir).await;
    gw.wait_ready("raw").await;
    gw.wait_ready("swap").await;
    let mut c = gw.client().await;
    let mut stream = SseReader::open(&c).await;
    let raw_pid = text(&c.call("raw__pid", json!({})).await);
    let swap_pid = text(&c.call("swap__pid", json!({})).await);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loader = tokio::spawn(load(gw.url(), stop_rx));
    tokio::time::sleep(Duration::from_millis(700)).await;

    // `swap` changes its environment (replaced make-before-break) and
    // `added` comes.
    std::fs::write(&path, config("two", "", true)).unwrap();
    let (status, report) = post_reload(&gw, "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["applied"],
        json!(["upstreams.added: added", "upstreams.swap: replaced (make-before-break)"]),
        "{report}"
    );
    gw.wait_upstream("swap", |u| u["server_info"]["name"] == "two").await;
    stream.until(|m| m["method"] == "notifications/tools/list_changed").await;
    gw.wait_ready("added").await;
    let added = async {
        while !c.tool_names().await.iter().any(|n| n == "added__pid") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), added).await.expect("the added upstream's tools are listed");
    assert_ne!(text(&c.call("swap__pid", json!({})).await), swap_pid, "a new process serves swap");
    assert_eq!(text(&c.call("raw__pid", json!({})).await), raw_pid, "the unchanged upstream kept its process");
    let old_gone = async {
        while alive(swap_pid.parse().unwrap()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), old_gone).await.expect("the old swap process drained and stopped");

    // Not one call failed while the upstream was added and swapped.
    stop_tx.send(true).unwrap();
    let (calls, failed) = loader.await.unwrap();
    assert!(calls > 10, "{calls} calls");
    assert!(failed.is_empty(), "failed calls: {failed:#?}");

    // Break-before-make (its tools are gone in between, by design), and
    // `added` removed.
    let before = text(&c.call("swap__pid", json!({})).await);
    std::fs::write(&path, config("three", "replace = \"break-before-make\"", false)).unwrap();
    let (status, report) = post_reload(&gw, "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["applied"],
        json!(["upstreams.swap: replaced (break-before-make)", "upstreams.added: removed"]),
        "{report}"
    );
    gw.wait_upstream("swap", |u| u["server_info"]["name"] == "three" && u["state"] == "ready").await;
    assert!(!alive(before.parse().unwrap()), "break-before-make stopped the old process before the new one served");
    let gone = async {
        while c.tool_names().await.iter().any(|n| n.starts_with("added__")) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), gone).await.expect("the removed upstream's tools are withdrawn");
    assert!(gw.upstream("added").await.is_null(), "no longer configured");

    gw.stop().await;
}

/// The case exactly: an HTTP upstream's header takes a secret,
/// and the server accepts only the rotated value. Rotating it in the
/// secrets file and reloading replaces the upstream, which then serves.
#[tokio::test]
async fn a_rotated_secret_reaches_an_http_upstreams_header() {
    let web = Fixture::python("http_upstream.py", &["--require-header", "x-upstream-token=rotated-token-2"]).await;
    let dir = tempfile::Builder::new().prefix("mcpgw-secret").tempdir_in(root().join("target")).unwrap();
    let secrets = dir.path().join("secrets.env");
    std::fs::write(&secrets, "UPSTREAM_TOKEN=first-token-1\n").unwrap();
    let toml = format!(
        "[gateway]\nsecrets_file = {:?}\nwatch_config = false\n\
         [upstreams.web]\nurl = {:?}\nheaders = {{ x-upstream-token = \"${{UPSTREAM_TOKEN}}\" }}\n{}",
        path_str(&secrets),
        web.url(),
        raw_stdio("raw", "")
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let gw = Gateway::start_at(&path, dir).await;
    gw.wait_ready("raw").await;
    let refused = gw.wait_upstream("web", |u| u["state"] == "down").await;
    assert!(refused["down_reason"].to_string().contains("401"), "{refused}");

    std::fs::write(&secrets, "UPSTREAM_TOKEN=rotated-token-2\n").unwrap();
    let (status, report) = post_reload(&gw, "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], json!(["secrets", "upstreams.web: replaced (make-before-break)"]), "{report}");
    gw.wait_ready("web").await;
    let mut c = gw.client().await;
    let echoed = c.call("web__echo", json!({"text": "through"})).await;
    assert!(echoed.get("result").is_some(), "{echoed}");
    gw.stop().await;
}

/// A timeout and a tool filter are settings, not what the upstream is: a
/// reload applies them to the running upstream, which keeps its process
/// and its counters.
#[tokio::test]
async fn settings_apply_in_place_keeping_the_process_and_its_counters() {
    let config = |extra: &str| format!("[gateway]\nwatch_config = false\n{}", raw_stdio("tuned", extra));
    let (dir, path) = write_config(&config("request_timeout = \"30s\""));
    let gw = Gateway::start_at(&path, dir).await;
    gw.wait_ready("tuned").await;
    let mut c = gw.client().await;
    let mut stream = SseReader::open(&c).await;
    let pid = text(&c.call("tuned__pid", json!({})).await);
    let slow = c.call("tuned__sleep", json!({"ms": 1500, "tag": "before"})).await;
    assert_eq!(text(&slow), "before", "{slow}");
    let calls_before = gw.upstream("tuned").await["calls"].as_u64().unwrap();

    std::fs::write(&path, config("request_timeout = \"500ms\"\ntools = { deny = [\"crash\"] }")).unwrap();
    let (status, report) = post_reload(&gw, "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], json!(["upstreams.tuned: settings applied in place"]), "{report}");
    stream.until(|m| m["method"] == "notifications/tools/list_changed").await;
    assert!(!c.tool_names().await.iter().any(|n| n == "tuned__crash"), "the new filter is in force");
    let slow = c.call("tuned__sleep", json!({"ms": 1500, "tag": "after"})).await;
    assert_eq!(slow["error"]["data"]["class"], "timeout", "the new timeout is in force: {slow}");
    assert_eq!(text(&c.call("tuned__pid", json!({})).await), pid, "the same process");
    let calls_after = gw.upstream("tuned").await["calls"].as_u64().unwrap();
    assert!(calls_after > calls_before, "its counters were kept: {calls_before} then {calls_after}");
    gw.stop().await;
}
