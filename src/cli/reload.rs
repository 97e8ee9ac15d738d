//! `mcp-gateway reload`: asks a running gateway to reload its config and
//! prints the report.

use std::path::Path;
use std::process::ExitCode;

use mcp_gateway::config::Config;

use super::ProcessEnv;

/// The address to reach a listener bound to `addr` from this host: an
/// unspecified address (`0.0.0.0`, `::`) is reached on loopback.
pub(super) fn local(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => (std::net::Ipv4Addr::LOCALHOST, addr.port()).into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => (std::net::Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Posts to `/admin/reload` and prints what was applied, what needs a
/// restart, or why the new config was refused (exit 1).
pub(crate) fn reload(config: &Path, url: Option<String>, api_key: Option<String>) -> ExitCode {
    // The address comes from the config file when it loads; a file that
    // does not load is still worth sending: the gateway says why.
    let base = url.or_else(|| Config::load(config, &ProcessEnv).ok().map(|c| format!("http://{}", local(c.listen()))));
    let base = base.unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime starts");
    let answer = rt.block_on(async {
        let mut rq = reqwest::Client::new().post(format!("{}/admin/reload", base.trim_end_matches('/')));
        if let Some(key) = api_key {
            rq = rq.header("x-api-key", key);
        }
        let resp = rq.send().await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mcp-gateway: cannot reach the gateway at {base}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Only a report is an answer: 200 (applied, unchanged) or 422
    // (refused). Anything else (401, 403, 404, 503) is a failure to ask.
    let report = match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(r) if matches!(status.as_u16(), 200 | 422) && r["outcome"].is_string() => r,
        _ => {
            eprintln!("mcp-gateway: the gateway at {base} answered {status}: {}", body.trim());
            return ExitCode::FAILURE;
        }
    };
    let list = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let outcome = report["outcome"].as_str().unwrap_or("?");
    println!("reload: {outcome}");
    for k in list("applied") {
        println!("  applied: {k}");
    }
    for k in list("needs_restart") {
        println!("  needs a restart (kept as it runs): {k}");
    }
    if let Some(e) = report["error"].as_str() {
        println!("  refused: {e}");
        println!("  the config in force stays");
    }
    if outcome == "refused" { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
