//! rmcp (the official Rust SDK) as a second, independent client:
//!
//! - `mcp-gateway serve` over Streamable HTTP and `mcp-gateway stdio` launched by rmcp's child-process
//!   transport, each in front of server-everything and server-filesystem at once: handshake, the merged
//!   namespaced tool list, a call to each upstream, and an unknown tool;
//! - the same through rmcp's `Auto` lifecycle, which probes `server/discover` (2026-07-28) first and must
//!   fall back to `initialize`;
//! - 100 concurrent `tools/call`s on one rmcp HTTP session, answered out of order by the raw_stdio
//!   fixture, each matched to its own caller (request-id remapping).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorCode, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceError};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::support::*;

type Client = RunningService<RoleClient, ()>;

const NOTE: &str = "hello from rmcp through the gateway";

/// server-everything and server-filesystem (on a temp dir holding note.txt), both over stdio.
fn two_real_upstreams() -> (String, tempfile::TempDir) {
    let p = peers();
    let files = tempfile::Builder::new().prefix("rmcp-files").tempdir_in(root().join("target")).unwrap();
    std::fs::write(files.path().join("note.txt"), NOTE).unwrap();
    let toml = format!(
        r#"
[gateway]
startup_list_wait = "30s"

[upstreams.everything]
command = "node"
args = [{ev:?}, "stdio"]

[upstreams.filesystem]
command = "node"
args = [{fs:?}, {dir:?}]
"#,
        ev = path_str(&p.everything),
        fs = path_str(&p.filesystem),
        dir = path_str(files.path()),
    );
    (toml, files)
}

/// rmcp's modern lifecycle: `server/discover` first, `initialize` if the server is legacy.
fn auto() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto { preferred_versions: vec![ProtocolVersion::V_2026_07_28], legacy_version: None }
}

async fn http_client(url: &str, lifecycle: ClientLifecycleMode) -> Client {
    // Let all of test 3's calls be in flight at once (the default is 16 POSTs).
    let config = StreamableHttpClientTransportConfig::with_uri(url).max_concurrent_requests(128);
    let transport = StreamableHttpClientTransport::from_config(config);
    tokio::time::timeout(PATIENCE, ().serve_with_lifecycle(transport, lifecycle))
        .await
        .expect("handshake in time")
        .expect("rmcp connects over HTTP")
}

/// `mcp-gateway stdio --config <config>` as rmcp's child process; its stderr is collected in the returned
/// buffer. Returns the child's pid too.
async fn stdio_client(config: &Path, lifecycle: ClientLifecycleMode) -> (Client, u32, Arc<Mutex<String>>) {
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("stdio").arg("--config").arg(config).env("RUST_LOG", "info");
    let (transport, stderr) = TokioChildProcess::builder(cmd).stderr(Stdio::piped()).spawn().unwrap();
    let pid = transport.id().expect("spawned");
    let logs = Arc::new(Mutex::new(String::new()));
    let (mut stderr, sink) = (stderr.expect("piped"), logs.clone());
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf).await {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let client = tokio::time::timeout(PATIENCE, ().serve_with_lifecycle(transport, lifecycle))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|e| panic!("rmcp connects over stdio: {e}\n{}", logs.lock().unwrap()));
    (client, pid, logs)
}

async fn call(client: &Client, name: &str, args: Value) -> Result<CallToolResult, ServiceError> {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    let call = client.call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(args));
    tokio::time::timeout(PATIENCE, call).await.expect("a reply in time")
}

fn first_text(r: &CallToolResult) -> &str {
    r.content.first().and_then(|c| c.as_text()).map(|t| t.text.as_str()).unwrap_or_else(|| panic!("no text: {r:?}"))
}

/// The same checks over either transport and lifecycle.
async fn exercise(client: &Client, files: &Path, lifecycle: &ClientLifecycleMode) {
    let info = client.peer_info().expect("handshake done");
    assert_eq!(info.server_info.as_ref().map(|i| i.name.as_str()), Some("mcp-gateway"), "{info:?}");
    // `Auto` discovers first and takes 2026-07-28, which the gateway
    // serves; `Initialize` is 2025.
    let era = match lifecycle {
        ClientLifecycleMode::Initialize => ProtocolVersion::V_2025_11_25,
        _ => ProtocolVersion::V_2026_07_28,
    };
    assert_eq!(info.protocol_version, era);
    assert!(info.capabilities.tools.is_some(), "{info:?}");

    let tools = tokio::time::timeout(PATIENCE, client.list_all_tools()).await.unwrap().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for t in ["everything__echo", "everything__get-sum", "filesystem__read_text_file", "filesystem__list_directory"] {
        assert!(names.contains(&t), "{t} missing from the first tools/list: {names:?}");
    }
    assert!(names.iter().all(|n| n.starts_with("everything__") || n.starts_with("filesystem__")), "{names:?}");

    let echo = call(client, "everything__echo", json!({"message": "hi"})).await.unwrap();
    assert_eq!(first_text(&echo), "Echo: hi");
    assert_ne!(echo.is_error, Some(true));

    let note = files.join("note.txt").display().to_string();
    let read = call(client, "filesystem__read_text_file", json!({"path": note})).await.unwrap();
    assert_eq!(first_text(&read), NOTE);

    match call(client, "nope__missing", json!({})).await {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{e:?}");
            assert!(e.message.contains("nope__missing"), "{e:?}");
        }
        other => panic!("unknown tool should be a JSON-RPC error, got {other:?}"),
    }
    // The session survives the error.
    let again = call(client, "everything__echo", json!({"message": "still here"})).await.unwrap();
    assert_eq!(first_text(&again), "Echo: still here");
}

#[tokio::test]
async fn rmcp_over_http_to_two_real_upstreams() {
    let (toml, files) = two_real_upstreams();
    let gw = Gateway::start(&toml).await;
    for id in ["everything", "filesystem"] {
        gw.wait_ready(id).await;
    }
    for lifecycle in [ClientLifecycleMode::Initialize, auto()] {
        let client = http_client(&gw.url(), lifecycle.clone()).await;
        exercise(&client, files.path(), &lifecycle).await;
        client.cancel().await.unwrap();
    }
    assert_eq!(gw.stop().await.code(), Some(0));
}

#[tokio::test]
async fn rmcp_over_gateway_stdio_to_two_real_upstreams() {
    let (toml, files) = two_real_upstreams();
    let (_dir, config) = write_config(&toml);
    for lifecycle in [ClientLifecycleMode::Initialize, auto()] {
        let (client, pid, logs) = stdio_client(&config, lifecycle.clone()).await;
        exercise(&client, files.path(), &lifecycle).await;
        client.cancel().await.unwrap();
        // rmcp closes stdin and waits; the gateway (and with it its upstreams) is gone.
        let gone = wait_for(PATIENCE, || (!alive(pid)).then_some(())).await;
        assert!(gone.is_some(), "gateway {pid} still running after rmcp closed it:\n{}", logs.lock().unwrap());
    }
}

#[tokio::test]
async fn rmcp_100_concurrent_calls_on_one_session_come_back_to_their_callers() {
    let gw = Gateway::start(&raw_stdio("raw", "")).await;
    gw.wait_ready("raw").await;
    let client = http_client(&gw.url(), ClientLifecycleMode::Initialize).await;
    let done = Mutex::new(Vec::new());
    let calls = (0..100u64).map(|i| {
        let (ms, tag, client, done) = ((i * 37) % 51, format!("tag-{i}"), &client, &done);
        async move {
            let r = call(client, "raw__sleep", json!({"ms": ms, "tag": tag})).await;
            let r = r.unwrap_or_else(|e| panic!("call {i} failed: {e}"));
            assert_eq!(first_text(&r), tag, "call {i} got another call's reply");
            done.lock().unwrap().push(i);
        }
    });
    futures_util::future::join_all(calls).await;
    let done = done.into_inner().unwrap();
    assert_eq!(done.len(), 100);
    // The replies really did come back out of order (else this proves little).
    assert!(done.windows(2).any(|w| w[0] > w[1]), "replies came back in order: {done:?}");
    client.cancel().await.unwrap();
    assert_eq!(gw.stop().await.code(), Some(0));
}
