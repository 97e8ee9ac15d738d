//! What shared state in Redis (`[redis]`, issue 19) adds to a `tools/call`,
//! in one sitting: the same gateway config (a rate limit and a two-step
//! sequence rule on the tool, so both the buckets and the histories are
//! used) with its state in process and with it in a real `redis-server`,
//! both in front of proxy_hop's echo upstream, at 1 and 64 clients. It
//! prints the added p50 and CPU per call, and Redis's own CPU per call.
//! Timing is printed, never asserted.
//!
//! `cargo bench --bench shared_state`; `BENCH_WARMUP_SECS`, `BENCH_SECS`
//! as for proxy_hop. Without `--bench` it is a quick smoke run.

#[path = "support/echo_upstream.rs"]
mod echo_upstream;
#[path = "support/entry.rs"]
mod entry;
#[path = "support/load.rs"]
mod load;
#[path = "support/procs.rs"]
mod procs;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::process::ExitCode;
use std::time::Duration;

use entry::Settings;
use load::{Measurement, Target};
use procs::{Gateway, TempDir, Upstream};
use redis_server::RedisServer;

const CONCURRENCY: [usize; 2] = [1, 64];
const ROWS: u32 = (3 * CONCURRENCY.len()) as u32;

/// A limit no call reaches, and a rule whose first step never comes: the
/// call takes a token and reads and appends the histories, as in a real
/// deployment, and is never refused.
const RULES: &str = "[[rule]]\nid = \"never-then-echo\"\naction = \"block\"\nmessage = \"m\"\n\
                     steps = [{ tool = \"echo__never\" }, { tool = \"echo__echo\" }]\n";

fn main() -> ExitCode {
    entry::main("shared_state", bench)
}

#[derive(Debug)]
struct Row {
    target: &'static str,
    clients: usize,
    m: Measurement,
    /// µs of CPU per call: the gateway measured, Redis.
    gateway_us: Option<f64>,
    redis_us: Option<f64>,
    /// CPU used by everything but the gateway measured, Redis, the
    /// upstream and this process, as a share of the machine: noise.
    other_pct: Option<f64>,
}

fn bench(bench_mode: bool) -> Result<(), String> {
    let settings = Settings::from_env(bench_mode, (0.2, 0.5))?;
    let ticks = procs::clock_ticks();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lifetime = settings.lifetime(ROWS, Duration::ZERO);
    let mut upstream = Upstream::start(lifetime)?;
    let redis = RedisServer::start(lifetime)?;
    let dir = TempDir::new()?;
    std::fs::write(dir.0.join("rules.toml"), RULES).map_err(|e| e.to_string())?;
    let common = format!(
        "[rules]\nfile = \"rules.toml\"\n[limits.tools]\n\"echo__*\" = {{ rate = 1000000000.0, burst = 1000000000 }}\n\
         [upstreams.echo]\nurl = \"{}/mcp\"\n",
        upstream.base
    );
    let local_cfg = dir.0.join("local.toml");
    let redis_cfg = dir.0.join("redis.toml");
    std::fs::write(&local_cfg, &common).map_err(|e| e.to_string())?;
    std::fs::write(&redis_cfg, format!("[redis]\nurl = \"{}\"\nkey_prefix = \"bench:\"\n{common}", redis.url))
        .map_err(|e| e.to_string())?;
    let mut local = Gateway::start(&local_cfg, lifetime)?;
    let mut shared = Gateway::start(&redis_cfg, lifetime)?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (rows, rss) = rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?;
        for gw in [&local, &shared] {
            wait_ready(&http, &gw.base).await?;
        }
        let targets = [
            ("direct", Target { url: format!("{}/mcp", upstream.base), tool: "echo" }, None),
            ("local", Target { url: format!("{}/mcp", local.base), tool: "echo__echo" }, Some(local.pid())),
            ("redis", Target { url: format!("{}/mcp", shared.base), tool: "echo__echo" }, Some(shared.pid())),
        ];
        let mut rows = Vec::new();
        for clients in CONCURRENCY {
            for (name, target, pid) in &targets {
                eprintln!("shared_state: {name}, {clients} client(s) ...");
                let watch = [pid.unwrap_or(local.pid()), redis.pid(), upstream.pid(), std::process::id()];
                let m = load::run(&http, target, clients, settings.warmup, settings.measure, &watch).await?;
                let per_call = |i: usize| m.cpu_ticks[i].map(|t| t as f64 * 1e6 / ticks as f64 / m.calls() as f64);
                let (gateway_us, redis_us) = (per_call(0).filter(|_| pid.is_some()), per_call(1));
                if m.errors > 0 {
                    return Err(format!("{name}: {} calls failed", m.errors));
                }
                let ours: Option<u64> = m.cpu_ticks.iter().copied().sum();
                let capacity = m.elapsed.as_secs_f64() * ticks as f64 * cpus as f64;
                let other_pct = m
                    .machine_ticks
                    .zip(ours)
                    .map(|(all, ours)| (all.saturating_sub(ours) as f64 / capacity * 100.0).min(100.0));
                rows.push(Row { target: name, clients, m, gateway_us, redis_us, other_pct });
            }
        }
        let rss = [procs::peak_rss_kib(local.pid()), procs::peak_rss_kib(shared.pid())];
        Ok::<_, String>((rows, rss))
    })?;
    drop(rt);
    local.shutdown();
    shared.shutdown();
    upstream.shutdown();
    drop(redis);

    report(settings, &rows);
    let mb = |k: Option<u64>| k.map_or_else(|| "-".to_owned(), |k| format!("{:.1} MB", k as f64 / 1024.0));
    println!("peak RSS (VmHWM): local {}, redis {}", mb(rss[0]), mb(rss[1]));
    if !bench_mode || cfg!(debug_assertions) {
        println!("(smoke run: no --bench flag or an unoptimized build; these figures mean nothing)");
    }
    Ok(())
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<(), String> {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/status")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["upstreams"][0]["state"] == "ready"
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{base}: the upstream is not ready after 30 s"))
}

fn report(settings: Settings, rows: &[Row]) {
    println!();
    println!(
        "shared_state: tools/call (a rate limit and a two-step rule apply), state in process vs in Redis; \
         warm-up {:.1} s, measured {:.1} s per row",
        settings.warmup.as_secs_f64(),
        settings.measure.as_secs_f64()
    );
    println!();
    println!(
        "{:<7} {:>7} {:>9} {:>8} {:>8} {:>9} {:>11} {:>13} {:>7}",
        "target", "clients", "calls", "p50 ms", "p99 ms", "calls/s", "gw CPU µs", "redis CPU µs", "other %"
    );
    let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for r in rows {
        println!(
            "{:<7} {:>7} {:>9} {:>8.3} {:>8.3} {:>9.0} {:>11} {:>13} {:>7}",
            r.target,
            r.clients,
            r.m.calls(),
            r.m.percentile_ms(50.0),
            r.m.percentile_ms(99.0),
            r.m.throughput(),
            us(r.gateway_us),
            us(r.redis_us.filter(|_| r.target == "redis")),
            r.other_pct.map_or_else(|| "-".to_owned(), |p| format!("{p:.0}")),
        );
    }
    println!();
    let find = |t: &str, c: usize| rows.iter().find(|r| r.target == t && r.clients == c);
    for clients in CONCURRENCY {
        let (Some(l), Some(r)) = (find("local", clients), find("redis", clients)) else { continue };
        let (lp, rp) = (l.m.percentile_ms(50.0), r.m.percentile_ms(50.0));
        println!(
            "{clients} client(s): Redis adds {:+.3} ms at p50 ({rp:.3} / {lp:.3}); throughput redis/local = {:.2}; \
             gateway CPU per call {} → {} µs; Redis CPU per call {} µs",
            rp - lp,
            r.m.throughput() / l.m.throughput(),
            us(l.gateway_us),
            us(r.gateway_us),
            us(r.redis_us),
        );
    }
}
