//! The proxy-hop benchmark (design.md §5): what one trip through the gateway
//! costs compared with calling the same upstream directly, in one sitting.
//!
//! It starts a lean echo MCP server (this binary with `--echo-upstream`),
//! the gateway in front of it and, where HAProxy is installed, HAProxy as a
//! plain TCP relay in front of it too (the floor of what any proxy adds
//! here: it parses nothing), then for each target (direct, haproxy, gateway) and
//! each concurrency (1 and 64 clients) warms up and measures `tools/call`
//! round trips over Streamable HTTP: p50, p99, calls/s, and the CPU time per
//! call of the gateway (`utime + stime` from `/proc/<pid>/stat`) and its peak
//! RSS. Targets from design.md are printed next to the figures, never
//! asserted: timing does not fail a run.
//!
//! `cargo bench --bench proxy_hop`; `BENCH_WARMUP_SECS` and `BENCH_SECS`
//! (default 2 and 10) set the warm-up and measured time per row;
//! `BENCH_AUDIT=1` turns the gateway's audit log on; `BENCH_UPSTREAM=stdio`
//! puts the same echo server behind the gateway over stdio; `BENCH_GATEWAY_BIN`
//! measures another gateway binary (an older build) in the same sitting. Without
//! `--bench` (e.g. `cargo test --all-targets`) it runs as a quick smoke test
//! (0.2 s and 0.5 s unless those variables say otherwise).

#[path = "support/echo_upstream.rs"]
mod echo_upstream;
#[path = "support/entry.rs"]
mod entry;
#[path = "support/load.rs"]
mod load;
#[path = "support/procs.rs"]
mod procs;

use std::process::ExitCode;
use std::time::Duration;

// tokio's Instant (clippy.toml): the real clock here, as nothing pauses time.
use tokio::time::Instant;

use entry::Settings;
use load::{Measurement, Target};
use procs::{Gateway, Relay, TempDir, Upstream};

const CONCURRENCY: [usize; 2] = [1, 64];
/// Measured rows per run (direct, haproxy, gateway), and other waits: the
/// children's lifetime.
const ROWS: u32 = (3 * CONCURRENCY.len()) as u32;
const EXTRA: Duration = Duration::ZERO;

fn main() -> ExitCode {
    entry::main("proxy_hop", bench)
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    target: &'static str,
    clients: usize,
    m: Measurement,
    /// Microseconds of CPU per call of: the proxy (the gateway or HAProxy;
    /// none in direct rows), the upstream, and this process (the load client).
    cpu_us: [Option<f64>; 3],
    /// Share of the machine's CPU capacity used by processes other than
    /// these three (other work on the box: noise), in percent.
    other_cpu_pct: Option<f64>,
}

fn bench(bench_mode: bool) -> Result<(), String> {
    let settings = Settings::from_env(bench_mode, (0.2, 0.5))?;
    if !bench_mode {
        eprintln!("proxy_hop: no --bench flag, running as a quick smoke test");
    }
    let ticks = procs::clock_ticks();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Declared in this order so drop stops the gateway before its upstream.
    let mut upstream = Upstream::start(settings.lifetime(ROWS, EXTRA))?;
    let dir = TempDir::new()?;
    let config = dir.0.join("gateway.toml");
    // BENCH_AUDIT=1: the audit log on (what the committed gateway.toml does).
    let audit = match std::env::var("BENCH_AUDIT").as_deref() {
        Ok("1") => format!("[audit]\npath = {:?}\n", dir.0.join("audit.jsonl")),
        _ => String::new(),
    };
    // BENCH_UPSTREAM=stdio: the gateway's upstream is the same echo server
    // over stdio (this binary's `--echo-stdio`); direct stays the HTTP one,
    // the only one 64 clients can call.
    let echo = match std::env::var("BENCH_UPSTREAM").as_deref() {
        Ok("stdio") => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            format!("command = {:?}\nargs = [\"--echo-stdio\"]\n", exe.display().to_string())
        }
        Ok("http") | Err(_) => format!("url = \"{}/mcp\"\n", upstream.base),
        Ok(other) => return Err(format!("BENCH_UPSTREAM={other:?}: expected http or stdio")),
    };
    std::fs::write(&config, format!("{audit}[upstreams.echo]\n{echo}"))
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let mut gateway = Gateway::start(&config, settings.lifetime(ROWS, EXTRA))?;
    // The floor is an extra row: without it the run goes on.
    let relay = match Relay::start(&dir.0, &upstream.base, settings.lifetime(ROWS, EXTRA)) {
        Ok(Some(r)) => Some(r),
        Ok(None) => {
            eprintln!("proxy_hop: HAProxy is not installed: no relay floor (scripts/test.sh installs it)");
            None
        }
        Err(e) => {
            eprintln!("proxy_hop: no relay floor: {e}");
            None
        }
    };

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (rows, peak_rss_kib, reuse) =
        rt.block_on(measure_all(settings, ticks, cpus, &upstream, &gateway, relay.as_ref()))?;
    drop(rt);

    drop(relay);
    gateway.shutdown();
    upstream.shutdown();

    report(settings, ticks, cpus, &rows, peak_rss_kib, reuse.as_ref());
    if !bench_mode || cfg!(debug_assertions) {
        println!("(smoke run: no --bench flag or an unoptimized build; these figures mean nothing)");
    }
    Ok(())
}

/// Upstream TCP connections opened and requests served during the gateway
/// rows.
#[derive(Debug)]
struct Reuse {
    connections: u64,
    requests: u64,
}

async fn measure_all(
    settings: Settings,
    ticks: u64,
    cpus: usize,
    upstream: &Upstream,
    gateway: &Gateway,
    relay: Option<&Relay>,
) -> Result<(Vec<Row>, Option<u64>, Option<Reuse>), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    wait_ready(&http, &gateway.base).await?;

    let me = std::process::id();
    // The proxy each row measures the CPU of: none, HAProxy, the gateway.
    let mut targets = vec![("direct", Target { url: format!("{}/mcp", upstream.base), tool: "echo" }, None)];
    if let Some(r) = relay {
        targets.push(("haproxy", Target { url: format!("{}/mcp", r.base), tool: "echo" }, Some(r.pid())));
    }
    targets.push(("gateway", Target { url: format!("{}/mcp", gateway.base), tool: "echo__echo" }, Some(gateway.pid())));
    let mut rows = Vec::new();
    let mut stats_before = None;
    for (name, target, proxy) in &targets {
        if *name == "gateway" {
            stats_before = upstream_stats(&http, &upstream.base).await;
        }
        for clients in CONCURRENCY {
            eprintln!("proxy_hop: {name}, {clients} client(s) ...");
            // The gateway is watched in the direct rows too (idle there) so
            // that "other" CPU is really other; the relay rows watch HAProxy
            // instead (the idle one counts as other elsewhere: it takes
            // nothing while no call goes through it).
            let watch = [proxy.unwrap_or(gateway.pid()), upstream.pid(), me];
            let m = load::run(&http, target, clients, settings.warmup, settings.measure, &watch).await?;
            let per_call = |i: usize| -> Option<f64> {
                let t = m.cpu_ticks[i]?;
                Some(t as f64 * 1e6 / ticks as f64 / m.calls() as f64)
            };
            let cpu_us = [per_call(0).filter(|_| proxy.is_some()), per_call(1), per_call(2)];
            let ours: Option<u64> = m.cpu_ticks.iter().copied().sum();
            let capacity = m.elapsed.as_secs_f64() * ticks as f64 * cpus as f64;
            let other_cpu_pct = m
                .machine_ticks
                .zip(ours)
                .map(|(all, ours)| (all.saturating_sub(ours) as f64 / capacity * 100.0).min(100.0));
            rows.push(Row { target: name, clients, m, cpu_us, other_cpu_pct });
        }
    }
    let stats_after = upstream_stats(&http, &upstream.base).await;
    let reuse = stats_before.zip(stats_after).map(|(b, a)| Reuse {
        connections: a.connections.saturating_sub(b.connections),
        requests: a.requests.saturating_sub(b.requests),
    });
    Ok((rows, procs::peak_rss_kib(gateway.pid()), reuse))
}

/// Polls `GET /status` until the upstream is ready.
async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(resp) = http.get(format!("{base}/status")).send().await
            && let Ok(v) = resp.json::<serde_json::Value>().await
        {
            if v["upstreams"][0]["state"] == "ready" {
                return Ok(());
            }
            last = v.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the gateway's upstream is not ready after 30 s; last /status: {last}"))
}

async fn upstream_stats(http: &reqwest::Client, base: &str) -> Option<Reuse> {
    let v: serde_json::Value = http.get(format!("{base}/stats")).send().await.ok()?.json().await.ok()?;
    Some(Reuse { connections: v["connections"].as_u64()?, requests: v["requests"].as_u64()? })
}

fn report(settings: Settings, ticks: u64, cpus: usize, rows: &[Row], peak_rss_kib: Option<u64>, reuse: Option<&Reuse>) {
    println!();
    println!(
        "proxy_hop: tools/call with a {} B text result over Streamable HTTP (JSON replies); \
         warm-up {:.1} s, measured {:.1} s per row; {cpus} CPUs; CLK_TCK {ticks}",
        echo_upstream::RESULT_TEXT_BYTES,
        settings.warmup.as_secs_f64(),
        settings.measure.as_secs_f64(),
    );
    println!();
    println!(
        "{:<8} {:>7} {:>9} {:>6} {:>8} {:>8} {:>9} {:>13} {:>13} {:>13} {:>7}",
        "target",
        "clients",
        "calls",
        "errors",
        "p50 ms",
        "p99 ms",
        "calls/s",
        "proxy CPU µs",
        "upstr CPU µs",
        "client CPU µs",
        "other %"
    );
    for r in rows {
        println!(
            "{:<8} {:>7} {:>9} {:>6} {:>8.3} {:>8.3} {:>9.0} {:>13} {:>13} {:>13} {:>7}",
            r.target,
            r.clients,
            r.m.calls(),
            r.m.errors,
            r.m.percentile_ms(50.0),
            r.m.percentile_ms(99.0),
            r.m.throughput(),
            us(r.cpu_us[0]),
            us(r.cpu_us[1]),
            us(r.cpu_us[2]),
            r.other_cpu_pct.map_or_else(|| "-".to_owned(), |p| format!("{p:.0}")),
        );
    }
    println!(
        "(CPU columns: µs of utime+stime per measured call, from /proc/<pid>/stat; proxy: the gateway or HAProxy;"
    );
    println!(" other %: CPU used by everything else on the machine during the row, share of all {cpus} CPUs: noise)");
    println!();

    let find = |target: &str, clients: usize| rows.iter().find(|r| r.target == target && r.clients == clients);
    if let (Some(g), Some(d)) = (find("gateway", 1), find("direct", 1)) {
        let (gp, dp) = (g.m.percentile_ms(50.0), d.m.percentile_ms(50.0));
        let added = gp - dp;
        println!(
            "added p50 at 1 client: {added:+.3} ms (gateway {gp:.3} / direct {dp:.3})    \
             target ≤ +0.05 ms {}; peers: mcp-proxy +0.24, agentgateway +0.31",
            verdict(added <= 0.05)
        );
        if let Some(h) = find("haproxy", 1) {
            let hp = h.m.percentile_ms(50.0);
            println!(
                "  the floor here: HAProxy as a TCP relay adds {:+.3} ms at 1 client (it parses nothing), {} µs CPU per call",
                hp - dp,
                us(h.cpu_us[0]).trim()
            );
        }
    }
    if let (Some(g), Some(d)) = (find("gateway", 64), find("direct", 64)) {
        let (gp, dp) = (g.m.percentile_ms(50.0), d.m.percentile_ms(50.0));
        println!("added p50 at 64 clients: {:+.3} ms (gateway {gp:.3} / direct {dp:.3})    no target", gp - dp);
        let share = g.m.throughput() / d.m.throughput();
        println!(
            "throughput at 64 clients: gateway/direct = {share:.2} ({:.0} / {:.0} calls/s)    \
             target ≥ 0.30 {}; peers: mcp-proxy 0.12, agentgateway 0.10",
            g.m.throughput(),
            d.m.throughput(),
            verdict(share >= 0.30)
        );
        if let Some(cpu) = g.cpu_us[0] {
            println!(
                "gateway CPU per call at 64 clients: {cpu:.0} µs    target ≤ 55 µs {}; \
                 peers: mcp-proxy 163 µs, agentgateway 221 µs; bare echo upstream here: {} µs",
                verdict(cpu <= 55.0),
                us(d.cpu_us[1]).trim()
            );
        }
        if let Some(h) = find("haproxy", 64) {
            println!(
                "  the floor here: HAProxy as a TCP relay at 64 clients: relay/direct = {:.2}, {} µs CPU per call",
                h.m.throughput() / d.m.throughput(),
                us(h.cpu_us[0]).trim()
            );
        }
    }
    if let Some(cpu) = find("gateway", 1).and_then(|g| g.cpu_us[0]) {
        println!("gateway CPU per call at 1 client: {cpu:.0} µs    no target");
    }
    if let Some(kib) = peak_rss_kib {
        let mb = kib as f64 / 1024.0;
        println!(
            "gateway peak RSS: {mb:.1} MB (VmHWM)    target ≤ 16 MB {}; peers: mcp-proxy 30 MB, agentgateway 70 MB",
            verdict(mb <= 16.0)
        );
    }
    if let Some(r) = reuse {
        println!(
            "gateway → upstream: {} TCP connections opened for {} upstream requests during the gateway rows",
            r.connections, r.requests
        );
    }
    println!("(targets are printed for reference only; timing never fails this run)");
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

fn verdict(met: bool) -> &'static str {
    if met { "(met)" } else { "(not met)" }
}
