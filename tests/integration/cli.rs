//! The CLI: `check` with precise errors, `tools` with a catalog table.

use std::process::Command;

use crate::support::*;

fn check(toml: &str) -> (Option<i32>, String, String) {
    let (_dir, path) = write_config(toml);
    let out = Command::new(gateway_bin()).args(["check", "--config"]).arg(&path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn committed_config_is_valid() {
    let out =
        Command::new(gateway_bin()).args(["check", "--config"]).arg(root().join("gateway.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 upstreams: everything, filesystem)"));
}

#[test]
fn bad_configs_exit_64_with_file_line_and_key() {
    let cases = [
        (
            "[upstreams.fs]\ncommand = \"x\"\ntimeout = \"5s\"\n",
            "gateway.toml:3:1: upstreams.fs.timeout:",
            "unknown field `timeout`",
        ),
        ("[gateway]\nmax_sessions = 0\n", "gateway.toml:2:1: gateway.max_sessions:", "at least 1"),
        (
            "[upstreams.fs]\ncommand = \"x\"\n\n[upstreams.web]\nurl = \"not a url\"\n",
            "gateway.toml:5:1",
            "upstreams.web.url",
        ),
        ("[upstreams.my_server]\ncommand = \"x\"\n", "gateway.toml:1:12", "[a-z0-9-]{1,32}"),
        ("[gateway]\nlisten = \"nowhere\"\n", "gateway.toml:2:10", "invalid socket address"),
        (
            "[upstreams.a]\ncommand = \"x\"\nargs = [\"${NOT_DEFINED_ANYWHERE}\"]\n",
            "gateway.toml:3:1",
            "NOT_DEFINED_ANYWHERE",
        ),
        ("[upstreams.a\n", "gateway.toml:1:", "invalid"),
    ];
    for (toml, at, what) in cases {
        let (code, _, err) = check(toml);
        assert_eq!(code, Some(64), "{toml}: {err}");
        assert!(err.contains(at) && err.contains(what), "{toml:?} gave {err:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let (code, _, err) = check("[upstreams.a]\ncommand = \"x\"\n");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn tools_prints_the_merged_catalog() {
    let toml = format!("{}[upstreams.gone]\ncommand = \"/nonexistent\"\n", raw_stdio("raw", ""));
    let (_dir, path) = write_config(&toml);
    let out = Command::new(gateway_bin()).args(["tools", "--wait", "30", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One upstream failed: the table is still printed, and the exit code says so.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 upstream not ready"), "{stderr}");
    assert!(stdout.lines().next().unwrap().starts_with("NAME"), "{stdout}");
    let echo = stdout.lines().find(|l| l.starts_with("raw__echo")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(echo.contains("raw") && echo.contains("read-only"), "{echo}");
    assert!(stdout.contains("7 tools from 2 upstreams"), "{stdout}");
    assert!(stderr.contains("ready, offers 7 tools"), "{stderr}");
    assert!(stderr.contains("gone  FAILED: cannot start"), "{stderr}");
}

/// The committed gateway.toml serves on a fresh machine: both npx
/// upstreams start (downloading their pinned packages), and tools of each
/// answer through /mcp.
#[tokio::test]
async fn committed_config_serves_both_upstreams() {
    let unused = tempfile::tempdir_in(root().join("target")).unwrap();
    let gw = Gateway::start_at(&root().join("gateway.toml"), unused).await;
    for id in ["filesystem", "everything"] {
        gw.wait_upstream(id, |u| u["state"] == "ready" || u["state"] == "down").await;
        let u = gw.upstream(id).await;
        assert_eq!(u["state"], "ready", "{u}\n{}", gw.proc.logs());
    }
    let mut c = gw.client().await;
    let r = c.call("filesystem__read_text_file", serde_json::json!({"path": "hello.txt"})).await;
    assert_eq!(text(&r).trim(), "hello from mcp-gateway", "{r}");
    assert_eq!(text(&c.call("everything__echo", serde_json::json!({"message":"hi"})).await), "Echo: hi");
    let names = c.tool_names().await;
    assert!(!names.iter().any(|n| n.starts_with("everything__toggle")), "deny glob: {names:?}");
    // get-env would hand the gateway's environment (secrets) to the model.
    assert!(!names.contains(&"everything__get-env".to_owned()), "{names:?}");
    // /status counts what clients see, after the deny globs.
    let ev = gw.upstream("everything").await;
    assert_eq!(ev["tools"].as_u64().unwrap() as usize, names.iter().filter(|n| n.starts_with("everything__")).count());
    assert!(ev["tools_offered"].as_u64() > ev["tools"].as_u64(), "{ev}");
    assert_eq!(gw.stop().await.code(), Some(0));
}
