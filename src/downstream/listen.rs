//! The accept loop of the HTTP listeners (`gateway.listen` and
//! `admin.listen`): one task per connection, HTTP/1.1 or cleartext HTTP/2
//! (prior knowledge), with time limits a client cannot stretch, and a
//! graceful stop.
//!
//! - A connection must send a whole request head within
//!   [`HEADER_READ_TIMEOUT`] of being opened, and on HTTP/1.1 within as long
//!   of its last reply; otherwise it is closed. Without this a client that
//!   opens connections and sends nothing, or a byte now and then, holds a
//!   socket and a task each for as long as it likes.
//! - Bodies have their own limit ([`super::http::BODY_READ_TIMEOUT`]),
//!   applied where a handler reads one, after the request was admitted.
//! - When `stop` is cancelled, [`serve`] stops accepting, every connection
//!   finishes the request it is on and closes, and [`serve`] returns once
//!   all are closed (callers bound that wait).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::{Metrics, ReasonLabels};

/// Longest a client may take to send a request head: from opening the
/// connection (or, on a kept-alive HTTP/1.1 connection, from the last
/// reply) to the blank line that ends the headers. hyper's own default;
/// a client that sends its request in one go needs milliseconds.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `stop` is cancelled and every
/// connection has closed (see the module docs).
pub async fn serve(mut listener: TcpListener, app: Router, metrics: Arc<Metrics>, stop: CancellationToken) {
    // Each connection task holds a receiver; `closed()` resolves when the
    // last one is dropped.
    let (all_closed, open) = tokio::sync::watch::channel(());
    loop {
        let (tcp, _addr) = tokio::select! {
            // axum's `Listener` retries (and logs) accept errors such as
            // EMFILE instead of ending the loop.
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = stop.cancelled() => break,
        };
        // Replies are written whole; without Nagle's delay an SSE event or a
        // small JSON reply leaves at once.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Could not set TCP_NODELAY.");
        }
        tokio::spawn(connection(tcp, app.clone(), metrics.clone(), stop.clone(), open.clone()));
    }
    drop(open);
    drop(listener);
    all_closed.closed().await;
}

/// Serves one connection; `_open` is dropped when it closes.
async fn connection(
    tcp: TcpStream,
    app: Router,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    _open: tokio::sync::watch::Receiver<()>,
) {
    let started = Arc::new(AtomicBool::new(false));
    let service = FirstRequest { started: started.clone(), inner: TowerToHyperService::new(app) };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    // hyper's header timer starts only once it knows the connection speaks
    // HTTP/1.1, which takes the first bytes; HTTP/2 has no such timer. So
    // the first request head has a deadline of its own, on both.
    let first = tokio::time::sleep(HEADER_READ_TIMEOUT);
    let mut first = std::pin::pin!(first);
    let (mut awaiting_first, mut stopping) = (true, false);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    let timeout = e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout);
                    if timeout {
                        timed_out(&metrics);
                    } else {
                        tracing::debug!(error = %e, "A client connection ended with an error.");
                    }
                }
                return;
            }
            () = &mut first, if awaiting_first => {
                awaiting_first = false;
                if !started.load(Ordering::Relaxed) {
                    // Dropping the connection closes the socket.
                    timed_out(&metrics);
                    return;
                }
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Counts and logs a connection closed for not sending its request head
/// in time. At debug level: idle pre-connections of browsers end this way
/// too, and a flood of them must not flood the log.
fn timed_out(metrics: &Metrics) {
    metrics.http_rejections.get_or_create(&ReasonLabels { reason: "header_timeout" }).inc();
    tracing::debug!(
        timeout_s = HEADER_READ_TIMEOUT.as_secs(),
        "Closed a client connection that sent no whole request head in time."
    );
}

/// The router as a hyper service that notes that a request arrived.
#[derive(Debug, Clone)]
struct FirstRequest {
    started: Arc<AtomicBool>,
    inner: TowerToHyperService<Router>,
}

impl hyper::service::Service<Request<Incoming>> for FirstRequest {
    type Response = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Error;
    type Future = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.started.store(true, Ordering::Relaxed);
        self.inner.call(req)
    }
}
