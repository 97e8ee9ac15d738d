//! What a client can make the gateway hold is bounded (issue 16 item 1,
//! design.md D12): the capabilities a session keeps, sessions per
//! principal, connections per listener and their idle time (HTTP/1.1 and
//! HTTP/2), and request bytes in flight, whole and per principal.
//!
//! Each test is the attack that worked before, against the real binary.
//! Pass conditions are generous (memory growth under a tenth of what the
//! unbounded gateway took), so a busy machine does not fail them; what
//! they check is that the bound holds at all, and that other clients
//! still get in.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::keys::*;
use crate::support::*;

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One sample of `/metrics` (as the admin `ops`).
async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = gw.http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Waits until `series` reads `want`.
async fn metric_becomes(gw: &Gateway, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = metric(gw, series).await;
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{series} stays {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn initialize(capabilities: &Value) -> String {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":capabilities,"clientInfo":{"name":"t","version":"0"}}})
    .to_string()
}

/// POSTs an `initialize` as `token`; the raw answer.
async fn open_session(http: &reqwest::Client, url: &str, token: &str, body: String) -> Raw {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Raw { status, headers, body: resp.text().await.unwrap() }
}

#[tokio::test]
async fn sessions_keep_little_and_one_principal_cannot_take_them_all() {
    let config =
        format!("[gateway]\nmax_sessions = 400\nmax_sessions_per_principal = 50\n{}{}", keys(), raw_stdio("raw", ""));
    let mut gw = Gateway::start(&config).await;
    gw.authorize(OPS);
    gw.wait_ready("raw").await;
    let url = gw.url();
    let http = reqwest::Client::new();

    // 300 initializes with 2 MiB of capabilities each: before, every one
    // was kept (RSS 15 -> 627 MiB). Now each is refused with a clear error
    // and nothing is kept.
    let huge = json!({"experimental": {"pad": "x".repeat(2 << 20)}});
    let body = initialize(&huge);
    let before = rss_kib(gw.proc.pid());
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let (http, url, body, refused) = (http.clone(), url.clone(), body.clone(), refused.clone());
        tasks.spawn(async move {
            for _ in 0..50 {
                let r = open_session(&http, &url, BOB, body.clone()).await;
                assert_eq!(r.status, 400, "worker {worker}: {}", r.body);
                let v: Value = serde_json::from_str(&r.body).unwrap();
                assert_eq!(v["error"]["code"], -32602, "{v}");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains("max_client_capabilities_bytes"), "{msg}");
                assert!(r.headers.get("mcp-session-id").is_none(), "no session for a refused initialize");
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let grown_mib = rss_kib(gw.proc.pid()).saturating_sub(before) / 1024;
    eprintln!("RSS grew by {grown_mib} MiB over 300 initializes with 2 MiB capabilities");
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 300);
    // A tenth of the 612 MiB the unbounded gateway grew by.
    assert!(grown_mib < 61, "RSS grew by {grown_mib} MiB for 300 refused initializes");
    assert_eq!(metric(&gw, "mcp_gateway_downstream_sessions{transport=\"http\"}").await, 0.0);
    assert_eq!(metric(&gw, "mcp_gateway_client_capabilities_bytes").await, 0.0);
    assert_eq!(
        metric(&gw, "mcp_gateway_client_messages_refused_total{transport=\"http\",reason=\"capabilities_too_large\"}")
            .await,
        300.0
    );

    // Capabilities within the cap are kept, and shown.
    let caps = json!({"sampling": {}, "experimental": {"pad": "y".repeat(1000)}});
    let kept = caps.to_string().len() as f64;
    let mut bobs = Vec::new();
    for i in 0..50 {
        let r = open_session(&http, &url, BOB, initialize(&caps)).await;
        assert_eq!(r.status, 200, "bob's session {i}: {}", r.body);
        bobs.push(r.headers["mcp-session-id"].to_str().unwrap().to_owned());
    }
    assert_eq!(metric(&gw, "mcp_gateway_client_capabilities_bytes").await, 50.0 * kept);

    // Bob has his 50: the 51st, and a legacy /sse stream, get 429 ...
    let r = open_session(&http, &url, BOB, initialize(&json!({}))).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("max_sessions_per_principal"), "{}", r.body);
    let sse = http
        .get(format!("http://{}/sse", gw.addr))
        .bearer_auth(BOB)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 429);
    // ... while Alice gets in and is served.
    let mut alice = McpHttp::connect_as(&url, ALICE).await;
    let answer = alice.call("raw__echo", json!({"m": "hi"})).await;
    assert!(answer.get("result").is_some(), "{answer}");
    assert_eq!(metric(&gw, "mcp_gateway_downstream_sessions{transport=\"http\"}").await, 51.0);
    assert_eq!(metric(&gw, "mcp_gateway_http_rejections_total{reason=\"principal_sessions\"}").await, 2.0);

    // Ending one of Bob's sessions gives its place back.
    let end = http
        .delete(&url)
        .bearer_auth(BOB)
        .header("mcp-session-id", &bobs[0])
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(end.status().is_success(), "{}", end.status());
    let r = open_session(&http, &url, BOB, initialize(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let log = gw.proc.logs();
    assert!(log.contains("over max_client_capabilities_bytes"), "the refusal is logged");
    assert!(log.contains("max_sessions_per_principal open"), "the refusal is logged");
    assert!(gw.stop().await.success());
}

/// Sends the head of a POST to `/mcp` declaring `length` bytes, as
/// `token`, and `sent` bytes of its body; the connection, held open.
async fn slow_upload(addr: std::net::SocketAddr, token: &str, length: Option<usize>, sent: usize) -> TcpStream {
    let tcp = TcpStream::connect(addr).await.unwrap();
    upload_on(tcp, addr, Some(token), length, sent).await
}

/// [`slow_upload`] on `tcp`, as `token` or anonymous.
async fn upload_on(
    mut tcp: TcpStream,
    addr: std::net::SocketAddr,
    token: Option<&str>,
    length: Option<usize>,
    sent: usize,
) -> TcpStream {
    let framing = match length {
        Some(n) => format!("content-length: {n}\r\n"),
        None => "transfer-encoding: chunked\r\n".to_owned(),
    };
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\n\
         accept: application/json\r\n{framing}\r\n"
    );
    // Errors are fine here too: a connection over max_connections is
    // closed as soon as it is accepted, which may come before these writes
    // (the tests look at what the gateway answers, or that it closed).
    let _ = tcp.write_all(head.as_bytes()).await;
    let pad = vec![b' '; sent];
    match length {
        Some(_) => {
            let _ = tcp.write_all(&pad).await;
        }
        None if sent > 0 => {
            // Errors are fine: the gateway may refuse and close mid-body.
            let _ = tcp.write_all(format!("{sent:x}\r\n").as_bytes()).await;
            let _ = tcp.write_all(&pad).await;
            let _ = tcp.write_all(b"\r\n").await;
        }
        None => {}
    }
    tcp
}

/// Reads an HTTP answer's head from `tcp` (within 10 s): status and head.
async fn answer(tcp: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer within 10 s");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn request_bytes_in_flight_are_shared_so_one_principal_cannot_refuse_everyone() {
    const MIB: usize = 1 << 20;
    let config = format!(
        "[gateway]\nmax_message_bytes = {MIB}\nmax_inflight_request_bytes_per_principal = {}\n\
         max_inflight_request_bytes = {}\n{}{}",
        2 * MIB,
        3 * MIB,
        keys(),
        raw_stdio("raw", "")
    );
    let mut gw = Gateway::start(&config).await;
    gw.authorize(OPS);
    gw.wait_ready("raw").await;
    let mut alice = McpHttp::connect_as(&gw.url(), ALICE).await;
    let bytes = "mcp_gateway_inflight_request_bytes";

    // Bob starts two uploads of 1 MiB and sends almost nothing: they hold
    // his whole share while they trickle.
    let mut held = vec![slow_upload(gw.addr, BOB, Some(MIB), 10).await, slow_upload(gw.addr, BOB, Some(MIB), 10).await];
    metric_becomes(&gw, bytes, (2 * MIB) as f64).await;
    // A third is refused at once, before its body is read: 503, Retry-After.
    let mut third = slow_upload(gw.addr, BOB, Some(MIB), 0).await;
    let (status, head) = answer(&mut third).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    // So is one without a declared length, once it brings more than fits.
    let mut chunked = slow_upload(gw.addr, BOB, None, 4096).await;
    let (status, head) = answer(&mut chunked).await;
    assert_eq!(status, 503, "{head}");
    // Alice is not refused: Bob's share is full, the whole is not.
    let reply = alice.call("raw__echo", json!({"m": "still served"})).await;
    assert!(reply.get("result").is_some(), "{reply}");

    // When the whole budget is full (Bob's 2 MiB and ops' 1 MiB), everyone
    // gets 503, with the reason.
    held.push(slow_upload(gw.addr, OPS, Some(MIB), 10).await);
    metric_becomes(&gw, bytes, (3 * MIB) as f64).await;
    let r = alice.post(&json!({"jsonrpc":"2.0","id":9,"method":"ping"}).to_string(), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "1");
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["data"]["class"], "overloaded", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_inflight_request_bytes"), "{v}");

    // Bob's uploads go away: what they held is given back.
    held.clear();
    drop((third, chunked));
    metric_becomes(&gw, bytes, 0.0).await;
    let reply = alice.call("raw__echo", json!({"m": "again"})).await;
    assert!(reply.get("result").is_some(), "{reply}");
    assert_eq!(metric(&gw, "mcp_gateway_http_rejections_total{reason=\"principal_inflight_bytes\"}").await, 2.0);
    assert_eq!(metric(&gw, "mcp_gateway_http_rejections_total{reason=\"inflight_bytes\"}").await, 1.0);
    assert!(gw.stop().await.success());
}

/// Whether the gateway closes `tcp` (EOF or reset) within `patience`.
async fn closed_within(tcp: &mut TcpStream, patience: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(patience, tcp.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn connections_are_capped_per_listener() {
    let config =
        format!("[gateway]\nmax_connections = 20\nconnection_idle_timeout = \"60s\"\n{}", raw_stdio("raw", ""));
    let gw = Gateway::start(&config).await;
    gw.wait_ready("raw").await;
    // A connection that sends nothing is dropped once the head deadline
    // (10 s) passes, long before the idle timeout (60 s).
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    // 19 connections with a request under way (a body that trickles) and
    // the silent one hold every slot ...
    let mut busy = Vec::new();
    for _ in 0..19 {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        busy.push(upload_on(tcp, gw.addr, None, Some(100), 10).await);
    }
    // ... (the gateway may still be accepting the last of them) ...
    let mut probes = 0;
    let refused = loop {
        let mut extra = TcpStream::connect(gw.addr).await.unwrap();
        probes += 1;
        // ... so one more is closed at once, long before any timeout.
        if closed_within(&mut extra, Duration::from_secs(5)).await {
            break true;
        }
        if probes == 5 {
            break false;
        }
    };
    assert!(refused, "a connection over max_connections was not closed");
    assert!(closed_within(&mut silent, Duration::from_secs(30)).await, "a silent connection was never dropped");
    // Freeing slots lets clients in again.
    busy.truncate(10);
    let mut served = false;
    for _ in 0..100 {
        let healthz = reqwest::Client::new().get(format!("http://{}/healthz", gw.addr)).send().await;
        if healthz.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no client got in after connections were freed");
    let scraper = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let open = open_connections(&scraper, gw.addr).await;
    assert!((11.0..=12.0).contains(&open), "{open} connections open: 10 busy ones and the scrape's");
    let metrics = scraper.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcp_gateway_http_rejections_total{reason=\"connections\"}"), "refusals are counted");
    // The silent connection, and perhaps the harness's own kept-alive one.
    let timeouts =
        metrics.lines().find_map(|l| l.strip_prefix("mcp_gateway_http_rejections_total{reason=\"header_timeout\"} "));
    assert!(timeouts.is_some_and(|n| n.parse::<f64>().unwrap() >= 1.0), "{metrics}");
    drop(busy);
    assert!(gw.stop().await.success());
}

/// Open connections on the main listener, read with a scrape on a
/// connection of its own (closed after it, so it counts itself once).
async fn open_connections(scraper: &reqwest::Client, addr: std::net::SocketAddr) -> f64 {
    let text = scraper.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let v = text.lines().find_map(|l| l.strip_prefix("mcp_gateway_http_connections{listener=\"main\"} "));
    v.unwrap().parse().unwrap()
}

/// Whether the open connections come down to `want` within 10 s.
async fn connections_become(scraper: &reqwest::Client, addr: std::net::SocketAddr, want: f64) -> bool {
    for _ in 0..100 {
        if open_connections(scraper, addr).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn idle_connections_are_closed_on_http2_too() {
    let config = format!("[gateway]\nconnection_idle_timeout = \"2s\"\n{}", raw_stdio("raw", ""));
    let gw = Gateway::start(&config).await;
    gw.wait_ready("raw").await;
    let scraper = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    // The harness's own HTTP/1.1 connection (readiness) idles out first.
    assert!(connections_become(&scraper, gw.addr, 1.0).await, "an idle HTTP/1.1 connection was never closed");
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut c = McpHttp::connect_via(&gw.url(), json!({}), h2.clone()).await;
    let reply = c.call("raw__echo", json!({"m": "h2"})).await;
    assert!(reply.get("result").is_some(), "{reply}");
    // The HTTP/2 connection is open (the scrape's is the other) ...
    assert_eq!(open_connections(&scraper, gw.addr).await, 2.0);
    // ... and a GET stream open on it keeps it so past the idle time ...
    let stream = h2
        .get(gw.url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(open_connections(&scraper, gw.addr).await, 2.0, "a connection with a stream open is not idle");
    // ... until the stream ends: then the gateway closes it (GOAWAY).
    drop(stream);
    assert!(connections_become(&scraper, gw.addr, 1.0).await, "an idle HTTP/2 connection was never closed");
    // A new request opens a new connection and is served.
    let reply = c.call("raw__echo", json!({"m": "after"})).await;
    assert!(reply.get("result").is_some(), "{reply}");
    assert!(gw.stop().await.success());
}
