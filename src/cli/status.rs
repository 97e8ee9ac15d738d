//! `mcp-gateway status`: a running gateway's `/status`, as a table for a
//! terminal (or its JSON as it came, with `--json`).
//!
//! The credential comes from the environment only ([`TOKEN_VAR`]), never
//! from argv, where `ps` and shell history would show it. The exit code
//! says what an operator's script needs: everything ready (0), an upstream
//! not ready ([`EX_NOT_READY`]), no status at all ([`EX_UNAVAILABLE`]), or
//! a credential refused ([`EX_NOPERM`]).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use mcp_gateway::config::Config;
use serde_json::Value;

use super::{ProcessEnv, plural};

/// Exit code when an upstream is not ready (starting, down or stopped).
pub(crate) const EX_NOT_READY: u8 = 1;
/// Exit code when the gateway cannot be reached or answers no status
/// (`EX_UNAVAILABLE` from sysexits.h).
pub(crate) const EX_UNAVAILABLE: u8 = 69;
/// Exit code when the gateway refuses the credential, or asks for one
/// (401, 403; `EX_NOPERM` from sysexits.h).
pub(crate) const EX_NOPERM: u8 = 77;

/// The variable that holds the API key or JWT to present (as
/// `Authorization: Bearer`).
pub(crate) const TOKEN_VAR: &str = "MCP_GATEWAY_TOKEN";
/// Read when [`TOKEN_VAR`] is not set: the admin key `reload` presents.
const API_KEY_VAR: &str = "MCP_GATEWAY_API_KEY";

/// Lines other than the table are cut to this many characters.
const WIDTH: usize = 100;
/// Items of a list section shown before "… and N more".
const MOST_ITEMS: usize = 10;
/// The members of `/status` the table and the summary show; any other
/// member (sections added later) is shown after them as it comes.
const SHOWN: [&str; 8] =
    ["upstreams", "tools", "in_flight", "runtime", "collisions", "sessions", "catalog", "recent_refusals"];

/// Why no status could be shown.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// No answer: connection refused, a timeout, a bad URL.
    #[error("cannot reach the gateway at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    /// 401 or 403.
    #[error("{0}")]
    Refused(String),
    /// An answer that is not a status (404, 503, not JSON).
    #[error("the gateway at {base} answered {status} to GET /status: {body}")]
    Unexpected { base: String, status: reqwest::StatusCode, body: String },
}

// === impl FetchError ===

impl FetchError {
    fn code(&self) -> u8 {
        match self {
            FetchError::Refused(_) => EX_NOPERM,
            FetchError::Unreachable { .. } | FetchError::Unexpected { .. } => EX_UNAVAILABLE,
        }
    }
}

/// `mcp-gateway status`: prints the table (or the JSON) and exits by what
/// it found.
pub(crate) fn status(config: &Path, url: Option<String>, json: bool) -> ExitCode {
    let (base, unloaded) = base_url(config, url);
    let token = credential();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime starts");
    let body = match rt.block_on(fetch(&base, token.as_ref())) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("mcp-gateway: {e}");
            if let (FetchError::Unreachable { .. }, Some(why)) = (&e, unloaded) {
                eprintln!("mcp-gateway: that is the default address, as the config did not load ({why}); pass --url");
            }
            return ExitCode::from(e.code());
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&body).expect("JSON prints"));
    } else {
        for line in render(&base, &body) {
            println!("{line}");
        }
    }
    let not_ready: Vec<String> = upstreams(&body)
        .iter()
        .filter(|u| u["state"] != "ready")
        .map(|u| format!("{} ({})", text(&u["id"]), text(&u["state"])))
        .collect();
    if not_ready.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("mcp-gateway: {} not ready: {}", plural(not_ready.len(), "upstream"), not_ready.join(", "));
    ExitCode::from(EX_NOT_READY)
}

/// `--url` (without a trailing `/` or `/mcp`), else `http://` and the
/// config's `listen` (an unspecified address on loopback), else
/// `http://127.0.0.1:8080`; and why the config did not load, when that
/// default was taken for want of it.
fn base_url(config: &Path, url: Option<String>) -> (String, Option<String>) {
    let (base, unloaded) = match url {
        Some(url) => (url, None),
        None => match Config::load(config, &ProcessEnv) {
            Ok(c) => (format!("http://{}", super::reload::local(c.listen())), None),
            Err(e) => ("http://127.0.0.1:8080".to_owned(), Some(e.to_string())),
        },
    };
    let base = base.trim_end_matches('/');
    (base.strip_suffix("/mcp").unwrap_or(base).to_owned(), unloaded)
}

/// The credential, and the variable it came from.
fn credential() -> Option<(&'static str, String)> {
    [TOKEN_VAR, API_KEY_VAR]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()).map(|v| (var, v.trim().to_owned())))
}

async fn fetch(base: &str, token: Option<&(&'static str, String)>) -> Result<Value, FetchError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an HTTP client builds");
    let mut rq = client.get(format!("{base}/status"));
    if let Some((_, token)) = token {
        rq = rq.bearer_auth(token);
    }
    let unreachable = |e: reqwest::Error| FetchError::Unreachable { base: base.to_owned(), reason: chain(&e) };
    let resp = rq.send().await.map_err(unreachable)?;
    let status = resp.status();
    let body = resp.text().await.map_err(unreachable)?;
    if matches!(status.as_u16(), 401 | 403) {
        return Err(FetchError::Refused(refusal(base, status, token.map(|(var, _)| *var))));
    }
    match serde_json::from_str::<Value>(&body) {
        Ok(v) if status.is_success() && v["upstreams"].is_array() => Ok(v),
        _ => {
            let body: String = body.trim().chars().take(200).collect();
            Err(FetchError::Unexpected { base: base.to_owned(), status, body })
        }
    }
}

/// What to do about a 401 or 403.
fn refusal(base: &str, status: reqwest::StatusCode, var: Option<&str>) -> String {
    match (status.as_u16(), var) {
        (_, None) => format!(
            "the gateway at {base} requires a credential for /status ({status}): set {TOKEN_VAR} to the API key or \
             JWT of a principal in [auth] admin_groups (it is read from the environment only, never from a flag)"
        ),
        (401, Some(var)) => format!(
            "the gateway at {base} did not accept the credential in {var} ({status}): an unknown API key or an \
             invalid or expired JWT"
        ),
        (_, Some(var)) => format!(
            "the gateway at {base} refused /status to the principal of {var} ({status}): /status is for \
             principals in [auth] admin_groups"
        ),
    }
}

/// An error and its sources: reqwest's own message leaves out why
/// ("connection refused" is a source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

/// The status as lines: a summary, the upstreams' table, what needs a
/// second line (why an upstream is down, tools cut off by their breaker),
/// collisions, then any other section `/status` has.
fn render(base: &str, s: &Value) -> Vec<String> {
    let ups = upstreams(s);
    let ready = ups.iter().filter(|u| u["state"] == "ready").count();
    let mut out = vec![fit(&format!(
        "gateway {base}: {ready}/{} ready, {}, {}, {} in flight",
        plural(ups.len(), "upstream"),
        plural(count(&s["tools"]), "tool"),
        plural(count(&s["sessions"]), "session"),
        plural(count(&s["in_flight"]), "call"),
    ))];
    out.push(String::new());
    let head = ["UPSTREAM", "STATE", "BREAKER", "LAST ERROR", "RESTARTS", "TOOLS"];
    let rows: Vec<[String; 6]> = ups.iter().map(row).collect();
    out.extend(table(&head, &rows, &[false, false, false, false, true, true]));
    let notes: Vec<String> = ups.iter().flat_map(notes).collect();
    if !notes.is_empty() {
        out.push(String::new());
        out.extend(notes);
    }
    let collisions = s["collisions"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !collisions.is_empty() {
        out.push(String::new());
        out.push(format!("Name collisions ({}), the second upstream's entry refused:", collisions.len()));
        out.extend(collisions.iter().take(MOST_ITEMS).map(|c| {
            fit(&format!(
                "  {}: kept from {}, refused from {}",
                text(&c["name"]),
                text(&c["owner"]),
                text(&c["refused"])
            ))
        }));
        out.extend(more(collisions.len()));
    }
    // The catalog itself is the /ui page's (and `mcp-gateway tools`'):
    // here only what an operator acts on.
    let quarantined = s["catalog"]["quarantined"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !quarantined.is_empty() {
        out.push(String::new());
        let names: Vec<String> = quarantined.iter().map(text).collect();
        out.push(fit(&format!(
            "Quarantined by [pinning] ({}; `mcp-gateway tools pending`): {}",
            quarantined.len(),
            names.join(", ")
        )));
    }
    let refusals = s["recent_refusals"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !refusals.is_empty() {
        out.push(String::new());
        out.push(format!("Recent refusals ({}, newest first):", refusals.len()));
        out.extend(refusals.iter().take(MOST_ITEMS).map(|r| {
            let rules = r["rules"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|a| format!(" ({})", inline(&Value::Array(a.clone()))));
            fit(&format!(
                "  {:>6} ago  {}  {}  {}{}",
                span(r["age_ms"].as_u64()),
                text(&r["principal"]),
                text(&r["name"]),
                text(&r["reason"]),
                rules.unwrap_or_default()
            ))
        }));
        out.extend(more(refusals.len()));
    }
    if let Value::Object(members) = s {
        for (key, v) in members.iter().filter(|(k, _)| !SHOWN.contains(&k.as_str())) {
            out.extend(section(key, v));
        }
    }
    out
}

fn upstreams(s: &Value) -> &[Value] {
    s["upstreams"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// One upstream's row of the table.
fn row(u: &Value) -> [String; 6] {
    let ms = |key: &str| u[key].as_u64();
    let state = match text(&u["state"]).as_str() {
        "ready" => format!("ready {}", span(ms("ready_for_ms"))),
        "starting" => format!("starting {}", span(ms("starting_for_ms"))),
        "down" => format!("down, retry in {}", span(ms("retry_in_ms"))),
        other => other.to_owned(),
    };
    let breaker = match u["breaker"]["state"].as_str() {
        None => "-".to_owned(),
        Some("open") => format!("open, probe {}", span(u["breaker"]["probe_in_ms"].as_u64())),
        Some(s) => s.replace('_', "-"),
    };
    let last_error = match u["last_error_class"].as_str() {
        Some(class) => format!("{class} {} ago", span(ms("last_error_age_ms"))),
        None => "-".to_owned(),
    };
    // Exposed, and what the upstream offers when filters, collisions or
    // breakers hide some.
    let tools = match (u["tools"].as_u64(), u["tools_offered"].as_u64()) {
        (Some(t), Some(o)) if t != o => format!("{t}/{o}"),
        (Some(t), _) => t.to_string(),
        (None, _) => "-".to_owned(),
    };
    [text(&u["id"]), state, breaker, last_error, count(&u["restarts"]).to_string(), tools]
}

/// The lines an upstream needs below the table: why it is down (or what
/// went wrong last, while it starts again), and tools whose own breaker is
/// open.
fn notes(u: &Value) -> Vec<String> {
    let id = text(&u["id"]);
    let mut out = Vec::new();
    let crash_loop = if u["crash_loop"] == true { "crash loop: " } else { "" };
    let why = match text(&u["state"]).as_str() {
        "ready" => None,
        "down" => u["down_reason"].as_str().or(u["last_error"].as_str()),
        _ => u["last_error"].as_str(),
    };
    if let Some(why) = why {
        out.push(fit(&format!("{id}: {crash_loop}{why}")));
    } else if !crash_loop.is_empty() {
        out.push(format!("{id}: crash loop"));
    }
    // A process's own last words: usually the reason it exited.
    if let Some(line) = u["last_stderr"].as_str() {
        out.push(fit(&format!("{id}: its last stderr line: {line}")));
    }
    if let Some(tools) = u["breaker_open_tools"].as_array().filter(|t| !t.is_empty()) {
        let names: Vec<String> = tools.iter().map(text).collect();
        out.push(fit(&format!("{id}: tools cut off by their open breaker: {}", names.join(", "))));
    }
    out
}

/// A section of `/status` this command does not know: a list shown an item
/// a line (at most [`MOST_ITEMS`]), an object a member a line, a value on
/// its own line. Empty ones are left out.
fn section(key: &str, v: &Value) -> Vec<String> {
    let title = key.replace('_', " ");
    let mut title = title.chars();
    let title: String = title.next().map(|c| c.to_uppercase().chain(title).collect()).unwrap_or_default();
    match v {
        Value::Null => vec![],
        Value::Array(items) if items.is_empty() => vec![],
        Value::Object(members) if members.is_empty() => vec![],
        Value::Array(items) => {
            let mut out = vec![String::new(), format!("{title} ({}):", items.len())];
            out.extend(items.iter().take(MOST_ITEMS).map(|i| fit(&format!("  {}", inline(i)))));
            out.extend(more(items.len()));
            out
        }
        Value::Object(members) => {
            let mut out = vec![String::new(), format!("{title}:")];
            out.extend(members.iter().map(|(k, m)| fit(&format!("  {k}: {}", inline(m)))));
            out
        }
        _ => vec![String::new(), fit(&format!("{title}: {}", inline(v)))],
    }
}

fn more(n: usize) -> Option<String> {
    (n > MOST_ITEMS).then(|| format!("  … and {} more", n - MOST_ITEMS))
}

/// A value on one line: an object's members as `key=value`, a list's items
/// joined, strings unquoted.
fn inline(v: &Value) -> String {
    match v {
        Value::Object(members) => {
            members.iter().map(|(k, m)| format!("{k}={}", inline(m))).collect::<Vec<_>>().join(" ")
        }
        Value::Array(items) => items.iter().map(inline).collect::<Vec<_>>().join(", "),
        _ => text(v),
    }
}

/// A string as it is, anything else as JSON.
fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn count(v: &Value) -> usize {
    v.as_u64().map_or(0, |n| n as usize)
}

/// Milliseconds as a short duration: `<1s`, `42s`, `12m05s`, `3h12m`, `2d3h`.
fn span(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "?".to_owned() };
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => "<1s".to_owned(),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// Cuts a line to [`WIDTH`] characters.
fn fit(line: &str) -> String {
    match line.char_indices().nth(WIDTH - 1) {
        Some((at, _)) if line.chars().count() > WIDTH => format!("{}…", &line[..at]),
        _ => line.to_owned(),
    }
}

/// Columns as wide as their widest cell, two spaces apart; numbers on the
/// right.
fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]], right: &[bool; N]) -> Vec<String> {
    let mut w = head.map(|h| h.chars().count());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if right[i] { format!("{c:>0$}", w[i]) } else { format!("{c:<0$}", w[i]) })
            .collect();
        cells.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(*head)];
    out.extend(rows.iter().map(|r| line(r.each_ref().map(String::as_str))));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn spans_are_short() {
        let cases = [
            (None, "?"),
            (Some(400), "<1s"),
            (Some(42_000), "42s"),
            (Some(725_000), "12m05s"),
            (Some(11_520_000), "3h12m"),
        ];
        for (ms, shown) in cases {
            assert_eq!(span(ms), shown);
        }
        assert_eq!(span(Some(183_600_000)), "2d3h");
    }

    #[test]
    fn the_table_shows_each_upstream_and_what_needs_a_second_line() {
        let status = json!({
            "upstreams": [
                { "id": "fs", "state": "ready", "ready_for_ms": 3_000, "tools": 5, "tools_offered": 7, "restarts": 0,
                  "breaker": { "state": "closed" }, "breaker_open_tools": ["write"] },
                { "id": "gone", "state": "down", "retry_in_ms": 1_500, "restarts": 3, "crash_loop": true,
                  "down_reason": "cannot start `/nope`", "last_error_class": "transport", "last_error_age_ms": 2_000,
                  "last_stderr": "Error: None of the specified directories are accessible",
                  "breaker": { "state": "open", "probe_in_ms": 4_000 } },
            ],
            "tools": 5, "sessions": 1, "in_flight": 0, "runtime": { "alive_tasks": 9 },
            "collisions": [{ "name": "read", "owner": "fs", "refused": "gone" }],
            "recent_denials": [{ "tool": "fs__write", "reason": "access" }],
            "catalog": { "tools": [{ "name": "fs__read", "annotations": { "readOnlyHint": true } }], "quarantined": ["fs__read"] },
            "recent_refusals": [{ "age_ms": 65_000, "principal": "key:bob", "name": "fs__write", "reason": "rule", "rules": ["exfil"] }],
        });
        let lines = render("http://gw", &status);
        assert_eq!(lines[0], "gateway http://gw: 1/2 upstreams ready, 5 tools, 1 session, 0 calls in flight");
        let table = &lines[2..5];
        assert_eq!(
            table,
            [
                "UPSTREAM  STATE              BREAKER         LAST ERROR        RESTARTS  TOOLS",
                "fs        ready 3s           closed          -                        0    5/7",
                "gone      down, retry in 1s  open, probe 4s  transport 2s ago         3      -",
            ]
        );
        assert!(lines.contains(&"fs: tools cut off by their open breaker: write".to_owned()), "{lines:#?}");
        assert!(lines.contains(&"gone: crash loop: cannot start `/nope`".to_owned()), "{lines:#?}");
        let said = "gone: its last stderr line: Error: None of the specified directories are accessible";
        assert!(lines.contains(&said.to_owned()), "{lines:#?}");
        assert!(lines.contains(&"  read: kept from fs, refused from gone".to_owned()), "{lines:#?}");
        // A section this command does not know is shown as it comes; an empty one is not.
        assert!(lines.contains(&"Recent denials (1):".to_owned()), "{lines:#?}");
        assert!(lines.contains(&"  reason=access tool=fs__write".to_owned()), "{lines:#?}");
        // The catalog is the page's: only its quarantined names are shown.
        assert!(!lines.iter().any(|l| l.starts_with("Catalog") || l.contains("readOnlyHint")), "{lines:#?}");
        assert!(
            lines.contains(&"Quarantined by [pinning] (1; `mcp-gateway tools pending`): fs__read".to_owned()),
            "{lines:#?}"
        );
        assert!(lines.contains(&"Recent refusals (1, newest first):".to_owned()), "{lines:#?}");
        assert!(lines.contains(&"   1m05s ago  key:bob  fs__write  rule (exfil)".to_owned()), "{lines:#?}");
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH), "{lines:#?}");
    }

    #[test]
    fn long_lines_are_cut_at_the_width() {
        let long = "x".repeat(150);
        let cut = fit(&long);
        assert_eq!(cut.chars().count(), WIDTH);
        assert!(cut.ends_with('…'));
        assert_eq!(fit("short"), "short");
    }
}
