//! What every benchmark binary shares: its command line (the binary is
//! also the echo upstream and the watchdog of its child processes) and its
//! warm-up and measured times.

use std::process::ExitCode;
use std::time::Duration;

use crate::{echo_upstream, procs};

/// Runs the bench binary: `--echo-upstream <secs>`, `--echo-stdio [--tools <n>]` and
/// `--watchdog ...` are its helper roles; anything else cargo passes runs the benchmark,
/// in full with `--bench`, else as a quick smoke run.
pub(crate) fn main(name: &str, bench: fn(bool) -> Result<(), String>) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--echo-upstream") => {
            let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(600);
            echo_upstream::run(Duration::from_secs(secs))
        }
        // `--echo-stdio [--tools <n>]`: without `--tools`, the two tools of old.
        Some("--echo-stdio") => match args.get(1..).unwrap_or_default() {
            [] => echo_upstream::run_stdio(None),
            [flag, n] if flag == "--tools" => match n.parse::<usize>() {
                Ok(n) if n >= 2 => echo_upstream::run_stdio(Some(n)),
                _ => Err(format!("--tools wants a number of tools, at least 2; got {n:?}")),
            },
            other => Err(format!("usage: --echo-stdio [--tools <n>]; got {other:?}")),
        },
        Some("--watchdog") => procs::watchdog(&args[1..]),
        // Anything else cargo passes (`--bench`, filters, ...) is ignored.
        _ => bench(args.iter().any(|a| a == "--bench")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Warm-up and measured time per row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

impl Settings {
    /// 2 s and 10 s with `--bench`, else `smoke` (warm-up, measured, in
    /// seconds); `BENCH_WARMUP_SECS` and `BENCH_SECS` override either.
    pub(crate) fn from_env(bench: bool, smoke: (f64, f64)) -> Result<Self, String> {
        let (warmup, measure) = if bench { (2.0, 10.0) } else { smoke };
        Ok(Settings { warmup: env_secs("BENCH_WARMUP_SECS", warmup)?, measure: env_secs("BENCH_SECS", measure)? })
    }

    /// Upper bound on how long the child processes may live: `rows` rows,
    /// `extra` for anything else the bench waits for, and a margin.
    pub(crate) fn lifetime(self, rows: u32, extra: Duration) -> Duration {
        (self.warmup + self.measure + Duration::from_secs(15)) * rows + extra + Duration::from_secs(120)
    }
}

fn env_secs(name: &str, default: f64) -> Result<Duration, String> {
    let Ok(v) = std::env::var(name) else { return Ok(Duration::from_secs_f64(default)) };
    v.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{name}={v:?} is not a number of seconds"))
}
