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

pub mod alloc;
pub mod config;
pub mod downstream;
pub mod error;
pub mod import;
pub mod oauth;
pub mod protocol;
pub mod resilience;
pub mod routing;
pub mod security;
pub mod shared;
pub mod sync;
pub mod telemetry;
pub mod upstream;

#[cfg(test)]
mod layering;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
pub use crate::routing::Gateway;

/// Starts the admin listener (`[admin] listen`: `/metrics`, `/healthz`,
/// `/readyz`, `/status` and the `/ui` status page) in the background until `stop` is cancelled; does nothing
/// when it is not set. [`serve`] calls it; `mcp-gateway stdio`, which has
/// no other listener, calls it directly.
pub async fn serve_admin(gateway: &Arc<Gateway>, stop: CancellationToken) -> std::io::Result<()> {
    let Some(addr) = gateway.config().admin.listen else { return Ok(()) };
    let admin = downstream::http::admin_router(gateway.clone(), stop.clone());
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} (admin.listen): {e}")))?;
    tracing::info!(addr = %listener.local_addr()?, "Serving /metrics, /status and /ui on the admin listener.");
    let metrics = gateway.telemetry().metrics.clone();
    let limits = downstream::listen::Limits::of(&gateway.config(), "admin");
    tokio::spawn(downstream::listen::serve(listener, admin, metrics, stop, limits));
    Ok(())
}

/// Serves `/mcp` on `listener` until `shutdown` resolves, then (after
/// `gateway.drain_delay`, with `/readyz` answering 503) stops accepting, ends open streams, lets calls in flight finish for at most
/// `gateway.drain_timeout` and returns. The caller shuts the [`Gateway`]
/// (and so its upstreams) down afterwards.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let app = downstream::http::router(gateway.clone(), stop.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    serve_admin(&gateway, stop.clone()).await?;
    let (stop2, leaving) = (stop.clone(), gateway.clone());
    tokio::spawn(async move {
        shutdown.await;
        // A balancer learns from `/readyz` that this replica is leaving and
        // stops sending it connections before it stops accepting them.
        let delay = leaving.config().gateway.drain_delay;
        if !delay.is_zero() {
            leaving.set_leaving();
            tracing::info!(
                drain_delay_ms = delay.as_millis() as u64,
                "Stopping: /readyz answers 503; new connections are served for drain_delay, then refused."
            );
            tokio::time::sleep(delay).await;
        }
        stop2.cancel();
    });
    let drain = gateway.config().gateway.drain_timeout;
    let limits = downstream::listen::Limits::of(&gateway.config(), "main");
    let server = downstream::listen::serve(listener, app, gateway.telemetry().metrics.clone(), stop.clone(), limits);
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => Ok(()),
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
