//! The large-result benchmark (issue 23): a `tools/call` whose result is
//! 10 MiB of text, through the gateway against the same upstream called
//! directly, in one sitting.
//!
//! It prints the time per call (p50 and mean, one client, direct and
//! gateway rounds interleaved so drift hits both alike) and their ratio
//! (target ≤ 1.15×), and the gateway's memory: its resident set before the
//! first large call and its peak (`VmHWM`) after rounds of 1 and of
//! [`IN_FLIGHT`] concurrent calls, per call in flight as a multiple of the
//! payload (target ≤ 2×). Timing never fails a run.
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
use procs::{Gateway, TempDir, Upstream};

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
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let result = rt.block_on(measure(&upstream, &gateway, payload, calls));
    drop(rt);
    gateway.shutdown();
    upstream.shutdown();
    let m = result?;
    report(&m, payload, calls);
    if !bench_mode || cfg!(debug_assertions) {
        println!("(smoke run: no --bench flag or an unoptimized build; these figures mean nothing)");
    }
    Ok(())
}

#[derive(Debug)]
struct Measured {
    direct: Vec<Duration>,
    gateway: Vec<Duration>,
    rss_before_kib: u64,
    peak_one_kib: u64,
    peak_many_kib: u64,
}

async fn measure(upstream: &Upstream, gateway: &Gateway, payload: usize, calls: usize) -> Result<Measured, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let direct = Target { url: format!("{}/mcp", upstream.base), tool: "echo" };
    let through = Target { url: format!("{}/mcp", gateway.base), tool: "echo__echo" };
    wait_ready(&http, &through).await?;
    let (ds, gs) = (load::open_session(&http, &direct).await?, load::open_session(&http, &through).await?);
    let pid = gateway.pid();
    // Before any large call: what the gateway holds at rest.
    let rss_before_kib = procs::rss_kib(pid).ok_or("no VmRSS for the gateway")?;
    // One call in flight: interleaved rounds, direct first.
    let (mut d, mut g) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for i in 0..calls + 1 {
        let took_d = call(&http, &direct, &ds, i, payload).await?;
        let took_g = call(&http, &through, &gs, i, payload).await?;
        // The first round warms both up (connections, allocator).
        if i > 0 {
            d.push(took_d);
            g.push(took_g);
        }
    }
    let peak_one_kib = procs::peak_rss_kib(pid).ok_or("no VmHWM for the gateway")?;
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
    Ok(Measured { direct: d, gateway: g, rss_before_kib, peak_one_kib, peak_many_kib })
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
    println!("time: gateway/direct = {:.2} at p50, {:.2} in the mean    target ≤ 1.15", gp / dp, gm / dm);
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
