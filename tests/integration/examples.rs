//! The examples in `examples/` (issue 24, point 2), run as a user runs
//! them: each file is copied beside the folders and secrets file it names
//! and served by `mcp-gateway serve`, against the real server it is for.
//! The only edit is the launch command: `npx -y <package>@<pin>` becomes
//! the same pinned package installed by scripts/install-peers.sh (tests
//! download nothing), and Bytebase's URL and the `[auth]` key hashes
//! become the OAuth fixture's and the test keys'. `examples/README.md`
//! says which test covers which file.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::oauth::{login, upstream as oauth_upstream};
use crate::support::databases::*;
use crate::support::keys::{ALICE, OPS};
use crate::support::*;

/// The text of `examples/<name>`.
fn example(name: &str) -> String {
    std::fs::read_to_string(root().join("examples").join(name)).unwrap_or_else(|e| panic!("examples/{name}: {e}"))
}

/// `examples/<name>` with each `(from, to)` replaced, asserting `from`
/// occurs exactly `times` times (so an edit of the example that the test
/// no longer matches fails here, not later in a confusing way).
fn edited(name: &str, edits: &[(&str, &str, usize)]) -> String {
    let mut text = example(name);
    for (from, to, times) in edits {
        assert_eq!(text.matches(from).count(), *times, "examples/{name} no longer has {from:?} {times} times");
        text = text.replace(from, to);
    }
    text
}

/// `npx -y <pkg>` in an example, as the installed package run by `node`.
fn npx(pkg: &str, node: &Path, main: &Path) -> (String, String) {
    (
        format!("command = \"npx\"\nargs = [\"-y\", \"{pkg}\", "),
        format!("command = {:?}\nargs = [{:?}, ", path_str(node), path_str(main)),
    )
}

/// The installed entry point of a pinned `@modelcontextprotocol` server.
fn reference_server(name: &str) -> PathBuf {
    installed(npm().join(format!("@modelcontextprotocol/{name}/dist/index.js")))
}

/// `node` on PATH (the system one, Node 20), for the reference servers.
fn node() -> PathBuf {
    PathBuf::from("node")
}

/// The error of a tools/call the gateway refused by an argument rule.
fn assert_outside(r: &Value, what: &str) {
    assert_eq!(r["error"]["code"], -32602, "{what}: {r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("is outside what you may use"), "{what}: {msg}");
}

/// Every example is a valid config as committed (with its secrets file's
/// `.example`), and examples/README.md names each one.
#[test]
fn every_example_is_valid_and_described() {
    let readme = example("README.md");
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") || path.file_name().is_some_and(|n| n == "rules.toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(readme.contains(&format!("[{name}]({name})")), "examples/README.md does not describe {name}");
        let mut cmd = std::process::Command::new(gateway_bin());
        cmd.args(["check", "--config"]).arg(&path);
        let secrets = path.with_extension("env.example");
        if example(&name).contains("secrets_file") {
            assert!(secrets.exists(), "{name} reads a secrets file: commit {} beside it", secrets.display());
            cmd.env("MCP_GATEWAY_ENV_FILE", &secrets);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} examples found");
}

/// filesystem.toml: `docs` lists only reading tools, `scratch` writes; the
/// argument rules (relative prefixes, `resolve = true`) refuse a path out
/// of each mount, through `..`, a symlink, or a move's destination, before
/// the server sees it.
#[tokio::test]
async fn filesystem_example_mounts_one_folder_read_only_and_one_read_write() {
    let (from, to) =
        npx("@modelcontextprotocol/server-filesystem@2026.8.31", &node(), &reference_server("server-filesystem"));
    let (dir, config) = write_config(&edited("filesystem.toml", &[(&from, &to, 2)]));
    let d = dir.path().canonicalize().unwrap();
    std::fs::create_dir(d.join("files")).unwrap();
    std::fs::create_dir(d.join("scratch")).unwrap();
    std::fs::write(d.join("files/hello.txt"), "hello from files").unwrap();
    std::fs::write(d.join("secret.txt"), "outside every mount").unwrap();
    std::os::unix::fs::symlink(d.join("secret.txt"), d.join("files/escape")).unwrap();
    let gw = Gateway::start_at(&config, dir).await;
    gw.wait_ready("docs").await;
    gw.wait_ready("scratch").await;
    let mut c = gw.client().await;
    let names = c.tool_names().await;
    for t in ["docs__read_text_file", "docs__list_directory", "scratch__write_file", "scratch__move_file"] {
        assert!(names.contains(&t.to_owned()), "{t} missing from {names:?}");
    }
    for t in ["docs__write_file", "docs__edit_file", "docs__move_file", "docs__create_directory"] {
        assert!(!names.contains(&t.to_owned()), "{t} listed on the read-only mount");
    }
    let at = |p: &str| d.join(p).display().to_string();

    let r = c.call("docs__read_text_file", json!({"path": at("files/hello.txt")})).await;
    assert_eq!(text(&r), "hello from files", "{r}");
    // A relative path is the same file to the rules and to the server.
    let r = c.call("docs__read_text_file", json!({"path": "hello.txt"})).await;
    assert_eq!(text(&r), "hello from files", "{r}");
    assert_outside(&c.call("docs__read_text_file", json!({"path": "../secret.txt"})).await, "relative ..");
    let r = c.call("scratch__write_file", json!({"path": at("scratch/note.txt"), "content": "written"})).await;
    assert_ne!(r["result"]["isError"], true, "{r}");
    assert_eq!(std::fs::read_to_string(d.join("scratch/note.txt")).unwrap(), "written");

    // The read-only mount has no write tool at all.
    let r = c.call("docs__write_file", json!({"path": at("files/x.txt"), "content": "no"})).await;
    assert!(r["error"]["message"].as_str().unwrap_or_default().contains("Unknown tool"), "{r}");
    assert!(!d.join("files/x.txt").exists());
    // Out of a mount: another mount, `..`, a symlink, a move's destination.
    assert_outside(&c.call("docs__read_text_file", json!({"path": at("scratch/note.txt")})).await, "other mount");
    assert_outside(&c.call("docs__read_text_file", json!({"path": at("files/../secret.txt")})).await, "..");
    assert_outside(&c.call("docs__read_text_file", json!({"path": at("files/escape")})).await, "symlink");
    let r = c
        .call("scratch__move_file", json!({"source": at("scratch/note.txt"), "destination": at("files/note.txt")}))
        .await;
    assert_outside(&r, "move out");
    assert!(d.join("scratch/note.txt").exists() && !d.join("files/note.txt").exists());
    let m = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    assert!(
        m.lines().any(|l| l.starts_with("mcp_gateway_policy_denials_total") && l.contains("reason=\"argument\"")),
        "{m}"
    );
    assert!(gw.stop().await.success());
}

/// postgres.toml: server-postgres and DBHub over stdio, both given the DSN
/// from the secrets file; the password in it is never in a log line or
/// in /status.
#[tokio::test]
async fn postgres_example_queries_through_server_postgres_and_dbhub() {
    let pg = Postgres::start().await;
    let (pg_from, pg_to) =
        npx("@modelcontextprotocol/server-postgres@0.6.2", &node(), &reference_server("server-postgres"));
    let dbhub_main = installed(npm().join("@bytebase/dbhub/dist/index.js"));
    let (db_from, db_to) = npx("@bytebase/dbhub@1.4.0", &installed(node22()), &dbhub_main);
    let (dir, config) = write_config(&edited("postgres.toml", &[(&pg_from, &pg_to, 1), (&db_from, &db_to, 1)]));
    // The fixture trusts local connections: the password is only carried.
    let password = "example-pg-password-4711";
    let dsn = format!("postgresql://postgres:{password}@127.0.0.1:{}/postgres?sslmode=disable", pg.port);
    std::fs::write(dir.path().join("postgres.env"), format!("PG_DSN={dsn}\n")).unwrap();
    let gw = Gateway::start_at(&config, dir).await;
    gw.wait_ready("postgres").await;
    gw.wait_ready("dbhub").await;
    let mut c = gw.client().await;
    let sql = "select name from items order by id";
    let r = c.call("postgres__query", json!({"sql": sql})).await;
    let rows = text(&r);
    assert!(rows.contains("alpha") && rows.contains("gamma"), "{r}");
    let r = c.call("dbhub__execute_sql", json!({"sql": sql})).await;
    let rows = text(&r);
    assert!(rows.contains("alpha") && rows.contains("gamma"), "{r}");
    let status = gw.status().await.to_string();
    let logs = gw.proc.logs();
    assert!(!status.contains(password) && !logs.contains(password), "the DSN's password leaked:\n{status}\n{logs}");
    assert!(gw.stop().await.success());
}

/// dbhub-http.toml: DBHub over Streamable HTTP behind a bearer token,
/// URL and token from the secrets file.
#[tokio::test]
async fn dbhub_http_example_calls_with_the_bearer_from_the_secrets_file() {
    let pg = Postgres::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let db = dbhub(&pg, scratch.path()).await;
    let (dir, config) = write_config(&example("dbhub-http.toml"));
    std::fs::write(dir.path().join("dbhub-http.env"), format!("DBHUB_URL={}\nDBHUB_TOKEN={DBHUB_TOKEN}\n", db.url()))
        .unwrap();
    let gw = Gateway::start_at(&config, dir).await;
    gw.wait_ready("dbhub").await;
    let mut c = gw.client().await;
    let r = c.call("dbhub__execute_sql", json!({"sql": "select name from items order by id"})).await;
    let rows = text(&r);
    assert!(rows.contains("alpha") && rows.contains("gamma"), "{r}");
    let status = gw.status().await.to_string();
    assert!(!status.contains(DBHUB_TOKEN) && !gw.proc.logs().contains(DBHUB_TOKEN), "the token leaked: {status}");
    assert!(gw.stop().await.success());
}

/// bytebase.toml against an OAuth-protected MCP server in Bytebase's place:
/// the gateway's own login and alice's (`auth login … --principal alice`),
/// then alice calls with her token and ops, who never logged in, is told
/// the command to run.
#[tokio::test]
async fn bytebase_example_calls_with_each_principals_own_token() {
    let (_up, base) = oauth_upstream(&[]).await;
    let zero = "0".repeat(64);
    let one = format!("{}1", "0".repeat(63));
    let alice = mcp_gateway::security::auth::hash_key(ALICE);
    let ops = mcp_gateway::security::auth::hash_key(OPS);
    let toml = edited(
        "bytebase.toml",
        &[
            ("https://bytebase.example.com/mcp", &format!("{base}/mcp"), 1),
            (&format!("\"{zero}\""), &format!("\"{alice}\""), 1),
            (&format!("\"{one}\""), &format!("\"{ops}\""), 1),
        ],
    );
    let (dir, config) = write_config(&toml);
    for (args, hint) in [(&["bytebase"][..], "svc"), (&["bytebase", "--principal", "alice"][..], "alice")] {
        let (_, ok, out) = login(&config, args, &format!("&login_hint={hint}")).await;
        assert!(ok, "{out}");
    }
    assert!(dir.path().join("bytebase-tokens.json").exists(), "the tokens go to the example's token_file");
    let mut gw = Gateway::start_at(&config, dir).await;
    gw.authorize(OPS);
    gw.wait_ready("bytebase").await;
    let mut a = McpHttp::connect_as(&gw.url(), ALICE).await;
    let r = a.call("bytebase__whoami", json!({})).await;
    let who: Value = serde_json::from_str(&text(&r)).unwrap();
    assert_eq!(who["sub"], "alice", "{r}");
    let mut o = McpHttp::connect_as(&gw.url(), OPS).await;
    let r = o.call("bytebase__whoami", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "upstream_auth", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("auth login bytebase --principal key:ops"), "{r}");
    assert!(gw.stop().await.success());
}

/// pyairbyte.toml, opt-in (`MCP_GATEWAY_PYAIRBYTE=1` after
/// scripts/install-pyairbyte.sh): the example exactly as committed, `uvx`
/// found on PATH. airbyte-mcp starts within the example's
/// `startup_timeout`, lists its tools without the trusted-execution ones,
/// keeps its files out of the config's folder (`cwd`), and its stdout
/// noise is counted, not logged per line.
#[tokio::test]
async fn pyairbyte_example_starts_airbyte_mcp_with_its_cwd_and_secrets() {
    if std::env::var("MCP_GATEWAY_PYAIRBYTE").as_deref() != Ok("1") {
        eprintln!("pyairbyte example: skipped (opt-in: scripts/install-pyairbyte.sh, then MCP_GATEWAY_PYAIRBYTE=1)");
        return;
    }
    let uv = root().join("target/peers/uv-venv/bin");
    assert!(uv.join("uvx").exists(), "run scripts/install-pyairbyte.sh first");
    let (dir, config) = write_config(&example("pyairbyte.toml"));
    let secret = "pyairbyte-example-secret-value-31337";
    std::fs::write(dir.path().join("pyairbyte.env"), format!("EXAMPLE_API_KEY={secret}\n")).unwrap();
    std::fs::create_dir(dir.path().join("pyairbyte-work")).unwrap();
    // `uvx` on PATH, as a user's shell has it; the gateway passes PATH on.
    let path = format!("{}:{}", uv.display(), std::env::var("PATH").unwrap_or_default());
    let gw = Gateway::start_with_env(&config, dir, &[("PATH", &path), ("RUST_LOG", "info")]).await;
    // The example's startup_timeout (180 s) is the patience.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    let u = loop {
        let u = gw.upstream("airbyte").await;
        if u["state"] == "ready" {
            break u;
        }
        assert!(tokio::time::Instant::now() < deadline, "airbyte-mcp not ready: {u}\n{}", gw.proc.logs());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let mut c = gw.client().await;
    let names = c.tool_names().await;
    let ours: Vec<_> = names.iter().filter(|n| n.starts_with("airbyte__")).collect();
    assert!(ours.len() >= 40, "{} airbyte tools: {names:?}\n{u}", ours.len());
    assert!(!names.contains(&"airbyte__list_dotenv_secrets".to_owned()), "trusted execution is off");
    // Nothing of airbyte-mcp's in the config's folder: it ran in its cwd.
    let mut here: Vec<String> = std::fs::read_dir(gw.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["gateway.toml", "pyairbyte.env", "pyairbyte-work", "audit", "catalog-cache.json"].contains(&n.as_str())
        })
        .collect();
    here.sort();
    assert!(here.is_empty(), "airbyte-mcp wrote into the config's folder: {here:?}");
    let metrics = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    let logs = gw.proc.logs();
    assert!(!logs.contains(secret), "a secret value reached the log");
    let noise = metrics.lines().find(|l| l.starts_with("mcp_gateway_upstream_stdout_noise_lines_total{"));
    eprintln!("pyairbyte example: {} tools, status {u}, {noise:?}", ours.len());
    assert!(noise.is_some_and(|l| !l.ends_with(" 0")), "its stdout LOG lines are counted: {metrics}");
    assert!(gw.stop().await.success());
}
