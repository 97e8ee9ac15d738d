//! D1: payloads cross the gateway byte-for-byte.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn unknown_fields_key_order_and_big_results_survive() {
    let gw = Gateway::start(&raw_stdio("raw", "")).await;
    gw.wait_ready("raw").await;
    let c = gw.client().await;

    // Arguments with odd spacing, key order, a non-ASCII string and a
    // number whose text a re-encoder would change (2.50 → 2.5).
    let args = r#"{"b":1, "a":[1, 2.50, "é"],"z":{"y":null}}"#;
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"fid-1","method":"tools/call","params":{{"name":"raw__echo","arguments":{args}}}}}"#
    );
    let r = c.post(&body, &[]).await;
    assert_eq!(r.status, 200);
    let expected = format!(
        r#"{{"jsonrpc":"2.0","id":"fid-1","result":{{"zeta":1,"content":[{{"type":"text","text":"echo"}}],"alpha":{{"x-unknown":true,"b":[1,2]}},"args":{args}}}}}"#
    );
    assert_eq!(r.body, expected);

    // Unknown members of tool definitions reach the client as they were.
    let r = c.post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, &[]).await;
    assert!(r.body.contains(r#""x-vendor":{"z":1,"a":2}"#), "{}", r.body);

    // A 6 MiB result, exactly.
    let r = c
        .post(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"raw__big","arguments":{"mib":6}}}"#,
            &[],
        )
        .await;
    let expected = format!(
        r#"{{"jsonrpc":"2.0","id":3,"result":{{"content":[{{"type":"text","text":"{}"}}],"size":6}}}}"#,
        "x".repeat(6 * 1024 * 1024)
    );
    assert_eq!(r.body.len(), expected.len());
    assert!(r.body == expected, "6 MiB result changed on the way");

    // A 2026-07-28 client's: the same bytes, with the `resultType` a
    // modern result must have put first (written around the upstream's
    // text, not into a copy of it).
    let body = json!({"jsonrpc":"2.0","id":"m","method":"tools/call","params":{"name":"raw__big","arguments":{"mib":2},"_meta":modern_meta(json!({}))}});
    let r = post_modern(&gw.url(), None, &body, &[("mcp-method", "tools/call"), ("mcp-name", "raw__big")]).await;
    let expected = format!(
        r#"{{"jsonrpc":"2.0","id":"m","result":{{"resultType":"complete","content":[{{"type":"text","text":"{}"}}],"size":2}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body == expected,
        "a 2 MiB result to a modern client: {} bytes, {}",
        r.body.len(),
        &r.body[..r.body.len().min(200)]
    );
}
