//! `mcp-gateway tools [pending | approve]`: the merged catalog, and the
//! pin store's held tools.

use std::time::Duration;

use anyhow::Context as _;
use mcp_gateway::Gateway;
use mcp_gateway::config::Config;
use mcp_gateway::telemetry::Telemetry;
use mcp_gateway::upstream::State;

use super::args::ToolsAction;
use super::plural;

/// `mcp-gateway tools pending | approve`.
pub(crate) fn pins(config: &Config, action: ToolsAction) -> anyhow::Result<()> {
    use mcp_gateway::security::pins;
    let path = config.pinning.file.as_deref().context("tool pinning is off: set [pinning] file in the config")?;
    match action {
        ToolsAction::Pending => {
            let store = pins::read(path)?;
            let mut any = false;
            for (name, pin) in &store.tools {
                let Some(p) = &pin.pending else { continue };
                any = true;
                println!("{name} (upstream {}): changed", pin.upstream);
                for field in ["title", "description", "inputSchema", "outputSchema", "annotations"] {
                    let (was, now) = (pin.definition.get(field), p.definition.get(field));
                    if was != now {
                        let show = |v: Option<&serde_json::Value>| v.map_or("(none)".to_owned(), ToString::to_string);
                        println!("  {field}:\n    was: {}\n    now: {}", show(was), show(now));
                    }
                }
            }
            if !any {
                println!("Nothing pending ({} tools pinned).", store.tools.len());
            }
        }
        ToolsAction::Approve { names, all } => {
            if names.is_empty() && !all {
                anyhow::bail!("name the tools to approve, or use --all");
            }
            let approved = pins::approve(path, &names, all)?;
            println!("Approved {}: {}", plural(approved.len(), "tool"), approved.join(", "));
        }
    }
    Ok(())
}

pub(crate) async fn tools(config: Config, wait: Option<u64>) -> anyhow::Result<()> {
    let longest = config.upstreams.iter().map(|u| u.startup_timeout).max().unwrap_or_default();
    let wait = wait.map_or(longest + Duration::from_secs(1), Duration::from_secs);
    // Listing tools is not serving: no audit log, no traces.
    let gateway = Gateway::start(config, Telemetry::metrics_only());
    let started = tokio::time::Instant::now();
    let mut reported = vec![false; gateway.upstreams().len()];
    loop {
        for (i, u) in gateway.upstreams().iter().enumerate() {
            if reported[i] {
                continue;
            }
            let line = match &*u.state() {
                State::Ready(r) => {
                    format!("ready, offers {} tools, protocol {}", r.lists.tools.len(), r.protocol_version())
                }
                State::Down { reason, .. } => format!("FAILED: {reason}"),
                _ => continue,
            };
            reported[i] = true;
            eprintln!("{:>12}  {line} ({:.1}s)", u.id(), started.elapsed().as_secs_f64());
        }
        if reported.iter().all(|r| *r) || started.elapsed() >= wait {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, u) in gateway.upstreams().iter().enumerate() {
        if !reported[i] {
            eprintln!("{:>12}  still starting after {}s", u.id(), wait.as_secs());
        }
    }
    // The catalog task runs on its own; give it a moment to take the last change.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let catalog = gateway.catalog();
    let rows: Vec<[String; 3]> = catalog
        .tools()
        .iter()
        .map(|t| {
            [t.name.clone(), gateway.upstreams()[t.upstream.index()].id().to_owned(), annotations(t.def.checked())]
        })
        .collect();
    print_table(&["NAME", "UPSTREAM", "ANNOTATIONS"], &rows);
    let not_ready = gateway.upstreams().iter().filter(|u| !matches!(*u.state(), State::Ready(_))).count();
    println!("{} from {}", plural(rows.len(), "tool"), plural(gateway.upstreams().len(), "upstream"));
    gateway.shutdown().await;
    if not_ready > 0 {
        anyhow::bail!("{} not ready", plural(not_ready, "upstream"));
    }
    Ok(())
}

/// `read-only, destructive, idempotent, open-world` as declared (absent
/// hints are shown as the spec's defaults would read: nothing).
fn annotations(def: mcp_gateway::protocol::Checked<'_>) -> String {
    let v = def.value().unwrap_or_default();
    let a = &v["annotations"];
    let mut out = Vec::new();
    for (key, label) in [
        ("readOnlyHint", "read-only"),
        ("destructiveHint", "destructive"),
        ("idempotentHint", "idempotent"),
        ("openWorldHint", "open-world"),
    ] {
        if a[key] == serde_json::Value::Bool(true) {
            out.push(label);
        }
    }
    if out.is_empty() { "-".into() } else { out.join(", ") }
}

pub(crate) fn print_table(head: &[&str; 3], rows: &[[String; 3]]) {
    let mut w = head.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    println!("{:<w0$}  {:<w1$}  {}", head[0], head[1], head[2], w0 = w[0], w1 = w[1]);
    for r in rows {
        println!("{:<w0$}  {:<w1$}  {}", r[0], r[1], r[2], w0 = w[0], w1 = w[1]);
    }
}
