//! The official conformance suite's server scenarios
//! (`@modelcontextprotocol/conformance`, via `scripts/conformance.sh`):
//! first against our conformance fixture directly (the baseline), then
//! through the gateway with the fixture mounted unprefixed, in both
//! response modes. Every scenario that passes directly must pass through
//! the gateway. The matrix is printed (run with `--nocapture` to see it;
//! the README keeps a copy).
//!
//! And the suite's client scenarios with the gateway as the client under
//! test (`scripts/conformance-client.sh`): its upstream side, the
//! handshake and above all upstream OAuth. Every one must pass.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::*;

/// `scenario → PASS|FAIL line` from a conformance.sh run.
fn matrix(args: &[&str]) -> BTreeMap<String, String> {
    let rows = run_script("conformance.sh", args, &[]);
    assert!(rows.len() >= 30, "the whole server suite ran: {rows:?}");
    rows
}

/// Runs one of the conformance scripts; its matrix rows by scenario.
fn run_script(script: &str, args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, String> {
    let out = Command::new(root().join("scripts").join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{script} runs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, verdict) = (words.next()?, words.next()?);
            matches!(verdict, "PASS" | "FAIL").then(|| (name.to_owned(), l.to_owned()))
        })
        .collect()
}

fn passes(row: &str) -> bool {
    row.split_whitespace().nth(1) == Some("PASS")
}

#[tokio::test]
async fn every_scenario_that_passes_directly_passes_through_the_gateway() {
    let dir = tempfile::Builder::new().prefix("conformance").tempdir_in(root().join("target")).unwrap();
    let out = |name: &str| path_str(&dir.path().join(name));
    let direct = tokio::task::spawn_blocking({
        let o = out("direct");
        move || matrix(&["--direct", &o])
    })
    .await
    .unwrap();
    let fixture = Fixture::python("conformance_server.py", &["--http"]).await;
    for mode in ["json", "sse"] {
        let toml = format!(
            "[gateway]\nresponse_mode = \"{mode}\"\n[upstreams.conformance]\nurl = \"{}\"\nprefix = false\n",
            fixture.url()
        );
        let gw = Gateway::start(&toml).await;
        gw.wait_ready("conformance").await;
        let url = gw.url();
        let o = out(mode);
        let through = tokio::task::spawn_blocking(move || matrix(&[&url, &o])).await.unwrap();
        println!("conformance, {mode} responses: scenario / direct / through the gateway");
        let mut lost = Vec::new();
        for (name, row) in &direct {
            let via = through.get(name).map_or("missing", String::as_str);
            println!(
                "  {name:<30} {:<4} {}",
                if passes(row) { "PASS" } else { "FAIL" },
                if passes(via) { "PASS" } else { "FAIL" }
            );
            if passes(row) && !passes(via) {
                lost.push(via.to_owned());
            }
        }
        assert!(lost.is_empty(), "{mode}: passes directly, fails through the gateway:\n{}", lost.join("\n"));
        // SSE polling (SEP-1699): answering as SSE, the gateway primes each
        // request's stream (an id, `retry`, empty data) for a session of
        // 2025-11-25, whatever revision a request's header names, and
        // resumes the fixture's stream when it closes it mid-call.
        if mode == "sse" {
            let polling = through.get("server-sse-polling").map_or("missing", String::as_str);
            assert!(passes(polling), "server-sse-polling through the gateway: {polling}");
        }
        // The baseline itself: all but the suite's pending SSE-polling one.
        let failing: Vec<_> = direct.iter().filter(|(_, r)| !passes(r)).map(|(n, _)| n.as_str()).collect();
        assert_eq!(failing, ["server-sse-polling"], "the fixture regressed");
    }
}

#[tokio::test]
async fn the_gateway_passes_the_suites_client_auth_scenarios() {
    let out = tempfile::tempdir().unwrap();
    let rows = run_script("conformance-client.sh", &[&path_str(out.path())], &[("MCP_GATEWAY_BIN", gateway_bin())]);
    println!("{}", rows.values().cloned().collect::<Vec<_>>().join("\n"));
    assert!(rows.len() >= 19, "initialize, tools_call, the stream scenarios and the auth suite ran: {rows:?}");
    for scenario in ["sse-retry", "elicitation-sep1034-client-defaults"] {
        assert!(rows.contains_key(scenario), "{scenario} ran: {rows:?}");
    }
    let failed: Vec<_> = rows.values().filter(|r| !passes(r)).collect();
    assert!(failed.is_empty(), "client scenarios failed through the gateway:\n{failed:#?}");
}
