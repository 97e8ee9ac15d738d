//! `mcp-gateway import`: a real file of each host format made a
//! gateway.toml that the gateway's own loader reads back to the very
//! strings the host had, with every credential in the secrets file (0600)
//! and none in the TOML; `--into` merges and refuses clashes; bad input
//! writes nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use mcp_gateway::config::{Config, Secrets, TransportSpec, UpstreamSpec};

use crate::support::*;

fn host_file(rel: &str) -> PathBuf {
    root().join("tests/fixtures/hosts").join(rel)
}

/// Runs `mcp-gateway import ARGS` in `dir` with a known environment.
fn import(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    import_with(dir, args, &[])
}

fn import_with(dir: &Path, args: &[&str], vars: &[(&str, &Path)]) -> (Option<i32>, String, String) {
    let out = Command::new(gateway_bin())
        .arg("import")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/home/tester")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn upstream<'c>(config: &'c Config, id: &str) -> &'c UpstreamSpec {
    config.upstreams.iter().find(|u| u.id == id).unwrap_or_else(|| panic!("no upstream {id}"))
}

fn args_of(u: &UpstreamSpec) -> Vec<&str> {
    let TransportSpec::Stdio { args, .. } = &u.transport else { panic!("{} is not stdio", u.id) };
    args.iter().map(|a| a.expose()).collect()
}

fn env_of<'u>(u: &'u UpstreamSpec, k: &str) -> &'u str {
    let TransportSpec::Stdio { env, .. } = &u.transport else { panic!("{} is not stdio", u.id) };
    env[k].expose()
}

fn http_of(u: &UpstreamSpec) -> (&str, BTreeMap<&str, &str>) {
    let (TransportSpec::Http { url, headers } | TransportSpec::Sse { url, headers }) = &u.transport else {
        panic!("{} is not http", u.id)
    };
    (url.expose(), headers.iter().map(|(k, v)| (k.as_str(), v.expose())).collect())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Imports `rel` into a fresh folder and checks what every format must
/// give: exit 0, the host's file untouched, the secrets file 0600 with
/// the values, no value in the TOML or the output, and a config that
/// loads (through the library and `mcp-gateway check`) once `missing`
/// are defined. Returns the folder and the loaded config.
fn imported(rel: &str, secrets: &[(&str, &str)], missing: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
    let (dir, _) = write_config("");
    std::fs::remove_file(dir.path().join("gateway.toml")).unwrap();
    let host = host_file(rel);
    let before = std::fs::read(&host).unwrap();
    let (code, out, err) = import(dir.path(), &[host.to_str().unwrap(), "-o", "gateway.toml"]);
    assert_eq!(code, Some(0), "{rel}: {err}");
    assert_eq!(std::fs::read(&host).unwrap(), before, "{rel} was changed");
    let toml = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    let secrets_path = dir.path().join("secrets.env");
    assert_eq!(mode(&secrets_path), 0o600, "{rel}");
    let stored = Secrets::load(&secrets_path).unwrap();
    for (name, value) in secrets {
        assert_eq!(stored.value(name), Some(*value), "{rel}: {name}");
        assert!(!toml.contains(value), "{rel}: the TOML holds {name}'s value:\n{toml}");
        assert!(!out.contains(value) && !err.contains(value), "{rel}: the output shows {name}'s value");
        assert!(out.contains(name), "{rel}: {name} is not reported: {out}");
    }
    assert_eq!(stored.names().len(), secrets.len(), "{rel}: {:?}", stored.names());
    for (name, _) in missing {
        assert!(out.contains(&format!("  {name}: ")), "{rel}: {name} is not listed to define: {out}");
    }
    let path = dir.path().join("gateway.toml");
    let config = Config::load(&path, &env(missing)).unwrap_or_else(|e| panic!("{rel}: {e}\n{toml}"));
    let check = Command::new(gateway_bin())
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("MCP_GATEWAY_ENV_FILE")
        .envs(missing.iter().copied())
        .output()
        .unwrap();
    assert!(check.status.success(), "{rel}: {}", String::from_utf8_lossy(&check.stderr));
    (dir, config)
}

#[test]
fn claude_desktop_file_with_a_dsn_in_args() {
    let secrets = [
        ("GITHUB_GITHUB_PERSONAL_ACCESS_TOKEN", "ghp_FAKEdesktop0123456789abcdef"),
        ("POSTGRES_POSTGRESQL_PASSWORD", "pg-Desktop-s3cret"),
    ];
    let (dir, config) = imported("claude_desktop_config.json", &secrets, &[]);
    let ids: Vec<&str> = config.upstreams.iter().map(|u| u.id.as_str()).collect();
    // The gateway's own entry (`mcp-gateway stdio`) is left out.
    assert_eq!(ids, ["filesystem", "github", "postgres"]);
    assert_eq!(
        args_of(upstream(&config, "postgres"))[2],
        "postgresql://reporter:pg-Desktop-s3cret@localhost:5432/orders?sslmode=disable"
    );
    let gh = upstream(&config, "github");
    assert_eq!(env_of(gh, "GITHUB_PERSONAL_ACCESS_TOKEN"), "ghp_FAKEdesktop0123456789abcdef");
    // Not credentials: kept in the TOML, a `$` as it was.
    assert_eq!(env_of(gh, "KEYBOARD_LAYOUT"), "us");
    assert_eq!(env_of(gh, "HOME_CURRENCY"), "price: $5");
    let toml = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    assert!(toml.contains("KEYBOARD_LAYOUT = \"us\""), "{toml}");
}

#[test]
fn claude_code_file_with_defaults_and_a_token_in_a_url() {
    let secrets = [
        ("WEATHER_API_KEY", "wk-FAKE-weather-111"),
        ("MAPS_API_KEY", "mk-FAKE-maps-222"),
        ("MAPS_API_KEY_2", "mk-FAKE-maps-env-333"),
        ("ANALYTICS_X_API_KEY", "ak-FAKE-header-444"),
        ("LEGACY_FEED_TOKEN", "qs-FAKE-token-555"),
    ];
    let missing = [("ANALYTICS_TOKEN", "at-from-env"), ("MAPS_REGION", "eu")];
    let (_dir, config) = imported("claude-code/.mcp.json", &secrets, &missing);
    let (url, _) = http_of(upstream(&config, "legacy-feed"));
    assert_eq!(url, "https://feed.example.com/sse?token=qs-FAKE-token-555&channel=news");
    assert!(matches!(upstream(&config, "legacy-feed").transport, TransportSpec::Sse { .. }));
    let (url, headers) = http_of(upstream(&config, "analytics"));
    // `${VAR:-default}` with VAR unset: the default.
    assert_eq!(url, "https://analytics.example.com/mcp");
    assert_eq!(headers["Authorization"], "Bearer at-from-env");
    assert_eq!(headers["X-Api-Key"], "ak-FAKE-header-444");
    // Two servers' API_KEY: two names.
    assert_eq!(env_of(upstream(&config, "weather"), "API_KEY"), "wk-FAKE-weather-111");
    assert_eq!(env_of(upstream(&config, "maps"), "API_KEY"), "mk-FAKE-maps-env-333");
    assert_eq!(env_of(upstream(&config, "maps"), "MAPS_REGION"), "eu");
    let weather = upstream(&config, "weather");
    assert_eq!(args_of(weather), ["./servers/weather.js", "--units", "metric"]);
    let TransportSpec::Stdio { command, cwd, .. } = &weather.transport else { panic!() };
    assert_eq!(command, "node");
    // Relative paths keep pointing into the project.
    assert_eq!(*cwd, host_file("claude-code"));
}

#[test]
fn cursor_file_with_env_references_and_a_query_key() {
    let secrets = [
        ("LINEAR_API_KEY", "lin-FAKE-query-666"),
        ("LINEAR_AUTHORIZATION", "lin-FAKE-bearer-777"),
        ("NOTES_NOTES_DSN_PASSWORD", "my-FAKE-pass-888"),
        ("NOTES_CLIENT_SECRET", "cs-FAKE-999"),
    ];
    let (dir, config) = imported("cursor/.cursor/mcp.json", &secrets, &[("CONTEXT7_API_KEY", "c7")]);
    let (url, headers) = http_of(upstream(&config, "linear"));
    assert_eq!(url, "https://mcp.linear.app/mcp?api_key=lin-FAKE-query-666");
    assert_eq!(headers["Authorization"], "Bearer lin-FAKE-bearer-777");
    assert_eq!(http_of(upstream(&config, "context7")).1["CONTEXT7_API_KEY"], "c7");
    // `notes` was disabled in Cursor: kept, not started.
    assert!(config.upstreams.iter().all(|u| u.id != "notes"));
    let toml = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    let workspace = host_file("cursor");
    assert!(toml.contains("enabled = false"), "{toml}");
    assert!(toml.contains(&format!("{}/tools/notes_server.py", workspace.display())), "{toml}");
    assert!(toml.contains("/home/tester/notes.sqlite"), "{toml}");
    assert!(toml.contains("mysql://notes:${NOTES_NOTES_DSN_PASSWORD}@127.0.0.1:3306/notes"), "{toml}");
}

#[test]
fn vscode_file_with_inputs_env_file_and_comments() {
    let secrets = [
        ("DB_DB_PASSWORD", "vs-FAKE-pass-bbb"),
        ("DB_POSTGRES_PASSWORD", "vs-FAKE-dsn-aaa"),
        ("DB_SENTRY_AUTH_TOKEN", "st-FAKE-envfile-ccc"),
    ];
    let missing = [("INPUT_PERPLEXITY_KEY", "pk-typed-in"), ("GITHUB_MCP_PAT", "pat")];
    let (dir, config) = imported("vscode/.vscode/mcp.json", &secrets, &missing);
    assert_eq!(env_of(upstream(&config, "perplexity"), "PERPLEXITY_API_KEY"), "pk-typed-in");
    let db = upstream(&config, "db");
    assert_eq!(args_of(db)[2], "postgres://vscode:vs-FAKE-dsn-aaa@db.internal/app");
    assert_eq!(env_of(db, "SENTRY_AUTH_TOKEN"), "st-FAKE-envfile-ccc");
    assert_eq!(env_of(db, "SENTRY_ORG"), "acme");
    assert_eq!(env_of(db, "POOL_SIZE"), "5");
    assert_eq!(http_of(upstream(&config, "githubintegration")).1["Authorization"], "Bearer pat");
    // The input is a placeholder to fill in, not a value.
    let text = std::fs::read_to_string(dir.path().join("secrets.env")).unwrap();
    assert!(text.contains("# INPUT_PERPLEXITY_KEY="), "{text}");
}

/// Every file in `dir`, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn into_merges_and_refuses_clashes_leaving_both_files_unchanged() {
    let (dir, _) = write_config("");
    std::fs::remove_file(dir.path().join("gateway.toml")).unwrap();
    let d = dir.path();
    let desktop = host_file("claude_desktop_config.json");
    let cursor = host_file("cursor/.cursor/mcp.json");
    let (code, _, err) = import(d, &[desktop.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let first = std::fs::read_to_string(d.join("gateway.toml")).unwrap();

    let (code, out, err) = import(d, &[cursor.to_str().unwrap(), "--into", "gateway.toml"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("\"--config\", \"{}\"", d.join("gateway.toml").display())), "{out}");
    let merged = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    assert!(merged.starts_with(&first), "the existing text is kept as it was:\n{merged}");
    let config = Config::load(&d.join("gateway.toml"), &env(&[("CONTEXT7_API_KEY", "c7")])).unwrap();
    let ids: Vec<&str> = config.upstreams.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["context7", "filesystem", "github", "linear", "postgres"]);
    let stored = Secrets::load(&d.join("secrets.env")).unwrap();
    assert_eq!(stored.value("POSTGRES_POSTGRESQL_PASSWORD"), Some("pg-Desktop-s3cret"));
    assert_eq!(stored.value("LINEAR_API_KEY"), Some("lin-FAKE-query-666"));
    assert_eq!(mode(&d.join("secrets.env")), 0o600);

    // Again: every id clashes. Nothing changes, nothing is left behind.
    let before = snapshot(d);
    let (code, _, err) = import(d, &[desktop.to_str().unwrap(), "--into", "gateway.toml"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already has upstream filesystem, github, postgres") && err.contains("gateway.toml"), "{err}");
    assert_eq!(snapshot(d), before);

    // Without --into, an existing config is not overwritten.
    let (code, _, err) = import(d, &[desktop.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("exists") && err.contains("--into") && err.contains("--force"), "{err}");
    assert_eq!(snapshot(d), before);

    // With --force it is replaced; the secrets file keeps what it held.
    let (code, _, err) = import(d, &[desktop.to_str().unwrap(), "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("gateway.toml")).unwrap(), first);
    assert_eq!(Secrets::load(&d.join("secrets.env")).unwrap().value("LINEAR_API_KEY"), Some("lin-FAKE-query-666"));
}

#[test]
fn into_refuses_a_secret_name_holding_another_value() {
    let (dir, path) = write_config("[gateway]\nsecrets_file = \"secrets.env\"\n");
    let d = dir.path();
    std::fs::write(d.join("secrets.env"), "POSTGRES_POSTGRESQL_PASSWORD=\"another\"\n").unwrap();
    let before = snapshot(d);
    let desktop = host_file("claude_desktop_config.json");
    let (code, out, err) = import(d, &[desktop.to_str().unwrap(), "--into", path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("already holds POSTGRES_POSTGRESQL_PASSWORD with another value"), "{err}");
    assert!(!err.contains("another\"") && !err.contains("pg-Desktop"), "{err}");
    assert_eq!(snapshot(d), before);
}

#[test]
fn into_a_config_without_a_secrets_file_names_one() {
    let (dir, path) = write_config("# mine\n[gateway]\nlisten = \"127.0.0.1:9999\"\n");
    let host = host_file("claude-code/.mcp.json");
    let (code, _, err) = import(dir.path(), &[host.to_str().unwrap(), "--into", path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# mine\n[gateway]\nsecrets_file = \"secrets.env\"\nlisten"), "{text}");
    let config = Config::load(&path, &env(&[("ANALYTICS_TOKEN", "a"), ("MAPS_REGION", "b")])).unwrap();
    assert_eq!(config.upstreams.len(), 4);
    assert_eq!(config.secrets_path, Some(dir.path().join("secrets.env")));
}

#[test]
fn bad_input_names_the_file_and_writes_nothing() {
    let cases = [
        ("{\"mcpServers\": {", "not JSON"),
        ("[1, 2]", "the top level is not a JSON object"),
        ("{\"servers2\": {}}", "no `mcpServers` object"),
        (
            "{\"mcpServers\": {\"x\": {\"args\": [\"a\"]}}}",
            "server \"x\": neither `command` (stdio) nor `url` (HTTP) is set",
        ),
        ("{\"mcpServers\": {\"x\": {\"command\": \"a\", \"url\": \"http://h\"}}}", "both `command` and `url`"),
        ("{\"mcpServers\": {\"x\": {\"command\": \"a\", \"args\": \"-y\"}}}", "`args` is not an array"),
        ("{\"mcpServers\": {\"x\": {\"type\": \"ws\", \"url\": \"ws://h\"}}}", "unknown `type` \"ws\""),
        (
            "{\"mcpServers\": {\"x\": {\"command\": \"${NOT_SET_ANYWHERE}/bin/x\"}}}",
            "`${NOT_SET_ANYWHERE}`, which is not set",
        ),
        // Caught by the gateway's own loader, before anything is renamed into place.
        (
            "{\"mcpServers\": {\"x\": {\"url\": \"http://h/mcp\", \"headers\": {\"Bad Header\": \"v\", \"api_key\": \"k\"}}}}",
            "does not load",
        ),
    ];
    for (text, what) in cases {
        let (dir, _) = write_config("");
        let d = dir.path();
        std::fs::remove_file(d.join("gateway.toml")).unwrap();
        std::fs::write(d.join("host.json"), text).unwrap();
        let before = snapshot(d);
        let (code, _, err) = import(d, &["host.json"]);
        assert_eq!(code, Some(64), "{text}: {err}");
        assert!(err.contains(&format!("{}", d.join("host.json").display())) && err.contains(what), "{text}: {err}");
        assert_eq!(snapshot(d), before, "{text}");
    }
}

#[test]
fn secrets_go_to_the_env_file_the_gateway_reads() {
    let (dir, _) = write_config("");
    let d = dir.path();
    std::fs::remove_file(d.join("gateway.toml")).unwrap();
    let elsewhere = d.join("elsewhere.env");
    let host = host_file("claude_desktop_config.json");
    let (code, _, err) = import_with(d, &[host.to_str().unwrap()], &[("MCP_GATEWAY_ENV_FILE", &elsewhere)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(mode(&elsewhere), 0o600);
    assert!(!d.join("secrets.env").exists());
    let toml = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    assert!(!toml.contains("secrets_file"), "{toml}");
    let vars = env(&[("MCP_GATEWAY_ENV_FILE", elsewhere.to_str().unwrap())]);
    let config = Config::load(&d.join("gateway.toml"), &vars).unwrap();
    assert_eq!(args_of(upstream(&config, "postgres"))[2].split(':').nth(2), Some("pg-Desktop-s3cret@localhost"));
}
