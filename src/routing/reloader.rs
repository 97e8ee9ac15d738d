//! The one task that reloads the config (docs/design.md D11): every
//! trigger — SIGHUP, a change of the config or secrets file, `POST
//! /admin/reload` — asks it, so two reloads never interleave; asks that
//! come while one runs are answered by the next run, which reads the file
//! as it is then.
//!
//! The file watch is on the *directories* of the config and the secrets
//! file (`notify`, inotify on Linux), not on the files: an editor that
//! saves by rename, and a Kubernetes ConfigMap, which swaps its `..data`
//! symlink, replace the file rather than write it. Events are debounced
//! ([`DEBOUNCE`]) and a reload is asked only when the bytes of either file
//! changed, so a `touch` or a burst of writes reloads once or not at all.
//!
//! Every reload is counted (`mcp_gateway_config_reloads_total{outcome}`),
//! logged, and written to the audit log as a `gateway/config_reload`
//! record.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Gateway;
use super::reload::{Outcome, Report};
use crate::config::{Config, Env};
use crate::protocol;
use crate::telemetry::audit::{self, Record};
use crate::telemetry::metrics::Outcome as OutcomeLabel;

/// How long the file watch waits after an event for the burst to end.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// How often the files are compared even without an event: a watch on a
/// folder that was replaced (a `current -> releases/N` symlink swapped
/// above it, the folder deleted and made again) hears nothing more.
pub const POLL: Duration = Duration::from_secs(10);

/// A reload asked for.
#[derive(Debug)]
struct Ask {
    trigger: &'static str,
    /// Who asked (`POST /admin/reload`), for the audit record.
    principal: Option<Arc<str>>,
    reply: Option<oneshot::Sender<Report>>,
}

/// The handle of the reload task: ask it to reload, and wait for the
/// report or not.
#[derive(Debug, Clone)]
pub struct Reloader {
    asks: mpsc::Sender<Ask>,
}

impl Reloader {
    /// Starts the reload task over `gateway`, reading the config file
    /// named by the config in force with `env` as the environment, and the
    /// file watch. Both end with `shutdown`.
    pub fn start(gateway: Arc<Gateway>, env: Arc<dyn Env + Send + Sync>, shutdown: CancellationToken) -> Self {
        let (asks, rx) = mpsc::channel(16);
        let config = gateway.config();
        let m = &gateway.telemetry().metrics;
        m.config_last_reload_success.set(unix_now());
        let reloader = Reloader { asks };
        if config.gateway.watch_config
            && let Err(e) = watch(&config, reloader.clone(), shutdown.clone())
        {
            tracing::warn!(error = %e, "Cannot watch the config file; reload with SIGHUP or `mcp-gateway reload`.");
        }
        let _ = gateway.reloader.set(reloader.clone());
        tokio::spawn(run(gateway, env, rx, shutdown));
        reloader
    }

    /// Asks for a reload on behalf of `principal` and waits for its
    /// report.
    pub async fn reload(&self, trigger: &'static str, principal: Option<Arc<str>>) -> Report {
        let (tx, rx) = oneshot::channel();
        let gone = || Report::refused(trigger, "the gateway is shutting down".to_owned());
        if self.asks.send(Ask { trigger, principal, reply: Some(tx) }).await.is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    /// Asks for a reload without waiting (a signal, a file change). When
    /// asks are queued already, one more adds nothing: the next run reads
    /// the file as it is then.
    pub fn request(&self, trigger: &'static str) {
        let _ = self.asks.try_send(Ask { trigger, principal: None, reply: None });
    }
}

/// The reload task: one reload at a time, every ask queued meanwhile
/// answered by the next.
async fn run(
    gateway: Arc<Gateway>,
    env: Arc<dyn Env + Send + Sync>,
    mut rx: mpsc::Receiver<Ask>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            a = rx.recv() => match a { Some(a) => a, None => return },
            () = shutdown.cancelled() => return,
        };
        let mut asks = vec![first];
        while let Ok(a) = rx.try_recv() {
            asks.push(a);
        }
        let trigger = asks[0].trigger;
        let principal = asks[0].principal.clone();
        let path = gateway.config().path.clone();
        let env2 = env.clone();
        // Reading files blocks; keep it off the workers.
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path, &*env2)).await;
        let mut report = match loaded {
            Ok(Ok(next)) => gateway.reload(trigger, next),
            Ok(Err(e)) => Report::refused(trigger, e.to_string()),
            Err(e) => Report::refused(trigger, format!("the loader failed: {e}")),
        };
        // An error quotes the file: never a secret value the gateway knows.
        if let Some(e) = &report.error {
            report.error = Some(gateway.redactor().redact(e).into_owned());
        }
        observe(&gateway, &report, principal);
        for a in asks {
            if let Some(reply) = a.reply {
                let _ = reply.send(report.clone());
            }
        }
    }
}

/// Counts, logs and audits a reload.
fn observe(gateway: &Gateway, report: &Report, principal: Option<Arc<str>>) {
    let t = gateway.telemetry();
    t.metrics.config_reloads.get_or_create(&OutcomeLabel { outcome: report.outcome.as_str() }).inc();
    let applied = report.applied.join(", ");
    let restart = report.needs_restart.join(", ");
    match report.outcome {
        Outcome::Applied => {
            t.metrics.config_last_reload_success.set(unix_now());
            tracing::info!(trigger = report.trigger, applied = %applied, needs_restart = %restart, "Config reloaded.");
        }
        Outcome::Unchanged | Outcome::NeedsRestart => {
            tracing::info!(trigger = report.trigger, needs_restart = %restart, "Config reload: nothing to apply now.")
        }
        Outcome::Refused => tracing::error!(
            trigger = report.trigger,
            error = report.error.as_deref().unwrap_or(""),
            "Config reload refused; the config in force stays."
        ),
    }
    if !report.needs_restart.is_empty() {
        tracing::warn!(keys = %restart, "Changed in the file but kept until a restart.");
    }
    let Some(log) = &t.audit else { return };
    let mut policy: Vec<String> = report.applied.iter().map(|k| format!("applied:{k}")).collect();
    policy.extend(report.needs_restart.iter().map(|k| format!("needs_restart:{k}")));
    policy.extend(report.error.iter().map(|e| format!("error:{e}")));
    log.record(Record {
        time: audit::Stamp::now(),
        session: None,
        principal: principal.map(|p| p.to_string()),
        transport: protocol::Transport::Gateway.as_str(),
        method: "gateway/config_reload",
        name: Some(report.trigger.to_owned()),
        upstream: None,
        tool: None,
        arguments_hmac: None,
        arguments: None,
        class: if report.outcome == Outcome::Refused { "config" } else { "ok" },
        cause: (report.outcome == Outcome::Refused).then_some("config_refused"),
        is_error: report.outcome == Outcome::Refused,
        latency_ms: 0.0,
        attempts: 0,
        trace_id: None,
        policy,
        tags: Vec::new(),
    });
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The files a change of which asks for a reload.
fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.path.clone()];
    files.extend(config.secrets_path.clone());
    files
}

/// The bytes of the watched files (a missing one reads as nothing).
fn contents(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(f).ok()).collect()
}

/// Watches the directories of the config and secrets files, and asks for a
/// reload when the bytes of either changed. The watch keeps the files of
/// the config in force at start; a reload that names another secrets file
/// is watched from the next restart (and said so in the log).
fn watch(config: &Config, reloader: Reloader, shutdown: CancellationToken) -> notify::Result<()> {
    use notify::Watcher as _;
    let files = watched_files(config);
    let dirs: Vec<PathBuf> = {
        let mut d: Vec<PathBuf> = files.iter().map(|f| dir_of(f)).collect();
        d.sort();
        d.dedup();
        d
    };
    let names: Vec<std::ffi::OsString> = files.iter().filter_map(|f| f.file_name().map(Into::into)).collect();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Our files, or a ConfigMap's `..data` swap.
        let ours = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| names.iter().any(|x| x == n) || n.to_string_lossy().starts_with(".."))
        });
        if ours {
            let _ = tx.try_send(());
        }
    })?;
    for d in &dirs {
        watcher.watch(d, notify::RecursiveMode::NonRecursive)?;
    }
    tracing::debug!(dirs = ?dirs, "Watching the config and secrets files for changes.");
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut seen = contents(&files);
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = rx.recv() => {
                    if r.is_none() { return }
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let files2 = files.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || contents(&files2)).await else { return };
            if now == seen {
                continue;
            }
            // A writer still at work (not every editor renames into
            // place): wait until two reads a moment apart agree.
            tokio::time::sleep(DEBOUNCE).await;
            let files2 = files.clone();
            let Ok(again) = tokio::task::spawn_blocking(move || contents(&files2)).await else { return };
            if again != now {
                continue;
            }
            seen = now;
            tracing::info!("The config or secrets file changed; reloading.");
            reloader.request("file");
        }
    });
    Ok(())
}

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
