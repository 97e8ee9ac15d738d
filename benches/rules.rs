//! The sequence-rule benchmark: what evaluating and recording one
//! `tools/call` costs with 100 rules and a full history, against the cost of
//! merely validating the same arguments as JSON (`serde_json::from_str::<&RawValue>`),
//! so the figure compares across machines.
//!
//! 100 rules of one to three steps mix tool globs, tags (from `[tags]` and
//! derived from annotations) and argument predicates; 50 tools over 10
//! upstreams are called in a fixed pseudo-random order. Tags are computed
//! once per tool beforehand, as the gateway caches them. Each call is
//! evaluated against the session's and the principal's history and then
//! recorded in both unless a hit stops it, as live.
//!
//! `cargo bench --bench rules` measures 200k calls; without `--bench`
//! (`cargo test --all-targets`) it is a quick smoke run. The target from
//! issue 6 (≤ 5 µs per call) is printed, never asserted.

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;

use mcp_gateway::security::rules::{Call, History, RuleSet, Tags};
use serde_json::value::RawValue;
// tokio's Instant (clippy.toml): the real clock here, as nothing pauses time.
use tokio::time::Instant;

const UPSTREAMS: [&str; 10] = ["pg", "mysql", "fetch", "slack", "fs", "git", "k8s", "mail", "search", "vault"];
const TOOLS: [&str; 5] = ["query", "read_file", "write_file", "list", "delete"];
const RULES: usize = 100;
const HISTORY: usize = 50;
const TARGET_NS: f64 = 5_000.0;

/// One tool as the gateway would know it.
struct Tool {
    name: String,
    tags: Tags,
    /// Argument sets it is called with.
    args: Vec<Box<RawValue>>,
}

fn main() -> ExitCode {
    let bench = std::env::args().any(|a| a == "--bench");
    let calls = if bench { 200_000 } else { 2_000 };
    match run(calls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rules: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(calls: usize) -> Result<(), String> {
    for (label, broad) in [("selective", false), ("broad", true)] {
        measure(label, broad, calls)?;
    }
    Ok(())
}

fn measure(label: &str, broad: bool, calls: usize) -> Result<(), String> {
    let rules = RuleSet::parse(&rules_file(broad), Path::new("bench-rules.toml")).map_err(|e| e.to_string())?;
    let tools = tools(&rules)?;
    let plan = plan(&tools, calls + HISTORY);

    let mut session = rules.new_history();
    let mut principal = rules.new_history();
    // One call as live: evaluate, then record unless a hit stops it.
    // Returns (hits, stopped).
    let step = |i: usize, session: &mut History, principal: &mut History| {
        let (t, a) = plan[i];
        let tool = &tools[t];
        let call = Call {
            tool: tool.name.as_str().into(),
            tags: &tool.tags,
            arguments: Some(&tool.args[a]),
            at_ms: i as u64 * 100,
        };
        let eval = rules.evaluate(&call, session, Some(principal));
        let stopped = eval.strongest().is_some_and(|h| h.action.stops_call());
        if !stopped {
            rules.record(session, &eval);
            rules.record(principal, &eval);
        }
        (black_box(&eval).hits().len() as u64, u64::from(stopped))
    };
    // Fill the histories first: the measured calls all see 50 earlier ones.
    for i in 0..HISTORY {
        step(i, &mut session, &mut principal);
    }
    let (mut hits, mut stopped) = (0u64, 0u64);
    let started = Instant::now();
    for i in HISTORY..HISTORY + calls {
        let (h, s) = step(i, &mut session, &mut principal);
        hits += h;
        stopped += s;
    }
    let rules_ns = started.elapsed().as_nanos() as f64 / calls as f64;

    let started = Instant::now();
    for &(t, a) in &plan[HISTORY..] {
        let text = tools[t].args[a].get();
        black_box(serde_json::from_str::<&RawValue>(black_box(text)).map_err(|e| e.to_string())?);
    }
    let baseline_ns = started.elapsed().as_nanos() as f64 / calls as f64;

    let verdict = if rules_ns <= TARGET_NS { "within" } else { "OVER" };
    println!(
        "rules/{label}: {} rules, {} calls per history, {calls} calls, {:.2} hits per call, {:.1}% stopped",
        rules.rules().len(),
        rules.history_calls(),
        hits as f64 / calls as f64,
        stopped as f64 * 100.0 / calls as f64
    );
    println!(
        "rules/{label}: evaluate + record {rules_ns:.0} ns per call ({verdict} the {TARGET_NS:.0} ns target); \
         from_str::<&RawValue> of the same arguments {baseline_ns:.0} ns; ratio {:.1}x",
        rules_ns / baseline_ns
    );
    Ok(())
}

/// 100 rules: a third each with one, two and three steps; tool globs, tags
/// and argument predicates mixed; actions mostly shadow and alert. In the
/// selective set a rule's last step names one tool (about one hit per
/// call); in the broad set every step is broad and most calls hit several
/// rules, a worst case: hits allocate, and each hit scans the history.
fn rules_file(broad: bool) -> String {
    let mut text = String::from(
        r#"[tags]
"pg__*" = ["source:database"]
"mysql__*" = ["source:database"]
"fetch__*" = ["sink:external", "network"]
"slack__*" = ["sink:external", "network"]
"mail__*" = ["sink:external"]
"search__*" = ["network"]
"vault__*" = ["secrets"]
"fs__*" = ["filesystem"]
"git__*" = ["vcs"]
"k8s__*" = ["infra"]
"#,
    );
    let tags = ["source:database", "sink:external", "network", "secrets", "filesystem", "destructive", "read-only"];
    let actions = ["shadow", "alert", "shadow", "alert", "block", "confirm"];
    for i in 0..RULES {
        let steps = 1 + i % 3;
        let action = actions[i % actions.len()];
        let window = [10, 20, 50][i % 3];
        text.push_str(&format!(
            "\n[[rule]]\nid = \"r{i}\"\naction = \"{action}\"\nwindow = {{ calls = {window}, seconds = 600 }}\nsteps = [\n"
        ));
        for s in 0..steps {
            let k = i * 7 + s * 3;
            let condition = match k % 5 {
                _ if !broad && s + 1 == steps && i % 2 == 0 => {
                    format!("tool = \"{}__{}\"", UPSTREAMS[k % UPSTREAMS.len()], TOOLS[(k / 10) % TOOLS.len()])
                }
                _ if !broad && s + 1 == steps => format!(
                    "tool = \"{}__{}\", args = {{ url = {{ prefix = \"https://api.\" }} }}",
                    UPSTREAMS[k % UPSTREAMS.len()],
                    TOOLS[(k / 10) % TOOLS.len()]
                ),
                0 => format!("tool = \"{}__*\"", UPSTREAMS[k % UPSTREAMS.len()]),
                1 => format!("tags = [\"{}\"]", tags[k % tags.len()]),
                2 => format!(
                    "tools = [\"*__{}\", \"{}__*\"]",
                    TOOLS[k % TOOLS.len()],
                    UPSTREAMS[(k + 3) % UPSTREAMS.len()]
                ),
                3 => format!(
                    "tool = \"{}__*\", args = {{ path = {{ glob = \"*/secret*\" }} }}",
                    UPSTREAMS[k % UPSTREAMS.len()]
                ),
                _ => format!(
                    "tags = [\"{}\"], args = {{ url = {{ not_prefix = \"https://intranet.\" }} }}",
                    tags[k % tags.len()]
                ),
            };
            text.push_str(&format!("  {{ {condition} }},\n"));
        }
        text.push_str("]\n");
    }
    text
}

/// 50 tools with annotations of every kind and three argument sets each.
fn tools(rules: &RuleSet) -> Result<Vec<Tool>, String> {
    let annotations = [
        None,
        Some(r#"{"readOnlyHint":true,"openWorldHint":false}"#),
        Some(r#"{"readOnlyHint":false,"destructiveHint":true,"idempotentHint":true}"#),
        Some(r#"{"readOnlyHint":true}"#),
        Some(r#"{"destructiveHint":false,"openWorldHint":false}"#),
    ];
    let mut out = Vec::new();
    for (u, upstream) in UPSTREAMS.iter().enumerate() {
        for (t, tool) in TOOLS.iter().enumerate() {
            let name = format!("{upstream}__{tool}");
            let a = annotations[(u + t) % annotations.len()]
                .map(|a| RawValue::from_string(a.to_owned()))
                .transpose()
                .map_err(|e| e.to_string())?;
            let tags = rules.tags_for(name.as_str(), upstream, a.as_deref());
            let args = [
                format!(r#"{{"path":"/srv/app/data/{tool}.json","limit":100,"recursive":false}}"#),
                format!(
                    r#"{{"url":"https://api.example.com/v1/{upstream}/items?page=2","method":"POST","headers":{{"content-type":"application/json"}},"body":"{{\"q\":\"{tool}\"}}"}}"#
                ),
                r#"{"path":"/srv/app/secrets/token","sql":"SELECT id, email, created_at FROM customers WHERE created_at > now() - interval '1 day' LIMIT 500"}"#
                    .to_owned(),
            ]
            .into_iter()
            .map(RawValue::from_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
            out.push(Tool { name, tags, args });
        }
    }
    Ok(out)
}

/// A fixed pseudo-random order of (tool, argument set) pairs.
fn plan(tools: &[Tool], n: usize) -> Vec<(usize, usize)> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..n)
        .map(|_| {
            // xorshift64: deterministic, no dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state % tools.len() as u64) as usize, ((state >> 32) % 3) as usize)
        })
        .collect()
}
