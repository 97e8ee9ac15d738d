//! The dashboards and alert rules in `dashboards/` against the real
//! gateway and a real Prometheus (issue 5, point 6): every metric they use
//! is exported; `promtool` accepts the rules; and under a load with a
//! healthy, a failing, a dead, a busy, a crash-looping and a never-starting
//! upstream, every panel query and alert expression returns data, except
//! the few listed below with the reason they must be empty.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::support::otlp::OtlpReceiver;
use crate::support::prometheus::{
    Prometheus, dashboard_queries, exposition_families, family_of, grafana_to_promql, metric_names,
};
use crate::support::*;

/// Panels that show no data under this load, and why. Anything else that
/// comes back empty fails the test.
const EXPECTED_EMPTY: &[(&str, &str, &str)] = &[
    (
        "security.json",
        "refused at authentication",
        "the load runs without client authentication (security.rs covers it)",
    ),
    ("security.json", "Upstream OAuth token", "the load has no OAuth upstream (oauth.rs covers it)"),
    ("overview.json", "Redis up", "the load runs without [redis] (replicas.rs evaluates the Redis panels)"),
    ("overview.json", "Redis round trips", "the load runs without [redis]"),
    ("overview.json", "Decisions made without Redis", "the load runs without [redis]"),
];

/// Alerts whose condition does not hold under this load, and why.
const EXPECTED_QUIET: &[(&str, &str)] = &[
    ("McpGatewayUpstreamTokenFailing", "the load has no OAuth upstream"),
    ("McpGatewayAuditDropping", "the audit queue never fills here"),
    ("McpGatewayAuditWriteFailing", "the audit file is writable"),
    ("McpGatewayTraceExportFailing", "the OTLP receiver takes every span"),
    ("McpGatewayMetricsAbsent", "the gateway is scraped the whole time"),
    ("McpGatewayWarmStartCacheNotWritten", "the warm-start cache's folder is writable"),
    ("McpGatewayRedisUnreachable", "the load runs without [redis] (replicas.rs fires the Redis alerts)"),
    ("McpGatewayRulesFailingClosed", "the load runs without [redis]"),
    ("McpGatewayRateLimitsLocal", "the load runs without [redis]"),
    ("McpGatewaySessionEndNotShared", "the load runs without [redis]"),
    ("McpGatewayBridgeRefusing", "the load bridges nothing (bridge.rs drives the bridge's refusals)"),
];

fn dashboards_dir() -> PathBuf {
    root().join("dashboards")
}

fn alerts_file() -> PathBuf {
    dashboards_dir().join("alerts.yml")
}

/// Six upstreams, one per behaviour the dashboards show.
fn load_config(state_dir: &std::path::Path, audit: &std::path::Path, otlp: &str) -> String {
    let py = peers().python.display().to_string();
    let chaos = |id: &str, extra: &str| {
        format!(
            "[upstreams.{id}]\ncommand = {py:?}\nargs = [{:?}, \"--stdio\", \"--state-file\", {:?}]\n{extra}\n",
            fixture("chaos.py"),
            path_str(&state_dir.join(id)),
        )
    };
    // The security panels: a secret to mask, a denied tool, a capped
    // result and a shadow rule on every echo.
    std::fs::write(state_dir.join("secrets.env"), "LOAD_SECRET=load-secret-value\n").unwrap();
    std::fs::write(
        state_dir.join("rules.toml"),
        "[[rule]]\nid = \"echo-watch\"\naction = \"shadow\"\nsteps = [{ tool = \"ok__echo\" }]\n",
    )
    .unwrap();
    let mut toml = format!(
        "[gateway]\nsecrets_file = {:?}\n[audit]\npath = {:?}\n[traces]\nendpoint = {otlp:?}\n[rules]\nfile = {:?}\n\
         [limits.results]\n\"ok__big\" = {{ max_bytes = 1024 }}\n\
         [[access]]\nprincipals = [\"*\"]\ntools = {{ allow = [\"*\"], deny = [\"ok__pid\"] }}\n",
        path_str(&state_dir.join("secrets.env")),
        path_str(audit),
        path_str(&state_dir.join("rules.toml")),
    );
    toml += &raw_stdio("ok", "");
    // Every read fails and is retried until the small budget runs out.
    toml += &chaos(
        "flaky",
        "trusted = true\n[upstreams.flaky.retry]\nattempts = 3\ninitial_delay = \"5ms\"\nmax_delay = \"10ms\"\n\
         budget_ratio = 0.0\nbudget_min_per_second = 0.5\n[upstreams.flaky.breaker]\nenabled = false",
    );
    // Hangs on everything, pings included, and is never restarted: its
    // breaker stays open (probing every second), and its tool's too.
    toml += &chaos(
        "dead",
        "request_timeout = \"1s\"\n[upstreams.dead.breaker]\nconsecutive_failures = 2\ncooldown = \"1s\"\nmax_cooldown = \"1s\"\nper_tool = true\n\
         [upstreams.dead.health]\ninterval = \"1s\"\ntimeout = \"1s\"\nfailures_to_restart = 0",
    );
    // One slot, no queue: concurrent slow calls are refused.
    toml += &raw_stdio("busy", "max_concurrency = 1\nmax_queue = 0");
    toml += &format!("[upstreams.crashy]\ncommand = {py:?}\nargs = [\"-c\", \"import sys; sys.exit(3)\"]\n");
    toml += "[upstreams.never]\ncommand = \"/nonexistent/mcp-server\"\n";
    toml
}

#[tokio::test]
async fn every_metric_a_dashboard_or_alert_uses_is_exported() {
    let status = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(alerts_file())
        .output()
        .expect("promtool is installed (scripts/install-peers.sh installs Debian's prometheus)");
    assert!(status.status.success(), "promtool check rules:\n{}", String::from_utf8_lossy(&status.stdout));

    let state = tempfile::tempdir_in(root().join("target")).unwrap();
    let otlp = OtlpReceiver::start().await;
    let gw = Gateway::start(&load_config(state.path(), &state.path().join("audit.jsonl"), &otlp.endpoint())).await;
    gw.wait_ready("ok").await;
    let text = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    let exported = exposition_families(&text);

    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for q in dashboard_queries(&dashboards_dir()) {
        for name in metric_names(&q.expr) {
            used.insert((name, format!("{} / {}", q.file, q.panel)));
        }
    }
    let rules = std::fs::read_to_string(alerts_file()).unwrap();
    for name in metric_names(&rules) {
        used.insert((name, "alerts.yml".into()));
    }
    assert!(used.len() > 30, "the dashboards use the metrics: {used:?}");
    let missing: Vec<_> =
        used.iter().filter(|(n, _)| !exported.contains(n.as_str()) && !exported.contains(family_of(n))).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:#?}\n{text}");
    // And the other way round: every family the gateway exports is on some dashboard.
    let used_names: BTreeSet<&str> = used.iter().map(|(n, _)| family_of(n)).collect();
    let unused: Vec<_> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !used_names.contains(n) && !used_names.contains(format!("{n}_total").as_str()))
        .collect();
    assert!(unused.is_empty(), "exported but on no dashboard: {unused:?}");
}

#[tokio::test]
async fn prometheus_evaluates_every_panel_and_alert_under_load() {
    let state = tempfile::tempdir_in(root().join("target")).unwrap();
    let otlp = OtlpReceiver::start().await;
    let gw = Gateway::start(&load_config(state.path(), &state.path().join("audit.jsonl"), &otlp.endpoint())).await;
    for id in ["ok", "flaky", "dead", "busy"] {
        gw.wait_ready(id).await;
    }
    // `dead` hangs from now on; two calls time out and open its tool's
    // breaker, and the pings that time out open its own.
    let mut c = gw.client().await;
    assert!(c.call("ok__big", json!({"mib":1})).await.to_string().contains("truncated this result"));
    assert!(c.call("ok__echo", json!({"s":"load-secret-value"})).await.to_string().contains("***"));
    assert!(c.call("ok__pid", json!({})).await.get("error").is_some());
    let r = c.call("dead__set_mode", json!({"mode":"hang"})).await;
    assert_eq!(text(&r), "mode hang", "{r}");
    for _ in 0..3 {
        c.call("dead__work", json!({"key":"d"})).await;
    }
    gw.wait_upstream("dead", |u| u["breaker"]["state"] != "closed").await;
    gw.wait_upstream("crashy", |u| u["crash_loop"] == true).await;

    // Prometheus from the start of the load, so a breaker that never
    // closed shows as never closed.
    let prom = Prometheus::start(&[gw.addr], &[alerts_file()]).await;
    // A reload refused (a typo) and one that finds nothing to change, for
    // the reload panel and its alert.
    let file = gw.dir.path().join("gateway.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{good}\n[gateway.typo]\n")).unwrap();
    let reload = || gw.http.post(format!("http://{}/admin/reload", gw.addr)).send();
    assert_eq!(reload().await.unwrap().status(), 422);
    std::fs::write(&file, &good).unwrap();
    assert_eq!(reload().await.unwrap().status(), 200);
    let url = gw.url();
    let stop = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4u32 {
        let url = url.clone();
        load.spawn(async move {
            let mut c = McpHttp::connect(&url).await;
            let mut n = 0u32;
            while tokio::time::Instant::now() < stop {
                n += 1;
                c.call("ok__echo", json!({"n": n})).await;
                c.call(
                    "flaky__read",
                    json!({"key": format!("f{worker}"), "fault": "rpc_error_before", "code": -32603}),
                )
                .await;
                c.call("dead__work", json!({"key":"d"})).await;
                c.call("busy__sleep", json!({"ms": 50, "tag": "b"})).await;
                c.call("never__anything", json!({})).await;
                c.call("ok__missing", json!({})).await;
                c.call("no_such_tool", json!({})).await;
                c.request("tools/list", json!({})).await;
                // Refused before routing (406), for the HTTP rejections panel.
                let r = c.post(r#"{"jsonrpc":"2.0","id":"html","method":"ping"}"#, &[("accept", "text/html")]).await;
                assert_eq!(r.status, 406, "{}", r.body);
                // Ambiguous both ways (design.md D12): a client's member twice,
                // and an upstream's reply with isError twice.
                let r = c.post(r#"{"jsonrpc":"2.0","id":"dup","method":"ping","params":{"a":1,"a":2}}"#, &[]).await;
                assert_eq!(r.status, 400, "{}", r.body);
                c.call("flaky__work", json!({"key": format!("amb{worker}"), "fault": "ambiguous"})).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    while let Some(r) = load.join_next().await {
        r.unwrap();
    }
    prom.wait_scraped(10, Duration::from_secs(30)).await;
    // Let the alert rules evaluate at least once on the final samples.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut failures = Vec::new();
    let mut checked = 0;
    for q in dashboard_queries(&dashboards_dir()) {
        let expr = grafana_to_promql(&q.expr);
        let expected_empty = EXPECTED_EMPTY.iter().find(|(f, p, _)| q.file == *f && q.panel.contains(p));
        match prom.try_query(&expr).await {
            Err(e) => failures.push(format!("{} / {}: invalid query {expr}: {e}", q.file, q.panel)),
            Ok(r) if r.is_empty() && expected_empty.is_none() => {
                failures.push(format!("{} / {}: no data for {expr}", q.file, q.panel));
            }
            Ok(r) if !r.is_empty() && expected_empty.is_some() => {
                failures.push(format!(
                    "{} / {}: expected empty ({}) but got {r:?}",
                    q.file,
                    q.panel,
                    expected_empty.unwrap().2
                ));
            }
            Ok(_) => {}
        }
        checked += 1;
    }
    let rules = prom.rules().await;
    assert!(rules.len() >= 6, "the alert rules loaded: {rules:?}");
    for (alert, expr) in &rules {
        let quiet = EXPECTED_QUIET.iter().find(|(a, _)| a == alert);
        match prom.try_query(expr).await {
            Err(e) => failures.push(format!("alert {alert}: invalid expression: {e}")),
            Ok(r) if r.is_empty() && quiet.is_none() => failures.push(format!("alert {alert}: no data for {expr}")),
            Ok(r) if !r.is_empty() && quiet.is_some() => {
                failures.push(format!("alert {alert}: expected quiet ({}) but got {r:?}", quiet.unwrap().1));
            }
            Ok(_) => {}
        }
        checked += 1;
    }
    assert!(checked > 60, "{checked} expressions");
    assert!(
        failures.is_empty(),
        "{} of {checked} expressions:\n{}\n\ngateway log:\n{}",
        failures.len(),
        failures.join("\n"),
        gw.proc.logs().lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    // Alerts whose condition holds go pending (their `for` is minutes long).
    let pending: BTreeSet<String> =
        prom.alerts().await.iter().filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned)).collect();
    for alert in ["McpGatewayUpstreamDown", "McpGatewayHighErrorRatio", "McpGatewayRetryBudgetExhausted"] {
        assert!(pending.contains(alert), "{alert} is pending or firing: {pending:?}");
    }
}
