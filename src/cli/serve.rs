//! `mcp-gateway serve` and `mcp-gateway stdio`, and the signals that end
//! them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use mcp_gateway::config::Config;
use mcp_gateway::routing::reloader::Reloader;
use mcp_gateway::telemetry::Telemetry;
use mcp_gateway::{Gateway, downstream};

use super::ProcessEnv;

pub(crate) async fn serve(config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (hup, hups) = tokio::sync::mpsc::channel(1);
    let signals = shutdown_signal(hup);
    let addr = listen.unwrap_or(config.listen());
    config.check_exposure(addr)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        // What to do about the usual cause, a second gateway on the port.
        format!("cannot listen on {addr} (another port: `--listen 127.0.0.1:PORT` or `gateway.listen`)")
    })?;
    let addr = listener.local_addr()?;
    let telemetry = Telemetry::from_config(&config)?;
    let gateway = Gateway::start(config, telemetry);
    gateway.set_bound(addr);
    let stop_reloads = tokio_util::sync::CancellationToken::new();
    let _stop_reloads = stop_reloads.clone().drop_guard();
    reload_on_sighup(Reloader::start(gateway.clone(), Arc::new(ProcessEnv), stop_reloads), hups);
    tracing::info!(%addr, upstreams = gateway.upstreams().len(), "Listening on http://{addr}/mcp.");
    mcp_gateway::serve(listener, gateway.clone(), signals).await?;
    tracing::info!("Shutting down upstreams.");
    let stopping = tokio::time::Instant::now();
    gateway.shutdown().await;
    tracing::info!(elapsed_ms = stopping.elapsed().as_millis() as u64, "Stopped.");
    Ok(())
}

pub(crate) async fn stdio(config: Config) -> anyhow::Result<()> {
    let (hup, hups) = tokio::sync::mpsc::channel(1);
    let signals = shutdown_signal(hup);
    let telemetry = Telemetry::from_config(&config)?;
    let gateway = Gateway::start(config, telemetry);
    let stop_reloads = tokio_util::sync::CancellationToken::new();
    let _stop_reloads = stop_reloads.clone().drop_guard();
    reload_on_sighup(Reloader::start(gateway.clone(), Arc::new(ProcessEnv), stop_reloads), hups);
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

/// Asks `reloader` for a reload on each SIGHUP `hups` passes on.
fn reload_on_sighup(reloader: Reloader, mut hups: tokio::sync::mpsc::Receiver<()>) {
    tokio::spawn(async move {
        while hups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the config.");
            reloader.request("sighup");
        }
    });
}

/// Resolves on SIGTERM or Ctrl-C. The handlers (SIGHUP's too) are
/// installed when this is called, not when it is first polled, so a signal
/// that comes early does not kill the process. SIGHUP asks for a reload
/// (passed on to `hup`; one waiting is enough).
fn shutdown_signal(hup_to: tokio::sync::mpsc::Sender<()>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
    async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    let _ = hup_to.try_send(());
                }
            }
        }
        tracing::info!("Shutdown signal received.");
    }
}
