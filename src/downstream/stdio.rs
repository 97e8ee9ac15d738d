//! `mcp-gateway stdio`: the gateway as a child process of the host.
//!
//! Requests are handled concurrently (at most [`IN_FLIGHT`] at once; reading
//! stops while that many run), so replies may be written out of order, each
//! with its client's id. Bad lines get a JSON-RPC error and reading goes on.
//! Logs never go to stdout.
//!
//! Closing stdin is how a client ends the session (lifecycle.mdx, stdio
//! shutdown: it closes the server's input and waits for it to exit). So at
//! EOF every request already read is still answered: calls in flight get
//! `gateway.drain_timeout` to finish and their replies are flushed; only
//! those still running then are dropped, which cancels them upstream.

use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::protocol::framing::{self, Line};
use crate::protocol::{Classified, Reply, Transport, encode};
use crate::routing::{Caller, Gateway};
use crate::security::auth::Principal;
use crate::telemetry::metrics::TransportLabels;

/// Decrements the stdio session gauge when the client goes.
struct Open(prometheus_client::metrics::gauge::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Most requests handled at once for one stdio client.
pub const IN_FLIGHT: usize = 256;

/// Large replies waiting for the writer (each holds its upstream's message:
/// a sender waits for room, as the handler of a call does for `tx`).
const LARGE_QUEUE: usize = 4;

/// Serves one client on `input`/`output` until `input` ends.
pub async fn run<R, W>(gateway: Arc<Gateway>, mut input: R, output: W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // One session for the life of the process, so the audit log and traces
    // can tell its calls from another stdio client's.
    let session: Arc<str> = super::session::random_id::<16>().into();
    let open = gateway.telemetry().metrics.sessions.get_or_create(&TransportLabels { transport: "stdio" }).clone();
    open.inc();
    let _open = Open(open);
    let (tx, rx) = mpsc::channel::<String>(IN_FLIGHT);
    // Replies that forward a large result, written in parts (no copy,
    // `protocol::Reply`). The writer takes them only when `rx` is empty, so
    // nothing queued before a reply (its call's progress) comes after it.
    let (large_tx, large_rx) = mpsc::channel::<Reply>(LARGE_QUEUE);
    let writer = tokio::spawn(write_loop(output, rx, large_rx));
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    // Registered at `initialize`: from then on notifications come.
    let mut client: Option<crate::routing::Client> = None;
    // The peer of 2026-07-28 requests, made by the first of them.
    let mut modern: Option<crate::routing::Client> = None;
    // Its `subscriptions/listen` streams.
    let mut listens = Listens::default();
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        // Reap finished calls so the set stays small.
        while tasks.try_join_next().is_some() {}
        // Read per message: a reload may change it.
        let max = gateway.config_now().gateway.max_message_bytes;
        let line = framing::read_line(&mut input, &mut buf, max).await?;
        match line {
            Line::Eof => break,
            Line::TooLong => {
                gateway.refused(Transport::Stdio, "too_large");
                let msg = format!("Invalid request: message exceeds {max} bytes");
                // Answer with the request's id when its first bytes show it.
                let id =
                    framing::id_in_head(&buf).and_then(|id| serde_json::value::RawValue::from_string(id.into()).ok());
                let _ = tx.send(encode::error(id.as_deref(), crate::protocol::INVALID_REQUEST, &msg, None)).await;
                continue;
            }
            Line::Ok if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Ok => {}
        }
        let msg = match gateway.parse(Transport::Stdio, &buf) {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(e.to_response()).await;
                continue;
            }
        };
        match msg.classify() {
            Ok(Classified::Request(msg)) if msg.method() == "initialize" => {
                let reply = gateway.initialize(Transport::Stdio, msg.id(), msg.params(), &Principal::stdio());
                let refused = reply.is_err();
                let _ = tx.send(reply.map_or_else(|e| e.reply, |i| i.reply)).await;
                if client.is_none() && !refused {
                    client = Some(gateway.connect(tx.clone(), msg.params(), Arc::new(Principal::stdio())));
                }
            }
            // 2026-07-28 (no `initialize` came: that selects 2025 for the
            // process): every request carries its `_meta`, checked first.
            Ok(Classified::Request(msg)) if client.is_none() && is_modern(&msg) => {
                if let Err(reply) = check_modern(&gateway, &msg) {
                    let _ = tx.send(reply).await;
                    continue;
                }
                if msg.method() == "subscriptions/listen" {
                    let reply = listen(&gateway, &msg, &tx, &mut listens);
                    if let Some(reply) = reply {
                        let _ = tx.send(reply).await;
                    }
                    continue;
                }
                let modern = modern.get_or_insert_with(|| {
                    let c = gateway.connect(tx.clone(), None, Arc::new(Principal::stdio()));
                    c.peer.mark_stateless();
                    c
                });
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                let (gw, tx, session, peer) = (gateway.clone(), tx.clone(), session.clone(), modern.peer.clone());
                let large_tx = large_tx.clone();
                tasks.spawn(async move {
                    let caller = Caller {
                        transport: Transport::Stdio,
                        session: Some(&session),
                        traceparent: None,
                        peer: Some(&peer),
                        stream: None,
                        era: crate::protocol::Era::Modern,
                    };
                    send(gw.handle_reply(&msg, &caller).await, &tx, &large_tx).await;
                    drop(permit);
                });
            }
            Ok(Classified::Request(msg)) => {
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                let (gw, tx, session) = (gateway.clone(), tx.clone(), session.clone());
                let large_tx = large_tx.clone();
                let peer = client.as_ref().map(|c| c.peer.clone());
                tasks.spawn(async move {
                    let caller = Caller {
                        transport: Transport::Stdio,
                        session: Some(&session),
                        traceparent: None,
                        peer: peer.as_ref(),
                        stream: None,
                        era: crate::protocol::Era::Legacy,
                    };
                    // A cancelled request gets no reply (cancellation.mdx).
                    send(gw.handle_reply(&msg, &caller).await, &tx, &large_tx).await;
                    drop(permit);
                });
            }
            Ok(Classified::Notification(msg)) => {
                // Cancelling a listen request ends its stream.
                if msg.method() == "notifications/cancelled"
                    && let Some(id) = msg.params().and_then(|p| p.get("requestId"))
                    && let Some(stream) = listens.ids.remove(id.text())
                {
                    stream.abort();
                    continue;
                }
                // `notifications/cancelled` of a modern request names it by
                // its id, as in 2025 (stdio keeps the notification).
                if let Some(c) = client.as_ref().or(modern.as_ref()) {
                    gateway.notify(&msg, &c.peer);
                }
            }
            // The client's answer to a server request relayed to it.
            Ok(Classified::Response(msg)) => {
                if let Some(c) = &client {
                    gateway.respond(&msg, &c.peer);
                }
            }
            Err(e) => {
                let _ = tx.send(e.to_response()).await;
            }
        }
    }
    // Listen streams have nothing more to tell a client that is gone.
    listens.tasks.abort_all();
    // The client has said all it will say and waits for its answers: calls
    // in flight (some perhaps not started yet) may finish for the drain
    // time. Those still running after it are dropped, which sends
    // notifications/cancelled to their upstreams.
    let drain = gateway.config().gateway.drain_timeout;
    let finished = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            in_flight = tasks.len(),
            timeout_ms = drain.as_millis() as u64,
            "stdin closed; cancelling the calls still in flight after the drain time."
        );
        tasks.shutdown().await;
    }
    // Unregistering drops the session's sender held by the gateway.
    drop(client);
    drop(modern);
    drop(tx);
    drop(large_tx);
    let _ = writer.await;
    Ok(())
}

/// Most `subscriptions/listen` streams one stdio client may hold open.
pub const MAX_LISTENS: usize = 16;

/// A stdio client's listen streams, by request id (raw JSON).
#[derive(Default)]
struct Listens {
    tasks: JoinSet<()>,
    ids: std::collections::HashMap<String, tokio::task::AbortHandle>,
}

/// Starts a `subscriptions/listen` stream on stdout: the acknowledgement,
/// then what its own peer is sent and its filter passes, each tagged with
/// the request's id, until the client cancels it or goes. The error reply
/// when it is refused.
fn listen(
    gateway: &Arc<Gateway>,
    msg: &crate::protocol::Request,
    out: &mpsc::Sender<String>,
    listens: &mut Listens,
) -> Option<String> {
    use crate::downstream::subscription::{Filter, Listening};
    let id = msg.id();
    while listens.tasks.try_join_next().is_some() {}
    listens.ids.retain(|_, h| !h.is_finished());
    if listens.ids.len() >= MAX_LISTENS || listens.ids.contains_key(id.get()) {
        gateway.refused(Transport::Stdio, "listens");
        let text = format!("Invalid request: at most {MAX_LISTENS} listen streams at once, each with its own id");
        return Some(encode::error(Some(id), crate::protocol::INVALID_REQUEST, &text, None));
    }
    let (mut filter, uris) = match Filter::of(msg.params()) {
        Ok(f) => f,
        Err(e) => {
            gateway.refused(Transport::Stdio, "listen_filter");
            return Some(encode::error(Some(id), crate::protocol::INVALID_PARAMS, &e.to_string(), None));
        }
    };
    let (ltx, mut lrx) = mpsc::channel(crate::routing::peer::QUEUE);
    let peer_of = gateway.connect(ltx, None, Arc::new(Principal::stdio()));
    let (gw, out, raw) = (gateway.clone(), out.clone(), id.to_owned());
    let handle = listens.tasks.spawn(async move {
        filter.subscribe(&gw, &peer_of.peer, Transport::Stdio, uris).await;
        let listening = Listening::new(&raw, filter);
        if out.send(listening.ack()).await.is_err() {
            return;
        }
        while let Some(m) = lrx.recv().await {
            if let Some(m) = listening.tagged(&m)
                && out.send(m).await.is_err()
            {
                return;
            }
        }
        drop(peer_of);
    });
    listens.ids.insert(id.get().to_owned(), handle);
    None
}

/// Whether a request (of a process no `initialize` made 2025) is modern:
/// its `_meta` names a revision, or it is `server/discover`.
fn is_modern(msg: &crate::protocol::Request) -> bool {
    msg.method() == "server/discover" || crate::protocol::modern::meta_version(msg.params()).is_some()
}

/// The `_meta` checks of a modern request on stdio (the headers are
/// HTTP's): the error reply when it is refused, counted and logged.
fn check_modern(gateway: &Gateway, msg: &crate::protocol::Request) -> Result<(), String> {
    use crate::protocol::{self, modern};
    let cap = gateway.config_now().gateway.max_client_capabilities_bytes;
    let (reason, reply) = match modern::check_meta(msg.params(), cap) {
        Ok(v) if modern::is_modern(&v) => return Ok(()),
        Ok(v) => ("protocol_version", modern::unsupported_version(Some(msg.id()), &v)),
        Err(e) => (e.reason(), encode::error(Some(msg.id()), protocol::INVALID_PARAMS, &e.to_string(), None)),
    };
    gateway.refused(Transport::Stdio, reason);
    tracing::debug!(reason, "Refused a 2026-07-28 request on stdio.");
    Err(reply)
}

/// Queues a reply for the writer: a spliced one on its own queue.
async fn send(reply: Option<Reply>, tx: &mpsc::Sender<String>, large: &mpsc::Sender<Reply>) {
    match reply {
        Some(Reply::Text(reply)) => drop(tx.send(reply).await),
        Some(spliced) => drop(large.send(spliced).await),
        None => {}
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut out: W,
    mut rx: mpsc::Receiver<String>,
    mut large: mpsc::Receiver<Reply>,
) {
    loop {
        let ok = tokio::select! {
            biased;
            Some(msg) = rx.recv() => write_line(&mut out, &[&framing::one_line(msg)]).await,
            Some(reply) = large.recv() => write_reply(&mut out, reply).await,
            else => return,
        };
        if ok.is_err() {
            return;
        }
    }
}

/// A reply in its parts, as one line: a part with a line break in it (an
/// upstream's pretty-printed JSON) has the reply copied into one line.
async fn write_reply<W: AsyncWrite + Unpin>(out: &mut W, reply: Reply) -> std::io::Result<()> {
    if reply.parts().iter().any(|p| memchr::memchr2(b'\n', b'\r', p.as_bytes()).is_some()) {
        return write_line(out, &[&framing::one_line(reply.into_string())]).await;
    }
    write_line(out, &reply.parts()).await
}

/// `parts` and a line end, flushed.
async fn write_line<W: AsyncWrite + Unpin>(out: &mut W, parts: &[&str]) -> std::io::Result<()> {
    for p in parts {
        out.write_all(p.as_bytes()).await?;
    }
    out.write_all(b"\n").await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Limits, Message, RawValue, SPLICE_FROM, result_check};

    /// A spliced reply to request `5` of an upstream message `text`.
    fn spliced(text: String) -> Reply {
        let msg = Message::parse_owned(text, &Limits::default(), |_| result_check("tools/call")).unwrap();
        let reply = Reply::forward(&RawValue::from_string("5".into()).unwrap(), msg).unwrap();
        assert!(reply.text().is_none(), "spliced");
        reply
    }

    #[tokio::test]
    async fn a_large_reply_is_one_line_even_when_the_upstream_broke_its_json_over_lines() {
        let pad = "x".repeat(SPLICE_FROM);
        for text in [
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{pad}"}}]}}}}"#),
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\r\n  \"content\": [\n {{\"type\":\"text\",\"text\":\"{pad}\"}}]\n}}}}"
            ),
        ] {
            let reply = spliced(text);
            let expected: serde_json::Value = serde_json::from_str(&reply.parts().concat()).unwrap();
            let mut out = Vec::new();
            write_reply(&mut out, reply).await.unwrap();
            let line = std::str::from_utf8(&out).unwrap();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains(['\n', '\r']), "one line");
            assert_eq!(serde_json::from_str::<serde_json::Value>(line).unwrap(), expected);
        }
    }
}
