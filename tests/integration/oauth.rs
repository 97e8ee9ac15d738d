//! Upstream OAuth (issue 6, item 4): the gateway's own tokens for an
//! OAuth-protected upstream, against `tests/fixtures/oauth_upstream.py`
//! (the official Python SDK as resource server, its own authorization
//! server): client credentials, `mcp-gateway auth login` done headless
//! (PKCE S256, RFC 8707 resource, RFC 9728/8414 discovery, dynamic client
//! registration, loopback callback), the 0600 token file, refresh with
//! rotation that survives a restart, and per-principal tokens. And, against
//! an in-process server whose authorization server moves (`moving`), the
//! issuer binding of SEP-2352: a new login registers with the new server,
//! which never sees the old server's client.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::keys::{ALICE, BOB, OPS, keys};
use crate::support::*;

/// The fixture and its base URL (the issuer; the resource is BASE/mcp).
pub(crate) async fn upstream(args: &[&str]) -> (Fixture, String) {
    let up = Fixture::python("oauth_upstream.py", args).await;
    let base = format!("http://127.0.0.1:{}", up.port);
    (up, base)
}

async fn control(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}/control/{path}")).await.unwrap().json().await.unwrap()
}

async fn expire_tokens(base: &str) {
    let r = reqwest::Client::new().post(format!("{base}/control/expire-tokens")).send().await.unwrap();
    assert!(r.status().is_success());
}

/// The `whoami` of a call, or the error it got.
fn who(r: &Value) -> Value {
    assert!(r.get("error").is_none() && r["result"]["isError"] != true, "{r}");
    serde_json::from_str(&text(r)).unwrap()
}

/// Requests the fixture received at `path`.
async fn requests(base: &str, path: &str) -> Vec<Value> {
    control(base, &format!("requests?path={path}")).await.as_array().unwrap().clone()
}

/// A running `mcp-gateway auth login`, past the point where it printed
/// the authorization URL.
struct Login {
    child: tokio::process::Child,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    printed: String,
    url: reqwest::Url,
}

impl Login {
    async fn start(config: &Path, args: &[&str]) -> Login {
        let mut child = Command::new(gateway_bin())
            .args(["auth", "login"])
            .args(args)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = String::new();
        loop {
            let line = tokio::time::timeout(PATIENCE, out.next_line()).await.expect("login prints a URL").unwrap();
            let Some(line) = line else {
                let err = child.wait_with_output().await.unwrap();
                panic!("auth login ended before printing a URL:\n{printed}\n{}", String::from_utf8_lossy(&err.stderr));
            };
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("http") {
                let url = reqwest::Url::parse(&line).unwrap();
                return Login { child, out, printed, url };
            }
        }
    }

    /// Waits for the command to end: whether it succeeded, and all it said.
    async fn finish(mut self) -> (bool, String) {
        let done = tokio::time::timeout(PATIENCE, self.child.wait_with_output()).await.expect("login ends").unwrap();
        while let Ok(Some(line)) = self.out.next_line().await {
            self.printed.push_str(&line);
            self.printed.push('\n');
        }
        (done.status.success(), format!("{}{}", self.printed, String::from_utf8_lossy(&done.stderr)))
    }
}

/// Runs `mcp-gateway auth login` and completes it the way a browser would:
/// opens the printed URL (plus `extra` query) and follows the redirects to
/// the loopback callback. Returns the URL, the exit status and the output.
pub(crate) async fn login(config: &Path, args: &[&str], extra: &str) -> (reqwest::Url, bool, String) {
    let run = Login::start(config, args).await;
    let url = run.url.clone();
    let page = reqwest::get(format!("{url}{extra}")).await.unwrap().text().await.unwrap();
    let (ok, said) = run.finish().await;
    (url, ok, format!("{said}\n{page}"))
}

fn query(url: &reqwest::Url, key: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

fn token_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn client_credentials_get_a_token_with_the_resource_and_a_refused_one_is_renewed() {
    let (_up, base) = upstream(&["--client", "cc:s3cret-cc"]).await;
    let (dir, path) = write_config(&format!(
        "[gateway]\nsecrets_file = \"secrets.env\"\n\
         [upstreams.bb]\nurl = \"{base}/mcp\"\n\
         [upstreams.bb.oauth]\ngrant = \"client_credentials\"\nclient_id = \"cc\"\nclient_secret = \"${{CC_SECRET}}\"\n"
    ));
    std::fs::write(dir.path().join("secrets.env"), "CC_SECRET=s3cret-cc\n").unwrap();
    let gw = Gateway::start_at(&path, dir).await;
    gw.wait_ready("bb").await;
    let mut c = gw.client().await;
    let me = who(&c.call("bb__whoami", json!({})).await);
    assert_eq!((me["sub"].as_str(), me["client_id"].as_str()), (Some("cc"), Some("cc")), "{me}");

    // Every token the gateway holds dies; the next call is refused once,
    // renewed, and sent again.
    expire_tokens(&base).await;
    let r = c.call("bb__echo", json!({"text": "still here"})).await;
    assert_eq!(text(&r), "still here", "{r}");
    let stats = control(&base, "stats").await;
    assert_eq!(stats["tokens_issued"]["client_credentials"], 2, "{stats}");

    // The token requests: client credentials by HTTP Basic, the RFC 8707
    // resource, nothing else of ours.
    let token_reqs = requests(&base, "/token").await;
    assert_eq!(token_reqs.len(), 2, "{token_reqs:?}");
    for t in &token_reqs {
        let body = t["body"].as_str().unwrap();
        assert!(body.contains("grant_type=client_credentials"), "{body}");
        let resource = format!("resource={}", urlencode(&format!("{base}/mcp")));
        assert!(body.contains(&resource), "{body} lacks {resource}");
        assert!(t["headers"]["authorization"].as_str().unwrap().starts_with("Basic "), "{t}");
    }
    // Every MCP request after discovery carried a bearer token.
    let mcp = requests(&base, "/mcp").await;
    let with_token = mcp
        .iter()
        .filter(|r| r["headers"]["authorization"].as_str().is_some_and(|a| a.starts_with("Bearer at_")))
        .count();
    assert!(with_token >= 3, "{mcp:?}");
    let metrics = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .contains(r#"mcp_gateway_upstream_tokens_total{upstream="bb",grant="client_credentials",outcome="ok"} 2"#),
        "{}",
        metrics.lines().filter(|l| l.contains("upstream_tokens")).collect::<Vec<_>>().join("\n")
    );
    // The secret never reached the logs.
    assert!(!gw.proc.logs().contains("s3cret-cc"));
}

#[tokio::test]
async fn auth_login_stores_a_token_that_is_refreshed_rotated_and_survives_a_restart() {
    let (_up, base) = upstream(&[]).await;
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = tokens_dir.path().join("tokens.json");
    let toml = format!(
        "[gateway]\ntoken_file = {:?}\n[upstreams.bb]\nurl = \"{base}/mcp\"\n\
         [upstreams.bb.oauth]\ngrant = \"authorization_code\"\n",
        path_str(&tokens)
    );
    // Before any login the upstream waits, and says what to do.
    let (dir, path) = write_config(&toml);
    let gw = Gateway::start_at(&path, dir).await;
    let down = gw.wait_upstream("bb", |u| u["state"] == "down").await;
    assert!(down.to_string().contains("auth login bb"), "{down}");

    let (cfg_dir, cfg) = write_config(&toml);
    let (url, ok, out) = login(&cfg, &["bb"], "&login_hint=bob").await;
    assert!(ok, "{out}");
    assert!(out.contains("Logged in to `bb` for the gateway"), "{out}");
    // The authorization request: PKCE S256, the resource, a loopback
    // redirect, a dynamically registered client, and state.
    assert_eq!(query(&url, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(query(&url, "code_challenge").map(|c| c.len()), Some(43));
    assert_eq!(query(&url, "resource"), Some(format!("{base}/mcp")));
    assert!(query(&url, "redirect_uri").unwrap().starts_with("http://127.0.0.1:"), "{url}");
    assert!(query(&url, "state").is_some_and(|s| s.len() >= 32));
    assert_eq!(control(&base, "stats").await["registered_clients"], 1);
    let code_req = &requests(&base, "/token").await[0];
    let body = code_req["body"].as_str().unwrap();
    assert!(body.contains("grant_type=authorization_code") && body.contains("code_verifier="), "{body}");
    assert!(body.contains(&format!("resource={}", urlencode(&format!("{base}/mcp")))), "{body}");

    let mode = std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");
    let first_refresh = token_file(&tokens)["upstreams"]["bb"]["shared"]["refresh_token"].clone();
    assert!(first_refresh.is_string());

    // The running gateway notices the login.
    gw.wait_ready("bb").await;
    let mut c = gw.client().await;
    assert_eq!(who(&c.call("bb__whoami", json!({})).await)["sub"], "bob");

    // Expired: refreshed with the refresh token, which rotates; the new
    // one is in the file before it is used.
    expire_tokens(&base).await;
    assert_eq!(text(&c.call("bb__echo", json!({"text": "after refresh"})).await), "after refresh");
    let stats = control(&base, "stats").await;
    assert_eq!((stats["refreshes"].as_u64(), stats["refresh_reuse_refused"].as_u64()), (Some(1), Some(0)), "{stats}");
    let second_refresh = token_file(&tokens)["upstreams"]["bb"]["shared"]["refresh_token"].clone();
    assert_ne!(first_refresh, second_refresh, "the rotated refresh token was stored");
    gw.stop().await;

    // A new gateway uses the stored tokens, and refreshes with the rotated
    // refresh token (the spent one would be refused and counted).
    let gw = Gateway::start_at(&cfg, cfg_dir).await;
    gw.wait_ready("bb").await;
    expire_tokens(&base).await;
    let mut c = gw.client().await;
    assert_eq!(who(&c.call("bb__whoami", json!({})).await)["sub"], "bob");
    let stats = control(&base, "stats").await;
    assert_eq!((stats["refreshes"].as_u64(), stats["refresh_reuse_refused"].as_u64()), (Some(2), Some(0)), "{stats}");

    // `auth tokens` lists it without its value; `auth logout` revokes it.
    let (cfg_dir2, cfg2) = write_config(&toml);
    let listed = Command::new(gateway_bin()).args(["auth", "tokens", "--config"]).arg(&cfg2).output().await.unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let access = token_file(&tokens)["upstreams"]["bb"]["shared"]["access_token"].as_str().unwrap().to_owned();
    assert!(listed.contains("bb  (gateway)") && !listed.contains(&access), "{listed}");
    let out = Command::new(gateway_bin()).args(["auth", "logout", "bb", "--config"]).arg(&cfg2).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(token_file(&tokens)["upstreams"]["bb"]["shared"].is_null());
    assert_eq!(control(&base, "stats").await["revocations"], 1);
    drop(cfg_dir2);
}

#[tokio::test]
async fn per_principal_upstreams_call_with_each_users_own_token() {
    let (_up, base) = upstream(&[]).await;
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = tokens_dir.path().join("tokens.json");
    let toml = format!(
        "[gateway]\ntoken_file = {:?}\n{}\
         [upstreams.bb]\nurl = \"{base}/mcp\"\n\
         [upstreams.bb.oauth]\ngrant = \"authorization_code\"\nper_principal = true\n",
        path_str(&tokens),
        keys()
    );
    let (cfg_dir, cfg) = write_config(&toml);
    // The gateway's own login (lists the tools) and alice's.
    for (args, hint) in [(&["bb"][..], "svc"), (&["bb", "--principal", "alice"][..], "alice")] {
        let (_, ok, out) = login(&cfg, args, &format!("&login_hint={hint}")).await;
        assert!(ok, "{out}");
    }
    // A name no principal can have is refused before anything is asked.
    let none = std::process::Command::new(gateway_bin())
        .args(["auth", "login", "bb", "--principal", "carol", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&none.stderr);
    assert!(!none.status.success() && said.contains("no API key is named `carol`"), "{said}");
    let (bad, _, out) = login(&cfg, &["bb", "--principal", "key:carol"], "&code_challenge_method=plain").await;
    assert!(out.contains("refused") || out.contains("invalid_request"), "a refused login says so: {bad}\n{out}");

    let mut gw = Gateway::start_at(&cfg, cfg_dir).await;
    gw.authorize(OPS);
    gw.wait_ready("bb").await;
    let mut alice = McpHttp::connect_as(&gw.url(), ALICE).await;
    let mut bob = McpHttp::connect_as(&gw.url(), BOB).await;
    assert_eq!(who(&alice.call("bb__whoami", json!({})).await)["sub"], "alice");

    // bob has no token: refused with what to do, never alice's or the
    // gateway's token.
    let r = bob.call("bb__whoami", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "upstream_auth", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("auth login bb --principal key:bob"), "{msg}");

    let (_, ok, out) = login(&cfg, &["bb", "--principal", "bob"], "&login_hint=bob").await;
    assert!(ok, "{out}");
    // bob's connection notices his login and comes up.
    let mut last = Value::Null;
    let start = tokio::time::Instant::now();
    while start.elapsed() < PATIENCE {
        last = bob.call("bb__whoami", json!({})).await;
        if last.get("error").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(who(&last)["sub"], "bob");
    assert_eq!(who(&alice.call("bb__whoami", json!({})).await)["sub"], "alice");
    // The upstream never saw a client's API key.
    for r in requests(&base, "/mcp").await {
        let auth = r["headers"]["authorization"].as_str().unwrap_or("");
        assert!(!auth.contains(ALICE) && !auth.contains(BOB), "{r}");
    }
}

#[tokio::test]
async fn a_login_refuses_forged_callbacks_and_wrong_use() {
    let (_up, base) = upstream(&[]).await;
    let toml = format!(
        "[upstreams.bb]\nurl = \"{base}/mcp\"\n[upstreams.bb.oauth]\ngrant = \"authorization_code\"\n\
         [upstreams.plain]\nurl = \"{base}/mcp\"\n\
         [upstreams.elsewhere]\nurl = \"{base}/mcp\"\n[upstreams.elsewhere.oauth]\n\
         grant = \"authorization_code\"\nresource = \"{base}/elsewhere\"\n"
    );
    let (_dir, cfg) = write_config(&toml);
    let run = |args: Vec<&'static str>| {
        let cfg = cfg.clone();
        async move {
            let out = Command::new(gateway_bin()).args(args).arg("--config").arg(&cfg).output().await.unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let (ok, err) = run(vec!["auth", "login", "plain"]).await;
    assert!(!ok && err.contains("has no [upstreams.plain.oauth]"), "{err}");
    let (ok, err) = run(vec!["auth", "login", "bb", "--principal", "x"]).await;
    assert!(!ok && err.contains("not `per_principal`"), "{err}");
    let (ok, err) = run(vec!["auth", "login", "nope"]).await;
    assert!(!ok && err.contains("no upstream `nope`"), "{err}");
    // Metadata that names another resource is never used (RFC 9728 §3.3).
    let (ok, err) = run(vec!["auth", "login", "elsewhere"]).await;
    assert!(!ok && err.contains("its metadata is for resource"), "{err}");

    // A redirect with someone else's state is refused, and nothing is
    // stored. (The "browser" here goes straight to the callback.)
    let run = Login::start(&cfg, &["bb"]).await;
    let redirect = query(&run.url, "redirect_uri").unwrap();
    let r = reqwest::get(format!("{redirect}?code=stolen&state=forged")).await.unwrap();
    assert_eq!(r.status(), 200);
    let (ok, said) = run.finish().await;
    assert!(!ok && said.contains("state does not match"), "{said}");
    assert!(requests(&base, "/token").await.is_empty(), "the forged code was never redeemed");
    assert!(
        !cfg.parent().unwrap().join("tokens.json").exists()
            || token_file(&cfg.parent().unwrap().join("tokens.json"))["upstreams"]["bb"].is_null()
    );
}

#[tokio::test]
async fn a_token_without_the_needed_scope_is_refused_with_the_step_up_to_run() {
    let (_up, base) = upstream(&[]).await;
    let toml = format!(
        "[upstreams.bb]\nurl = \"{base}/mcp\"\n[upstreams.bb.oauth]\ngrant = \"authorization_code\"\n\
"
    );
    let (dir, cfg) = write_config(&toml);
    let (_, ok, out) = login(&cfg, &["bb", "--scope", "mcp:admin"], "").await;
    assert!(ok, "{out}");
    let gw = Gateway::start_at(&cfg, dir).await;
    // initialize and tools/list pass with this token; tools/call needs mcp:tools.
    gw.wait_ready("bb").await;
    let mut c = gw.client().await;
    let r = c.call("bb__whoami", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "upstream_auth", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("needs scope `mcp:tools`") && msg.contains("--scope \"mcp:tools\""), "{msg}");
    assert_eq!(control(&base, "stats").await["mcp_403"], 1, "refused once, not retried");

    // The step-up the message asks for, done while the gateway runs: its
    // next call uses the new token (no restart).
    let (_, ok, out) = login(&cfg, &["bb", "--scope", "mcp:tools mcp:admin"], "").await;
    assert!(ok, "{out}");
    let me = who(&c.call("bb__whoami", json!({})).await);
    assert!(me["scopes"].as_array().unwrap().contains(&json!("mcp:tools")), "{me}");
}

/// An OAuth-protected MCP server whose authorization server can change
/// (SEP-2352), in process: the resource at `/mcp` and two authorization
/// servers, issuers `BASE/as1` and `BASE/as2`. Its RFC 9728 metadata names
/// the current one, and it takes only that one's tokens. Each server records
/// the client ids it was shown (registration, authorization, token).
mod moving {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Redirect, Response};
    use serde_json::{Value, json};

    #[derive(Default)]
    pub(super) struct Servers {
        pub(super) base: String,
        /// 1 or 2: the server the metadata names.
        pub(super) current: AtomicU8,
        /// `(server, what, client_id)` for every client id an authorization server saw.
        pub(super) seen: Mutex<Vec<(u8, &'static str, String)>>,
    }

    fn json(status: StatusCode, v: &Value) -> Response {
        (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
    }

    fn server(n: &str) -> Option<u8> {
        match n {
            "as1" => Some(1),
            "as2" => Some(2),
            _ => None,
        }
    }

    pub(super) async fn start() -> Arc<Servers> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = Arc::new(Servers {
            base: format!("http://{}", listener.local_addr().unwrap()),
            current: AtomicU8::new(1),
            ..Servers::default()
        });
        let app = axum::Router::new()
            .route("/mcp", axum::routing::post(mcp).get(|| async { StatusCode::METHOD_NOT_ALLOWED }))
            .route("/.well-known/oauth-protected-resource/mcp", axum::routing::get(resource_metadata))
            .route("/.well-known/oauth-authorization-server/{n}", axum::routing::get(server_metadata))
            .route("/{n}/register", axum::routing::post(register))
            .route("/{n}/authorize", axum::routing::get(authorize))
            .route("/{n}/token", axum::routing::post(token))
            .with_state(s.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        s
    }

    async fn resource_metadata(State(s): State<Arc<Servers>>) -> Response {
        let n = s.current.load(Ordering::SeqCst);
        json(
            StatusCode::OK,
            &json!({"resource": format!("{}/mcp", s.base), "authorization_servers": [format!("{}/as{n}", s.base)]}),
        )
    }

    async fn server_metadata(State(s): State<Arc<Servers>>, Path(n): Path<String>) -> Response {
        if server(&n).is_none() {
            return StatusCode::NOT_FOUND.into_response();
        }
        let at = format!("{}/{n}", s.base);
        json(
            StatusCode::OK,
            &json!({"issuer": at, "authorization_endpoint": format!("{at}/authorize"), "token_endpoint": format!("{at}/token"),
                   "registration_endpoint": format!("{at}/register"), "code_challenge_methods_supported": ["S256"],
                   "response_types_supported": ["code"]}),
        )
    }

    async fn register(State(s): State<Arc<Servers>>, Path(n): Path<String>) -> Response {
        let Some(k) = server(&n) else { return StatusCode::NOT_FOUND.into_response() };
        let id = format!("{n}-client");
        s.seen.lock().unwrap().push((k, "register", id.clone()));
        json(StatusCode::CREATED, &json!({"client_id": id, "token_endpoint_auth_method": "none"}))
    }

    async fn authorize(
        State(s): State<Arc<Servers>>,
        Path(n): Path<String>,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> Response {
        let Some(k) = server(&n) else { return StatusCode::NOT_FOUND.into_response() };
        s.seen.lock().unwrap().push((k, "authorize", q.get("client_id").cloned().unwrap_or_default()));
        let mut to = reqwest::Url::parse(&q["redirect_uri"]).unwrap();
        to.query_pairs_mut().append_pair("code", &format!("{n}-code")).append_pair("state", &q["state"]);
        Redirect::to(to.as_str()).into_response()
    }

    async fn token(State(s): State<Arc<Servers>>, Path(n): Path<String>, body: String) -> Response {
        let Some(k) = server(&n) else { return StatusCode::NOT_FOUND.into_response() };
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        s.seen.lock().unwrap().push((k, "token", form.get("client_id").cloned().unwrap_or_default()));
        json(StatusCode::OK, &json!({"access_token": format!("{n}-token"), "token_type": "Bearer", "expires_in": 3600}))
    }

    async fn mcp(State(s): State<Arc<Servers>>, headers: HeaderMap, body: String) -> Response {
        let n = s.current.load(Ordering::SeqCst);
        let want = format!("Bearer as{n}-token");
        if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            let challenge =
                format!(r#"Bearer resource_metadata="{}/.well-known/oauth-protected-resource/mcp""#, s.base);
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)]).into_response();
        }
        let msg: Value = serde_json::from_str(&body).unwrap();
        let Some(id) = msg.get("id").cloned() else { return StatusCode::ACCEPTED.into_response() };
        let result = match msg["method"].as_str().unwrap_or("") {
            "initialize" => json!({"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                                   "serverInfo": {"name": "moving", "version": "1"}}),
            "tools/list" => json!({"tools": [{"name": "issuer", "inputSchema": {"type": "object"}}]}),
            "tools/call" => json!({"content": [{"type": "text", "text": format!("as{n}")}]}),
            "ping" => json!({}),
            other => {
                let error = json!({"code": -32601, "message": format!("no {other}")});
                return json(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "error": error}));
            }
        };
        json(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }
}

/// SEP-2352 (MCP 2026-07-28): the upstream moves to another authorization
/// server. The running gateway drops the old server's token (not refreshed
/// there, not sent again), logs and counts the change and says to log in;
/// that login registers with the new server, which never sees the old
/// server's client; the running gateway then uses the new token.
#[tokio::test]
async fn a_new_authorization_server_gets_a_new_registration_and_never_the_old_client() {
    use std::sync::atomic::Ordering;
    let servers = moving::start().await;
    let base = servers.base.clone();
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = tokens_dir.path().join("tokens.json");
    let toml = format!(
        "[gateway]\ntoken_file = {:?}\n[upstreams.bb]\nurl = \"{base}/mcp\"\n\
         [upstreams.bb.oauth]\ngrant = \"authorization_code\"\n",
        path_str(&tokens)
    );
    let (dir, cfg) = write_config(&toml);
    let (_, ok, out) = login(&cfg, &["bb"], "").await;
    assert!(ok, "{out}");
    assert_eq!(token_file(&tokens)["upstreams"]["bb"]["shared"]["issuer"], format!("{base}/as1"), "the issuer is kept");
    let gw = Gateway::start_at(&cfg, dir).await;
    gw.wait_ready("bb").await;
    let mut c = gw.client().await;
    assert_eq!(text(&c.call("bb__issuer", json!({})).await), "as1");

    // The upstream now names as2 and refuses as1's token.
    servers.current.store(2, Ordering::SeqCst);
    let r = c.call("bb__issuer", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "upstream_auth", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("authorization server changed from {base}/as1 to {base}/as2")), "{msg}");
    assert!(msg.contains("run `mcp-gateway auth login bb`"), "{msg}");
    let metrics = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .contains(r#"mcp_gateway_upstream_tokens_total{upstream="bb",grant="stored",outcome="issuer_changed"} 1"#),
        "{}",
        metrics.lines().filter(|l| l.contains("upstream_tokens")).collect::<Vec<_>>().join("\n")
    );
    assert!(gw.proc.logs().contains("The upstream's authorization server changed"), "a clear log line");

    // The operator logs in again: a new registration with as2.
    let (url, ok, out) = login(&cfg, &["bb"], "").await;
    assert!(ok, "{out}");
    assert!(url.as_str().starts_with(&format!("{base}/as2/authorize")), "{url}");
    assert_eq!(query(&url, "client_id").as_deref(), Some("as2-client"));
    // The running gateway takes the new token.
    let mut last = Value::Null;
    let start = tokio::time::Instant::now();
    while start.elapsed() < PATIENCE {
        last = c.call("bb__issuer", json!({})).await;
        if last.get("error").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(text(&last), "as2", "{last}");
    // as2 saw its own client only; as1 was never asked to refresh.
    let seen = servers.seen.lock().unwrap().clone();
    assert!(seen.iter().filter(|(k, ..)| *k == 2).all(|(_, _, id)| id == "as2-client"), "{seen:?}");
    assert!(seen.iter().any(|(k, what, _)| *k == 2 && *what == "register"), "{seen:?}");
    assert_eq!(seen.iter().filter(|(k, what, _)| *k == 1 && *what == "token").count(), 1, "{seen:?}");
}

/// A pre-registered `client_id` the stored token was issued to by as1 is
/// not shown to as2 when the upstream moves: `auth login` refuses, saying
/// what to do, before anything is sent to as2.
#[tokio::test]
async fn a_configured_client_is_not_taken_to_a_new_authorization_server() {
    use std::sync::atomic::Ordering;
    let servers = moving::start().await;
    let base = servers.base.clone();
    let toml = format!(
        "[upstreams.bb]\nurl = \"{base}/mcp\"\n\
         [upstreams.bb.oauth]\ngrant = \"authorization_code\"\nclient_id = \"registered-at-as1\"\n"
    );
    let (_dir, cfg) = write_config(&toml);
    let (_, ok, out) = login(&cfg, &["bb"], "").await;
    assert!(ok, "{out}");
    servers.current.store(2, Ordering::SeqCst);
    let out = Command::new(gateway_bin()).args(["auth", "login", "bb", "--config"]).arg(&cfg).output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(&format!("changed from {base}/as1 to {base}/as2")), "{said}");
    assert!(said.contains("set `client_id`") && said.contains("auth logout bb"), "{said}");
    let seen = servers.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(k, ..)| *k == 1), "as2 saw nothing: {seen:?}");
}
