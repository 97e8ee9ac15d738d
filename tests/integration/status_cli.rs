//! `mcp-gateway status` (issue 24 point 4) against a real gateway: the
//! table, the exit codes, the credential from the environment only; and
//! the one log line of a first list answered while an upstream still
//! starts (point 5).

use std::process::Output;

use serde_json::Value;
use tokio::process::Command;

use crate::support::keys::*;
use crate::support::*;

/// An upstream that never answers `initialize`: starting for the whole test
/// (its `startup_timeout` is the default minute).
fn slow() -> String {
    format!(
        "[upstreams.slow]\ncommand = {:?}\nargs = [\"-c\", \"import time; time.sleep(3600)\"]\n",
        path_str(&peers().python)
    )
}

const GONE: &str = "[upstreams.gone]\ncommand = \"/nonexistent/mcp-server\"\n";

/// Runs `mcp-gateway status` with `args` and, of the credential variables,
/// only `env`; returns the exit code, stdout and stderr.
async fn status(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("status").args(args);
    for var in ["MCP_GATEWAY_TOKEN", "MCP_GATEWAY_API_KEY", "MCP_GATEWAY_CONFIG"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out: Output = tokio::time::timeout(PATIENCE, cmd.output()).await.expect("status finishes").unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The table's row of upstream `id`.
fn row<'a>(stdout: &'a str, id: &str) -> &'a str {
    stdout.lines().find(|l| l.split_whitespace().next() == Some(id)).unwrap_or_else(|| panic!("no row {id}:\n{stdout}"))
}

#[tokio::test]
async fn status_shows_each_upstream_and_exits_1_while_one_is_not_ready() {
    let toml = format!("{}{GONE}{}", raw_stdio("ok", ""), slow());
    let gw = Gateway::start(&toml).await;
    // Its tools are counted from the catalog, which the catalog task
    // publishes just after the upstream is ready: wait for both.
    let ok = gw.wait_upstream("ok", |u| u["state"] == "ready" && u["tools"].as_u64().unwrap_or(0) > 0).await;
    gw.wait_upstream("gone", |u| u["state"] == "down").await;
    let url = format!("http://{}", gw.addr);

    let (code, out, err) = status(&["--url", &url], &[]).await;
    assert_eq!(code, Some(1), "an upstream is not ready\n{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("gateway {url}: 1/3 upstreams ready, {} tools, 0 sessions, 0 calls in flight", ok["tools"])
    );
    assert!(lines[2].starts_with("UPSTREAM  STATE"), "{out}");
    let up = row(&out, "ok");
    assert!(up.contains(" ready ") && up.contains(" closed ") && up.ends_with(&format!(" {}", ok["tools"])), "{up}");
    let gone = row(&out, "gone");
    assert!(gone.contains("down, retry in") && gone.contains(" transport ") && gone.ends_with(" -"), "{gone}");
    assert!(row(&out, "slow").contains("starting"), "{out}");
    // Why it is down, below the table; every line fits 100 columns.
    assert!(
        out.lines().any(|l| l.starts_with("gone: ") && l.contains("cannot start `/nonexistent/mcp-server`")),
        "{out}"
    );
    assert!(out.lines().all(|l| l.chars().count() <= 100), "{out}");
    assert!(err.contains("2 upstreams not ready: gone (down), slow (starting)"), "{err}");

    // The JSON as /status has it, with the same exit code; a trailing /mcp is forgiven.
    let (code, out, _) = status(&["--url", &format!("{url}/mcp"), "--json"], &[]).await;
    assert_eq!(code, Some(1));
    let json: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!((json["upstreams"].as_array().map(Vec::len), &json["sessions"]), (Some(3), &Value::from(0)), "{json}");

    // Nobody listens where the config says (0.0.0.0 is asked on loopback): 69.
    let port = free_port();
    let (_dir, config) =
        write_config(&format!("[gateway]\nlisten = \"0.0.0.0:{port}\"\n[auth]\nmode = \"none\"\n{GONE}"));
    let (code, out, err) = status(&["--config", &path_str(&config)], &[]).await;
    assert_eq!(code, Some(69), "{out}\n{err}");
    assert!(err.contains(&format!("cannot reach the gateway at http://127.0.0.1:{port}")), "{err}");
    assert!(out.is_empty(), "{out}");
}

#[tokio::test]
async fn status_takes_the_credential_from_the_environment_only() {
    let toml = format!("{}{}", keys(), raw_stdio("ok", ""));
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("ok").await;
    let url = format!("http://{}", gw.addr);

    // An admin's key: everything is ready, exit 0.
    let (code, out, err) = status(&["--url", &url], &[("MCP_GATEWAY_TOKEN", OPS)]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.starts_with(&format!("gateway {url}: 1/1 upstream ready")), "{out}");
    assert!(row(&out, "ok").contains(" ready "), "{out}");
    // `reload`'s variable does as well.
    let (code, _, err) = status(&["--url", &url], &[("MCP_GATEWAY_API_KEY", OPS)]).await;
    assert_eq!(code, Some(0), "{err}");

    // None, an unknown one, a principal who is no admin: 77 and what to do.
    let (code, out, err) = status(&["--url", &url], &[]).await;
    assert_eq!(code, Some(77), "{out}\n{err}");
    assert!(err.contains("set MCP_GATEWAY_TOKEN") && err.contains("admin_groups"), "{err}");
    assert!(out.is_empty(), "{out}");
    let (code, _, err) = status(&["--url", &url], &[("MCP_GATEWAY_TOKEN", "not-a-key")]).await;
    assert_eq!(code, Some(77));
    assert!(err.contains("did not accept the credential in MCP_GATEWAY_TOKEN (401"), "{err}");
    let (code, _, err) = status(&["--url", &url], &[("MCP_GATEWAY_TOKEN", ALICE)]).await;
    assert_eq!(code, Some(77));
    assert!(err.contains("refused /status to the principal of MCP_GATEWAY_TOKEN (403"), "{err}");
    assert!(!err.contains(ALICE), "the credential is never printed: {err}");

    // There is no flag for it (argv is visible to every user of the host).
    let (code, _, err) = status(&["--url", &url, "--token", OPS], &[]).await;
    assert_eq!(code, Some(2), "{err}");
}

#[tokio::test]
async fn the_first_list_answered_while_an_upstream_starts_says_so_once() {
    let toml = format!("[gateway]\nstartup_list_wait = \"300ms\"\n{}{}", raw_stdio("ok", ""), slow());
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("ok").await;
    let mut c = gw.client().await;
    let names = c.tool_names().await;
    assert!(names.iter().any(|n| n.starts_with("ok__")), "{names:?}");
    c.tool_names().await;
    let said = "Answered the first list while upstreams were still starting";
    let logs = gw.proc.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(said)).collect();
    assert_eq!(lines.len(), 1, "once:\n{logs}");
    assert!(
        lines[0].contains("still_starting") && lines[0].contains("slow") && lines[0].contains("tools/list"),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains("ok,"), "a ready upstream is not named: {}", lines[0]);
}

/// A process that exits at start: `/status` (and so `status` and the
/// page) has its last stderr line, masked; a client's error does not quote
/// it; the log does not claim the other protocol era was tried.
#[tokio::test]
async fn a_process_that_exits_at_start_is_shown_with_its_last_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.env");
    std::fs::write(&secrets, "DB_PASSWORD=exits-secret-7731\n").unwrap();
    let script = "echo starting >&2; echo \\\"Error: cannot open /srv/missing with ${DB_PASSWORD}\\\" >&2; exit 3";
    let toml = format!(
        "[gateway]\nsecrets_file = {:?}\n[upstreams.dies]\ncommand = \"sh\"\nargs = [\"-c\", \"{script}\"]\nenv = {{ DB_PASSWORD = \"${{DB_PASSWORD}}\" }}\n",
        path_str(&secrets)
    );
    let gw = Gateway::start(&toml).await;
    let u = gw.wait_upstream("dies", |u| u["state"] == "down" && u["last_stderr"].is_string()).await;
    assert_eq!(u["last_stderr"], "Error: cannot open /srv/missing with ***", "{u}");
    assert!(u["down_reason"].as_str().unwrap().contains("exit status: 3"), "{u}");
    let (_, out, _) = status(&["--url", &format!("http://{}", gw.addr)], &[]).await;
    assert!(out.contains("dies: its last stderr line: Error: cannot open /srv/missing with ***"), "{out}");
    let mut c = gw.client().await;
    let r = c.call("dies__anything", serde_json::json!({})).await;
    assert!(!r.to_string().contains("/srv/missing"), "a client's error quotes stderr: {r}");
    let logs = gw.proc.logs();
    assert!(!logs.contains("trying server/discover"), "{logs}");
    assert!(!logs.contains("exits-secret-7731"), "{logs}");
}
