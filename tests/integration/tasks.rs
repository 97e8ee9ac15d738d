//! Tasks (MCP 2025-11-25) through the gateway, against server-everything's
//! `simulate-research-query` (task support required): task-augmented
//! calls, `tasks/get|result|list|cancel`, ids namespaced by upstream and
//! bound to the session that created them, and an elicitation that the
//! task sends while the client waits in `tasks/result`.

use serde_json::{Value, json};

use crate::support::*;

const TOOL: &str = "everything__simulate-research-query";

/// Starts a task; returns its exposed id.
async fn start_task(c: &mut McpHttp, args: Value) -> String {
    let r = c.request("tools/call", json!({"name":TOOL,"arguments":args,"task":{"ttl":60000}})).await;
    let task = &r["result"]["task"];
    assert_eq!(task["status"], "working", "{r}");
    task["taskId"].as_str().unwrap_or_else(|| panic!("a CreateTaskResult: {r}")).to_owned()
}

fn error_code(r: &Value) -> i64 {
    r["error"]["code"].as_i64().unwrap_or_else(|| panic!("an error: {r}"))
}

#[tokio::test]
async fn tasks_run_through_the_gateway_and_belong_to_their_session() {
    let everything = Fixture::everything_http().await;
    let toml = format!(
        "[upstreams.everything]\nurl = \"{}\"\n{}",
        everything.url(),
        // An upstream without task support: task-augmented calls are refused.
        raw_stdio("plain", "")
    );
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("everything").await;
    gw.wait_ready("plain").await;
    let mut a = gw.client().await;
    let mut b = gw.client().await;

    let init = a.request("ping", json!({})).await;
    assert!(init["result"].is_object(), "{init}");
    let tools = a.request("tools/list", json!({})).await;
    let tool = tools["result"]["tools"].as_array().unwrap().iter().find(|t| t["name"] == TOOL).cloned();
    let tool = tool.unwrap_or_else(|| panic!("{TOOL} listed: {tools}"));
    assert_eq!(tool["execution"]["taskSupport"], "required", "the tool's task support is relayed: {tool}");

    let mut a_stream = SseReader::open(&a).await;
    let id = start_task(&mut a, json!({"topic":"gateways"})).await;
    // Status notifications (from the upstream's GET stream, after the
    // call) reach the owner under the exposed id.
    let seen =
        a_stream.until(|m| is_note(m, "notifications/tasks/status") && m["params"]["status"] == "completed").await;
    let statuses: Vec<&Value> = seen.iter().filter(|m| is_note(m, "notifications/tasks/status")).collect();
    assert!(statuses.len() >= 2, "{seen:?}");
    assert!(statuses.iter().all(|m| m["params"]["taskId"] == id.as_str()), "{seen:?}");
    let (ns, upstream_id) = id.split_once("__").expect("a namespaced task id");
    assert_eq!(ns, "everything");
    assert!(!upstream_id.is_empty());

    // Another session cannot see, wait for or cancel it, and is told
    // nothing more than about a task that does not exist.
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let r = b.request(method, json!({"taskId": id})).await;
        assert_eq!(error_code(&r), -32602, "{method} from another session: {r}");
        let none = b.request(method, json!({"taskId": "everything__nope"})).await;
        assert_eq!(
            r["error"]["message"].as_str().unwrap().replace(&id, "X"),
            none["error"]["message"].as_str().unwrap().replace("everything__nope", "X")
        );
    }
    let listed = b.request("tasks/list", json!({})).await;
    assert_eq!(listed["result"]["tasks"], json!([]), "{listed}");
    // Not even under the upstream's own id.
    let r = b.request("tasks/get", json!({"taskId": upstream_id})).await;
    assert_eq!(error_code(&r), -32602, "{r}");

    // The owner lists and polls it under the exposed id.
    let listed = a.request("tasks/list", json!({})).await;
    let ids: Vec<&str> =
        listed["result"]["tasks"].as_array().unwrap().iter().map(|t| t["taskId"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()], "{listed}");
    let got = a.request("tasks/get", json!({"taskId": id})).await;
    assert_eq!(got["result"]["taskId"], id.as_str(), "{got}");
    assert!(["working", "completed"].contains(&got["result"]["status"].as_str().unwrap()), "{got}");

    // tasks/result waits for the end and returns what the call would have.
    let result = a.request("tasks/result", json!({"taskId": id})).await;
    let text = text(&result);
    assert!(text.contains("Research Report: gateways"), "{result}");
    let related = &result["result"]["_meta"]["io.modelcontextprotocol/related-task"];
    assert_eq!(related["taskId"], id.as_str(), "related-task meta names the exposed id: {result}");
    let got = a.request("tasks/get", json!({"taskId": id})).await;
    assert_eq!(got["result"]["status"], "completed", "{got}");
    // Cancelling a finished task is the upstream's -32602, relayed.
    let r = a.request("tasks/cancel", json!({"taskId": id})).await;
    assert_eq!(error_code(&r), -32602, "{r}");

    // A second task, cancelled while it runs.
    let second = start_task(&mut a, json!({"topic":"cancel me"})).await;
    assert_ne!(second, id);
    let r = a.request("tasks/cancel", json!({"taskId": second})).await;
    assert_eq!(r["result"]["status"], "cancelled", "{r}");
    assert_eq!(r["result"]["taskId"], second.as_str(), "{r}");
    let listed = a.request("tasks/list", json!({})).await;
    assert_eq!(listed["result"]["tasks"].as_array().unwrap().len(), 2, "{listed}");

    // A cursor from another list is refused.
    let tools_cursor = json!({"cursor": "zz"});
    let r = a.request("tasks/list", tools_cursor).await;
    assert_eq!(error_code(&r), -32602, "{r}");

    // An upstream that does not run tasks is not sent one.
    let r = a.request("tools/call", json!({"name":"plain__pid","arguments":{},"task":{}})).await;
    assert_eq!(error_code(&r), -32602, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("does not support tasks"), "{r}");
}

#[tokio::test]
async fn a_task_asks_its_own_client_while_it_waits_for_the_result() {
    let (_everything, gw) = everything_sse_gateway().await;
    let mut a = McpHttp::connect_with(&gw.url(), json!({"elicitation":{"form":{}}})).await;
    let id = start_task(&mut a, json!({"topic":"python","ambiguous":true})).await;

    // The elicitation comes on the stream of the client's tasks/result.
    let wait = json!({"jsonrpc":"2.0","id":"r-1","method":"tasks/result","params":{"taskId": id}});
    let mut stream = post_streaming(&a, &wait).await;
    let asked = stream.until(|m| m["method"] == "elicitation/create").await.pop().unwrap();
    let rid = asked["id"].as_str().expect("the gateway's id").to_owned();
    assert!(rid.starts_with("mcpgw-"), "{asked}");
    let related = &asked["params"]["_meta"]["io.modelcontextprotocol/related-task"];
    assert_eq!(related["taskId"], id.as_str(), "{asked}");
    let answer =
        json!({"jsonrpc":"2.0","id":rid,"result":{"action":"accept","content":{"interpretation":"the language"}}});
    assert_eq!(a.post(&answer.to_string(), &[]).await.status, 202);
    let reply = stream.until(|m| m["id"] == "r-1").await.pop().unwrap();
    assert!(text(&reply).contains("the language"), "the answer reached the task: {reply}");
}

#[tokio::test]
async fn tasks_over_a_stdio_upstream() {
    let p = peers();
    let toml =
        format!("[upstreams.everything]\ncommand = \"node\"\nargs = [{:?}, \"stdio\"]\n", path_str(&p.everything));
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("everything").await;
    let mut a = gw.client().await;
    let id = start_task(&mut a, json!({"topic":"pipes"})).await;
    assert!(id.starts_with("everything__"), "{id}");
    let result = a.request("tasks/result", json!({"taskId": id})).await;
    assert!(text(&result).contains("Research Report: pipes"), "{result}");
}

#[tokio::test]
async fn a_tasks_result_is_capped_like_the_call_would_have_been() {
    let everything = Fixture::everything_http().await;
    let toml = format!(
        "[limits.results]\n\"everything__simulate-research-query\" = {{ max_bytes = 400, action = \"refuse\" }}\n\
         [upstreams.everything]\nurl = \"{}\"\n",
        everything.url()
    );
    let gw = Gateway::start(&toml).await;
    gw.wait_ready("everything").await;
    let mut a = gw.client().await;
    let id = start_task(&mut a, json!({"topic":"gateways"})).await;
    // The report is longer than the cap: a task does not get around it.
    let r = a.request("tasks/result", json!({"taskId": id})).await;
    assert_eq!(r["error"]["data"]["class"], "policy", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("over its 400-byte limit"), "{r}");
}
