//! One view of every request (design.md D12, issue 15): the gateway
//! decides on exactly what the upstream executes, and every check fails
//! closed. Each case here is a finding of the hostile review of commit
//! 1984ce6, where it passed the gateway's policy and ran upstream; every one
//! of them fails against that commit.
//!
//! - members twice (plain and spelled with escapes, 60 levels down, in
//!   `_meta`), numbers out of range, lone surrogates and deep nesting are
//!   refused before any policy looks at them, with the path named;
//! - an upstream's ambiguous reply fails its call, is never retried and is
//!   audited as refused;
//! - argument rules fail closed and cover every path argument of the
//!   filesystem server's real tools;
//! - what is hidden answers exactly like what does not exist, and costs the
//!   same: no rate-limit token, no rule history;
//! - identities are canonical: a rule for a tool's whole name covers its
//!   shortened form, an unprefixed upstream never squats another's
//!   namespace (even while that one restarts), and an API key and a JWT of
//!   the same name are two principals.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::keys::*;
use crate::support::*;

/// Counts lines of a chaos state file.
fn count(state: &std::path::Path, line: &str) -> usize {
    std::fs::read_to_string(state).unwrap_or_default().lines().filter(|l| *l == line).count()
}

/// `[upstreams.<id>]` running the chaos fixture with a state file.
fn chaos(id: &str, state: &std::path::Path, extra: &str) -> String {
    format!(
        "[upstreams.{id}]\ncommand = {:?}\nargs = [{:?}, \"--stdio\", \"--state-file\", {:?}]\n{extra}\n",
        path_str(&peers().python),
        fixture("chaos.py"),
        path_str(state)
    )
}

/// Asserts a 400 JSON-RPC -32600 refusal whose message says `says`.
fn refused(what: &str, r: &Raw, says: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["code"], -32600, "{what}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "{what}: the message should say {says:?}: {msg}");
}

/// One tools/call body with `params` as raw JSON text.
fn call_text(id: u32, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#)
}

#[tokio::test]
async fn ambiguous_messages_are_refused_before_policy_and_never_run() {
    let everything = Fixture::everything_http().await;
    let dir = tempfile::Builder::new().prefix("oneview").tempdir_in(root().join("target")).unwrap();
    let data = dir.path().join("data");
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(data.join("a.txt"), "public a").unwrap();
    std::fs::write(data.join("b.txt"), "public b").unwrap();
    std::fs::write(secret.join("key.txt"), "the secret").unwrap();
    let state = dir.path().join("chaos.log");
    let audit = dir.path().join("audit.jsonl");
    let p = peers();
    let toml = format!(
        "{}[audit]\npath = {:?}\n\
         [[access]]\nprincipals = [\"alice\"]\n\
         tools = {{ allow = [\"everything__echo\", \"filesystem__*\", \"chaos__*\"], deny = [\"filesystem__write_file\"] }}\n\
         arguments = [{{ tools = \"filesystem__*\", argument = [\"path\", \"paths\", \"source\", \"destination\"], prefix = [{:?}] }}]\n\
         [upstreams.everything]\nurl = \"{}\"\ntools = {{ deny = [\"get-env\"] }}\n\
         [upstreams.filesystem]\ncommand = \"node\"\nargs = [{:?}, {:?}]\n{}",
        keys(),
        path_str(&audit),
        path_str(&data),
        everything.url(),
        path_str(&p.filesystem),
        path_str(dir.path()),
        chaos(
            "chaos",
            &state,
            "idempotent_tools = [\"idem\"]\n[upstreams.chaos.retry]\nattempts = 3\ninitial_delay = \"5ms\"\nmax_delay = \"10ms\""
        ),
    );
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    for id in ["everything", "filesystem", "chaos"] {
        gw.wait_ready(id).await;
    }
    let alice = McpHttp::connect_as(&gw.url(), ALICE).await;

    // The finding: `everything__echo` for the gateway, `get-env` (hidden,
    // it hands out the whole environment) for a last-wins upstream.
    let get_env = [
        r#"{"name":"everything__echo","arguments":{"message":"x"},"name":"get-env"}"#,
        r#"{"name":"everything__echo","arguments":{"message":"x"},"n\u0061me":"get-env"}"#,
        r#"{"n\u0061me":"everything__echo","arguments":{"message":"x"},"\u006e\u0061\u006d\u0065":"get-env"}"#,
    ];
    for (i, params) in get_env.iter().enumerate() {
        let r = alice.post(&call_text(10 + i as u32, params), &[]).await;
        refused(params, &r, "duplicate member name at params");
        assert!(!r.body.contains("PATH"), "no environment: {}", r.body);
        assert_eq!(r.json()["error"]["data"]["reason"], "duplicate_member");
        assert_eq!(r.json()["id"], 10 + i as u32, "the id is kept");
    }

    // The same name but for letter case: a Go upstream (encoding/json
    // matches struct fields case-insensitively, the last one wins) would
    // run get-env; `ſ` folds to `s` there too.
    for params in [
        r#"{"name":"everything__echo","arguments":{"message":"x"},"Name":"get-env"}"#,
        r#"{"name":"filesystem__read_text_file","arguments":{"path":"/x"},"Arguments":{"path":"/etc/passwd"}}"#,
        "{\"name\":\"everything__echo\",\"arguments\":{\"message\":\"x\"},\"argument\u{17f}\":{}}",
    ] {
        let r = alice.post(&call_text(15, params), &[]).await;
        refused(params, &r, "member names that differ only in letter case at params");
        assert_eq!(r.json()["error"]["data"]["reason"], "case_variant");
    }

    // Retried as the idempotent tool, executed as the other one: refused,
    // nothing ran, nothing was retried.
    let r = alice
        .post(
            &call_text(
                20,
                r#"{"name":"chaos__idem","arguments":{"key":"dup","fault":"rpc_error"},"name":"chaos__work"}"#,
            ),
            &[],
        )
        .await;
    refused("idem then work", &r, "duplicate member name at params.name");
    assert_eq!((count(&state, "attempt dup"), count(&state, "exec dup")), (0, 0));

    // Path rules: a second `arguments`, and a value the old check could not
    // parse (so it saw null and let it pass) next to a path outside.
    let outside = path_str(&secret.join("key.txt"));
    let inside = path_str(&data.join("a.txt"));
    let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
    let cases = [
        (
            format!(r#"{{"name":"filesystem__read_text_file","arguments":{{"path":{inside:?}}},"arguments":{{"path":{outside:?}}}}}"#),
            "duplicate member name at params.arguments",
        ),
        (
            format!(r#"{{"name":"filesystem__read_text_file","arguments":{{"path":{inside:?},"path":{outside:?}}}}}"#),
            "duplicate member name at params.arguments.path",
        ),
        (
            format!(r#"{{"name":"filesystem__read_text_file","arguments":{{"path":{outside:?},"x":1e400}}}}"#),
            "number out of range at params.arguments.x",
        ),
        (
            format!(r#"{{"name":"filesystem__read_text_file","arguments":{{"path":{outside:?},"x":{deep}}}}}"#),
            "nesting deeper than the limit at params.arguments.x",
        ),
        (
            format!(r#"{{"name":"filesystem__read_text_file","arguments":{{"path":{outside:?},"x":"\ud800"}}}}"#),
            "lone UTF-16 surrogate at params.arguments.x",
        ),
        (
            format!(
                r#"{{"name":"filesystem__read_text_file","arguments":{{"path":{inside:?},"deep":{}{{"k":1,"k":2}}{}}}}}"#,
                r#"{"d":"#.repeat(57),
                "}".repeat(57)
            ),
            "duplicate member name at params.arguments.deep.d.d",
        ),
        (
            r#"{"name":"everything__echo","arguments":{"message":"m"},"_meta":{"progressToken":"a","progressToken":"b"}}"#
                .to_owned(),
            "duplicate member name at params._meta.progressToken",
        ),
    ];
    for (i, (params, says)) in cases.iter().enumerate() {
        let r = alice.post(&call_text(30 + i as u32, params), &[]).await;
        refused(params, &r, says);
        assert!(!r.body.contains("the secret"), "{}", r.body);
    }
    // Other methods' routed members: a task id, a resource URI.
    for (method, params, says) in [
        ("tasks/get", r#"{"taskId":"everything__a","taskId":"everything__b"}"#, "params.taskId"),
        (
            "resources/read",
            r#"{"uri":"demo://resource/static/document/architecture.md","uri":"file:///etc/passwd"}"#,
            "params.uri",
        ),
        ("prompts/get", r#"{"name":"everything__simple-prompt","name":"everything__args-prompt"}"#, "params.name"),
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":"m","method":"{method}","params":{params}}}"#);
        refused(method, &alice.post(&body, &[]).await, says);
    }
    // A client's answer to a server request is a message like any other.
    refused(
        "a response",
        &alice.post(r#"{"jsonrpc":"2.0","id":"mcpgw-1-1","result":{"action":"accept","action":"decline"}}"#, &[]).await,
        "duplicate member name at result.action",
    );

    // Argument rules fail closed, on every path argument of the real tools.
    let mut alice = alice;
    let denied = |r: &Value, arg: &str| {
        assert_eq!(r["error"]["code"], -32602, "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("argument `{arg}`")), "{msg}");
    };
    denied(&alice.call("filesystem__read_text_file", json!({"path": null})).await, "path");
    denied(&alice.call("filesystem__read_text_file", json!({"path": 7})).await, "path");
    denied(&alice.call("filesystem__read_text_file", json!({"path": {"p": inside}})).await, "path");
    let r = alice.request("tools/call", json!({"name":"filesystem__read_text_file","arguments":"x"})).await;
    assert_eq!(r["error"]["code"], -32602, "arguments that are not an object: {r}");
    denied(&alice.call("filesystem__read_multiple_files", json!({"paths": [inside, outside]})).await, "paths");
    let both =
        alice.call("filesystem__read_multiple_files", json!({"paths": [inside, path_str(&data.join("b.txt"))]})).await;
    assert!(text(&both).contains("public a") && text(&both).contains("public b"), "{both}");
    let moved = path_str(&secret.join("moved.txt"));
    denied(&alice.call("filesystem__move_file", json!({"source": inside, "destination": moved})).await, "destination");
    assert!(data.join("a.txt").exists() && !secret.join("moved.txt").exists(), "nothing moved");

    // An upstream's ambiguous reply: the work ran once, the call fails with
    // class protocol, it is not retried (though `idem` is idempotent), and
    // the audit record says the reply was refused.
    let r = alice.call("chaos__idem", json!({"key":"amb","fault":"ambiguous"})).await;
    assert_eq!(r["error"]["data"]["class"], "protocol", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("duplicate member name at result.isError"), "{r}");
    assert_eq!((count(&state, "attempt amb"), count(&state, "exec amb")), (1, 1));
    let logged = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&audit).ok()?;
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["tool"] == "idem" && l["class"] == "protocol")
    })
    .await
    .expect("an audit record of the refused reply");
    assert!(logged["policy"].as_array().unwrap().contains(&json!("reply_refused:duplicate_member")), "{logged}");

    // Counted, by reason, for both sides.
    let metrics = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    for series in [
        r#"mcp_gateway_client_messages_refused_total{transport="http",reason="duplicate_member"}"#,
        r#"mcp_gateway_client_messages_refused_total{transport="http",reason="number_out_of_range"}"#,
        r#"mcp_gateway_client_messages_refused_total{transport="http",reason="too_deep"}"#,
        r#"mcp_gateway_client_messages_refused_total{transport="http",reason="lone_surrogate"}"#,
        r#"mcp_gateway_client_messages_refused_total{transport="http",reason="case_variant"}"#,
        r#"mcp_gateway_upstream_messages_refused_total{upstream="chaos",reason="duplicate_member"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series}\n{metrics}");
    }
    // And the gateway serves on.
    assert_eq!(text(&alice.call("everything__echo", json!({"message":"still here"})).await), "Echo: still here");
}

/// `a` and `b` are the same answer apart from the names the client sent.
fn same_apart_from(a: &Raw, name_a: &str, b: &Raw, name_b: &str) {
    assert_eq!(a.status, b.status);
    let (a, b) = (a.body.replace(name_a, "<NAME>"), b.body.replace(name_b, "<NAME>"));
    assert_eq!(a, b, "a hidden name and an unknown one must answer alike");
}

#[tokio::test]
async fn hidden_answers_like_unknown_and_costs_the_same() {
    let dir = tempfile::Builder::new().prefix("hidden").tempdir_in(root().join("target")).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let rules = dir.path().join("rules.toml");
    // Blocks paged__filler_02 after paged__filler_01 for the principal: a
    // denied filler_01 must not count as that first step.
    std::fs::write(
        &rules,
        "[[rule]]\nid = \"one-then-two\"\naction = \"block\"\nscope = \"principal\"\n\
         steps = [{ tool = \"paged__filler_01\" }, { tool = \"paged__filler_02\" }]\n",
    )
    .unwrap();
    let toml = format!(
        "{}[audit]\npath = {:?}\n[rules]\nfile = {:?}\n[limits]\nper_principal = {{ rate = 0.001, burst = 3 }}\n\
         [[access]]\nprincipals = [\"bob\"]\n\
         tools = {{ allow = [\"*\"], deny = [\"paged__filler_01\", \"paged__mutate\"] }}\n\
         prompts = {{ allow = [\"*\"], deny = [\"paged__greet\"] }}\n\
         resources = {{ allow = [\"*\"], deny = [\"db+paged://main/*\"] }}\n\
         [upstreams.paged]\ncommand = {:?}\nargs = [{:?}]\n",
        keys(),
        path_str(&audit),
        path_str(&rules),
        path_str(&peers().python),
        fixture("paged_stdio.py"),
    );
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("paged").await;
    let bob = McpHttp::connect_as(&gw.url(), BOB).await;
    let ask =
        |method: &str, params: Value| json!({"jsonrpc":"2.0","id":"same","method":method,"params":params}).to_string();
    // Each pair: a hidden name, and an unknown one, in the same request.
    let pairs = [
        ("tools/call", "paged__filler_01", "paged__filler_99", json!({"name":"{N}","arguments":{}})),
        ("tools/call", "paged__mutate", "paged__mutatX", json!({"name":"{N}","arguments":{"list":"tools"}})),
        ("prompts/get", "paged__greet", "paged__greeX", json!({"name":"{N}","arguments":{"name":"x"}})),
        // A URI no upstream serves (one in a served namespace but not
        // listed goes to its upstream, which answers for itself).
        ("resources/read", "db+paged://main/users", "db+pagex://main/users", json!({"uri":"{N}"})),
        ("resources/subscribe", "db+paged://main/users", "db+pagex://main/users", json!({"uri":"{N}"})),
        (
            "completion/complete",
            "paged__greet",
            "paged__greeX",
            json!({"ref":{"type":"ref/prompt","name":"{N}"},"argument":{"name":"name","value":"a"}}),
        ),
        (
            "completion/complete",
            "db+paged://main/{table}",
            "db+pagex://main/{table}",
            json!({"ref":{"type":"ref/resource","uri":"{N}"},"argument":{"name":"table","value":"u"}}),
        ),
    ];
    for (method, hidden, unknown, params) in &pairs {
        let with = |name: &str| ask(method, serde_json::from_str(&params.to_string().replace("{N}", name)).unwrap());
        let a = bob.post(&with(hidden), &[]).await;
        let b = bob.post(&with(unknown), &[]).await;
        same_apart_from(&a, hidden, &b, unknown);
        assert_eq!(a.json()["error"]["data"]["class"], "protocol", "{method} {hidden}: {}", a.body);
    }
    // Lists leave them out.
    let mut bob = bob;
    let tools = bob.tool_names().await;
    assert!(!tools.iter().any(|t| t == "paged__filler_01" || t == "paged__mutate"), "{tools:?}");

    // None of the refusals above spent a token: all three of the bucket
    // are left for calls that go ahead, and the fourth is limited.
    for n in 1..=3 {
        let r = bob.call("paged__filler_02", json!({})).await;
        assert_eq!(text(&r), "called filler_02", "call {n}: a hidden filler_01 is no first step: {r}");
    }
    let r = bob.call("paged__filler_03", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "policy", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("rate limit"), "{r}");

    // The audit log and the metrics know what the client was not told.
    let hidden = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&audit).ok()?;
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["name"] == "paged__filler_01")
    })
    .await
    .expect("the hidden call is audited");
    assert_eq!(hidden["class"], "policy", "{hidden}");
    assert!(hidden["policy"].as_array().unwrap().contains(&json!("access:denied")), "{hidden}");
    let metrics = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"mcp_gateway_policy_denials_total{upstream="paged",tool="filler_01",reason="access"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn identities_are_canonical() {
    let idp = Fixture::python("jwt_issuer.py", &[]).await;
    let issuer = format!("http://127.0.0.1:{}", idp.port);
    let long = format!("tool_{}", "x".repeat(130));
    let limited = format!("slow_{}", "y".repeat(130));
    let toml = format!(
        "[gateway]\nmax_tool_name_length = 64\n\
         {}[[access]]\nprincipals = [\"*\"]\ntools = {{ allow = [\"*\"], deny = [\"raw__{long}\"] }}\n\
         [limits.tools]\n\"raw__{limited}\" = {{ rate = 0.001, burst = 1 }}\n\
         {}{}",
        keys_with(&format!("[auth.jwt]\nissuer = \"{issuer}\"\njwks_url = \"{issuer}/jwks.json\"\n")),
        raw_stdio("raw", ""),
        raw_stdio("sq", "prefix = false"),
    );
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("raw").await;
    gw.wait_ready("sq").await;
    let mut alice = McpHttp::connect_as(&gw.url(), ALICE).await;

    // Two tools with names past the limit: shown shortened, ruled by their
    // whole names.
    for name in [&long, &limited] {
        assert_eq!(text(&alice.call("raw__add_tool", json!({"name": name})).await), "added");
    }
    let mut names = Vec::new();
    for _ in 0..50 {
        names = alice.tool_names().await;
        if names.iter().any(|n| n.starts_with("raw__slow_")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!names.iter().any(|n| n.starts_with("raw__tool_")), "denied by its whole name: {names:?}");
    let short = names.iter().find(|n| n.starts_with("raw__slow_")).expect("the limited tool is listed").clone();
    assert_eq!(short.len(), 64, "{short}");
    let hidden_short = mcp_gateway::routing::catalog::shorten(&format!("raw__{long}"), 64);
    let r = alice.call(&hidden_short, json!({})).await;
    assert!(r["error"]["message"].as_str().unwrap().starts_with("Unknown tool"), "{r}");
    assert!(alice.call(&short, json!({})).await.get("result").is_some());
    let r = alice.call(&short, json!({})).await;
    assert!(r["error"]["message"].as_str().unwrap().contains("rate limit"), "the whole name's limit: {r}");

    // `sq` (unprefixed) lists `raw__pid`: never exposed, and calls for
    // `raw__pid` reach `raw` only, also while `raw` restarts.
    let sq_pid = text(&alice.call("pid", json!({})).await);
    assert_eq!(text(&alice.call("add_tool", json!({"name":"raw__pid"})).await), "added");
    let mut status = Value::Null;
    for _ in 0..50 {
        status = gw.status().await;
        if status["collisions"].as_array().is_some_and(|c| c.iter().any(|x| x["name"] == "raw__pid")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let squat = json!({"name":"raw__pid","refused":"sq","owner":"raw"});
    assert!(status["collisions"].as_array().unwrap().contains(&squat), "{status}");
    let r = alice.call("raw__crash", json!({})).await;
    assert!(r.get("error").is_some(), "{r}");
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let r = alice.call("raw__pid", json!({})).await;
        if r.get("result").is_some() {
            assert_ne!(text(&r), sq_pid, "a call for raw__pid reached the squatter");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An API key `bob` and a JWT whose subject is `bob` are two principals:
    // neither takes the other's session.
    let aud = urlencode(RESOURCE);
    let bob_jwt = reqwest::get(format!("{issuer}/mint?sub=bob&aud={aud}")).await.unwrap().text().await.unwrap();
    let bob = McpHttp::connect_as(&gw.url(), BOB).await;
    let ping = r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#;
    assert_eq!(bob.post(ping, &[]).await.status, 200);
    let as_jwt = McpHttp { http: bearer_client(&bob_jwt), url: gw.url(), session: bob.session.clone(), next: 0 };
    assert_eq!(as_jwt.post(ping, &[]).await.status, 404, "the JWT bob does not get the key bob's session");
    let jwt_bob = McpHttp::connect_as(&gw.url(), &bob_jwt).await;
    let as_key = McpHttp { http: bearer_client(BOB), url: gw.url(), session: jwt_bob.session.clone(), next: 0 };
    assert_eq!(as_key.post(ping, &[]).await.status, 404, "nor the other way round");
    drop(idp);
}

// === the differential property, over a seeded generator ===

/// A JSON value to write in many spellings.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    /// A number, as written.
    Num(String),
    Str(String),
    Arr(Vec<Node>),
    Obj(Vec<(String, Node)>),
}

/// Writes messages, some with one hazard (a member twice, a number out of
/// range, a lone surrogate, nesting past the limit) that the gateway must
/// refuse; the others it must accept.
struct Gen {
    rng: fastrand::Rng,
}

const NAMES: &[&str] = &[
    "name",
    "arguments",
    "path",
    "paths",
    "uri",
    "taskId",
    "_meta",
    "progressToken",
    "x",
    "é",
    "a\"b",
    "k\\",
    "\u{1F600}",
    "\u{1}",
];

impl Gen {
    fn name(&mut self) -> String {
        NAMES[self.rng.usize(..NAMES.len())].to_owned()
    }

    fn scalar(&mut self) -> Node {
        match self.rng.u8(..7) {
            0 => Node::Null,
            1 => Node::Bool(self.rng.bool()),
            2 => Node::Num(self.rng.i64(..).to_string()),
            3 => Node::Num(format!("{}e{}", self.rng.i32(-1000..1000), self.rng.i32(-300..300))),
            // Finite big integers stay allowed.
            4 => Node::Num("123456789012345678901234567890".into()),
            _ => Node::Str((0..self.rng.usize(..6)).map(|_| self.name()).collect::<Vec<_>>().join("/")),
        }
    }

    /// A value nested at most `room` more levels.
    fn value(&mut self, room: usize) -> Node {
        if room == 0 || self.rng.u8(..3) == 0 {
            return self.scalar();
        }
        let n = self.rng.usize(..4);
        if self.rng.bool() {
            Node::Arr((0..n).map(|_| self.value(room - 1)).collect())
        } else {
            Node::Obj(self.members(n, room - 1))
        }
    }

    /// `n` members with distinct names.
    fn members(&mut self, n: usize, room: usize) -> Vec<(String, Node)> {
        let mut out: Vec<(String, Node)> = Vec::new();
        for _ in 0..n {
            let k = self.name();
            if !out.iter().any(|(o, _)| *o == k) {
                out.push((k, self.value(room)));
            }
        }
        out
    }

    /// A string in JSON, each character raw or escaped at random.
    fn string(&mut self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            let must = matches!(c, '"' | '\\') || (c as u32) < 0x20;
            if must || self.rng.u8(..5) == 0 {
                match c {
                    '"' if self.rng.bool() => out.push_str("\\\""),
                    '\\' if self.rng.bool() => out.push_str("\\\\"),
                    '/' => out.push_str("\\/"),
                    _ => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{:04x}", u));
                        }
                    }
                }
            } else {
                out.push(c);
            }
        }
        out.push('"');
    }

    fn write(&mut self, n: &Node, out: &mut String) {
        match n {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Num(t) => out.push_str(t),
            Node::Str(s) => self.string(s, out),
            Node::Arr(items) => {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if self.rng.bool() { "," } else { " , " });
                    }
                    self.write(x, out);
                }
                out.push(']');
            }
            Node::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.string(k, out);
                    out.push(':');
                    self.write(v, out);
                }
                out.push('}');
            }
        }
    }

    /// A `tools/call` (or another routed method), and whether it has a hazard.
    fn message(&mut self) -> (String, bool) {
        let n = self.rng.usize(..5);
        let mut params = vec![
            ("name".to_owned(), Node::Str("fs__read".into())),
            ("arguments".to_owned(), Node::Obj(self.members(n, 4))),
        ];
        if self.rng.bool() {
            params.push(("_meta".into(), Node::Obj(vec![("progressToken".into(), self.scalar())])));
        }
        for extra in ["uri", "taskId", "cursor"] {
            if self.rng.u8(..4) == 0 {
                params.push((extra.into(), Node::Str(format!("{extra}-value"))));
            }
        }
        let mut params = Node::Obj(params);
        let hazard = self.rng.u8(..2) == 0;
        if hazard {
            self.plant(&mut params);
        } else if self.rng.u8(..8) == 0 {
            // Right at the limit: message (1), params (2), then 62 more.
            let mut deep = Node::Num("1".into());
            for _ in 0..62 {
                deep = Node::Arr(vec![deep]);
            }
            let Node::Obj(m) = &mut params else { unreachable!() };
            m.push(("deep".into(), deep));
        }
        let method = ["tools/call", "prompts/get", "resources/read", "tasks/get"][self.rng.usize(..4)];
        let mut out = format!(r#"{{"jsonrpc":"2.0","id":{},"method":"{method}","params":"#, self.rng.u32(..));
        self.write(&params, &mut out);
        out.push('}');
        (out, hazard)
    }

    /// Puts one hazard somewhere in `params`.
    fn plant(&mut self, params: &mut Node) {
        match self.rng.u8(..5) {
            4 => {
                // The same name but for letter case, beside it in `params`
                // (`ſ` folds to `s`, as Go's EqualFold has it).
                let Node::Obj(m) = params else { unreachable!() };
                let spelling = ["Name", "NAME", "nAme", "Arguments", "argument\u{17f}"][self.rng.usize(..5)];
                m.push((spelling.to_owned(), Node::Str("other".into())));
            }
            0 => {
                // A member twice: find an object, repeat one of its names.
                let extra = self.value(2);
                if !Self::duplicate(&mut self.rng, params, extra) {
                    // `params` itself always has `name`.
                    let Node::Obj(m) = params else { unreachable!() };
                    m.push(("name".into(), Node::Str("other".into())));
                }
            }
            1 => {
                let n = ["1e400", "-1E+309", &"9".repeat(400)][self.rng.usize(..3)].to_owned();
                Self::somewhere(&mut self.rng, params, Node::Num(n));
            }
            2 => {
                // A lone surrogate: written raw below, whatever the spelling.
                Self::somewhere(&mut self.rng, params, Node::Num(r#""x\ud800""#.into()));
            }
            _ => {
                let mut deep = Node::Null;
                for _ in 0..70 {
                    deep = if self.rng.bool() { Node::Arr(vec![deep]) } else { Node::Obj(vec![("d".into(), deep)]) };
                }
                Self::somewhere(&mut self.rng, params, deep);
            }
        }
    }

    /// Adds `value` as a new member or item of a random container.
    fn somewhere(rng: &mut fastrand::Rng, at: &mut Node, value: Node) {
        match at {
            Node::Obj(m) if !m.is_empty() && rng.bool() => {
                let i = rng.usize(..m.len());
                if matches!(m[i].1, Node::Obj(_) | Node::Arr(_)) {
                    return Self::somewhere(rng, &mut m[i].1, value);
                }
                m.push((format!("h{}", rng.u32(..)), value));
            }
            Node::Arr(a) if !a.is_empty() && rng.bool() => {
                let i = rng.usize(..a.len());
                if matches!(a[i], Node::Obj(_) | Node::Arr(_)) {
                    return Self::somewhere(rng, &mut a[i], value);
                }
                a.push(value);
            }
            Node::Obj(m) => m.push((format!("h{}", rng.u32(..)), value)),
            Node::Arr(a) => a.push(value),
            _ => unreachable!("only containers are walked"),
        }
    }

    /// Repeats a name of some non-empty object under `at`; false if none.
    fn duplicate(rng: &mut fastrand::Rng, at: &mut Node, value: Node) -> bool {
        match at {
            Node::Obj(m) => {
                let inner: Vec<usize> =
                    (0..m.len()).filter(|&i| matches!(m[i].1, Node::Obj(_) | Node::Arr(_))).collect();
                if !inner.is_empty() && rng.bool() {
                    let i = inner[rng.usize(..inner.len())];
                    if Self::duplicate(rng, &mut m[i].1, value.clone()) {
                        return true;
                    }
                }
                if m.is_empty() {
                    return false;
                }
                let k = m[rng.usize(..m.len())].0.clone();
                let at = rng.usize(..=m.len());
                m.insert(at, (k, value));
                true
            }
            Node::Arr(a) => {
                let n = a.len();
                (0..n).any(|i| Self::duplicate(rng, &mut a[i], value.clone()))
            }
            _ => false,
        }
    }
}

#[test]
fn every_accepted_message_reads_the_same_to_every_parser() {
    let limits = mcp_gateway::protocol::Limits::default();
    let mut refused = 0;
    for seed in 0..20_000u64 {
        let mut g = Gen { rng: fastrand::Rng::with_seed(seed) };
        let (text, hazard) = g.message();
        let parsed = mcp_gateway::protocol::Message::parse(text.as_bytes(), &limits);
        match (hazard, &parsed) {
            (true, Err(e)) => {
                assert!(e.ambiguous().is_some(), "seed {seed}: refused, but not as ambiguous: {e}\n{text}");
                refused += 1;
            }
            (true, Ok(_)) => panic!("seed {seed}: accepted a message with a hazard:\n{text}"),
            (false, Err(e)) => panic!("seed {seed}: refused a clean message ({e}):\n{text}"),
            (false, Ok(_)) => {}
        }
        if let Err(why) = crate::one_view_check::one_view(text.as_bytes(), &limits) {
            panic!("seed {seed}: {why}\n{text}");
        }
    }
    assert!(refused > 5_000, "the generator plants hazards in about half: {refused}");
}

#[tokio::test]
async fn a_hidden_upstream_says_nothing_to_those_it_is_hidden_from() {
    let toml = format!(
        "{}[[access]]\nprincipals = [\"alice\"]\ntools = {{ allow = [\"*\"] }}\nprompts = {{ allow = [\"*\"] }}\n\
         resources = {{ allow = [\"*\"] }}\n\
         [[access]]\nprincipals = [\"bob\"]\ntools = {{ allow = [\"seen__*\"] }}\n\
         [upstreams.secret]\ncommand = {:?}\nargs = [{:?}]\n{}",
        keys(),
        path_str(&peers().python),
        fixture("paged_stdio.py"),
        raw_stdio("seen", ""),
    );
    let mut gw = Gateway::start(&toml).await;
    gw.authorize(OPS);
    gw.wait_ready("secret").await;
    gw.wait_ready("seen").await;
    let mut alice = McpHttp::connect_as(&gw.url(), ALICE).await;
    let mut bob = McpHttp::connect_as(&gw.url(), BOB).await;
    for c in [&mut alice, &mut bob] {
        assert!(c.request("logging/setLevel", json!({"level":"debug"})).await.get("result").is_some());
    }
    let (mut heard_a, mut heard_b) = (SseReader::open(&alice).await, SseReader::open(&bob).await);
    // `secret` changes its tools and logs something: alice hears both.
    let r = alice.call("secret__mutate", json!({"list":"tools","add":"newtool"})).await;
    assert_eq!(text(&r), "ok", "{r}");
    heard_a.until(|m| is_note(m, "notifications/tools/list_changed")).await;
    assert_eq!(text(&alice.call("secret__log", json!({"level":"info","data":"hush"})).await), "ok");
    heard_a.until(|m| is_note(m, "notifications/message") && m["params"]["data"] == "hush").await;
    // Then `seen` changes: bob's first list_changed is that one, and he
    // heard neither of secret's (his queue is in order).
    assert_eq!(text(&alice.call("seen__add_tool", json!({"name":"visible"})).await), "added");
    let got = heard_b.until(|m| is_note(m, "notifications/tools/list_changed")).await;
    assert!(!got.iter().any(|m| m["params"]["data"] == "hush"), "bob heard secret's log: {got:?}");
    assert!(bob.tool_names().await.contains(&"seen__visible".to_owned()), "the list_changed was seen's");
    let more = tokio::time::timeout(Duration::from_millis(500), heard_b.next()).await;
    assert!(more.is_err(), "nothing else for bob: {more:?}");
}
