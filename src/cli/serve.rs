//! `mcp-gateway serve` and `mcp-gateway stdio`, and the signals that end
//! them.

use std::net::SocketAddr;

use anyhow::Context as _;
use mcp_gateway::config::Config;
use mcp_gateway::telemetry::Telemetry;
use mcp_gateway::{Gateway, downstream};

pub(crate) async fn serve(config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let signals = shutdown_signal();
    let addr = listen.unwrap_or(config.listen());
    config.check_exposure(addr)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let telemetry = Telemetry::from_config(&config)?;
    let gateway = Gateway::start(config, telemetry);
    tracing::info!(%addr, upstreams = gateway.upstreams().len(), "Listening on http://{addr}/mcp.");
    mcp_gateway::serve(listener, gateway.clone(), signals).await?;
    tracing::info!("Shutting down upstreams.");
    let stopping = tokio::time::Instant::now();
    gateway.shutdown().await;
    tracing::info!(elapsed_ms = stopping.elapsed().as_millis() as u64, "Stopped.");
    Ok(())
}

pub(crate) async fn stdio(config: Config) -> anyhow::Result<()> {
    let signals = shutdown_signal();
    let telemetry = Telemetry::from_config(&config)?;
    let gateway = Gateway::start(config, telemetry);
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let _stop_admin = admin_stop.clone().drop_guard();
    mcp_gateway::serve_admin(&gateway, admin_stop).await?;
    let input = tokio::io::BufReader::new(tokio::io::stdin());
    let run = downstream::stdio::run(gateway.clone(), input, tokio::io::stdout());
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r?,
        () = signals => {
            // Calls in flight may finish (and be answered) within the drain time.
            let drain = gateway.config().gateway.drain_timeout;
            tokio::select! {
                _ = &mut run => {}
                _ = gateway.drain(drain) => {}
            }
        }
    }
    gateway.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers (SIGHUP's too) are
/// installed when this is called, not when it is first polled, so a signal
/// that comes early does not kill the process. SIGHUP (a reload, for most
/// daemons) is logged and ignored until the gateway can reload: the
/// default action would exit at once, dropping every session.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
    async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    tracing::warn!("SIGHUP received: reloading the config is not supported yet; still serving with the config loaded at start.");
                }
            }
        }
        tracing::info!("Shutdown signal received.");
    }
}
