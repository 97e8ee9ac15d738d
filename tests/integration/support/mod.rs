//! The test harness: start the gateway, fixtures and real peers as
//! processes on loopback (port 0), and talk MCP to them.
//!
//! Everything started here is killed on drop; nothing binds a fixed port.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

pub mod databases;
pub mod keys;
pub mod otlp;
pub mod prometheus;

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Paths of the installed peers (scripts/install-peers.sh).
pub struct Peers {
    pub python: PathBuf,
    pub everything: PathBuf,
    pub filesystem: PathBuf,
    pub postgres: PathBuf,
}

pub fn peers() -> Peers {
    let base = root().join("target/peers");
    let nm = base.join("npm/node_modules/@modelcontextprotocol");
    let p = Peers {
        python: base.join("venv/bin/python"),
        everything: nm.join("server-everything/dist/index.js"),
        filesystem: nm.join("server-filesystem/dist/index.js"),
        postgres: nm.join("server-postgres/dist/index.js"),
    };
    for f in [&p.python, &p.everything, &p.filesystem, &p.postgres] {
        assert!(f.exists(), "{} is missing: run scripts/install-peers.sh (scripts/test.sh does)", f.display());
    }
    p
}

pub fn fixture(name: &str) -> String {
    root().join("tests/fixtures").join(name).display().to_string()
}

/// TOML for a stdio upstream running the raw_stdio fixture.
pub fn raw_stdio(id: &str, extra: &str) -> String {
    let p = peers();
    format!(
        "[upstreams.{id}]\ncommand = {:?}\nargs = [{:?}]\n{extra}\n",
        p.python.display().to_string(),
        fixture("raw_stdio.py")
    )
}

/// A child process with its stderr collected.
pub struct Proc {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig);
    }
}

fn collect<R: AsyncRead + Unpin + Send + 'static>(r: R, sink: Arc<Mutex<String>>, echo: bool) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if echo {
                eprintln!("  | {l}");
            }
            let mut s = sink.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    });
}

/// A running gateway (`mcp-gateway serve`).
pub struct Gateway {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-gateway")
}

/// Writes `toml` as gateway.toml in a fresh temp dir.
pub fn write_config(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("mcpgw-test").tempdir_in(root().join("target")).unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

impl Gateway {
    /// Starts `mcp-gateway serve` on 127.0.0.1:0 with `toml`.
    pub async fn start(toml: &str) -> Gateway {
        let (dir, path) = write_config(toml);
        Self::start_at(&path, dir).await
    }

    /// Starts `mcp-gateway serve` with the config file at `path`.
    pub async fn start_at(path: &Path, dir: tempfile::TempDir) -> Gateway {
        Self::start_with_env(path, dir, &[]).await
    }

    /// [`Gateway::start_at`] with `env` added to the gateway's environment.
    pub async fn start_with_env(path: &Path, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Gateway {
        let mut child = Command::new(gateway_bin())
            .args(["serve", "--config"])
            .arg(path)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,mcp_gateway=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().unwrap(), stderr.clone(), std::env::var_os("GW_TEST_LOG").is_some());
        let proc = Proc { child, stderr };
        let addr = wait_for(PATIENCE, || {
            let logs = proc.logs();
            let at = logs.find("Listening on http://")?;
            let rest = &logs[at + "Listening on http://".len()..];
            rest[..rest.find("/mcp")?].parse().ok()
        })
        .await
        .unwrap_or_else(|| panic!("gateway did not start:\n{}", proc.logs()));
        Gateway { proc, addr, dir, http: reqwest::Client::new() }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Makes the harness's own requests (`/status`, readiness waits)
    /// present `token`, for a gateway that requires authentication.
    pub fn authorize(&mut self, token: &str) {
        self.http = bearer_client(token);
    }

    pub async fn status(&self) -> Value {
        self.http.get(format!("http://{}/status", self.addr)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn upstream(&self, id: &str) -> Value {
        let s = self.status().await;
        s["upstreams"].as_array().unwrap().iter().find(|u| u["id"] == id).cloned().unwrap_or(Value::Null)
    }

    /// Waits until upstream `id` satisfies `pred`; returns its status.
    pub async fn wait_upstream(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let u = self.upstream(id).await;
            if pred(&u) {
                return u;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "upstream {id} never reached the state; last: {u}\n{}",
                self.proc.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&self, id: &str) -> Value {
        self.wait_upstream(id, |u| u["state"] == "ready").await
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        tokio::time::timeout(PATIENCE, self.proc.child.wait()).await.expect("gateway exits after SIGTERM").unwrap()
    }

    /// SIGTERM, a clean exit, and the folder back (to start again over
    /// what this run left there).
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        let exit = tokio::time::timeout(PATIENCE, self.proc.child.wait()).await.expect("gateway exits after SIGTERM");
        assert!(exit.unwrap().success(), "{}", self.proc.logs());
        self.dir
    }

    pub async fn client(&self) -> McpHttp {
        McpHttp::connect(&self.url()).await
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `patience` passes.
pub async fn wait_for<T>(patience: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP fixture (prints `LISTENING <port>` first).
pub struct Fixture {
    pub proc: Proc,
    pub port: u16,
}

impl Fixture {
    pub async fn python(script: &str, args: &[&str]) -> Fixture {
        let mut cmd = Command::new(peers().python);
        cmd.arg(fixture(script)).args(["--port", "0"]).args(args);
        let (child, stderr) = spawn_piped(cmd, false);
        let mut proc = Proc { child, stderr };
        let mut out = BufReader::new(proc.child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(PATIENCE, out.next_line()).await.unwrap().unwrap().expect("LISTENING line");
        let port = line.strip_prefix("LISTENING ").expect("LISTENING <port>").trim().parse().unwrap();
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        Fixture { proc, port }
    }

    /// server-everything over Streamable HTTP on a free port.
    pub async fn everything_http() -> Fixture {
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg(peers().everything).arg("streamableHttp").env("PORT", port.to_string());
        let (child, sink) = spawn_piped(cmd, true);
        let proc = Proc { child, stderr: sink };
        let ok = wait_for(PATIENCE, || std::net::TcpStream::connect(("127.0.0.1", port)).ok()).await;
        assert!(ok.is_some(), "server-everything did not listen: {}", proc.logs());
        Fixture { proc, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("http://127.0.0.1:{}{path}", self.port)).await.unwrap().json().await.unwrap()
    }
}

/// A client that sends `Authorization: Bearer <token>` on every request.
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A port that was free a moment ago (for peers that cannot bind port 0
/// and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port held bound but not listening: connecting to it is refused, and
/// no other test's `bind(0)` is handed it while the socket lives (a port
/// from [`free_port`] can be, under a parallel run). Drop the socket just
/// before a peer binds the port.
pub fn reserved_port() -> (u16, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap().port(), socket)
}

/// Spawns `cmd` with piped output, killed on drop. stderr (and stdout too,
/// with `both`) is collected into the returned sink; otherwise stdout is
/// left for the caller to read.
pub fn spawn_piped(mut cmd: Command, both: bool) -> (Child, Arc<Mutex<String>>) {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let sink = Arc::new(Mutex::new(String::new()));
    if both {
        collect(child.stdout.take().unwrap(), sink.clone(), false);
    }
    collect(child.stderr.take().unwrap(), sink.clone(), false);
    (child, sink)
}

/// A minimal MCP client over Streamable HTTP for precise wire checks.
pub struct McpHttp {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub next: u64,
}

/// A raw HTTP answer.
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Raw {
    /// The JSON body, or the reply of an SSE body (its last message).
    pub fn json(&self) -> Value {
        let sse = self.headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if sse {
            return sse_messages(&self.body).pop().unwrap_or_else(|| panic!("no message in {:?}", self.body));
        }
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

impl McpHttp {
    pub async fn connect(url: &str) -> McpHttp {
        Self::connect_with(url, json!({})).await
    }

    /// Connects declaring `capabilities` (sampling, elicitation, …).
    pub async fn connect_with(url: &str, capabilities: Value) -> McpHttp {
        Self::connect_via(url, capabilities, reqwest::Client::new()).await
    }

    /// Connects presenting `Authorization: Bearer <token>` on every request.
    pub async fn connect_as(url: &str, token: &str) -> McpHttp {
        Self::connect_via(url, json!({}), bearer_client(token)).await
    }

    /// Connects with `http` (which may carry default headers).
    pub async fn connect_via(url: &str, capabilities: Value, http: reqwest::Client) -> McpHttp {
        let mut c = McpHttp { http, url: url.to_owned(), session: None, next: 1 };
        let init = json!({"protocolVersion":"2025-11-25","capabilities":capabilities,"clientInfo":{"name":"test","version":"0"}});
        let r = c.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":init}).to_string(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        c.session = Some(r.headers["mcp-session-id"].to_str().unwrap().to_owned());
        let r = c.post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, &[]).await;
        assert_eq!(r.status, 202);
        c
    }

    /// POSTs `body` with the usual headers plus `extra`.
    pub async fn post(&self, body: &str, extra: &[(&str, &str)]) -> Raw {
        let resp = self.send(body, extra).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        Raw { status, headers, body }
    }

    /// POSTs `body` like [`McpHttp::post`], returning the response unread
    /// (to read an SSE answer as it streams).
    pub async fn send(&self, body: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(&self.url).header("content-type", "application/json").body(body.to_owned());
        // An `accept` in `extra` replaces the usual one.
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            req = req.header("accept", "application/json, text/event-stream");
        }
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s).header("mcp-protocol-version", "2025-11-25");
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// Sends a request; returns the whole response object.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.request_raw(method, params).await.json()
    }

    pub async fn request_raw(&mut self, method: &str, params: Value) -> Raw {
        self.next += 1;
        let body = json!({"jsonrpc":"2.0","id":self.next,"method":method,"params":params}).to_string();
        let r = self.post(&body, &[]).await;
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        r
    }

    /// Calls a tool; returns the response object (result or error).
    pub async fn call(&mut self, name: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name":name,"arguments":args})).await
    }

    pub async fn tool_names(&mut self) -> Vec<String> {
        let r = self.request("tools/list", json!({})).await;
        r["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    }
}

/// The first text block of a tools/call response.
pub fn text(resp: &Value) -> String {
    resp["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text in {resp}")).to_owned()
}

/// Runs the Python SDK client; returns its JSON output lines.
pub async fn py_client(args: &[&str]) -> Vec<Value> {
    let p = peers();
    let out = tokio::time::timeout(
        PATIENCE * 2,
        Command::new(&p.python).arg(root().join("tests/clients/py_client.py")).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("py_client finished")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "py_client {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Whether a process id is alive (not counting zombies we own).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    match stat {
        // Field 3 is the state; Z is a zombie (exited, not reaped).
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every live (not zombie) process as (pid, ppid, pgrp), from /proc.
fn processes() -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        // state ppid pgrp ...
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
        if let (Some(ppid), Some(pgrp)) = (num(1), num(2))
            && fields[0] != "Z"
        {
            out.push((pid, ppid, pgrp));
        }
    }
    out
}

/// All processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    processes().into_iter().filter(|p| p.2 == pgid).map(|p| p.0).collect()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Polls `f` every 20 ms until it is true (at most [`PATIENCE`]).
pub async fn wait_until<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "condition never became true");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live (not zombie) processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    processes().into_iter().filter(|p| p.1 == pid).map(|p| p.0).collect()
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// What a gateway holds when idle: file descriptors, tokio tasks and
/// child processes. Taken after a warm-up call, compared after a fault.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub fds: usize,
    pub tasks: u64,
    pub children: usize,
}

impl Gateway {
    pub async fn footprint(&self) -> Footprint {
        let pid = self.proc.pid();
        let status = self.status().await;
        Footprint {
            fds: fd_count(pid),
            tasks: status["runtime"]["alive_tasks"].as_u64().unwrap(),
            children: children_of(pid).len(),
        }
    }

    /// Waits until the footprint is back to `base` (a little slack for
    /// pooled connections and the status request itself); panics with the
    /// numbers if it never is.
    pub async fn assert_no_leaks(&self, base: Footprint) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.footprint().await;
            if now.fds <= base.fds + 2 && now.tasks <= base.tasks + 2 && now.children == base.children {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "leak: idle footprint was {base:?}, now {now:?}\n{}",
                self.proc.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The JSON-RPC messages of an SSE body (`data:` lines of `message`
/// events; priming events with empty data are skipped).
pub fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            let data = data.join("\n");
            (!data.trim().is_empty()).then(|| serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}")))
        })
        .collect()
}

/// A session's GET stream, read message by message.
pub struct SseReader {
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub seen: Vec<Value>,
}

impl SseReader {
    /// Opens the GET stream of `c`'s session.
    pub async fn open(c: &McpHttp) -> SseReader {
        let resp = c
            .http
            .get(&c.url)
            .header("mcp-session-id", c.session.as_deref().unwrap())
            .header("mcp-protocol-version", "2025-11-25")
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        SseReader::from_response(resp)
    }

    /// Reads an SSE response (a POST answered as a stream).
    pub fn from_response(resp: reqwest::Response) -> SseReader {
        SseReader { stream: Box::pin(resp.bytes_stream()), buf: String::new(), seen: Vec::new() }
    }

    /// The next message (panics after [`PATIENCE`]).
    pub async fn next(&mut self) -> Value {
        use futures_util::StreamExt as _;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let ev: String = self.buf.drain(..end + 2).collect();
                if let Some(m) = sse_messages(&ev).pop() {
                    self.seen.push(m.clone());
                    return m;
                }
                continue;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no message in time; seen {:?}", self.seen))
                .expect("the stream stays open")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Messages up to and including the first one `pred` accepts.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = pred(&m);
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

/// Whether `m` is the notification `method`.
pub fn is_note(m: &Value, method: &str) -> bool {
    m["method"] == method && m.get("id").is_none()
}

/// POSTs `body` and reads the answer as the SSE stream it must be.
pub async fn post_streaming(c: &McpHttp, body: &Value) -> SseReader {
    let resp = c.send(&body.to_string(), &[]).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    SseReader::from_response(resp)
}

/// server-everything over Streamable HTTP behind a gateway answering as
/// SSE (server requests then come on the call's own stream); keep the
/// fixture alive as long as the gateway.
pub async fn everything_sse_gateway() -> (Fixture, Gateway) {
    let everything = Fixture::everything_http().await;
    let toml = format!("[gateway]\nresponse_mode = \"sse\"\n[upstreams.everything]\nurl = \"{}\"\n", everything.url());
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("everything").await;
    (everything, gw)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a
/// query value, or a form field as reqwest and the fixtures write one).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `_meta` of a 2026-07-28 request declaring `capabilities`.
pub fn modern_meta(capabilities: Value) -> Value {
    let mut meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
    meta["io.modelcontextprotocol/clientCapabilities"] = capabilities;
    meta
}

/// POSTs `body` to `url` as a stateless 2026-07-28 request: no session id,
/// the version header, `bearer`'s API key when given, and `headers`.
pub async fn post_modern(url: &str, bearer: Option<&str>, body: &Value, headers: &[(&str, &str)]) -> Raw {
    let c = McpHttp { http: reqwest::Client::new(), url: url.to_owned(), session: None, next: 0 };
    let bearer = bearer.map(|k| format!("Bearer {k}"));
    let mut all = vec![("mcp-protocol-version", "2026-07-28")];
    if let Some(b) = &bearer {
        all.push(("authorization", b.as_str()));
    }
    all.extend_from_slice(headers);
    c.post(&body.to_string(), &all).await
}

/// A stateless 2026-07-28 `tools/call` of `name` with `args` (and its
/// `Mcp-Method`/`Mcp-Name`), which must get no session: the JSON reply.
pub async fn modern_call(url: &str, bearer: Option<&str>, name: &str, args: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":args,"_meta":modern_meta(json!({}))}});
    let r = post_modern(url, bearer, &body, &[("mcp-method", "tools/call"), ("mcp-name", name)]).await;
    assert!(r.headers.get("mcp-session-id").is_none(), "a stateless request gets no session: {:?}", r.headers);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.body))
}
