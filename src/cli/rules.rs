//! `mcp-gateway rules check | replay`.

use std::process::ExitCode;

use mcp_gateway::config::Config;

use super::args::{EX_USAGE, RulesCommand};
use super::plural;

/// `mcp-gateway rules check | replay`.
pub(crate) fn rules(command: RulesCommand) -> ExitCode {
    use mcp_gateway::security::rules::{self, RuleSet};
    match command {
        RulesCommand::Check { file, json } => match rules::check(&file) {
            Ok(report) if json => {
                println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
                ExitCode::SUCCESS
            }
            Ok(report) => {
                println!("{}: ok ({})", report.file, plural(report.rules.len(), "rule"));
                for r in &report.rules {
                    let window = match r.window_seconds {
                        Some(s) => format!("{} calls, {s}s", r.window_calls),
                        None => format!("{} calls", r.window_calls),
                    };
                    println!("  {:<40} {:<8} {:<10} {} steps, window {window}", r.id, r.action, r.scope, r.steps);
                }
                for w in &report.warnings {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcp-gateway: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        RulesCommand::Replay { audit, rules: file, config, json } => {
            let file = match file {
                Some(f) => f,
                None => match Config::load(&config, &super::ProcessEnv).map(|c| c.rules.file) {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        eprintln!(
                            "mcp-gateway: no rules file: give --rules or set [rules] file in {}",
                            config.display()
                        );
                        return ExitCode::from(EX_USAGE);
                    }
                    Err(e) => {
                        eprintln!("mcp-gateway: invalid config: {e}");
                        return ExitCode::from(EX_USAGE);
                    }
                },
            };
            let set = match RuleSet::load(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("mcp-gateway: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let reader = match std::fs::File::open(&audit) {
                Ok(f) => std::io::BufReader::new(f),
                Err(e) => {
                    eprintln!("mcp-gateway: cannot read {}: {e}", audit.display());
                    return ExitCode::FAILURE;
                }
            };
            let report = match rules::replay(&set, reader) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("mcp-gateway: reading {}: {e}", audit.display());
                    return ExitCode::FAILURE;
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
                return ExitCode::SUCCESS;
            }
            println!(
                "{}: {} evaluated ({} without arguments), {} unreadable lines",
                audit.display(),
                plural(report.calls as usize, "call"),
                report.without_arguments,
                report.invalid
            );
            for r in &report.rules {
                println!("  {:<40} {:<8} {:>6} hits", r.id, r.action, r.hits);
                for s in &r.sessions {
                    println!("      session {} : {} hits", s.id, s.hits);
                }
                for p in &r.principals {
                    println!("      principal {} : {} hits", p.id, p.hits);
                }
            }
            ExitCode::SUCCESS
        }
    }
}
