//! The large-result benchmark (issue 23): a `tools/call` whose result is
//! 10 MiB of text, through the gateway against the same upstream called
//! directly, in one sitting.
//!
//! It prints the time per call (p50 and mean, one client, direct and
//! gateway rounds interleaved so drift hits both alike) and their ratio
//! (target ≤ 1.15×), and the gateway's memory: its resident set before the
//! first large call and its peak (`VmHWM`) after rounds of 1 and of
//! [`IN_FLIGHT`] concurrent calls, per call in flight as a multiple of the
//! payload (target ≤ 2×). Where HAProxy is installed the rounds also call
//! through it as a plain TCP relay (1 MiB buffers): what copying the bytes
//! through one more process costs here, the floor under any proxy's ratio.
//! Then the same calls from a sessionless
//! 2026-07-28 client through the gateway, and from a stdio client
//! (`mcp-gateway stdio` with the same config, its own memory printed), each
//! against the direct p50. Timing never fails a run.
//!
//! `cargo bench --bench large`; `BENCH_CALLS` sets calls per round (default
//! 20). Without `--bench` it is a smoke run (2 calls of 1 MiB).

#[path = "support/echo_upstream.rs"]
mod echo_upstream;
// Shared with the other benches; this one has no warm-up or measured time.
#[allow(dead_code)]
#[path = "support/entry.rs"]
mod entry;
// Shared with the other benches; this one only opens sessions with it.
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "support/procs.rs"]
mod procs;

use std::time::Duration;

use tokio::time::Instant;

use load::{Session, Target};
use procs::{Gateway, Relay, TempDir, Upstream};

/// Concurrent large calls in the memory round.
const IN_FLIGHT: usize = 4;

fn main() -> std::process::ExitCode {
    entry::main("large", bench)
}

fn bench(bench_mode: bool) -> Result<(), String> {
    let payload: usize = if bench_mode { 10 << 20 } else { 1 << 20 };
    let calls: usize = match std::env::var("BENCH_CALLS") {
        Ok(v) => v.parse().map_err(|_| format!("BENCH_CALLS={v:?} is not a number"))?,
        Err(_) if bench_mode => 20,
        Err(_) => 2,
    };
    let lifetime = Duration::from_secs(600);
    let mut upstream = Upstream::start_with_env(lifetime, &[("ECHO_RESULT_BYTES", payload.to_string())])?;
    let dir = TempDir::new()?;
    let config = dir.0.join("gateway.toml");
    // Room for the payload and its JSON around it (the default is 16 MiB).
    std::fs::write(
        &config,
        format!("[gateway]\nmax_message_bytes = {}\n[upstreams.echo]\nurl = \"{}/mcp\"\n", 32 << 20, upstream.base),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let mut gateway = Gateway::start(&config, lifetime)?;
    // The floor is an extra row: without it the run goes on.
    let relay = match Relay::start(&dir.0, &upstream.base, lifetime) {
        Ok(Some(r)) => Some(r),
        Ok(None) => {
            eprintln!("large: HAProxy is not installed: no relay floor (scripts/test.sh installs it)");
            None
        }
        Err(e) => {
            eprintln!("large: no relay floor: {e}");
            None
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let result = rt.block_on(measure(&upstream, &gateway, relay.as_ref(), payload, calls));
    drop(relay);
    gateway.shutdown();
    let stdio = result.is_ok().then(|| rt.block_on(stdio_client(&config, payload, calls)));
    drop(rt);
    upstream.shutdown();
    let m = result?;
    report(&m, payload, calls);
    report_stdio(&stdio.transpose()?.expect("measured"), &m, payload);
    if !bench_mode || cfg!(debug_assertions) {
        println!("(smoke run: no --bench flag or an unoptimized build; these figures mean nothing)");
    }
    Ok(())
}

#[derive(Debug)]
struct Measured {
    direct: Vec<Duration>,
    gateway: Vec<Duration>,
    /// Through HAProxy as a TCP relay (empty without HAProxy).
    relay: Vec<Duration>,
    /// Through the gateway from a 2026-07-28 client.
    modern: Vec<Duration>,
    rss_before_kib: u64,
    peak_one_kib: u64,
    peak_many_kib: u64,
}

async fn measure(
    upstream: &Upstream,
    gateway: &Gateway,
    relay: Option<&Relay>,
    payload: usize,
    calls: usize,
) -> Result<Measured, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let direct = Target { url: format!("{}/mcp", upstream.base), tool: "echo" };
    let through = Target { url: format!("{}/mcp", gateway.base), tool: "echo__echo" };
    wait_ready(&http, &through).await?;
    let (ds, gs) = (load::open_session(&http, &direct).await?, load::open_session(&http, &through).await?);
    let relayed = relay.map(|r| Target { url: format!("{}/mcp", r.base), tool: "echo" });
    let rs = match &relayed {
        Some(t) => Some(load::open_session(&http, t).await?),
        None => None,
    };
    let pid = gateway.pid();
    // Before any large call: what the gateway holds at rest.
    let rss_before_kib = procs::rss_kib(pid).ok_or("no VmRSS for the gateway")?;
    // One call in flight: interleaved rounds, direct first.
    let (mut d, mut g, mut r) = (Vec::with_capacity(calls), Vec::with_capacity(calls), Vec::with_capacity(calls));
    for i in 0..calls + 1 {
        let took_d = call(&http, &direct, &ds, i, payload).await?;
        let took_r = match relayed.as_ref().zip(rs.as_ref()) {
            Some((t, s)) => Some(call(&http, t, s, i, payload).await?),
            None => None,
        };
        let took_g = call(&http, &through, &gs, i, payload).await?;
        // The first round warms all up (connections, allocator).
        if i > 0 {
            d.push(took_d);
            g.push(took_g);
            r.extend(took_r);
        }
    }
    let peak_one_kib = procs::peak_rss_kib(pid).ok_or("no VmHWM for the gateway")?;
    // The same calls from a 2026-07-28 client (sessionless; the gateway
    // bridges to the 2025 echo upstream and marks the result `resultType`).
    let mut modern = Vec::with_capacity(calls);
    for i in 0..calls + 1 {
        let took = call_modern(&http, &through, 2000 + i, payload).await?;
        if i > 0 {
            modern.push(took);
        }
    }
    // IN_FLIGHT calls at once, each on its own session, a few rounds.
    let mut sessions = Vec::new();
    for _ in 0..IN_FLIGHT {
        sessions.push(load::open_session(&http, &through).await?);
    }
    for round in 0..3 {
        let all = sessions.iter().map(|s| call(&http, &through, s, 1000 + round, payload));
        for r in futures_util::future::join_all(all).await {
            r?;
        }
    }
    let peak_many_kib = procs::peak_rss_kib(pid).ok_or("no VmHWM for the gateway")?;
    Ok(Measured { direct: d, gateway: g, relay: r, modern, rss_before_kib, peak_one_kib, peak_many_kib })
}

/// One call; checks the reply carries the whole payload.
async fn call(
    http: &reqwest::Client,
    target: &Target,
    s: &Session,
    id: usize,
    payload: usize,
) -> Result<Duration, String> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{}","arguments":{{"text":"hello"}}}}}}"#,
        target.tool
    );
    let started = Instant::now();
    let resp = http.post(&target.url).headers(s.headers.clone()).body(body).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if !status.is_success() || bytes.len() < payload || !bytes.ends_with(b"}") {
        return Err(format!(
            "{}: HTTP {status}, {} bytes: {}",
            target.url,
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        ));
    }
    Ok(took)
}

/// The same calls from a stdio client (`mcp-gateway stdio`, what most hosts
/// start) to the same upstream: the time of each (not counting the first)
/// and that process's memory.
#[derive(Debug)]
struct StdioMeasured {
    times: Vec<Duration>,
    rss_before_kib: u64,
    peak_kib: u64,
}

async fn stdio_client(config: &std::path::Path, payload: usize, calls: usize) -> Result<StdioMeasured, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let bin = std::env::var_os("BENCH_GATEWAY_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_mcp-gateway").into());
    let mut child = tokio::process::Command::new(bin)
        .args(["stdio", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start mcp-gateway stdio: {e}"))?;
    let pid = child.id().ok_or("mcp-gateway stdio has no pid")?;
    let mut input = child.stdin.take().expect("piped");
    let mut output = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    // Sends one request and reads lines until its reply (by `"id":<id>,`).
    let mut ask = async |request: String, id: usize| -> Result<String, String> {
        input.write_all(format!("{request}\n").as_bytes()).await.map_err(|e| e.to_string())?;
        let tag = format!(r#""id":{id},"#);
        loop {
            line.clear();
            let n = tokio::time::timeout(Duration::from_secs(60), output.read_line(&mut line))
                .await
                .map_err(|_| "no reply from mcp-gateway stdio in 60 s")?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("mcp-gateway stdio closed its output".into());
            }
            if line.contains(&tag) {
                return Ok(std::mem::take(&mut line));
            }
        }
    };
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"large","version":"0"}}}"#;
    ask(init.into(), 0).await?;
    let rss_before_kib = procs::rss_kib(pid).ok_or("no VmRSS for mcp-gateway stdio")?;
    let call = |id: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo__echo","arguments":{{"text":"hello"}}}}}}"#
        )
    };
    // Until the upstream is up (a call before that is refused at once).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 1;
    while !ask(call(id), id).await?.contains(r#""result""#) {
        if Instant::now() > deadline {
            return Err("echo__echo never answered through mcp-gateway stdio".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        id += 1;
    }
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls {
        id += 1;
        let started = Instant::now();
        let reply = ask(call(id), id).await?;
        times.push(started.elapsed());
        if reply.len() < payload || !reply.trim_end().ends_with('}') {
            return Err(format!("call {i}: a reply of {} bytes through mcp-gateway stdio", reply.len()));
        }
    }
    let peak_kib = procs::peak_rss_kib(pid).ok_or("no VmHWM for mcp-gateway stdio")?;
    child.kill().await.map_err(|e| e.to_string())?;
    Ok(StdioMeasured { times, rss_before_kib, peak_kib })
}

/// One sessionless 2026-07-28 call; checks the reply is a modern result
/// carrying the whole payload.
async fn call_modern(http: &reqwest::Client, target: &Target, id: usize, payload: usize) -> Result<Duration, String> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{}","arguments":{{"text":"hello"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#,
        target.tool
    );
    let started = Instant::now();
    let resp = http
        .post(&target.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", target.tool)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let head = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"resultType":"complete","#);
    if !status.is_success() || bytes.len() < payload || !bytes.starts_with(head.as_bytes()) {
        return Err(format!(
            "a 2026-07-28 call: HTTP {status}, {} bytes: {}",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        ));
    }
    Ok(took)
}

async fn wait_ready(http: &reqwest::Client, target: &Target) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = load::open_session(http, target).await {
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
            let resp = http.post(&target.url).headers(s.headers.clone()).body(body).send().await;
            if let Ok(r) = resp
                && r.text().await.is_ok_and(|t| t.contains("echo__echo"))
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the gateway never listed echo__echo".into())
}

fn report(m: &Measured, payload: usize, calls: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let stats = |v: &[Duration]| {
        let mut s = v.to_vec();
        s.sort_unstable();
        let mean = s.iter().map(|d| ms(*d)).sum::<f64>() / s.len().max(1) as f64;
        (ms(s[s.len() / 2]), mean)
    };
    let (dp, dm) = stats(&m.direct);
    let (gp, gm) = stats(&m.gateway);
    let mib = payload as f64 / (1 << 20) as f64;
    println!();
    println!("large: tools/call with a {mib:.0} MiB text result, 1 client, {calls} calls each, rounds interleaved");
    println!("target    p50 ms   mean ms");
    println!("direct  {dp:8.2}  {dm:8.2}");
    println!("gateway {gp:8.2}  {gm:8.2}");
    if !m.relay.is_empty() {
        let (rp, rm) = stats(&m.relay);
        println!("haproxy {rp:8.2}  {rm:8.2}");
    }
    println!("time: gateway/direct = {:.2} at p50, {:.2} in the mean    target ≤ 1.15", gp / dp, gm / dm);
    if !m.relay.is_empty() {
        let (rp, rm) = stats(&m.relay);
        println!(
            "  the floor here: HAProxy as a TCP relay (copies the bytes, parses nothing) = {:.2}× direct at p50, {:.2} in the mean; the gateway = {:.2}× HAProxy",
            rp / dp,
            rm / dm,
            gp / rp
        );
    }
    let (mp, mm) = stats(&m.modern);
    println!(
        "a 2026-07-28 client through the gateway: p50 {mp:.2} ms, mean {mm:.2} ms ({:.2}× the direct p50)",
        mp / dp
    );
    let per =
        |peak: u64, n: usize| (peak.saturating_sub(m.rss_before_kib) as f64 * 1024.0) / (n as f64 * payload as f64);
    println!(
        "memory: RSS {:.1} MB at rest; peak {:.1} MB with 1 call in flight ({:.2}× the payload), {:.1} MB with {IN_FLIGHT} ({:.2}× the payload per call)    target ≤ 2×",
        m.rss_before_kib as f64 / 1024.0,
        m.peak_one_kib as f64 / 1024.0,
        per(m.peak_one_kib, 1),
        m.peak_many_kib as f64 / 1024.0,
        per(m.peak_many_kib, IN_FLIGHT),
    );
    println!("(RSS is the gateway's VmRSS before the first large call and its VmHWM after each round)");
}

fn report_stdio(s: &StdioMeasured, http: &Measured, payload: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p50 = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        ms(v[v.len() / 2])
    };
    let mean = s.times.iter().map(|d| ms(*d)).sum::<f64>() / s.times.len().max(1) as f64;
    let extra = s.peak_kib.saturating_sub(s.rss_before_kib) as f64 * 1024.0 / payload as f64;
    println!(
        "stdio client (mcp-gateway stdio, the same upstream over HTTP): p50 {:.2} ms, mean {mean:.2} ms ({:.2}× the direct HTTP p50); \
         RSS {:.1} MB at rest, peak {:.1} MB with 1 call in flight ({extra:.2}× the payload)",
        p50(&s.times),
        p50(&s.times) / p50(&http.direct),
        s.rss_before_kib as f64 / 1024.0,
        s.peak_kib as f64 / 1024.0,
    );
}
