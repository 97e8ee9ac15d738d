//! The accept loop of the HTTP listeners (`gateway.listen` and
//! `admin.listen`): one task per connection, HTTP/1.1 or cleartext HTTP/2
//! (prior knowledge), with a bound on connections and time limits a client
//! cannot stretch, and a graceful stop.
//!
//! - At most `gateway.max_connections` connections are open on a listener
//!   (gauge `mcp_gateway_http_connections{listener}`). One more is closed
//!   as soon as it is accepted and counted (`http_rejections{reason=
//!   "connections"}`): it is not left in the kernel's backlog, where a
//!   client would wait without knowing why.
//! - A connection must send a whole request head within [`HEAD_TIMEOUT`]
//!   (or `gateway.connection_idle_timeout`, when shorter) of being opened,
//!   and on HTTP/1.1 of its last reply, or it is dropped. After that it is
//!   closed once it has had no request under way for
//!   `connection_idle_timeout`: HTTP/2 when no stream is open (a GOAWAY). A
//!   response still being sent (an SSE stream) is a request under way; an
//!   HTTP/2 peer that stops answering pings is gone. A closing connection
//!   gets [`CLOSE_GRACE`] to finish. Without this a client holds a socket
//!   and a task for as long as it likes.
//! - HTTP/2 streams per connection and flow-control windows are bounded
//!   (see [`H2_STREAMS`]).
//! - Bodies have their own limit ([`super::http::BODY_READ_TIMEOUT`]),
//!   applied where a handler reads one, after the request was admitted.
//! - When `stop` is cancelled, [`serve`] stops accepting, every connection
//!   finishes the request it is on and closes, and [`serve`] returns once
//!   all are closed (callers bound that wait).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::{ListenerLabels, Metrics, ReasonLabels};

/// Longest a client may take to send a request head: from opening the
/// connection, or on HTTP/1.1 from its last reply (hyper's header timer).
/// A client that sends its request in one go needs milliseconds; a shorter
/// `connection_idle_timeout` wins. Without it, a client that opens
/// connections and sends nothing holds each slot for the whole idle time.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing connection may take to finish (see [`connection`]).
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// HTTP/2 limits: streams at once on one connection (each a request, and a
/// task), and flow-control windows, which bound what a client can make the
/// gateway buffer before a body is admitted and read (hyper's defaults: 200
/// streams, 1 MiB windows).
const H2_STREAMS: u32 = 64;
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 512 * 1024;
/// An HTTP/2 keep-alive ping unanswered this long closes the connection.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What a listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `main` or `admin`: the gauge's and the log's label.
    pub listener: &'static str,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a connection may go without a request under way.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The limits of `config`'s listeners.
    pub fn of(config: &crate::config::Config, listener: &'static str) -> Self {
        let g = &config.gateway;
        Limits { listener, max_connections: g.max_connections, idle_timeout: g.connection_idle_timeout }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled and every
/// connection has closed (see the module docs).
pub async fn serve(
    mut listener: TcpListener,
    app: Router,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    limits: Limits,
) {
    // Each connection task holds a receiver; `closed()` resolves when the
    // last one is dropped.
    let (all_closed, open) = tokio::sync::watch::channel(());
    let gauge = metrics.connections.get_or_create(&ListenerLabels { listener: limits.listener }).clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (tcp, _addr) = tokio::select! {
            // axum's `Listener` retries (and logs) accept errors such as
            // EMFILE instead of ending the loop.
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = stop.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it.
            metrics.http_rejections.get_or_create(&ReasonLabels { reason: "connections" }).inc();
            tracing::debug!(
                listener = limits.listener,
                max = limits.max_connections,
                "Closed a client connection: the listener has max_connections open."
            );
            continue;
        };
        // Replies are written whole; without Nagle's delay an SSE event or a
        // small JSON reply leaves at once.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Could not set TCP_NODELAY.");
        }
        gauge.inc();
        let held = Open { _slot: slot, gauge: gauge.clone(), _open: open.clone() };
        tokio::spawn(connection(tcp, app.clone(), metrics.clone(), stop.clone(), limits.idle_timeout, held));
    }
    drop(open);
    drop(listener);
    all_closed.closed().await;
}

/// What an open connection holds: a slot of `max_connections`, a count in
/// the gauge and the listener's "not all closed" receiver.
struct Open {
    _slot: tokio::sync::OwnedSemaphorePermit,
    gauge: Gauge,
    _open: tokio::sync::watch::Receiver<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Serves one connection until it ends, idles out or the listener stops.
async fn connection(
    tcp: TcpStream,
    app: Router,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    idle: Duration,
    _held: Open,
) {
    let head = idle.min(HEAD_TIMEOUT);
    // hyper's header timer starts only once it knows the connection speaks
    // HTTP/1.1, which takes the first bytes; HTTP/2 has no such timer. So
    // the first request head has a deadline of its own, on both, and then
    // the connection is closed when nothing has been under way for `idle`.
    let check = tokio::time::sleep(head);
    let mut check = std::pin::pin!(check);
    let spoken = tokio::select! {
        spoken = sniff(&tcp) => spoken,
        () = &mut check => {
            timed_out(&metrics, head);
            return;
        }
        () = stop.cancelled() => return,
    };
    let activity = Arc::new(Activity::new());
    let service = Tracked { activity: activity.clone(), inner: TowerToHyperService::new(app) };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(head);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // A peer that is gone (its SSE stream open, nobody reading) is
        // found by an unanswered ping and closed.
        .keep_alive_interval(idle)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = match spoken {
        Spoken::Http1 => builder.http1_only(),
        Spoken::Http2 => builder.http2_only(),
        Spoken::Undecided => builder,
        Spoken::Nothing => return,
    };
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    // Once closing (idle, or the listener stopping), a connection gets
    // [`CLOSE_GRACE`] to finish: a client that never reads its last reply,
    // or never answers HTTP/2's closing ping, does not keep its slot.
    let mut stopping = false;
    let grace = tokio::time::sleep(Duration::MAX);
    let mut grace = std::pin::pin!(grace);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    let timeout = e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout);
                    if timeout {
                        timed_out(&metrics, head);
                    } else {
                        tracing::debug!(error = %e, "A client connection ended with an error.");
                    }
                }
                return;
            }
            () = &mut check, if !stopping => {
                match activity.idle_since() {
                    // Dropping the connection closes the socket.
                    None if !activity.started() => {
                        timed_out(&metrics, head);
                        return;
                    }
                    Some(since) if since.elapsed() >= idle => {
                        tracing::debug!(idle_s = idle.as_secs(), "Closing a client connection that has been idle.");
                        stopping = true;
                        grace.as_mut().reset(Instant::now() + CLOSE_GRACE);
                        conn.as_mut().graceful_shutdown();
                    }
                    Some(since) => check.as_mut().reset(since + idle),
                    // A request is under way: look again in a while.
                    None => check.as_mut().reset(Instant::now() + idle),
                }
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                grace.as_mut().reset(Instant::now() + CLOSE_GRACE);
                conn.as_mut().graceful_shutdown();
            }
            () = &mut grace => {
                tracing::debug!(grace_s = CLOSE_GRACE.as_secs(), "Dropped a client connection that did not close in time.");
                return;
            }
        }
    }
}

/// HTTP/2's connection preface (RFC 9113 §3.4), which a client with prior
/// knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spoken {
    Http1,
    Http2,
    /// Too few bytes to tell (the start of a preface split across packets):
    /// hyper-util reads them and decides.
    Undecided,
    /// The client closed (or the socket failed) before sending anything.
    Nothing,
}

/// Tells HTTP/1.1 from HTTP/2 by the first bytes, without consuming them.
///
/// Why not leave it to hyper-util: its detection reads the first 24 bytes
/// and hands them back to hyper as a first, short read; hyper then asks for
/// a whole 8 KiB of free buffer for the rest and its `BytesMut` grows to
/// 16 KiB, on every HTTP/1.1 connection, for as long as it stays open
/// (heaptrack: 16.4 KB of each idle connection's 18 KB). Read straight
/// from the socket, the request head lands in the first 8 KiB.
async fn sniff(tcp: &TcpStream) -> Spoken {
    let mut first = [0u8; H2_PREFACE.len()];
    match tcp.peek(&mut first).await {
        Ok(n) => spoken_by(&first[..n]),
        Err(_) => Spoken::Nothing,
    }
}

/// [`sniff`]'s decision on the bytes it saw.
fn spoken_by(first: &[u8]) -> Spoken {
    if first.is_empty() {
        Spoken::Nothing
    } else if !H2_PREFACE.starts_with(first) {
        Spoken::Http1
    } else if first.len() == H2_PREFACE.len() {
        Spoken::Http2
    } else {
        Spoken::Undecided
    }
}

/// Requests under way on one connection, and since when none has been.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    active: AtomicUsize,
    /// When the last request ended, in milliseconds since `opened`, plus
    /// one (0: none has ended yet). Milliseconds are plenty for a timeout
    /// of seconds.
    last_end_ms: AtomicU64,
}

impl Activity {
    /// Whether a request has arrived: one is under way, or one has ended.
    fn started(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0 || self.last_end_ms.load(Ordering::Acquire) > 0
    }

    fn new() -> Self {
        Activity { opened: Instant::now(), active: AtomicUsize::new(0), last_end_ms: AtomicU64::new(0) }
    }

    /// Since when nothing has been under way; `None` while something is,
    /// and before the first request.
    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.last_end_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.opened + Duration::from_millis(ms - 1)),
        }
    }

    fn ended_one(&self) {
        let ms = self.opened.elapsed().as_millis() as u64 + 1;
        self.last_end_ms.store(ms, Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts and logs a connection closed for not sending its request head
/// in time. At debug level: idle pre-connections of browsers end this way
/// too, and a flood of them must not flood the log.
fn timed_out(metrics: &Metrics, idle: Duration) {
    metrics.http_rejections.get_or_create(&ReasonLabels { reason: "header_timeout" }).inc();
    tracing::debug!(timeout_s = idle.as_secs(), "Closed a client connection that sent no whole request head in time.");
}

/// The router as a hyper service that counts the requests under way on its
/// connection: from the call until the response body is done or dropped.
#[derive(Debug, Clone)]
struct Tracked {
    activity: Arc<Activity>,
    inner: TowerToHyperService<Router>,
}

type Inner = TowerToHyperService<Router>;
type InnerFuture = <Inner as hyper::service::Service<Request<Incoming>>>::Future;
type InnerError = <Inner as hyper::service::Service<Request<Incoming>>>::Error;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = InnerError;
    type Future = Call;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.activity.active.fetch_add(1, Ordering::AcqRel);
        Call { inner: self.inner.call(req), guard: Some(UnderWay(self.activity.clone())) }
    }
}

/// Ends a request's time under way when dropped.
#[derive(Debug)]
struct UnderWay(Arc<Activity>);

impl Drop for UnderWay {
    fn drop(&mut self) {
        self.0.ended_one();
    }
}

pin_project_lite::pin_project! {
    /// The router's response future; its response's body carries the
    /// guard on.
    struct Call {
        #[pin]
        inner: InnerFuture,
        guard: Option<UnderWay>,
    }
}

impl Future for Call {
    type Output = Result<Response, InnerError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        std::task::Poll::Ready(Ok(resp.map(|body| Body::new(Guarded { body, _guard: guard }))))
    }
}

/// A response body that holds its request's [`UnderWay`] until it is done.
struct Guarded {
    body: Body,
    _guard: Option<UnderWay>,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            // Done: the request is no longer under way, even if hyper keeps
            // the body a while.
            self._guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_protocol() {
        assert_eq!(spoken_by(b""), Spoken::Nothing);
        assert_eq!(spoken_by(b"POST /mcp HTTP/1.1\r\n"), Spoken::Http1);
        assert_eq!(spoken_by(b"G"), Spoken::Http1);
        // "PRI" alone could still be either: hyper-util reads on.
        assert_eq!(spoken_by(b"PRI"), Spoken::Undecided);
        assert_eq!(spoken_by(b"PRI * HTTP/2.0\r\n"), Spoken::Undecided);
        assert_eq!(spoken_by(b"PRI * HTTP/1.1\r\n"), Spoken::Http1);
        assert_eq!(spoken_by(H2_PREFACE), Spoken::Http2);
    }

    /// A connection of either protocol is served, also when its preface or
    /// request line arrives in pieces (a connection that sends nothing, or
    /// half a preface, is in the hostile suite's slow clients).
    #[tokio::test]
    async fn both_protocols_and_split_first_bytes_are_served() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let stop = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        let limits = Limits { listener: "main", max_connections: 8, idle_timeout: Duration::from_secs(30) };
        let served = tokio::spawn(serve(listener, app, metrics, stop.clone(), limits));
        let ask = async |pieces: &[&[u8]]| {
            let mut s = TcpStream::connect(addr).await.unwrap();
            for p in pieces {
                s.write_all(p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut got = vec![0u8; 1024];
            let n = s.read(&mut got).await.unwrap();
            String::from_utf8_lossy(&got[..n]).into_owned()
        };
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(ask(&[get]).await.ends_with("\r\n\r\nhi"));
        assert!(ask(&[b"G", &get[1..]]).await.ends_with("\r\n\r\nhi"));
        // HTTP/2: the server's first frame is its SETTINGS (type 4).
        let settings = ask(&[H2_PREFACE, b"\0\0\0\x04\0\0\0\0\0"]).await;
        assert_eq!(settings.as_bytes()[3], 4, "{settings:?}");
        let settings = ask(&[&H2_PREFACE[..5], &H2_PREFACE[5..], b"\0\0\0\x04\0\0\0\0\0"]).await;
        assert_eq!(settings.as_bytes()[3], 4, "{settings:?}");
        stop.cancel();
        served.await.unwrap();
    }
}
