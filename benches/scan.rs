//! What the strict scan of design D12 costs per message: `Message::parse`
//! (envelope parse plus the scan) of a 1 KiB `tools/call`, of a 10 MiB one
//! whose arguments are one string, and of a 10 MiB one of 617 000 small
//! objects (the scan's worst realistic case), next to the envelope parse
//! alone (`Envelope::parse`, what the gateway did before D12).
//!
//! Wall-clock figures move between runs here; instruction counts do not.
//! For those, run one case under callgrind with a fixed count and subtract a
//! run with count 0 (reading and building the input only):
//!
//! ```text
//! cargo bench --bench scan --no-run
//! valgrind --tool=callgrind target/release/deps/scan-* --case small --count 1000
//! valgrind --tool=callgrind target/release/deps/scan-* --case small --count 0
//! ```
//!
//! `cargo bench --bench scan` prints ns per parse; without `--bench` it is a
//! quick smoke run.

use std::hint::black_box;
use std::process::ExitCode;

use mcp_gateway::protocol::{Envelope, Limits, Message};
use tokio::time::Instant;

/// A `tools/call` for `filesystem__read_text_file` with `arguments`.
fn message(arguments: &serde_json::Value) -> String {
    serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"filesystem__read_text_file","arguments":arguments}})
    .to_string()
}

/// The three inputs, by name.
fn input(case: &str) -> String {
    match case {
        "small" => {
            let mut args = serde_json::json!({
                "path": "/srv/projects/acme-billing/src/invoices/templates/monthly_statement.html",
                "encoding": "utf-8", "head": 200, "tail": null,
                "options": {"followSymlinks": false, "maxBytes": 1_048_576, "timeoutMs": 2500.5,
                    "tags": ["billing", "templates", "read-only"],
                    "owner": {"name": "Alice Example", "email": "alice@example.com", "uid": 1001}},
                "reason": "Reviewing the monthly statement template before the \"Q3\" release; été.",
                "context": {"ticket": "BILL-4821", "priority": 2, "ratio": 0.75, "retries": [1, 2, 4, 8]},
            });
            let pad = 1024usize.saturating_sub(message(&args).len() + r#","note":"""#.len());
            args["note"] = "lorem ipsum dolor sit amet ".repeat(40)[..pad].into();
            message(&args)
        }
        "bigstr" => {
            let head = message(&serde_json::json!({"path": "/tmp/big.txt", "content": ""})).len();
            message(&serde_json::json!({"path": "/tmp/big.txt", "content": "x".repeat((10 << 20) - head)}))
        }
        "manyobj" => {
            let items: Vec<serde_json::Value> = (0..616_801).map(|_| serde_json::json!({"k": 1, "v": "ab"})).collect();
            message(&serde_json::json!({"path": "/tmp/big.txt", "items": items}))
        }
        other => panic!("unknown case {other}"),
    }
}

fn per_parse(text: &[u8], count: usize, full: bool) -> f64 {
    let limits = Limits::default();
    let started = Instant::now();
    for _ in 0..count {
        if full {
            black_box(Message::parse(black_box(text), &limits).expect("a valid message"));
        } else {
            black_box(Envelope::parse(black_box(text)).expect("a valid envelope"));
        }
    }
    started.elapsed().as_nanos() as f64 / count.max(1) as f64
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    // Under callgrind: one case, a fixed count, nothing else.
    if let Some(case) = arg("--case") {
        let count: usize = arg("--count").map_or(1000, |c| c.parse().expect("a count"));
        let text = input(&case);
        let limits = Limits::default();
        for _ in 0..count {
            black_box(Message::parse(black_box(text.as_bytes()), &limits).expect("a valid message"));
        }
        println!("{case}: {} bytes, parsed {count} times", text.len());
        return ExitCode::SUCCESS;
    }
    let full = args.iter().any(|a| a == "--bench");
    println!("case      bytes        envelope ns   parse+scan ns   ratio");
    for (case, count) in [("small", 200_000), ("bigstr", 20), ("manyobj", 5)] {
        let count = if full { count } else { 2 };
        let text = input(case);
        let envelope = per_parse(text.as_bytes(), count, false);
        let scanned = per_parse(text.as_bytes(), count, true);
        println!("{case:<9} {:<12} {envelope:<13.0} {scanned:<15.0} {:.2}", text.len(), scanned / envelope);
    }
    ExitCode::SUCCESS
}
