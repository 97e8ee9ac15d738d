//! Partial availability: an upstream that cannot start, or is slow to
//! start, never blocks the gateway or the other upstreams, and calling its
//! tools fails at once with an error naming it and why.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn slow_and_broken_upstreams_do_not_block_the_rest() {
    let toml = format!(
        "{}{}{}[upstreams.broken]\ncommand = \"/nonexistent/mcp-server\"\n",
        raw_stdio("fast", ""),
        // Imitates airbyte-mcp: ~20 s before it reads stdin.
        raw_stdio("slow", "startup_timeout = \"60s\"\nenv = { RAW_STDIO_START_DELAY_MS = \"25000\" }"),
        raw_stdio("tooslow", "startup_timeout = \"1s\"\nenv = { RAW_STDIO_START_DELAY_MS = \"25000\" }"),
    );
    let gw = Gateway::start(&toml).await;
    // Ready once the start-up wait (5 s) is over, though `slow` is not up:
    // ready means "serving", not "every upstream is up".
    let readyz = format!("http://{}/readyz", gw.addr);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let ready = loop {
        let r = gw.http.get(&readyz).send().await.unwrap();
        if r.status() == 200 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert_eq!(r.status(), 503);
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(ready["upstreams"], 4, "{ready}");
    assert!(ready["upstreams_ready"].as_u64().unwrap() < 4, "{ready}");
    gw.wait_ready("fast").await;
    // `fast` is ready while `slow` is still in its start-up.
    assert_eq!(gw.upstream("slow").await["state"], "starting");

    let mut c = gw.client().await;
    let names = c.tool_names().await;
    assert!(names.contains(&"fast__echo".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("slow__")));
    assert_eq!(c.call("fast__echo", json!({"x":1})).await["result"]["args"], json!({"x":1}));

    // Calling the slow one's tools: an immediate, clear error.
    let r = c.call("slow__echo", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "transport", "{r}");
    assert_eq!(r["error"]["data"]["upstream"], "slow");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("upstream `slow` is starting"), "{msg}");

    // A command that cannot run: down, with the reason.
    let b = gw.wait_upstream("broken", |u| u["state"] == "down").await;
    assert!(b["last_error"].as_str().unwrap().contains("cannot start `/nonexistent/mcp-server`"), "{b}");
    let r = c.call("broken__anything", json!({})).await;
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("upstream `broken` is unavailable: cannot start"), "{msg}");

    // An initialize that outlives its start-up deadline: down as a timeout.
    let t = gw.wait_upstream("tooslow", |u| u["state"] == "down").await;
    assert_eq!(t["last_error_class"], "timeout", "{t}");
    assert!(t["last_error"].as_str().unwrap().contains("did not answer initialize within 1s"), "{t}");
    // Still serving the healthy upstream throughout.
    assert_eq!(c.call("fast__echo", json!({"y":2})).await["result"]["args"], json!({"y":2}));
}

#[tokio::test]
async fn prefix_false_mounts_unprefixed_and_refuses_collisions() {
    let toml = format!(
        "[gateway]\nmax_tool_name_length = 16\n{}{}{}",
        raw_stdio("aa", "prefix = false\ntools = { allow = [\"echo\", \"sleep\", \"add_tool\", \"a-very-*\"] }"),
        raw_stdio("bb", "prefix = false\ntools = { allow = [\"echo\", \"pid\"] }"),
        raw_stdio("cc", "tools = { deny = [\"crash\", \"big\"] }"),
    );
    let gw = Gateway::start(&toml).await;
    for id in ["aa", "bb", "cc"] {
        gw.wait_ready(id).await;
    }
    let mut c = gw.client().await;
    let names = c.tool_names().await;
    // aa owns `echo` (id order); bb's `echo` is refused, not shadowing.
    assert!(names.contains(&"echo".to_owned()) && names.contains(&"pid".to_owned()), "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "echo").count(), 1);
    let status = gw.status().await;
    assert_eq!(status["collisions"], json!([{"name":"echo","refused":"bb","owner":"aa"}]));
    // Deny globs hide tools; allow globs limit them.
    assert!(!names.iter().any(|n| n.ends_with("crash") || n.ends_with("__big")), "{names:?}");
    assert!(!names.contains(&"big".to_owned()));
    // Names over 16 characters are shortened to 16, stably, and route:
    // unprefixed on aa, and prefixed on cc.
    assert_eq!(text(&c.call("add_tool", json!({"name":"a-very-long-tool-name"})).await), "added");
    assert_eq!(text(&c.call("cc__add_tool", json!({"name":"another-long-one"})).await), "added");
    let names =
        gw_names_eventually(&mut c, |n| n.iter().filter(|x| x.len() == 16 && x.contains('-')).count() == 2).await;
    let short: Vec<&String> = names.iter().filter(|x| x.starts_with("a-very-") || x.starts_with("cc__ano")).collect();
    assert_eq!(short.len(), 2, "{names:?}");
    for n in short {
        assert_eq!(n.len(), 16, "{n}");
        assert_eq!(text(&c.call(n, json!({})).await), "echo", "{n} does not route");
    }
}

async fn gw_names_eventually(c: &mut McpHttp, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    for _ in 0..200 {
        let n = c.tool_names().await;
        if pred(&n) {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("catalog never changed as expected");
}
