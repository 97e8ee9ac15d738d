//! mcp-gateway: one MCP endpoint in front of many MCP servers.
//!
//! # Layout
//!
//! Dependencies point one way (see `ARCHITECTURE.md`):
//!
//! - [`downstream`]: client-facing transports (Streamable HTTP at `/mcp`,
//!   stdio) → calls [`routing`].
//! - [`routing`]: the [`routing::Gateway`]: merged catalog, namespaces,
//!   method dispatch → calls [`upstream`].
//! - [`upstream`]: supervised connections to upstream servers (stdio,
//!   Streamable HTTP, legacy SSE), id remapping, `initialize`.
//! - Leaves: [`protocol`] (JSON-RPC over raw JSON), [`config`], [`error`],
//!   [`telemetry`] (metrics, traces, audit log, log output).

pub mod config;
pub mod downstream;
pub mod error;
pub mod protocol;
pub mod resilience;
pub mod routing;
pub mod telemetry;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
pub use crate::routing::Gateway;

/// Serves the admin listener (`[admin] listen`: `/metrics`, `/healthz`,
/// `/readyz`) until `stop` is cancelled; nothing when it is not set. For
/// `mcp-gateway stdio`, which has no other listener.
pub async fn serve_admin(gateway: &Arc<Gateway>, stop: CancellationToken) -> std::io::Result<()> {
    if let (_, Some(admin)) = downstream::http::routers(gateway.clone(), stop.clone()) {
        spawn_admin(gateway, admin, stop).await?;
    }
    Ok(())
}

async fn spawn_admin(gateway: &Gateway, admin: axum::Router, stop: CancellationToken) -> std::io::Result<()> {
    let Some(addr) = gateway.config().admin.listen else { return Ok(()) };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} (admin.listen): {e}")))?;
    tracing::info!(addr = %listener.local_addr()?, "Serving /metrics on the admin listener.");
    tokio::spawn(async move {
        let served = axum::serve(listener, admin).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "Admin listener failed.");
        }
    });
    Ok(())
}

/// Serves `/mcp` on `listener` until `shutdown` resolves, then stops
/// accepting, ends open streams, lets calls in flight finish for at most
/// `gateway.drain_timeout` and returns. The caller shuts the [`Gateway`]
/// (and so its upstreams) down afterwards.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let (app, admin) = downstream::http::routers(gateway.clone(), stop.clone());
    if let Some(admin) = admin {
        spawn_admin(&gateway, admin, stop.clone()).await?;
    }
    let stop2 = stop.clone();
    // Replies are written whole; without Nagle's delay an SSE event or a
    // small JSON reply leaves at once.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Could not set TCP_NODELAY.");
        }
    });
    let drain = gateway.config().gateway.drain_timeout;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        stop2.cancel();
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        // Graceful shutdown waits for every connection; bound that wait.
        _ = async {
            stop.cancelled().await;
            gateway.drain(drain).await
        } => {
            // Connections finish their current reply at most briefly after.
            let _ = tokio::time::timeout(Duration::from_millis(200), server).await;
            Ok(())
        }
    }
}
