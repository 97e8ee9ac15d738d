//! The `mcp-gateway` command: parse flags, load config, run. Thin on
//! purpose: each command is a file in `cli/`, everything else is in the
//! library.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use mcp_gateway::config::Config;

use cli::args::{AuthCommand, Cli, Command, EX_USAGE};
use cli::{auth, import, plural, reload, rules, serve, status, tools};

/// The system allocator with one spare large block (src/alloc.rs).
#[global_allocator]
static ALLOC: mcp_gateway::alloc::Gateway = mcp_gateway::alloc::Gateway::new();

fn main() -> ExitCode {
    mcp_gateway::alloc::install();
    let cli = Cli::parse();
    if let Command::Auth { command: AuthCommand::HashKey { generate } } = cli.command {
        return auth::hash_key(generate);
    }
    if let Command::Rules { command } = cli.command {
        return rules::rules(command);
    }
    if let Command::Reload { config, url, api_key } = cli.command {
        return reload::reload(&config, url, api_key);
    }
    if let Command::Status { config, url, json } = cli.command {
        return status::status(&config, url, json);
    }
    if let Command::Import(args) = &cli.command {
        return import::import(args);
    }
    let path = match &cli.command {
        Command::Rules { .. }
        | Command::Reload { .. }
        | Command::Status { .. }
        | Command::Import(_)
        | Command::Auth { command: AuthCommand::HashKey { .. } } => unreachable!("handled above"),
        Command::Auth {
            command:
                AuthCommand::Login { config, .. } | AuthCommand::Logout { config, .. } | AuthCommand::Tokens { config },
        }
        | Command::Serve { config, .. }
        | Command::Stdio { config }
        | Command::Check { config }
        | Command::Tools { config, .. } => config,
    };
    let config = match Config::load(path, &cli::ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-gateway: invalid config: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Command::Check { .. } = cli.command {
        println!("{}: ok ({}: {})", path.display(), plural(config.upstreams.len(), "upstream"), cli::ids(&config));
        return ExitCode::SUCCESS;
    }
    mcp_gateway::telemetry::log::init(config.gateway.log_format, &config.gateway.log_level, config.redactor.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime starts");
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve { listen, .. } => serve::serve(config, listen).await,
            Command::Stdio { .. } => serve::stdio(config).await,
            Command::Tools { wait, action: None, .. } => tools::tools(config, wait).await,
            Command::Tools { action: Some(action), .. } => tools::pins(&config, action),
            Command::Auth { command } => auth::upstream_auth(&config, command).await,
            Command::Check { .. }
            | Command::Rules { .. }
            | Command::Reload { .. }
            | Command::Status { .. }
            | Command::Import(_) => {
                unreachable!("handled above")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
