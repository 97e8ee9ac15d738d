//! The status page at `/ui` (issue 24): what it is served with, on both
//! listeners, and what a person sees in a real browser (headless Debian
//! chromium driven by playwright-core, `tests/ui/status_page.mjs`): no data
//! without a token, the upstreams and catalog with one, a hostile tool
//! description shown as text with nothing run, and an upstream's row
//! changing in place when it stops.
//!
//! The browser test needs `chromium` and `target/peers/ui-npm`
//! (`scripts/install-peers.sh` installs both). Without them it fails,
//! unless `MCP_GATEWAY_UI_TEST=optional`, where it says so and skips.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::header;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::keys::{BOB, OPS, keys};
use crate::support::*;

/// The description of `evil__work`: markup that would run if the page
/// ever rendered it as HTML.
const EVIL: &str = "Does work. <script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=1\"> Done.";

/// `[upstreams.evil]`: chaos.py, whose `work` tool carries [`EVIL`].
fn evil_upstream() -> String {
    format!(
        "[upstreams.evil]\ncommand = {:?}\nargs = [{:?}, \"--stdio\", \"--describe\", {:?}]\n",
        path_str(&peers().python),
        fixture("chaos.py"),
        EVIL
    )
}

/// `[upstreams.calm]`: raw_stdio.py, started only while `flag` exists, so
/// that once the flag is gone and the process killed it stays down.
fn calm_upstream(flag: &std::path::Path) -> String {
    format!(
        "[upstreams.calm]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {:?}, {:?}, {:?}, {:?}]\n",
        "[ -e \"$0\" ] || exit 1; exec \"$1\" \"$2\"",
        path_str(flag),
        path_str(&peers().python),
        fixture("raw_stdio.py")
    )
}

/// Everyone may use every tool but `calm__crash`: calling it makes a
/// refusal for the page's recent refusals.
const ACCESS: &str = "[[access]]\nprincipals = [\"*\"]\ntools = { allow = [\"*\"], deny = [\"calm__crash\"] }\n";

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rq = reqwest::Client::new().get(url);
    for (k, v) in headers {
        rq = rq.header(*k, *v);
    }
    rq.send().await.unwrap()
}

/// Every file of the page with the headers that keep it inert.
async fn assert_served(base: &str) {
    for (path, kind) in [("/ui", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")] {
        let resp = get(&format!("{base}{path}"), &[]).await;
        assert_eq!(resp.status(), 200, "{base}{path}");
        let h = resp.headers();
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}: {h:?}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "{path}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("calm__"), "{path}: the page carries no data");
    }
}

/// `/ui` needs no token but is behind the Host check; `/status` holds the
/// data, for admins, with the catalog and recent refusals. On the admin
/// listener both are there too, Host-checked and without a token, while
/// `/metrics` there stays unchecked.
#[tokio::test]
async fn the_page_is_static_inert_and_behind_the_host_check_on_both_listeners() {
    let port = free_port();
    let flag = tempfile::NamedTempFile::new().unwrap();
    let toml = format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{}{}{ACCESS}", keys(), calm_upstream(flag.path()));
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("calm").await;
    let main = format!("http://{}", gw.addr);
    let admin = format!("http://127.0.0.1:{port}");

    assert_served(&main).await;
    // `/ui/` leads to the page, on both listeners.
    for base in [&main, &admin] {
        let r = get(&format!("{base}/ui/"), &[]).await;
        assert_eq!((r.status().as_u16(), r.url().path()), (200, "/ui"), "{base}");
    }
    let evil_host = [("host", "evil.example")];
    assert_eq!(get(&format!("{main}/ui"), &evil_host).await.status(), 403, "a rebinding page cannot load it");
    assert_eq!(get(&format!("{main}/status"), &[]).await.status(), 401);
    let bob = format!("Bearer {BOB}");
    assert_eq!(get(&format!("{main}/status"), &[("authorization", &bob)]).await.status(), 403, "admins only");

    // A refusal, for `recent_refusals`.
    let mut client = McpHttp::connect_as(&gw.url(), BOB).await;
    let refused = client.call("calm__crash", json!({})).await;
    assert!(refused.get("error").is_some(), "{refused}");

    let status = gw.status().await;
    let tools = status["catalog"]["tools"].as_array().unwrap();
    let echo = tools.iter().find(|t| t["name"] == "calm__echo").expect("calm__echo in the catalog");
    assert_eq!(echo["upstream"], "calm");
    assert_eq!(echo["annotations"], json!({ "readOnlyHint": true }));
    assert_eq!((&echo["hidden"], &echo["quarantined"]), (&json!(false), &json!(false)));
    assert_eq!(status["catalog"]["quarantined"], json!([]));
    let last = &status["recent_refusals"][0];
    assert_eq!(
        (&last["principal"], &last["name"], &last["upstream"], &last["reason"]),
        (&json!("key:bob"), &json!("calm__crash"), &json!("calm"), &json!("access")),
        "{status}"
    );

    // The admin listener: the page and `/status` without a token, behind
    // the Host check; `/metrics` as it was.
    assert_served(&admin).await;
    let on_admin: Value = get(&format!("{admin}/status"), &[]).await.json().await.unwrap();
    assert_eq!(on_admin["catalog"]["tools"].as_array().unwrap().len(), tools.len());
    assert_eq!(on_admin["recent_refusals"][0]["name"], "calm__crash");
    assert!(on_admin["sessions"].as_u64().unwrap() >= 1, "{on_admin}");
    let one: Value = get(&format!("{admin}/status/upstreams/calm"), &[]).await.json().await.unwrap();
    assert_eq!(one["state"], "ready");
    for path in ["/ui", "/status", "/status/upstreams/calm"] {
        assert_eq!(get(&format!("{admin}{path}"), &evil_host).await.status(), 403, "{path}");
    }
    let origin = [("origin", "http://evil.example")];
    assert_eq!(get(&format!("{admin}/status"), &origin).await.status(), 403);
    assert_eq!(get(&format!("{admin}/metrics"), &evil_host).await.status(), 200, "a scraper by any name");
}

/// Where the browser test's tools are, or why they are not.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    let playwright = root().join("target/peers/ui-npm");
    if !chromium.exists() {
        return Err(format!("{} is missing", chromium.display()));
    }
    if !playwright.join("node_modules/playwright-core/package.json").exists() {
        return Err(format!("{} has no playwright-core", playwright.display()));
    }
    if std::process::Command::new("node").arg("--version").output().is_err() {
        return Err("node is not on PATH".to_owned());
    }
    Ok((chromium, playwright))
}

/// The page in headless chromium (`tests/ui/status_page.mjs`): 401 and no
/// data without a token; with an admin's, both upstreams ready, the hostile
/// description as literal text with nothing run and no dialog, and the
/// refusal; then `calm` is killed and kept down, and its row turns from
/// ready on the same page, without a reload. `UI_SCREENSHOT=<path>` saves
/// the page with data there (how docs/ui.png is made).
#[tokio::test]
async fn in_a_browser_the_page_shows_the_gateway_and_follows_it_in_place() {
    let (chromium, playwright) = match browser_tools() {
        Ok(found) => found,
        Err(why) if std::env::var("MCP_GATEWAY_UI_TEST").as_deref() == Ok("optional") => {
            eprintln!("SKIPPED the status page's browser test: {why} (MCP_GATEWAY_UI_TEST=optional)");
            return;
        }
        Err(why) => panic!("{why}: run scripts/install-peers.sh, or set MCP_GATEWAY_UI_TEST=optional to skip"),
    };
    let flag = tempfile::NamedTempFile::new().unwrap();
    let toml = format!("{}{}{}{ACCESS}", keys(), evil_upstream(), calm_upstream(flag.path()));
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    let calm = gw.wait_ready("calm").await;
    gw.wait_ready("evil").await;
    let mut client = McpHttp::connect_as(&gw.url(), BOB).await;
    assert!(client.call("calm__crash", json!({})).await.get("error").is_some());

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(root().join("tests/ui/status_page.mjs"))
        .env("GATEWAY", format!("http://{}", gw.addr))
        .env("UI_TOKEN", OPS)
        .env("STOP_ID", "calm")
        .env("EVIL_ID", "evil")
        .env("EVIL_TEXT", EVIL)
        .env("REFUSED", "calm__crash")
        .env("PLAYWRIGHT", &playwright)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(shot) = std::env::var_os("UI_SCREENSHOT") {
        cmd.env("SCREENSHOT", shot);
    }
    let mut node = cmd.spawn().unwrap();
    let mut stdin = node.stdin.take().unwrap();
    let stderr = node.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            text.push_str(&l);
            text.push('\n');
        }
        text
    });
    let mut out = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    let run = async {
        while let Some(line) = out.next_line().await.unwrap() {
            if line == "STOP calm" {
                // Kept down: the flag goes first, so the restart fails.
                std::fs::remove_file(flag.path()).unwrap();
                let pid = calm["pid"].as_i64().expect("calm's pid") as i32;
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                gw.wait_upstream("calm", |u| u["state"] != "ready").await;
                stdin.write_all(b"stopped\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            said.push(line);
        }
        node.wait().await.unwrap()
    };
    let exit = tokio::time::timeout(Duration::from_secs(180), run).await.expect("the browser test ends");
    let errors = errors.await.unwrap();
    assert!(
        exit.success() && said.last().map(String::as_str) == Some("PASS"),
        "{said:?}\n{errors}\n{}",
        gw.proc.logs()
    );
}
