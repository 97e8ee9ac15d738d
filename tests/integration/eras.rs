//! Both protocol eras on one gateway (design.md D13), with real peers on
//! both sides.
//!
//! - Clients: the official Python SDK (`mcp==2.3.0`, `mode="legacy"`,
//!   `"auto"`, `"2026-07-28"`) and the MCP Inspector CLI (`--protocol-era
//!   legacy|auto|modern`), each over HTTP and over `mcp-gateway stdio`.
//!   Auto modes fall back silently, so every run checks the era it really
//!   got on the wire: the SDK's own negotiated version plus the requests
//!   it wrote (`tests/clients/eras_client.py` taps its write stream); for
//!   the Inspector, a TCP tap in front of `/mcp` (HTTP) or `tee` around the
//!   stdio gateway: which handshake went out (`initialize` or
//!   `server/discover`), the version the gateway answered, whether the
//!   gateway handed out an `Mcp-Session-Id`, and the `_meta` protocol
//!   version on the calls. On HTTP the gateway's audit log says the same:
//!   a 2026-07-28 call is sessionless (`session: null`).
//! - Security: one matrix run in both eras (an API-key principal, an
//!   `[[access]]` deny, secret masking, the audit log, `/metrics`).
//! - Upstreams in the modern era: DBHub 1.4.0 (dual-era, stateless HTTP)
//!   with `protocol = "modern"` and `"auto"`, and a Python SDK server that
//!   refuses `initialize` (`tests/fixtures/modern_server.py`) on the
//!   default `auto`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;

use crate::support::databases::*;
use crate::support::keys::*;
use crate::support::*;

const MODERN: &str = "2026-07-28";
const LEGACY: &str = "2025-11-25";
/// The SDK's connect modes, in the order the matrix runs them.
const SDK_MODES: [&str; 3] = ["legacy", "auto", "2026-07-28"];
/// The Inspector's `--protocol-era` values.
const INSPECTOR_ERAS: [&str; 3] = ["legacy", "auto", "modern"];

/// Whether `mode` (an SDK mode or an Inspector era) ends in 2026-07-28.
fn modern(mode: &str) -> bool {
    mode != "legacy"
}

/// A gateway config serving server-everything over stdio. `gateway` goes
/// into `[gateway]`, `extra` after the upstream. `tools/list` waits for the
/// upstream's first start (no warm-start cache), however loaded the machine.
fn everything_toml(gateway: &str, extra: &str) -> String {
    format!(
        "[gateway]\nwarm_start = false\nstartup_list_wait = \"60s\"\n{gateway}\n\
         [upstreams.everything]\ncommand = \"node\"\nargs = [{:?}, \"stdio\"]\n{extra}",
        path_str(&peers().everything)
    )
}

// === the Python SDK client ===

/// How eras_client.py reaches the gateway.
#[derive(Clone)]
enum Target {
    Http { url: String, token: Option<&'static str> },
    Stdio { config: PathBuf },
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Http { .. } => "http",
            Target::Stdio { .. } => "stdio",
        }
    }
}

/// Runs tests/clients/eras_client.py once; returns its JSON line.
async fn sdk(mode: &str, target: &Target, steps: &Value) -> Value {
    let mut cmd = Command::new(peers().python);
    cmd.arg(root().join("tests/clients/eras_client.py")).args(["--mode", mode, "--steps", &steps.to_string()]);
    match target {
        Target::Http { url, token } => {
            cmd.args(["--url", url]);
            if let Some(t) = token {
                cmd.args(["--header", &format!("Authorization: Bearer {t}")]);
            }
        }
        Target::Stdio { config } => {
            cmd.args(["--stdio", "--", gateway_bin(), "stdio", "--config"]).arg(config);
        }
    }
    let out = tokio::time::timeout(PATIENCE * 2, cmd.kill_on_drop(true).output())
        .await
        .expect("eras_client finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "eras_client {mode} over {}: {}\n{stdout}\n{}",
        target.label(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Asserts the era an SDK run really got: the version the SDK negotiated
/// and the requests it wrote (the handshake, and `_meta` on every request).
fn assert_sdk_era(out: &Value, mode: &str, what: &str) {
    let requests: Vec<&Value> = out["sent"].as_array().unwrap().iter().filter(|m| m.get("method").is_some()).collect();
    let methods: Vec<&str> = requests.iter().map(|m| m["method"].as_str().unwrap()).collect();
    let versions: Vec<&Value> = requests.iter().map(|m| &m["meta_version"]).collect();
    match mode {
        "legacy" => {
            assert_eq!(out["protocolVersion"], LEGACY, "{what}: {out}");
            assert_eq!(methods.first(), Some(&"initialize"), "{what}: {out}");
            assert!(!methods.contains(&"server/discover"), "{what}: {out}");
            assert!(versions.iter().all(|v| v.is_null()), "{what}: a 2025 request has no _meta version: {out}");
        }
        "auto" | "2026-07-28" => {
            assert_eq!(out["protocolVersion"], MODERN, "{what}: {out}");
            assert!(!methods.contains(&"initialize"), "{what}: no fallback to initialize: {out}");
            // auto discovers first; a pinned client sends no handshake at all.
            let discovered = methods.first() == Some(&"server/discover");
            assert_eq!(discovered, mode == "auto", "{what}: {out}");
            assert!(versions.iter().all(|v| *v == MODERN), "{what}: every request is a 2026-07-28 one: {out}");
        }
        _ => unreachable!("{mode}"),
    }
}

/// The audit records written so far.
fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits until the audit log has `n` records; returns them.
async fn audit_records(path: &Path, n: usize) -> Vec<Value> {
    let got = wait_for(PATIENCE, || {
        let lines = audit_lines(path);
        (lines.len() >= n).then_some(lines)
    })
    .await;
    got.unwrap_or_else(|| panic!("fewer than {n} audit records: {:?}", audit_lines(path)))
}

/// Python SDK clients, legacy / auto / 2026-07-28, over HTTP and stdio,
/// all at once against one gateway config: tools/list, an echo, and a
/// long-running call with a progress callback.
#[tokio::test]
async fn python_sdk_clients_get_the_era_they_ask_for_over_http_and_stdio() {
    let logs = tempfile::tempdir_in(root().join("target")).unwrap();
    let audit = logs.path().join("audit.jsonl");
    let audit_toml = format!("[audit]\npath = {:?}\ninclude_arguments = true\n", path_str(&audit));
    let gw = Gateway::start(&everything_toml("", &audit_toml)).await;
    // The stdio gateways get the same upstream but no audit log (one
    // writer per file).
    let (stdio_dir, stdio_config) = write_config(&everything_toml("", ""));
    gw.wait_ready("everything").await;

    let targets = [Target::Http { url: gw.url(), token: None }, Target::Stdio { config: stdio_config }];
    let runs: Vec<(String, &Target, String)> = targets
        .iter()
        .flat_map(|t| SDK_MODES.iter().map(move |m| ((*m).to_owned(), t, format!("hello {m} over {}", t.label()))))
        .collect();
    let outs = futures_util::future::join_all(runs.iter().map(|(mode, target, message)| {
        let steps = json!([
            {"list": true},
            {"call": "everything__echo", "args": {"message": message}},
            {"progress": "everything__trigger-long-running-operation", "args": {"duration": 1, "steps": 3}},
        ]);
        async move { sdk(mode, target, &steps).await }
    }))
    .await;

    for ((mode, target, message), out) in runs.iter().zip(&outs) {
        let what = format!("SDK {mode} over {}", target.label());
        assert_sdk_era(out, mode, &what);
        let tools: Vec<&str> =
            out["steps"][0]["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert!(tools.contains(&"everything__echo"), "{what}: {tools:?}");
        assert!(tools.contains(&"everything__trigger-long-running-operation"), "{what}: {tools:?}");
        assert!(tools.iter().all(|t| t.starts_with("everything__")), "{what}: namespaced: {tools:?}");
        assert_eq!(out["steps"][1], json!({"isError": false, "text": [format!("Echo: {message}")]}), "{what}");
        let long = &out["steps"][2];
        assert_eq!(long["result"]["isError"], false, "{what}: {long}");
        assert!(long["result"]["text"][0].as_str().unwrap().starts_with("Long running operation completed"), "{long}");
        let progress = long["progress"].as_array().unwrap();
        let seen: Vec<f64> = progress.iter().map(|p| p["progress"].as_f64().unwrap()).collect();
        assert_eq!(seen, [1.0, 2.0, 3.0], "{what}: every step's progress, in order: {long}");
        assert!(progress.iter().all(|p| p["total"] == 3.0), "{what}: {long}");
    }

    // The gateway's side of the HTTP runs: one audit record per call, and a
    // 2026-07-28 call is sessionless.
    let lines = audit_records(&audit, 6).await;
    for (mode, _, message) in runs.iter().filter(|r| matches!(r.1, Target::Http { .. })) {
        let echo: Vec<&Value> = lines
            .iter()
            .filter(|l| l["arguments"]["message"] == message.as_str() && l["name"] == "everything__echo")
            .collect();
        assert_eq!(echo.len(), 1, "{mode}: one record for the echo: {lines:?}");
        assert_eq!(echo[0]["class"], "ok", "{echo:?}");
        assert_eq!(echo[0]["transport"], "http", "{echo:?}");
        assert_eq!(echo[0]["session"].is_null(), modern(mode), "{mode}: session of {echo:?}");
    }
    drop(stdio_dir);
}

// === the Inspector CLI ===

/// The bytes one direction of one connection carried.
type Bytes = Arc<Mutex<Vec<u8>>>;

/// Records the bytes of every connection through it, each direction apart,
/// and forwards them to `to`.
struct Tap {
    port: u16,
    /// Per connection: (client → server, server → client).
    conns: Arc<Mutex<Vec<(Bytes, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, record: Bytes) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        record.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Tap {
    async fn start(to: std::net::SocketAddr) -> Tap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let all = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(to).await else { continue };
                let (up, down) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
                all.lock().unwrap().push((up.clone(), down.clone()));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, up));
                tokio::spawn(pump(sr, cw, down));
            }
        });
        Tap { port, conns, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Everything one direction carried, connection after connection.
    fn text(&self, upstream: bool) -> String {
        let conns = self.conns.lock().unwrap();
        let parts = conns.iter().map(|(up, down)| {
            let bytes = if upstream { up.lock().unwrap().clone() } else { down.lock().unwrap().clone() };
            String::from_utf8_lossy(&bytes).into_owned()
        });
        parts.collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the Inspector and the gateway said to each other in one run.
struct Wire {
    /// Client → gateway.
    sent: String,
    /// Gateway → client.
    answered: String,
}

/// How an Inspector run's wire is recorded: a TCP tap in front of the
/// gateway's listener, or `tee` on both sides of a stdio gateway.
enum Recorder {
    Http(Tap),
    Stdio { _dir: tempfile::TempDir, sent: PathBuf, answered: PathBuf },
}

impl Recorder {
    fn wire(&self) -> Wire {
        match self {
            Recorder::Http(tap) => Wire { sent: tap.text(true), answered: tap.text(false) },
            Recorder::Stdio { sent, answered, .. } => Wire {
                sent: std::fs::read_to_string(sent).unwrap(),
                answered: std::fs::read_to_string(answered).unwrap(),
            },
        }
    }
}

/// Runs the Inspector CLI once with `method` (and its own arguments)
/// against the gateway (its HTTP listener, or `mcp-gateway stdio` with
/// `stdio_config`); returns its JSON output and the wire.
async fn inspector(
    gw: &Gateway,
    stdio_config: Option<&Path>,
    era: &str,
    method: &[&str],
    home: &Path,
) -> (Value, Wire) {
    let launcher = installed(npm().join("@modelcontextprotocol/inspector/clients/launcher/build/index.js"));
    let mut cmd = Command::new("node");
    cmd.arg(launcher).arg("--cli").env("HOME", home).env("MCP_CATALOG_PATH", home.join("mcp.json"));
    let recorder = match stdio_config {
        None => {
            let tap = Tap::start(gw.addr).await;
            cmd.args([&tap.url(), "--transport", "http"]).args(method).args([
                "--format",
                "json",
                "--protocol-era",
                era,
            ]);
            Recorder::Http(tap)
        }
        Some(config) => {
            let dir = tempfile::tempdir_in(home).unwrap();
            let (sent, answered) = (dir.path().join("sent"), dir.path().join("answered"));
            let script = format!(
                "tee {} | {} stdio --config {} | tee {}",
                path_str(&sent),
                gateway_bin(),
                path_str(config),
                path_str(&answered)
            );
            // `--` ends the Inspector's own flags: the rest is the command.
            cmd.args(method).args(["--format", "json", "--protocol-era", era, "--", "sh", "-c", &script]);
            Recorder::Stdio { _dir: dir, sent, answered }
        }
    };
    let out = tokio::time::timeout(PATIENCE * 2, cmd.stdin(std::process::Stdio::null()).kill_on_drop(true).output())
        .await
        .expect("the Inspector finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let what = format!("Inspector {era} {method:?} over {}", if stdio_config.is_some() { "stdio" } else { "http" });
    assert!(out.status.success(), "{what}: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"));
    (value, recorder.wire())
}

/// Asserts the era an Inspector run really got, from the wire.
fn assert_inspector_era(wire: &Wire, era: &str, http: bool, what: &str) {
    let sent = &wire.sent;
    let initialized = sent.contains(r#""method":"initialize""#);
    let discovered = sent.contains(r#""method":"server/discover""#);
    let stamped = sent.contains(&format!(r#""io.modelcontextprotocol/protocolVersion":"{MODERN}""#));
    let session = wire.answered.to_ascii_lowercase().contains("mcp-session-id:");
    if modern(era) {
        assert!(discovered && !initialized && stamped, "{what}: a 2026-07-28 client: {sent}");
        assert!(wire.answered.contains(&format!(r#""supportedVersions":["{MODERN}"]"#)), "{what}: {}", wire.answered);
        assert!(!session, "{what}: no session in 2026-07-28: {}", wire.answered);
    } else {
        assert!(initialized && !discovered && !stamped, "{what}: a 2025 client: {sent}");
        assert!(wire.answered.contains(&format!(r#""protocolVersion":"{LEGACY}""#)), "{what}: {}", wire.answered);
        if http {
            assert!(session, "{what}: a 2025 session: {}", wire.answered);
        }
    }
}

/// The Inspector CLI, legacy / auto / modern, over HTTP and stdio:
/// tools/list and tools/call, with the era read off the wire.
#[tokio::test]
async fn inspector_gets_the_era_it_asks_for_over_http_and_stdio() {
    let gw = Gateway::start(&everything_toml("", "")).await;
    let (stdio_dir, stdio_config) = write_config(&everything_toml("", ""));
    let home = tempfile::tempdir_in(root().join("target")).unwrap();
    gw.wait_ready("everything").await;

    let list: &[&str] = &["--method", "tools/list"];
    let mut runs = Vec::new();
    for stdio in [false, true] {
        for era in INSPECTOR_ERAS {
            let message = format!("hi-{era}-{}", if stdio { "stdio" } else { "http" });
            runs.push((era, stdio, None));
            runs.push((era, stdio, Some(message)));
        }
    }
    let outs = futures_util::future::join_all(runs.iter().map(|(era, stdio, message)| {
        let config = stdio.then_some(stdio_config.as_path());
        let (gw, home) = (&gw, home.path());
        async move {
            match message {
                None => inspector(gw, config, era, list, home).await,
                Some(m) => {
                    let arg = format!("message={m}");
                    let call = ["--method", "tools/call", "--tool-name", "everything__echo", "--tool-arg", &arg];
                    inspector(gw, config, era, &call, home).await
                }
            }
        }
    }))
    .await;

    for ((era, stdio, message), (out, wire)) in runs.iter().zip(&outs) {
        let what = format!("Inspector {era} over {} ({message:?})", if *stdio { "stdio" } else { "http" });
        assert_inspector_era(wire, era, !stdio, &what);
        match message {
            None => {
                let tools: Vec<&str> =
                    out["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
                assert!(tools.contains(&"everything__echo"), "{what}: {tools:?}");
                assert!(tools.iter().all(|t| t.starts_with("everything__")), "{what}: {tools:?}");
            }
            Some(m) => {
                let result = &out["result"];
                assert_eq!(result["content"], json!([{"type": "text", "text": format!("Echo: {m}")}]), "{what}: {out}");
                // A 2026-07-28 result says what it is; a 2025 one does not.
                let kind = if modern(era) { json!("complete") } else { Value::Null };
                assert_eq!(result["resultType"], kind, "{what}: {out}");
            }
        }
    }
    drop(stdio_dir);
}

// === security, in both eras ===

/// The value of the sample `series` (its whole `name{labels}`), 0 if absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn metrics(gw: &Gateway) -> String {
    let r = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The gateway config of the security matrix, writing its audit log to
/// `audit`: alice (API key) and the stdio front end's principal may use
/// every tool but `everything__get-env`.
fn security_toml(audit: &str) -> String {
    everything_toml(
        "secrets_file = \"secrets.env\"\n",
        &format!(
            "{}[audit]\npath = \"{audit}\"\ninclude_arguments = true\n\
             [[access]]\nprincipals = [\"alice\", \"stdio\"]\n\
             tools = {{ allow = [\"everything__*\"], deny = [\"everything__get-env\"] }}\n",
            keys()
        ),
    )
}

/// One matrix, two eras: an API-key principal whose `[[access]]` denies a
/// tool, a secret echoed back, the audit log and the request counters,
/// over HTTP (principal `key:alice`) and over `mcp-gateway stdio`
/// (principal `stdio`; no counters: a stdio gateway lives as long as its
/// one client). The 2025 client and the 2026-07-28 client must see
/// exactly the same.
#[tokio::test]
async fn security_is_the_same_in_both_eras() {
    const SECRET: &str = "hunter2-eras-secret";
    let (dir, path) = write_config(&security_toml("audit.jsonl"));
    std::fs::write(dir.path().join("secrets.env"), format!("ERAS_SECRET={SECRET}\n")).unwrap();
    let stdio_config = dir.path().join("stdio.toml");
    std::fs::write(&stdio_config, security_toml("audit-stdio.jsonl")).unwrap();
    let (http_audit, stdio_audit) = (dir.path().join("audit.jsonl"), dir.path().join("audit-stdio.jsonl"));
    let mut gw = Gateway::start_at(&path, dir).await;
    gw.authorize(OPS);
    gw.wait_ready("everything").await;

    // Without a credential, either era is refused before anything else.
    let modern_list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":MODERN,
        "io.modelcontextprotocol/clientInfo":{"name":"t","version":"0"},
        "io.modelcontextprotocol/clientCapabilities":{}}}});
    let legacy_init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":LEGACY,
        "capabilities":{},"clientInfo":{"name":"t","version":"0"}}});
    for (body, version) in [(&modern_list, Some(MODERN)), (&legacy_init, None)] {
        let c = McpHttp { http: reqwest::Client::new(), url: gw.url(), session: None, next: 0 };
        let mut headers = vec![];
        if let Some(v) = version {
            headers = vec![("mcp-protocol-version", v), ("mcp-method", "tools/list")];
        }
        let r = c.post(&body.to_string(), &headers).await;
        assert_eq!(r.status, 401, "{version:?}: {}", r.body);
        assert!(r.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer "), "{version:?}");
    }

    let steps = json!([
        {"list": true},
        {"call": "everything__echo", "args": {"message": format!("the password is {SECRET}")}},
        {"call": "everything__get-env", "args": {}},
        {"call": "everything__no-such-tool", "args": {}},
    ]);
    let fronts = [
        (Target::Http { url: gw.url(), token: Some(ALICE) }, &http_audit, "key:alice"),
        (Target::Stdio { config: stdio_config.clone() }, &stdio_audit, "stdio"),
    ];
    let mut seen = Vec::new();
    for (target, audit, principal) in &fronts {
        let mut records = 0;
        for mode in ["legacy", "2026-07-28"] {
            let what = format!("{mode} over {}", target.label());
            let http = matches!(target, Target::Http { .. });
            let before = if http { metrics(&gw).await } else { String::new() };
            let out = sdk(mode, target, &steps).await;
            assert_sdk_era(&out, mode, &what);
            let s = &out["steps"];
            let tools = s[0]["tools"].as_array().unwrap();
            assert!(tools.contains(&json!("everything__echo")), "{what}: {s}");
            assert!(!tools.contains(&json!("everything__get-env")), "{what}: the denied tool is hidden: {s}");
            assert_eq!(s[1], json!({"isError": false, "text": ["Echo: the password is ***"]}), "{what}: masked");
            assert!(!out.to_string().contains(SECRET), "{what}: {out}");
            // The denied tool answers exactly like one that does not exist.
            assert_eq!(s[2]["error"]["code"], s[3]["error"]["code"], "{what}: {s}");
            assert_eq!(s[2]["error"]["message"], "Unknown tool: everything__get-env", "{what}: {s}");

            // One audit record per call, under the principal, masked.
            records += 3;
            let lines = audit_records(audit, records).await;
            let new = &lines[records - 3..];
            assert_eq!(lines.len(), records, "{what}: {lines:?}");
            let names: Vec<&Value> = new.iter().map(|l| &l["name"]).collect();
            assert_eq!(
                names,
                ["everything__echo", "everything__get-env", "everything__no-such-tool"],
                "{what}: {new:?}"
            );
            assert!(new.iter().all(|l| l["principal"] == *principal && l["method"] == "tools/call"), "{new:?}");
            assert!(new.iter().all(|l| l["transport"] == target.label()), "{what}: {new:?}");
            if http {
                assert!(new.iter().all(|l| l["session"].is_null() == modern(mode)), "{what}: {new:?}");
            }
            assert_eq!(new[0]["class"], "ok");
            assert_eq!(new[0]["arguments"]["message"], "the password is ***", "{what}: {new:?}");
            assert_eq!(new[1]["class"], "policy", "{what}: {new:?}");
            assert_eq!(new[1]["policy"], json!(["access:denied"]), "{what}: {new:?}");
            assert!(!std::fs::read_to_string(audit).unwrap().contains(SECRET), "{what}");

            // The counters moved the same way.
            if http {
                let after = metrics(&gw).await;
                let delta = |series: &str| sample(&after, series) - sample(&before, series);
                let echo_ok =
                    r#"mcp_gateway_requests_total{upstream="everything",method="tools/call",tool="echo",class="ok"}"#;
                assert_eq!(delta(echo_ok), 1.0, "{what}:\n{after}");
                let denied =
                    r#"mcp_gateway_policy_denials_total{upstream="everything",tool="get-env",reason="access"}"#;
                assert_eq!(delta(denied), 1.0, "{what}:\n{after}");
                let masked = r#"mcp_gateway_secrets_masked_total{upstream="everything"}"#;
                assert_eq!(delta(masked), 1.0, "{what}:\n{after}");
            }
            seen.push((what, s.clone()));
        }
    }
    for (what, s) in &seen[1..] {
        assert_eq!(s, &seen[0].1, "{what} sees what {} saw", seen[0].0);
    }
}

// === upstreams in the modern era ===

/// `[upstreams.<id>]` for DBHub with `protocol`.
fn dbhub_toml(id: &str, db: &Fixture, protocol: &str) -> String {
    format!(
        "[upstreams.{id}]\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {DBHUB_TOKEN}\" }}\nprotocol = \"{protocol}\"\n",
        db.url()
    )
}

/// `execute_sql` through `tool` for a client of `mode`; returns the text.
async fn select_items(gw: &Gateway, mode: &str, tool: &str) -> Value {
    let steps = json!([{"list": true}, {"call": tool, "args": {"sql": "select name from items order by id"}}]);
    let out = sdk(mode, &Target::Http { url: gw.url(), token: None }, &steps).await;
    assert_sdk_era(&out, mode, &format!("{mode} → {tool}"));
    out["steps"][1].clone()
}

fn assert_rows(r: &Value, what: &str) {
    assert_eq!(r["isError"], false, "{what}: {r}");
    let text = r["text"][0].as_str().unwrap_or_else(|| panic!("{what}: {r}"));
    let rows: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert_eq!(
        rows["data"]["statements"][0]["rows"],
        json!([{"name": "alpha"}, {"name": "beta"}, {"name": "gamma"}]),
        "{what}: {rows}"
    );
}

/// DBHub 1.4.0, the real dual-era upstream, with `protocol = "modern"`
/// (server/discover first: 2026-07-28) and `protocol = "auto"`
/// (initialize first, which DBHub accepts: 2025-11-25); `execute_sql`
/// through the modern one for a 2025 and a 2026-07-28 client, through the
/// auto one for a 2025 client (a 2026-07-28 client there is
/// `dbhub_on_auto_serves_a_2026_client`).
#[tokio::test]
async fn dbhub_is_served_in_the_era_its_protocol_setting_asks_for() {
    let pg = Postgres::start().await;
    let cwd = tempfile::tempdir_in(root().join("target")).unwrap();
    let db = dbhub(&pg, cwd.path()).await;
    let toml = format!("{}{}", dbhub_toml("dbm", &db, "modern"), dbhub_toml("dba", &db, "auto"));
    let gw = Gateway::start(&toml).await;
    let m = gw.wait_ready("dbm").await;
    assert_eq!(m["protocol_version"], MODERN, "{m}");
    let a = gw.wait_ready("dba").await;
    assert_eq!(a["protocol_version"], LEGACY, "auto asks initialize first, and DBHub accepts it: {a}");
    let logs = gw.proc.logs();
    assert!(logs.contains("upstream=dbm protocol_version=2026-07-28"), "{logs}");

    for mode in ["legacy", "2026-07-28"] {
        assert_rows(&select_items(&gw, mode, "dbm__execute_sql").await, &format!("{mode} → dbm"));
    }
    assert_rows(&select_items(&gw, "legacy", "dba__execute_sql").await, "legacy → dba");
    for id in ["dbm", "dba"] {
        let u = gw.upstream(id).await;
        assert_eq!(u["state"], "ready", "{u}");
        assert_eq!(u["restarts"], 0, "{u}");
        assert_eq!(u["failures"]["protocol"], 0, "{u}");
    }
}

/// A 2026-07-28 client calling a tool of a 2025 (here: `auto`, which
/// settled on initialize) DBHub upstream: the gateway takes the modern
/// `_meta` members (revision, client info and capabilities) off the
/// request, which DBHub would otherwise refuse with -32020 (its body would
/// name 2026-07-28 while its session is 2025-11-25).
#[tokio::test]
async fn dbhub_on_auto_serves_a_2026_client() {
    let pg = Postgres::start().await;
    let cwd = tempfile::tempdir_in(root().join("target")).unwrap();
    let db = dbhub(&pg, cwd.path()).await;
    let plain = Fixture::python("http_upstream.py", &[]).await;
    let toml = format!("{}[upstreams.h]\nurl = \"{}\"\n", dbhub_toml("dba", &db, "auto"), plain.url());
    let gw = Gateway::start(&toml).await;
    assert_eq!(gw.wait_ready("dba").await["protocol_version"], LEGACY);
    gw.wait_ready("h").await;

    let steps = json!([{"call": "h__echo_context", "args": {}}]);
    let out = sdk(MODERN, &Target::Http { url: gw.url(), token: None }, &steps).await;
    let context: Value = serde_json::from_str(out["steps"][0]["text"][0].as_str().unwrap()).unwrap();
    assert_eq!(context["headers"]["mcp-protocol-version"], LEGACY, "{context}");
    let meta = &context["meta"];
    assert!(
        meta.get("io.modelcontextprotocol/protocolVersion").is_none_or(|v| v == LEGACY),
        "a 2025 upstream got a 2026-07-28 envelope: {meta}"
    );
    assert_rows(&select_items(&gw, MODERN, "dba__execute_sql").await, "2026-07-28 → dba");
}

/// A Python SDK server that answers only 2026-07-28 (it refuses
/// `initialize`), on the default `protocol = "auto"`: the refusal makes
/// the gateway discover, the upstream is served (ready, 2026-07-28, never
/// marked down), and its tools answer clients of both eras, always
/// under 2026-07-28 upstream.
#[tokio::test]
async fn a_2026_only_server_is_served_on_auto() {
    let upstream = Fixture::python("modern_server.py", &[]).await;
    let gw = Gateway::start(&format!("[upstreams.modern]\nurl = \"{}\"\n", upstream.url())).await;
    let st = gw.wait_ready("modern").await;
    assert_eq!(st["protocol_version"], MODERN, "{st}");
    assert_eq!(st["server_info"]["name"], "modern-only", "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
    let logs = gw.proc.logs();
    assert!(logs.contains("Upstream refused initialize; trying server/discover"), "{logs}");
    assert!(!logs.contains("upstream=modern state=down"), "{logs}");

    let targets = [Target::Http { url: gw.url(), token: None }];
    for mode in SDK_MODES {
        let steps = json!([
            {"list": true},
            {"call": "modern__echo", "args": {"message": mode}},
            {"call": "modern__era", "args": {}},
        ]);
        let out = sdk(mode, &targets[0], &steps).await;
        assert_sdk_era(&out, mode, mode);
        assert_eq!(out["steps"][0]["tools"], json!(["modern__echo", "modern__era"]), "{mode}: {out}");
        assert_eq!(out["steps"][1], json!({"isError": false, "text": [format!("modern echo: {mode}")]}), "{mode}");
        assert_eq!(out["steps"][2], json!({"isError": false, "text": [MODERN]}), "{mode}: served as 2026-07-28");
    }

    // What the upstream saw: one initialize, refused; then server/discover
    // and only 2026-07-28 requests with their headers.
    let trace = upstream.get("/control/trace").await;
    let trace = trace.as_array().unwrap();
    assert_eq!(trace[0]["method"], "initialize", "{trace:?}");
    assert_eq!(trace[0]["refused"], true, "{trace:?}");
    assert_eq!(trace[1]["method"], "server/discover", "{trace:?}");
    for t in &trace[1..] {
        assert_eq!(t["refused"], false, "only the one initialize is refused: {trace:?}");
        assert_eq!(t["protocol_version"], MODERN, "{t}");
        assert_eq!(t["mcp_method"], t["method"], "{t}");
    }
    let calls = trace.iter().filter(|t| t["method"] == "tools/call").count();
    assert_eq!(calls, 6, "two calls per client: {trace:?}");
    let u = gw.upstream("modern").await;
    assert_eq!(u["state"], "ready", "{u}");
    assert_eq!(u["failures"]["protocol"], 0, "{u}");
}

/// A stateless `tools/list` of the gateway at `url`: (ttlMs, cacheScope).
async fn list_hints(url: &str) -> (Value, Value) {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta": modern_meta(json!({}))}});
    let r = post_modern(url, None, &body, &[("mcp-method", "tools/list")]).await;
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    (v["result"]["ttlMs"].clone(), v["result"]["cacheScope"].clone())
}

/// Lists tell modern clients how long to keep them: `gateway.list_ttl`
/// over 2025 upstreams, the shortest a 2026-07-28 upstream gave when it is
/// shorter (the conformance fixture says 0), always private.
#[tokio::test]
async fn a_merged_list_is_as_fresh_as_its_stalest_part() {
    let own = Gateway::start(&everything_toml("list_ttl = \"60s\"", "")).await;
    own.wait_ready("everything").await;
    assert_eq!(list_hints(&own.url()).await, (json!(60_000), json!("private")));
    let fixture = Fixture::python("conformance_server.py", &["--http"]).await;
    let extra = format!("[upstreams.modern]\nurl = \"{}\"\nprotocol = \"modern\"\n", fixture.url());
    let mixed = Gateway::start(&everything_toml("list_ttl = \"60s\"", &extra)).await;
    mixed.wait_ready("everything").await;
    mixed.wait_ready("modern").await;
    assert_eq!(list_hints(&mixed.url()).await, (json!(0), json!("private")));
}

const FEATURES: &str = "demo+everything://resource/static/document/features.md";

/// `subscriptions/listen` over HTTP and over stdio: the acknowledgement
/// first (what is honoured), then only what was asked for, tagged with the
/// listen request's id: server-everything's updates of the one subscribed
/// resource, started by a stateless call.
#[tokio::test]
async fn a_listen_stream_carries_what_it_opted_in_to_over_http_and_stdio() {
    let toml = everything_toml("", "");
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("everything").await;
    let listen = json!({"jsonrpc":"2.0","id":"L1","method":"subscriptions/listen","params":{
        "notifications":{"toolsListChanged":true,"resourceSubscriptions":[FEATURES]},"_meta":modern_meta(json!({}))}});
    let toggle = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{
        "name":"everything__toggle-subscriber-updates","arguments":{},"_meta":modern_meta(json!({}))}});

    // HTTP: the stream stays open; the toggle is a request of its own.
    let c = McpHttp { http: reqwest::Client::new(), url: gw.url(), session: None, next: 0 };
    let resp =
        c.send(&listen.to_string(), &[("mcp-protocol-version", MODERN), ("mcp-method", "subscriptions/listen")]).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = SseReader::from_response(resp);
    let ack = events.next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert_eq!(ack["params"]["notifications"], json!({"toolsListChanged": true, "resourceSubscriptions": [FEATURES]}));
    assert_eq!(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "L1");
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "everything__toggle-subscriber-updates"),
    ];
    let r = c.post(&toggle.to_string(), &headers).await;
    assert!(r.body.contains("Started simulated resource updated"), "{}", r.body);
    let updated = events.next().await;
    assert_eq!(updated["method"], "notifications/resources/updated", "{updated}");
    assert_eq!(updated["params"]["uri"], FEATURES);
    assert_eq!(updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "L1");

    // stdio: the same on one pipe, the listen's messages tagged by its id.
    let (_dir, config) = write_config(&toml);
    let mut child = Command::new(gateway_bin())
        .args(["stdio", "--config", &path_str(&config)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let mut next = async || -> Value {
        let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("a line in time").unwrap().unwrap();
        serde_json::from_str(&line).unwrap()
    };
    // A list first: it waits for the upstream's first start.
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":modern_meta(json!({}))}});
    stdin.write_all(format!("{list}\n").as_bytes()).await.unwrap();
    assert_eq!(next().await["result"]["resultType"], "complete");
    stdin.write_all(format!("{listen}\n").as_bytes()).await.unwrap();
    let ack = next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert_eq!(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "L1");
    stdin.write_all(format!("{toggle}\n").as_bytes()).await.unwrap();
    let mut seen = (false, false);
    while !(seen.0 && seen.1) {
        let m = next().await;
        if m["id"] == 2 {
            assert!(m.to_string().contains("Started simulated resource updated"), "{m}");
            seen.0 = true;
        } else if m["method"] == "notifications/resources/updated" {
            assert_eq!(m["params"]["uri"], FEATURES, "{m}");
            assert_eq!(m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "L1", "{m}");
            seen.1 = true;
        }
    }
    drop(stdin);
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("the gateway exits at EOF").unwrap();
    assert!(status.success(), "{status}");
}
