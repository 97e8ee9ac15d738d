//! The isolation benchmark (design.md D5–D7): a hanging upstream with
//! hundreds of stuck calls must not cost another upstream latency or
//! throughput. Bulkheads bound what the stuck upstream holds; this shows,
//! in one sitting, that what is left over is noise.
//!
//! It starts two lean echo MCP servers, `a` and `b` (this binary with
//! `--echo-upstream`), and one gateway in front of both; `b` gets 32 slots,
//! 64 queue places, a 10-minute request timeout and no health pings, so
//! calls to its `hang` tool stay stuck. For each concurrency (1 and 16
//! clients) it warms up and measures `a__echo` round trips over Streamable
//! HTTP twice, after one unmeasured priming pass over both concurrencies:
//!
//! - baseline: `b` idle;
//! - stuck: after 300 concurrent `b__hang` calls were opened (32 in flight,
//!   64 queued, the other 204 refused at once as `overloaded`), with a
//!   trickle of new `b__hang` calls (50/s, each refused at once) running
//!   through the warm-up and the measurement;
//!
//! and then once more as a control:
//!
//! - recovered: after the stuck callers hung up, `b` idle again. Rows of
//!   one run drift by several percent on a small machine with nothing
//!   changing between them; recovered/baseline shows how much in this run,
//!   which is what "beyond noise" is measured against.
//!
//! It prints p50, p99, calls/s and the gateway's CPU per call for each row,
//! the ratios stuck/baseline (the target is ≈ 1.0: no measurable cost) next
//! to recovered/baseline, and how fast the refused calls came back. Timing
//! never fails a run; a run fails only when something functional is wrong:
//! a refused call with another class (or not refused at once), a stuck call
//! that came back, bulkhead counts other than 32 + 64, a failed `a__echo`
//! call, or a dead gateway.
//!
//! `cargo bench --bench isolation`; `BENCH_WARMUP_SECS` and `BENCH_SECS`
//! (default 2 and 10) set the warm-up and measured time per row. Without
//! `--bench` (e.g. `cargo test --all-targets`) it runs as a quick smoke test
//! (0.1 s and 0.4 s unless those variables say otherwise; about 4 s in all).

#[path = "support/echo_upstream.rs"]
mod echo_upstream;
#[path = "support/entry.rs"]
mod entry;
#[path = "support/load.rs"]
mod load;
#[path = "support/procs.rs"]
mod procs;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
// tokio's Instant (clippy.toml): the real clock here, as nothing pauses time.
use tokio::time::Instant;

use entry::Settings;
use load::{Measurement, Target};
use procs::{Gateway, TempDir, Upstream};

const CONCURRENCY: [usize; 2] = [1, 16];
/// Measured rows per run, and other waits: the children's lifetime.
const ROWS: u32 = (4 * CONCURRENCY.len()) as u32;
const EXTRA: Duration = SETTLE_TIMEOUT;
/// `b`'s bulkhead slots (`max_concurrency`).
const B_SLOTS: usize = 32;
/// `b`'s bulkhead queue (`max_queue`).
const B_QUEUE: usize = 64;
/// `b__hang` calls opened before the stuck rows.
const STUCK_CALLS: usize = 300;
/// New `b__hang` calls per second during the stuck rows.
const TRICKLE_PER_SEC: u64 = 50;
/// A refused call slower than this counts as not refused at once (it was
/// queued, so a slot or a queue place came free: a functional failure).
const REFUSAL_DEADLINE: Duration = Duration::from_secs(5);
/// Above this share of the machine's CPU used by other processes during a
/// row, the report warns that the row was disturbed (percent).
const NOISY_OTHER_PCT: f64 = 5.0;
/// How long the stuck calls get to settle into 32 + 64 + refusals.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    entry::main("isolation", bench)
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    phase: &'static str,
    clients: usize,
    m: Measurement,
    /// Microseconds of the gateway's CPU per measured `a__echo` call (in the
    /// stuck rows this includes handling the trickle).
    gw_cpu_us: Option<f64>,
    /// Share of the machine's CPU capacity used by processes other than the
    /// gateway, the upstreams and this process (noise), in percent.
    other_cpu_pct: Option<f64>,
}

/// What the stuck `b__hang` calls did.
#[derive(Debug, Default)]
struct Stuck {
    /// Refused at once, with their latencies, sorted.
    refused: Vec<Duration>,
    /// Still open when the stuck rows began.
    stuck: usize,
    /// `b`'s bulkhead in `/status` then: in flight, queued, rejected.
    bulkhead: (u64, u64, u64),
    /// `hang` requests `b` itself held open then.
    b_hanging: Option<u64>,
}

/// What the trickle of new `b__hang` calls during the stuck rows did.
#[derive(Debug, Default)]
struct Trickle {
    /// Refused as `overloaded`, with their latencies, sorted.
    refused: Vec<Duration>,
    /// Calls that came back otherwise (another class, a result, an HTTP
    /// error) or not within [`REFUSAL_DEADLINE`].
    wrong: Vec<String>,
    /// How long the trickle ran.
    elapsed: Duration,
}

/// Everything a run measured and observed.
#[derive(Debug)]
struct Report {
    rows: Vec<Row>,
    stuck: Stuck,
    trickle: Trickle,
    /// `b`'s bulkhead (in flight, queued) and `b`'s open `hang` requests a
    /// moment after the stuck callers hung up (informational).
    after_hang_up: Option<((u64, u64), Option<u64>)>,
    /// The gateway's peak RSS (VmHWM) in KiB, read before the stuck
    /// callers hung up.
    peak_rss_kib: Option<u64>,
    /// Functional failures: any makes the run fail, after the report.
    problems: Vec<String>,
}

fn bench(bench_mode: bool) -> Result<(), String> {
    let settings = Settings::from_env(bench_mode, (0.1, 0.4))?;
    if !bench_mode {
        eprintln!("isolation: no --bench flag, running as a quick smoke test");
    }
    let ticks = procs::clock_ticks();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Declared in this order so drop stops the gateway before its upstreams.
    let mut a = Upstream::start(settings.lifetime(ROWS, EXTRA))?;
    let mut b = Upstream::start(settings.lifetime(ROWS, EXTRA))?;
    let dir = TempDir::new()?;
    let config = dir.0.join("gateway.toml");
    let toml = format!(
        "[upstreams.a]\nurl = \"{}/mcp\"\n\n\
         [upstreams.b]\nurl = \"{}/mcp\"\nmax_concurrency = {B_SLOTS}\nmax_queue = {B_QUEUE}\n\
         request_timeout = \"10m\"\n\n[upstreams.b.health]\ninterval = \"0s\"\n",
        a.base, b.base
    );
    std::fs::write(&config, toml).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut gateway = Gateway::start(&config, settings.lifetime(ROWS, EXTRA))?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let report = rt.block_on(measure_all(settings, ticks, cpus, [&a, &b], &gateway));
    // Dropping the runtime aborts the stuck calls still open (if any).
    drop(rt);

    gateway.shutdown();
    b.shutdown();
    a.shutdown();

    let report = report?;
    print_report(settings, cpus, &report);
    if !bench_mode || cfg!(debug_assertions) {
        println!("(smoke run: no --bench flag or an unoptimized build; these figures mean nothing)");
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} functional problem(s):\n  {}", report.problems.len(), report.problems.join("\n  ")))
    }
}

async fn measure_all(
    settings: Settings,
    ticks: u64,
    cpus: usize,
    [a, b]: [&Upstream; 2],
    gateway: &Gateway,
) -> Result<Report, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    // Its own client (own connection pool, no overall timeout) for the
    // `b__hang` calls, so they never share connections with the load.
    let hang_http = reqwest::Client::builder().tcp_nodelay(true).build().map_err(|e| e.to_string())?;
    wait_ready(&http, &gateway.base).await?;

    let mcp = format!("{}/mcp", gateway.base);
    let echo = Target { url: mcp.clone(), tool: "a__echo" };
    let hang = Target { url: mcp, tool: "b__hang" };
    let watch = [gateway.pid(), a.pid(), b.pid(), std::process::id()];
    let mut problems = Vec::new();
    let mut rows = Vec::new();

    // Priming, not measured: the first rows of a fresh gateway differ from
    // later ones with nothing else changing (the 1-client row is faster and
    // the 16-client row slower before the gateway has once run 16 clients),
    // which would bias every ratio to the baseline. After one pass over
    // both concurrencies each measured row has the same history.
    for clients in CONCURRENCY {
        eprintln!("isolation: priming, {clients} client(s) ...");
        load::run(&http, &echo, clients, settings.warmup, settings.warmup, &watch).await?;
    }
    for clients in CONCURRENCY {
        eprintln!("isolation: baseline, {clients} client(s) ...");
        let m = load::run(&http, &echo, clients, settings.warmup, settings.measure, &watch).await?;
        rows.push(row("baseline", clients, m, ticks, cpus));
    }

    eprintln!("isolation: opening {STUCK_CALLS} b__hang calls ...");
    let session = Arc::new(load::open_session(&hang_http, &hang).await?.headers);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Duration, Outcome)>();
    let mut stuck_calls: Vec<JoinHandle<()>> = Vec::with_capacity(STUCK_CALLS);
    for i in 0..STUCK_CALLS {
        let (http, url, session, done) = (hang_http.clone(), hang.url.clone(), session.clone(), done_tx.clone());
        stuck_calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = call_hang(&http, &url, &session, i as u64 + 1).await;
            let _ = done.send((started.elapsed(), outcome));
        }));
    }
    drop(done_tx);
    let stuck = settle(&http, &gateway.base, &b.base, &mut done_rx).await?;

    let (stop_tx, stop_rx) = oneshot::channel();
    let trickle = tokio::spawn(trickle(hang_http.clone(), hang.url.clone(), session.clone(), stop_rx));
    for clients in CONCURRENCY {
        eprintln!("isolation: stuck, {clients} client(s) ...");
        let m = load::run(&http, &echo, clients, settings.warmup, settings.measure, &watch).await?;
        rows.push(row("stuck", clients, m, ticks, cpus));
    }
    let _ = stop_tx.send(());
    let trickle = trickle.await.map_err(|e| format!("trickle task: {e}"))?;

    // Still stuck, and the gateway still alive?
    while let Ok((took, outcome)) = done_rx.try_recv() {
        problems.push(format!("a stuck b__hang call came back after {took:.1?}: {outcome:?}"));
    }
    match bulkhead(&http, &gateway.base).await {
        Ok((in_flight, queued, _)) if (in_flight, queued) == (B_SLOTS as u64, B_QUEUE as u64) => {}
        Ok((in_flight, queued, _)) => problems.push(format!(
            "after the stuck rows b's bulkhead shows {in_flight} in flight and {queued} queued, \
             expected {B_SLOTS} and {B_QUEUE}"
        )),
        Err(e) => problems.push(format!("the gateway does not answer /status after the stuck rows: {e}")),
    }
    if procs::cpu_ticks(gateway.pid()).is_none() {
        problems.push("the gateway process is gone".to_owned());
    }
    problems.extend(trickle.wrong.iter().take(5).map(|w| format!("a trickle b__hang call: {w}")));
    if trickle.wrong.len() > 5 {
        problems.push(format!("... and {} more trickle calls like those", trickle.wrong.len() - 5));
    }

    let peak_rss_kib = procs::peak_rss_kib(gateway.pid());
    // Informational: does hanging up free b's slots and queue places?
    for call in &stuck_calls {
        call.abort();
    }
    let after_hang_up = after_hang_up(&http, &gateway.base, &b.base).await;
    for clients in CONCURRENCY {
        eprintln!("isolation: recovered, {clients} client(s) ...");
        let m = load::run(&http, &echo, clients, settings.warmup, settings.measure, &watch).await?;
        rows.push(row("recovered", clients, m, ticks, cpus));
    }
    for r in rows.iter().filter(|r| r.m.errors > 0) {
        problems
            .push(format!("{} a__echo calls failed in the {} row with {} client(s)", r.m.errors, r.phase, r.clients));
    }

    Ok(Report { rows, stuck, trickle, after_hang_up, peak_rss_kib, problems })
}

fn row(phase: &'static str, clients: usize, m: Measurement, ticks: u64, cpus: usize) -> Row {
    let gw_cpu_us = m.cpu_ticks[0].map(|t| t as f64 * 1e6 / ticks as f64 / m.calls() as f64);
    let ours: Option<u64> = m.cpu_ticks.iter().copied().sum();
    let capacity = m.elapsed.as_secs_f64() * ticks as f64 * cpus as f64;
    let other_cpu_pct =
        m.machine_ticks.zip(ours).map(|(all, ours)| (all.saturating_sub(ours) as f64 / capacity * 100.0).min(100.0));
    Row { phase, clients, m, gw_cpu_us, other_cpu_pct }
}

/// How a `b__hang` call came back.
#[derive(Debug)]
enum Outcome {
    /// A JSON-RPC error with `data.class == "overloaded"`.
    Overloaded,
    /// Anything else: another class, a result, an HTTP or transport error.
    Other(String),
}

/// One `tools/call` of `b__hang` on its own HTTP request.
async fn call_hang(http: &reqwest::Client, url: &str, session: &HeaderMap, id: u64) -> Outcome {
    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"b__hang"}}}}"#);
    let resp = match http.post(url).headers(session.clone()).body(body).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Other(format!("request failed: {e}")),
    };
    let status = resp.status();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Other(format!("HTTP {status}, body failed: {e}")),
    };
    let reply: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Outcome::Other(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes))),
    };
    if status.is_success() && reply["error"]["data"]["class"] == "overloaded" {
        Outcome::Overloaded
    } else {
        Outcome::Other(format!("HTTP {status}: {reply}"))
    }
}

/// Waits until the stuck calls have settled (the refusals are back and b's
/// bulkhead is full), then checks the counts: any surprise is an error, as
/// the stuck rows would then measure something else.
async fn settle(
    http: &reqwest::Client,
    gateway: &str,
    b: &str,
    done: &mut mpsc::UnboundedReceiver<(Duration, Outcome)>,
) -> Result<Stuck, String> {
    let mut problems = Vec::new();
    let expected_refused = STUCK_CALLS - B_SLOTS - B_QUEUE;
    let mut back = Vec::new();
    let started = Instant::now();
    let mut settled_at = None;
    let mut last = (0, 0, 0);
    loop {
        while let Ok(d) = done.try_recv() {
            back.push(d);
        }
        last = bulkhead(http, gateway).await.unwrap_or(last);
        let full = (last.0, last.1) == (B_SLOTS as u64, B_QUEUE as u64);
        match settled_at {
            // Settled: give late returns 200 ms to show up, then stop.
            Some(at) if at + Duration::from_millis(200) <= Instant::now() => break,
            Some(_) => {}
            None if full && back.len() >= expected_refused => settled_at = Some(Instant::now()),
            None if started.elapsed() > SETTLE_TIMEOUT => break,
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stuck = Stuck { stuck: STUCK_CALLS - back.len(), bulkhead: last, ..Stuck::default() };
    for (took, outcome) in back {
        match outcome {
            Outcome::Overloaded if took < REFUSAL_DEADLINE => stuck.refused.push(took),
            Outcome::Overloaded => problems.push(format!("a b__hang call was refused only after {took:.1?}")),
            Outcome::Other(what) => problems.push(format!("a b__hang call came back otherwise: {what}")),
        }
    }
    stuck.refused.sort_unstable();
    stuck.b_hanging = echo_hanging(http, b).await;
    if stuck.refused.len() != expected_refused || stuck.stuck != B_SLOTS + B_QUEUE {
        problems.push(format!(
            "of {STUCK_CALLS} b__hang calls {} stayed stuck and {} were refused as overloaded; \
             expected {} and {expected_refused}",
            stuck.stuck,
            stuck.refused.len(),
            B_SLOTS + B_QUEUE
        ));
    }
    let (in_flight, queued, _) = stuck.bulkhead;
    if (in_flight, queued) != (B_SLOTS as u64, B_QUEUE as u64) {
        problems.push(format!(
            "b's bulkhead shows {in_flight} in flight and {queued} queued, expected {B_SLOTS} and {B_QUEUE}"
        ));
    }
    if stuck.b_hanging != Some(B_SLOTS as u64) {
        problems.push(format!("b holds {:?} hang requests open, expected {B_SLOTS}", stuck.b_hanging));
    }
    if !problems.is_empty() {
        return Err(format!("the stuck calls did not settle as expected:\n  {}", problems.join("\n  ")));
    }
    Ok(stuck)
}

/// New `b__hang` calls at [`TRICKLE_PER_SEC`], each on its own task, until
/// `stop`; each must be refused as `overloaded` within
/// [`REFUSAL_DEADLINE`].
async fn trickle(
    http: reqwest::Client,
    url: String,
    session: Arc<HeaderMap>,
    mut stop: oneshot::Receiver<()>,
) -> Trickle {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / TRICKLE_PER_SEC));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut calls = Vec::new();
    // Far above the ids of the stuck calls.
    let mut id = 1_000_000u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        id += 1;
        let (http, url, session) = (http.clone(), url.clone(), session.clone());
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(REFUSAL_DEADLINE, call_hang(&http, &url, &session, id)).await;
            (started.elapsed(), outcome)
        }));
    }
    let elapsed = started.elapsed();
    let mut out = Trickle { elapsed, ..Trickle::default() };
    for call in calls {
        match call.await {
            Ok((took, Ok(Outcome::Overloaded))) => out.refused.push(took),
            Ok((_, Ok(Outcome::Other(what)))) => out.wrong.push(format!("came back otherwise: {what}")),
            Ok((_, Err(_))) => out.wrong.push(format!("not refused within {REFUSAL_DEADLINE:?}")),
            Err(e) => out.wrong.push(format!("task failed: {e}")),
        }
    }
    out.refused.sort_unstable();
    out
}

/// `b`'s bulkhead and open `hang` requests once the stuck callers have hung
/// up: polled for up to 2 s until both are empty.
async fn after_hang_up(http: &reqwest::Client, gateway: &str, b: &str) -> Option<((u64, u64), Option<u64>)> {
    let started = Instant::now();
    loop {
        let (in_flight, queued, _) = bulkhead(http, gateway).await.ok()?;
        let hanging = echo_hanging(http, b).await;
        if (in_flight, queued, hanging) == (0, 0, Some(0)) || started.elapsed() > Duration::from_secs(2) {
            return Some(((in_flight, queued), hanging));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /status` until both upstreams are ready.
async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(resp) = http.get(format!("{base}/status")).send().await
            && let Ok(v) = resp.json::<serde_json::Value>().await
        {
            let ups = v["upstreams"].as_array().map(Vec::as_slice).unwrap_or_default();
            if ups.len() == 2 && ups.iter().all(|u| u["state"] == "ready") {
                return Ok(());
            }
            last = v.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the gateway's upstreams are not ready after 30 s; last /status: {last}"))
}

/// `b`'s bulkhead in the gateway's `/status`: in flight, queued, rejected.
async fn bulkhead(http: &reqwest::Client, gateway: &str) -> Result<(u64, u64, u64), String> {
    let v: serde_json::Value = http
        .get(format!("{gateway}/status"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let b = v["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["id"] == "b"))
        .ok_or_else(|| format!("no upstream `b` in /status: {v}"))?;
    let field = |name: &str| b["bulkhead"][name].as_u64().ok_or_else(|| format!("no bulkhead.{name} for b: {b}"));
    Ok((field("in_flight")?, field("queued")?, field("rejected")?))
}

/// `hang` requests an echo upstream holds open now (its `/stats`).
async fn echo_hanging(http: &reqwest::Client, base: &str) -> Option<u64> {
    let v: serde_json::Value = http.get(format!("{base}/stats")).send().await.ok()?.json().await.ok()?;
    v["hanging"].as_u64()
}

fn print_report(settings: Settings, cpus: usize, r: &Report) {
    println!();
    println!(
        "isolation: a__echo (tools/call, {} B text result, Streamable HTTP, JSON replies) through one gateway \
         in front of a and b; warm-up {:.1} s, measured {:.1} s per row; {cpus} CPUs",
        echo_upstream::RESULT_TEXT_BYTES,
        settings.warmup.as_secs_f64(),
        settings.measure.as_secs_f64(),
    );
    let (in_flight, queued, rejected) = r.stuck.bulkhead;
    println!(
        "stuck: {STUCK_CALLS} concurrent b__hang calls → {} stuck, {} refused as overloaded \
         (b's bulkhead: {in_flight} in flight, {queued} queued, {rejected} rejected; b holds {} hang requests open); \
         then a trickle of {} b__hang calls ({:.0}/s) during the stuck rows",
        r.stuck.stuck,
        r.stuck.refused.len(),
        r.stuck.b_hanging.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        r.trickle.refused.len() + r.trickle.wrong.len(),
        (r.trickle.refused.len() + r.trickle.wrong.len()) as f64 / r.trickle.elapsed.as_secs_f64().max(1e-9),
    );
    println!();
    println!(
        "{:<9} {:>7} {:>9} {:>6} {:>8} {:>8} {:>9} {:>10} {:>7}",
        "phase", "clients", "calls", "errors", "p50 ms", "p99 ms", "calls/s", "gw CPU µs", "other %"
    );
    for row in &r.rows {
        println!(
            "{:<9} {:>7} {:>9} {:>6} {:>8.3} {:>8.3} {:>9.0} {:>10} {:>7}",
            row.phase,
            row.clients,
            row.m.calls(),
            row.m.errors,
            row.m.percentile_ms(50.0),
            row.m.percentile_ms(99.0),
            row.m.throughput(),
            row.gw_cpu_us.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            row.other_cpu_pct.map_or_else(|| "-".to_owned(), |p| format!("{p:.0}")),
        );
    }
    println!("(gw CPU µs: the gateway's utime+stime per measured a__echo call, from /proc/<pid>/stat, the trickle");
    println!(
        " included in the stuck rows; other %: CPU used by everything else on the machine, share of all {cpus}: noise)"
    );
    let disturbed: Vec<String> = r
        .rows
        .iter()
        .filter(|row| row.other_cpu_pct.is_some_and(|p| p > NOISY_OTHER_PCT))
        .map(|row| format!("{} × {}", row.phase, row.clients))
        .collect();
    if !disturbed.is_empty() {
        println!(
            "(other work used over {NOISY_OTHER_PCT:.0} % of the machine in: {}; on a box this small that moves \
             the figures by more than isolation could: the ratios below mean little, run again on a quiet machine)",
            disturbed.join(", ")
        );
    }
    println!();

    let find = |phase: &str, clients: usize| r.rows.iter().find(|row| row.phase == phase && row.clients == clients);
    for clients in CONCURRENCY {
        let (Some(base), Some(stuck)) = (find("baseline", clients), find("stuck", clients)) else { continue };
        let (bp, sp) = (base.m.percentile_ms(50.0), stuck.m.percentile_ms(50.0));
        let (bt, st) = (base.m.throughput(), stuck.m.throughput());
        let noise = find("recovered", clients).map_or_else(String::new, |rec| {
            format!(
                "; noise (recovered/baseline, no stuck call in either): p50 {:.3}, throughput {:.3}",
                rec.m.percentile_ms(50.0) / bp,
                rec.m.throughput() / bt
            )
        });
        println!(
            "{clients:>2} client(s): stuck/baseline p50 = {:.3} ({sp:.3} / {bp:.3} ms), \
             throughput = {:.3} ({st:.0} / {bt:.0} calls/s)    target ≈ 1.0{noise}",
            sp / bp,
            st / bt,
        );
    }
    println!(
        "refused b__hang calls: trickle of {1} p50 {2} ms, p99 {3} ms, max {4} ms    target: a few ms; \
         the opening burst of {0} (300 connections opened at once) p50 {5} ms, max {6} ms",
        r.stuck.refused.len(),
        r.trickle.refused.len(),
        ms(percentile(&r.trickle.refused, 50.0)),
        ms(percentile(&r.trickle.refused, 99.0)),
        ms(r.trickle.refused.last().copied()),
        ms(percentile(&r.stuck.refused, 50.0)),
        ms(r.stuck.refused.last().copied()),
    );
    if let Some(kib) = r.peak_rss_kib {
        println!("gateway peak RSS (VmHWM) with the stuck calls open: {:.1} MB", kib as f64 / 1024.0);
    }
    match r.after_hang_up {
        Some(((in_flight, queued), hanging)) => println!(
            "after the stuck callers hung up, before the recovered rows (informational): b's bulkhead \
             {in_flight} in flight, {queued} queued; b holds {} hang requests open",
            hanging.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        ),
        None => println!("after the stuck callers hung up (informational): /status did not answer"),
    }
    println!("(targets are printed for reference only; timing never fails this run)");
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}
