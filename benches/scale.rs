//! The scale benchmark (issue 23: large catalogs, idle sessions, SSE
//! streams): what the gateway does at the limits the design brief names.
//!
//! It runs the release gateway twice, each time in front of 100 stdio
//! upstreams (this binary with `--echo-stdio --tools 100`: 100 tools each,
//! one of them `flip`, which changes the upstream's list and sends
//! `notifications/tools/list_changed`), so the merged catalog holds 10,000
//! tools (`page_size = 0`: one page).
//!
//! First gateway, no `[auth]` and no `[[access]]` (every session sees
//! everything):
//!
//! 1. `tools/list` round trips over HTTP from the catalog, p50 and p99
//!    (target p50 ≤ 2 ms);
//! 2. `u000__flip`, then the time from its reply until the session's GET
//!    stream carries `list_changed` (this also counts the upstream's
//!    notification, the gateway's `tools/list` to it and the SSE write),
//!    each time checked against the catalog (`t000`'s description names
//!    the new generation); and the rebuild's own time, the mean of
//!    `mcp_gateway_catalog_rebuild_duration_seconds` over the flips
//!    (target ≤ 5 ms);
//! 3. 10,000 sessions opened (`initialize` + `notifications/initialized`)
//!    and left idle: the gateway's RSS (`VmRSS`) before and after, bytes per
//!    session (target ≤ 16 KiB) and live tasks per session (`/status`
//!    `runtime.alive_tasks`);
//! 4. 1,000 more sessions with a GET stream each, and a flip with all of
//!    them open: how long until every stream was told.
//!
//! A gateway of its own, one upstream, nothing else done on it first:
//! 1,000 idle kept-alive connections (one `GET /healthz` each, no
//! session), what a connection alone costs; then 1,000 sessions and a GET
//! stream on each: RSS and live tasks per stream, on top of their sessions
//! (targets ≤ 16 KiB, ≤ 1 task). Measured in the first gateway instead,
//! after the sessions and the 2.7 MB lists, the same figure moved between
//! 17 and 31 KiB from run to run for one build (which freed memory the
//! allocator reuses, in which thread's arena); a fresh gateway repeats
//! within a few hundred bytes. The first gateway's figure is still
//! printed, marked as such.
//!
//! Second gateway, API keys and `[[access]]`: principal `wide` sees
//! everything, `narrow` everything but `u000`. One session each, a GET stream
//! each: `tools/list` for both (the filtered list for `narrow`), flips of
//! `u000` (only `wide` may be told), then 50 more `wide` sessions with
//! streams and a flip: how long until the last one was told, what each
//! session adds, and the catalog task's time per rebuild with them (what a
//! session sees is worked out once per set of grants, not per session).
//!
//! Timing never fails a run; a wrong count, a flip not seen or a refused
//! request does. `cargo bench --bench scale` (about a minute). Without
//! `--bench` (e.g. `cargo test --bench scale`) it runs as a quick smoke test:
//! 5 upstreams × 20 tools, 200 idle sessions, 50 streams.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/echo_upstream.rs"]
mod echo_upstream;
// Its warm-up and measured times are the other benches'; this one counts.
#[allow(dead_code)]
#[path = "support/entry.rs"]
mod entry;
// Shared with the other benches; this one only opens sessions with it.
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;
// Shared with the other benches; this one starts no HTTP upstream.
#[allow(dead_code)]
#[path = "support/procs.rs"]
mod procs;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::mpsc;
// tokio's Instant (clippy.toml): the real clock here, as nothing pauses time.
use tokio::time::Instant;

use clients::{Flip, Principal, Watched, pct_ms};
use load::Session;
use procs::{Gateway, TempDir};

/// The histogram of the catalog task's time per rebuild.
const REBUILD: &str = "mcp_gateway_catalog_rebuild_duration_seconds";

/// The API keys of the second gateway.
const WIDE_KEY: &str = "scale-wide-key-0123456789";
const NARROW_KEY: &str = "scale-narrow-key-0123456789";

/// How big each part is.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    upstreams: usize,
    tools: usize,
    list_calls: usize,
    flips: usize,
    sessions: usize,
    streams: usize,
    extra: usize,
}

const FULL: Sizes =
    Sizes { upstreams: 100, tools: 100, list_calls: 200, flips: 20, sessions: 10_000, streams: 1_000, extra: 50 };
const SMOKE: Sizes = Sizes { upstreams: 5, tools: 20, list_calls: 10, flips: 2, sessions: 200, streams: 50, extra: 5 };

/// Upper bound on each gateway's life (its watchdog stops it then).
const LIFETIME: Duration = Duration::from_secs(600);
/// Time given to the gateway to finish what a burst of requests left.
const SETTLE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    entry::main("scale", bench)
}

fn bench(bench_mode: bool) -> Result<(), String> {
    let sizes = if bench_mode { FULL } else { SMOKE };
    if !bench_mode {
        eprintln!("scale: no --bench flag, running as a quick smoke test");
    }
    let started = Instant::now();
    let dir = TempDir::new()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;

    let open = write_config(&dir.0.join("open.toml"), sizes, "")?;
    let mut gateway = Gateway::start(&open, LIFETIME)?;
    let first = rt.block_on(open_gateway(sizes, &gateway));
    gateway.shutdown();
    let first = first?;

    let one = Sizes { upstreams: 1, tools: 5, ..sizes };
    let fresh = write_config(&dir.0.join("fresh.toml"), one, "")?;
    let mut gateway = Gateway::start(&fresh, LIFETIME)?;
    let streams = rt.block_on(fresh_gateway(one, &gateway));
    gateway.shutdown();
    let streams = streams?;

    let policy = format!(
        "[auth]\nresource = \"http://127.0.0.1/mcp\"\n\
         [[auth.api_keys]]\nprincipal = \"wide\"\nsha256 = \"{}\"\ngroups = [\"admin\"]\n\
         [[auth.api_keys]]\nprincipal = \"narrow\"\nsha256 = \"{}\"\n\
         [[access]]\ngroups = [\"admin\"]\ntools = {{ allow = [\"*\"] }}\n\
         [[access]]\nprincipals = [\"narrow\"]\ntools = {{ allow = [\"*\"], deny = [\"u000__*\"] }}\n",
        mcp_gateway::security::auth::hash_key(WIDE_KEY),
        mcp_gateway::security::auth::hash_key(NARROW_KEY),
    );
    let policy = write_config(&dir.0.join("policy.toml"), sizes, &policy)?;
    let mut gateway = Gateway::start(&policy, LIFETIME)?;
    let second = rt.block_on(policy_gateway(sizes, &gateway));
    gateway.shutdown();
    let second = second?;
    drop(rt);

    report(sizes, &first, &second, &streams, started.elapsed());
    if !bench_mode || cfg!(debug_assertions) {
        println!("(smoke run: no --bench flag or an unoptimized build; these figures mean nothing)");
    }
    Ok(())
}

/// The gateway's config: limits raised for the run, `page_size = 0`, the
/// upstreams, and `extra` (auth, access) before them.
fn write_config(path: &Path, sizes: Sizes, extra: &str) -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut text = format!(
        "[gateway]\nmax_sessions = {}\nmax_sessions_per_principal = {}\nmax_connections = 4096\n\
         connection_idle_timeout = \"5m\"\npage_size = 0\n{extra}",
        2 * (sizes.sessions + sizes.streams),
        2 * (sizes.sessions + sizes.streams),
    );
    for i in 0..sizes.upstreams {
        text.push_str(&format!(
            "[upstreams.u{i:03}]\ncommand = {:?}\nargs = [\"--echo-stdio\", \"--tools\", \"{}\"]\n",
            exe.display().to_string(),
            sizes.tools
        ));
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.to_owned())
}

/// Polls `/status` until every upstream is ready and the catalog holds all
/// their tools.
async fn wait_ready(http: &reqwest::Client, base: &str, sizes: Sizes) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(v) = clients::status(http, base).await {
            let ups = v["upstreams"].as_array().map(Vec::as_slice).unwrap_or_default();
            let ready = ups.iter().filter(|u| u["state"] == "ready").count();
            if ready == sizes.upstreams && v["tools"].as_u64() == Some((sizes.upstreams * sizes.tools) as u64) {
                return Ok(started.elapsed());
            }
            last = format!("{ready} of {} upstreams ready, {} tools", sizes.upstreams, v["tools"]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the gateway's upstreams are not ready after 60 s: {last}"))
}

/// What `tools/list` measured: sorted latencies, the reply's size, and
/// the gateway's CPU per call in µs.
type Listed = (Vec<Duration>, usize, Option<f64>);

/// `tools/list` round trips on `session` (the gateway is `pid`); the first
/// reply must list `expect` tools.
async fn list_latency(p: &Principal, s: &Session, calls: usize, expect: usize, pid: u32) -> Result<Listed, String> {
    let first = p.request(s, 1, "tools/list", "{}").await?;
    let v: serde_json::Value = serde_json::from_slice(&first).map_err(|e| e.to_string())?;
    let listed = v["result"]["tools"].as_array().map_or(0, Vec::len);
    if listed != expect || v["result"].get("nextCursor").is_some() {
        return Err(format!("tools/list listed {listed} tools on its first page, expected all {expect}"));
    }
    for id in 0..calls.div_ceil(10) {
        p.request(s, 2 + id as u64, "tools/list", "{}").await?;
    }
    let mut took = Vec::with_capacity(calls);
    let before = procs::cpu_ticks(pid);
    for id in 0..calls {
        let t = Instant::now();
        p.request(s, 1000 + id as u64, "tools/list", "{}").await?;
        took.push(t.elapsed());
    }
    let ticks = procs::cpu_ticks(pid).zip(before).map(|(a, b)| a.saturating_sub(b));
    let cpu_us = ticks.map(|t| t as f64 * 1e6 / procs::clock_ticks() as f64 / calls as f64);
    took.sort_unstable();
    Ok((took, first.len(), cpu_us))
}

/// What the first gateway measured.
#[derive(Debug)]
struct Open {
    ready: Duration,
    list: Vec<Duration>,
    list_bytes: usize,
    list_cpu_us: Option<f64>,
    flips: Vec<Flip>,
    /// The catalog task's time over the flips' rebuilds (seconds) and how
    /// many there were, when the gateway exports it.
    rebuilds: Option<(f64, u64)>,
    /// (RSS KiB, live tasks) before the idle sessions, after half of them,
    /// after all.
    idle: [(u64, u64); 3],
    idle_took: Duration,
    /// (RSS KiB, live tasks) with the streams' sessions, then their streams
    /// (after everything above: see the module docs).
    streams: [(u64, u64); 2],
    everyone: Vec<Flip>,
}

/// What the gateway of its own measured: (RSS KiB, live tasks).
#[derive(Debug)]
struct Streams {
    /// Before and after the idle connections.
    conns: [(u64, u64); 2],
    /// With the streams' sessions, then their streams.
    streams: [(u64, u64); 2],
}

/// (RSS KiB, live tasks) of the gateway, once it has settled.
async fn sample(p: &Principal, gw: &Gateway) -> Result<(u64, u64), String> {
    tokio::time::sleep(SETTLE).await;
    let tasks = clients::alive_tasks(&p.http, &gw.base).await?;
    Ok((procs::rss_kib(gw.pid()).ok_or("cannot read the gateway's VmRSS")?, tasks))
}

/// Connections and streams on a gateway that has done nothing else.
async fn fresh_gateway(sizes: Sizes, gw: &Gateway) -> Result<Streams, String> {
    let p = Principal::new(&gw.base, None)?;
    wait_ready(&p.http, &gw.base, sizes).await?;
    let sample = || sample(&p, gw);
    eprintln!("scale: a gateway of its own: {} idle keep-alive connections ...", sizes.streams);
    let before = sample().await?;
    let conns = clients::idle_connections(&gw.base, sizes.streams).await?;
    let with_conns = sample().await?;
    eprintln!("scale: a gateway of its own: {} sessions with a GET stream each ...", sizes.streams);
    let owners = p.open_many(sizes.streams).await?;
    let with_sessions = sample().await?;
    let (tx, _rx) = mpsc::unbounded_channel();
    let readers = p.watch_many(&owners, 0, &tx).await?;
    let with_streams = sample().await?;
    if let Some(n) = readers.iter().position(tokio::task::JoinHandle::is_finished) {
        return Err(format!("GET stream {n} ended while the others were opened"));
    }
    for r in &readers {
        r.abort();
    }
    drop(conns);
    Ok(Streams { conns: [before, with_conns], streams: [with_sessions, with_streams] })
}

async fn open_gateway(sizes: Sizes, gw: &Gateway) -> Result<Open, String> {
    let p = Principal::new(&gw.base, None)?;
    let ready = wait_ready(&p.http, &gw.base, sizes).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = p.open().await?;
    let mut readers = vec![p.watch(&a, 0, tx.clone()).await?];
    tokio::time::sleep(Duration::from_millis(300)).await;

    eprintln!("scale: tools/list × {} ...", sizes.list_calls);
    let (list, list_bytes, list_cpu_us) =
        list_latency(&p, &a, sizes.list_calls, sizes.upstreams * sizes.tools, gw.pid()).await?;

    eprintln!("scale: {} flips ...", sizes.flips);
    let one = Watched { expect: &[0], silent: &[], patience: Duration::from_secs(5) };
    let mut flips = Vec::new();
    let rebuilt = clients::histogram(&p.http, &gw.base, REBUILD).await?;
    for k in 1..=sizes.flips {
        let f = clients::flip(&p, &a, 5000 + k as u64, "u000__flip", &mut rx, &one).await?;
        if f.missing > 0 {
            return Err(format!("flip {k}: no list_changed on the GET stream within 5 s"));
        }
        let listed = p.request(&a, 6000 + k as u64, "tools/list", "{}").await?;
        if memchr::memmem::find(&listed, format!("tool list generation {k}.").as_bytes()).is_none() {
            return Err(format!("flip {k}: told list_changed, but tools/list does not show generation {k}"));
        }
        flips.push(f);
    }
    let rebuilds = since(rebuilt, clients::histogram(&p.http, &gw.base, REBUILD).await?);

    let sample = || sample(&p, gw);
    eprintln!("scale: {} idle sessions ...", sizes.sessions);
    let before = sample().await?;
    let counted = clients::open_sessions(&p.http, &gw.base).await?;
    // In two halves: memory the gateway freed earlier (catalogs, list
    // replies) is reused first, which hides part of the first half's cost.
    let t = Instant::now();
    let mut idle = p.open_many(sizes.sessions / 2).await?;
    let half = sample().await?;
    idle.extend(p.open_many(sizes.sessions - sizes.sessions / 2).await?);
    let idle_took = t.elapsed() - SETTLE;
    let after = sample().await?;
    let now = clients::open_sessions(&p.http, &gw.base).await?;
    if now != counted + sizes.sessions as u64 {
        return Err(format!("{} sessions opened, but the gateway counts {counted} → {now}", sizes.sessions));
    }

    eprintln!("scale: {} sessions with a GET stream each ...", sizes.streams);
    let owners = p.open_many(sizes.streams).await?;
    let with_sessions = sample().await?;
    readers.extend(p.watch_many(&owners, 1, &tx).await?);
    let with_streams = sample().await?;

    eprintln!("scale: flips with every session open ...");
    let all: Vec<usize> = (0..=sizes.streams).collect();
    let every = Watched { expect: &all, silent: &[], patience: Duration::from_secs(30) };
    let mut everyone = Vec::new();
    for k in sizes.flips + 1..=sizes.flips + 2 {
        let f = clients::flip(&p, &a, 7000 + k as u64, "u000__flip", &mut rx, &every).await?;
        if f.missing > 0 {
            return Err(format!("flip with every session open: {} streams not told within 30 s", f.missing));
        }
        everyone.push(f);
    }
    for r in &readers {
        r.abort();
    }
    drop(idle);
    Ok(Open {
        ready,
        list,
        list_bytes,
        list_cpu_us,
        flips,
        rebuilds,
        idle: [before, half, after],
        idle_took,
        streams: [with_sessions, with_streams],
        everyone,
    })
}

/// What the second gateway measured.
#[derive(Debug)]
struct Policy {
    wide_list: Vec<Duration>,
    narrow_list: Vec<Duration>,
    flips: Vec<Flip>,
    /// `list_changed` the narrow session got during and after the flips.
    narrow_told: usize,
    extra: Vec<Flip>,
    /// The catalog task's time over the rebuilds of `extra` (seconds), and
    /// how many.
    extra_rebuilds: Option<(f64, u64)>,
}

async fn policy_gateway(sizes: Sizes, gw: &Gateway) -> Result<Policy, String> {
    let wide = Principal::new(&gw.base, Some(WIDE_KEY))?;
    let narrow = Principal::new(&gw.base, Some(NARROW_KEY))?;
    wait_ready(&wide.http, &gw.base, sizes).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (a, b) = (wide.open().await?, narrow.open().await?);
    let mut readers = vec![wide.watch(&a, 0, tx.clone()).await?, narrow.watch(&b, 1, tx.clone()).await?];
    tokio::time::sleep(Duration::from_millis(300)).await;

    eprintln!("scale: [[access]]: tools/list, wide and narrow ...");
    let all = sizes.upstreams * sizes.tools;
    let calls = sizes.list_calls / 2;
    let (wide_list, _, _) = list_latency(&wide, &a, calls, all, gw.pid()).await?;
    let (narrow_list, _, _) = list_latency(&narrow, &b, calls, all - sizes.tools, gw.pid()).await?;

    eprintln!("scale: [[access]]: {} flips ...", sizes.flips);
    let only_wide = Watched { expect: &[0], silent: &[1], patience: Duration::from_secs(5) };
    let mut flips = Vec::new();
    for k in 1..=sizes.flips {
        let f = clients::flip(&wide, &a, 5000 + k as u64, "u000__flip", &mut rx, &only_wide).await?;
        if f.missing > 0 {
            return Err(format!("flip {k}: the wide session got no list_changed within 5 s"));
        }
        flips.push(f);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut narrow_told: usize = flips.iter().map(|f| f.unexpected).sum();
    while let Ok((tag, _)) = rx.try_recv() {
        narrow_told += usize::from(tag == 1);
    }

    eprintln!("scale: [[access]]: {} more sessions with streams, flips ...", sizes.extra);
    let more = wide.open_many(sizes.extra).await?;
    readers.extend(wide.watch_many(&more, 2, &tx).await?);
    tokio::time::sleep(SETTLE).await;
    let expect: Vec<usize> = std::iter::once(0).chain(2..2 + sizes.extra).collect();
    let every = Watched { expect: &expect, silent: &[1], patience: Duration::from_secs(30) };
    let mut extra = Vec::new();
    let rebuilt = clients::histogram(&wide.http, &gw.base, REBUILD).await?;
    for k in sizes.flips + 1..=sizes.flips + 3 {
        let f = clients::flip(&wide, &a, 7000 + k as u64, "u000__flip", &mut rx, &every).await?;
        if f.missing > 0 {
            return Err(format!("flip with {} sessions: {} not told within 30 s", sizes.extra + 2, f.missing));
        }
        narrow_told += f.unexpected;
        extra.push(f);
    }
    let extra_rebuilds = since(rebuilt, clients::histogram(&wide.http, &gw.base, REBUILD).await?);
    for r in &readers {
        r.abort();
    }
    Ok(Policy { wide_list, narrow_list, flips, narrow_told, extra, extra_rebuilds })
}

fn report(sizes: Sizes, o: &Open, p: &Policy, f: &Streams, took: Duration) {
    let tools = sizes.upstreams * sizes.tools;
    println!();
    println!(
        "scale: {} stdio upstreams × {} tools = {tools} tools; tools/list reply {:.2} MB; all upstreams ready {:.1} s \
         after start; whole run {:.0} s",
        sizes.upstreams,
        sizes.tools,
        o.list_bytes as f64 / 1e6,
        o.ready.as_secs_f64(),
        took.as_secs_f64()
    );
    println!();
    let list =
        |d: &[Duration]| format!("p50 {:.3} ms, p99 {:.3} ms ({} calls)", pct_ms(d, 50.0), pct_ms(d, 99.0), d.len());
    println!(
        "tools/list, merged, from the catalog:         {}    target p50 ≤ 2 ms {}",
        list(&o.list),
        verdict(pct_ms(&o.list, 50.0) <= 2.0)
    );
    if let Some(cpu) = o.list_cpu_us {
        println!(
            "  gateway CPU per tools/list: {:.2} ms (the rest of the round trip is the client reading the reply)",
            cpu / 1e3
        );
    }
    println!("  with [[access]], wide (everything):         {}", list(&p.wide_list));
    println!("  with [[access]], narrow (all but u000):     {}", list(&p.narrow_list));

    let first = |f: &[Flip]| {
        let mut d: Vec<Duration> = f.iter().filter_map(|f| f.after.first().copied()).collect();
        d.sort_unstable();
        d
    };
    let last = |f: &[Flip]| {
        let mut d: Vec<Duration> = f.iter().filter_map(|f| f.after.last().copied()).collect();
        d.sort_unstable();
        d
    };
    let call: Vec<Duration> = {
        let mut d: Vec<Duration> = o.flips.iter().map(|f| f.call).collect();
        d.sort_unstable();
        d
    };
    let told = first(&o.flips);
    println!(
        "flip reply → list_changed on the GET stream:  p50 {:.3} ms, max {:.3} ms ({} flips; the flip call itself p50 {:.3} ms)    \
         target ≤ 5 ms for the rebuild {}",
        pct_ms(&told, 50.0),
        pct_ms(&told, 100.0),
        told.len(),
        pct_ms(&call, 50.0),
        verdict(pct_ms(&told, 50.0) <= 5.0)
    );
    println!(
        "  (upstream notification + the gateway's tools/list to it + rebuild + SSE write: an upper bound of the rebuild)"
    );
    match o.rebuilds {
        Some(r) => println!(
            "  the rebuild itself (catalog task, mcp_gateway_catalog_rebuild_duration_seconds): mean {:.3} ms over {} rebuilds    \
             target ≤ 5 ms {}",
            mean_ms(r),
            r.1,
            verdict(mean_ms(r) <= 5.0)
        ),
        None => println!(
            "  the rebuild itself: not measured (this gateway has no mcp_gateway_catalog_rebuild_duration_seconds)"
        ),
    }
    let pt = first(&p.flips);
    println!(
        "  with [[access]], 2 sessions:                p50 {:.3} ms, max {:.3} ms",
        pct_ms(&pt, 50.0),
        pct_ms(&pt, 100.0)
    );
    println!(
        "notifies only sessions whose view changed:    narrow session told {} times in {} flips of u000 (wide told every time) {}",
        p.narrow_told,
        p.flips.len() + p.extra.len(),
        verdict(p.narrow_told == 0)
    );
    let pl = last(&p.extra);
    let per = (pct_ms(&pl, 50.0) - pct_ms(&pt, 50.0)) / sizes.extra as f64;
    println!(
        "  with [[access]], {} sessions: last told p50 {:.3} ms after the reply: about {per:.3} ms more per session",
        sizes.extra + 2,
        pct_ms(&pl, 50.0),
    );
    if let Some(r) = p.extra_rebuilds {
        println!(
            "  with [[access]], {} sessions: the catalog task's rebuild (telling them included) mean {:.3} ms over {} rebuilds",
            sizes.extra + 2,
            mean_ms(r),
            r.1
        );
    }
    let el = last(&o.everyone);
    let ef = first(&o.everyone);
    println!(
        "  no [[access]], {} sessions ({} with a stream): first stream told {:.3} ms, last {:.3} ms after the reply (p50 of {})",
        sizes.sessions + sizes.streams + 1,
        sizes.streams + 1,
        pct_ms(&ef, 50.0),
        pct_ms(&el, 50.0),
        el.len()
    );

    let [(r0, t0), (rh, _), (r1, t1)] = o.idle;
    let per_session = (r1 as f64 - r0 as f64) * 1024.0 / sizes.sessions as f64;
    let halves = [rh as f64 - r0 as f64, r1 as f64 - rh as f64].map(|d| d * 1024.0 / (sizes.sessions / 2) as f64);
    println!(
        "idle sessions: {} opened in {:.1} s; RSS {:.1} → {:.1} MB: {:.0} B ({:.1} KiB) per session, {:+.2} tasks per session    \
         target ≤ 16 KiB {}",
        sizes.sessions,
        o.idle_took.as_secs_f64(),
        r0 as f64 / 1024.0,
        r1 as f64 / 1024.0,
        per_session,
        per_session / 1024.0,
        (t1 as f64 - t0 as f64) / sizes.sessions as f64,
        verdict(per_session.max(halves[1]) <= 16.0 * 1024.0)
    );
    println!(
        "  first half {:.0} B per session, second half {:.0} B (the first reuses memory freed before; judged by the larger \
         of the second half and the whole)",
        halves[0], halves[1]
    );
    let [(rc0, tc0), (rc1, tc1)] = f.conns;
    let per_conn = (rc1 as f64 - rc0 as f64) * 1024.0 / sizes.streams as f64;
    println!(
        "a gateway of its own, idle keep-alive connections (one GET /healthz each, no session): {}; {:.0} B ({:.1} KiB) and {:+.2} tasks per connection             no target (the part of a stream's cost that is its connection)",
        sizes.streams,
        per_conn,
        per_conn / 1024.0,
        (tc1 as f64 - tc0 as f64) / sizes.streams as f64
    );
    let [(r2, t2), (r3, t3)] = f.streams;
    let per_stream = (r3 as f64 - r2 as f64) * 1024.0 / sizes.streams as f64;
    let tasks = (t3 as f64 - t2 as f64) / sizes.streams as f64;
    println!(
        "a gateway of its own, GET streams: {} open; RSS {:.1} → {:.1} MB: {:.0} B ({:.1} KiB) per stream    target ≤ 16 KiB {}",
        sizes.streams,
        r2 as f64 / 1024.0,
        r3 as f64 / 1024.0,
        per_stream,
        per_stream / 1024.0,
        verdict(per_stream <= 16.0 * 1024.0)
    );
    println!(
        "  less an idle connection's cost: {:.0} B ({:.1} KiB) per stream for the stream itself",
        per_stream - per_conn,
        (per_stream - per_conn) / 1024.0
    );
    println!("  live tasks {t2} → {t3}: {tasks:.2} per stream    target ≤ 1 {}", verdict(tasks <= 1.0));
    let [(r4, t4), (r5, t5)] = o.streams;
    let churned = (r5 as f64 - r4 as f64) * 1024.0 / sizes.streams as f64;
    println!(
        "  in the first gateway, after its sessions and lists: {:.0} B ({:.1} KiB) and {:+.2} tasks per stream (moves by \
         ±7 KiB between runs with the allocator's state; not the target's figure)",
        churned,
        churned / 1024.0,
        (t5 as f64 - t4 as f64) / sizes.streams as f64
    );
    println!("(RSS is VmRSS from /proc; tasks are /status runtime.alive_tasks; targets are printed, never asserted)");
}

/// What a histogram's (sum, count) grew by between two looks.
fn since(before: Option<(f64, u64)>, after: Option<(f64, u64)>) -> Option<(f64, u64)> {
    let ((s0, c0), (s1, c1)) = (before?, after?);
    Some((s1 - s0, c1.saturating_sub(c0)))
}

/// The mean of a (sum in seconds, count), in ms.
fn mean_ms((sum, count): (f64, u64)) -> f64 {
    sum * 1e3 / count.max(1) as f64
}

fn verdict(met: bool) -> &'static str {
    if met { "(met)" } else { "(not met)" }
}
