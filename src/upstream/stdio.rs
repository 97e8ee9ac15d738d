//! A stdio upstream: a supervised child process.
//!
//! Guarantees: the child runs in its own process group, so `npx`/`uvx`
//! wrappers and their children are signalled together; it is shut down as
//! the spec says (close stdin, wait, SIGTERM, wait, SIGKILL); whatever is
//! left of the group after the child exits is killed; the child is reaped,
//! so no zombie remains; and with `PR_SET_PDEATHSIG` the child dies with the
//! gateway even if the gateway is killed with SIGKILL.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::inbox::Inbox;
use super::link::LinkError;
use crate::config::{Redactor, Resolved};
use crate::protocol::framing::{self, Line};
use crate::sync::Locked;

/// Outbound queue depth per stdio upstream (bounded: callers wait).
const QUEUE: usize = 1024;

/// A running child process.
#[derive(Debug)]
pub(crate) struct StdioLink {
    tx: mpsc::Sender<String>,
    stop: CancellationToken,
    process: Mutex<Option<JoinHandle<()>>>,
    pid: Option<u32>,
}

/// What is needed to start the child.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) command: &'a str,
    pub(crate) args: &'a [Resolved],
    pub(crate) env: &'a std::collections::BTreeMap<String, Resolved>,
    pub(crate) cwd: &'a Path,
    pub(crate) grace: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) redactor: &'a Redactor,
}

// === impl StdioLink ===

impl StdioLink {
    /// Starts the child and its reader, writer, stderr and process tasks.
    pub(crate) fn spawn(l: &Launch<'_>, inbox: &Arc<Inbox>) -> std::io::Result<Self> {
        let mut cmd = Command::new(l.command);
        cmd.args(l.args.iter().map(Resolved::expose))
            .envs(l.env.iter().map(|(k, v)| (k, v.expose())))
            .current_dir(l.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        set_parent_death_signal(&mut cmd);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let writer_stop = CancellationToken::new();
        tokio::spawn(write_loop(stdin, rx, writer_stop.clone()));
        tokio::spawn(read_loop(BufReader::new(stdout), inbox.clone(), l.max_bytes, stop.clone()));
        tokio::spawn(stderr_loop(BufReader::new(stderr), inbox.upstream().to_owned(), l.redactor.clone()));
        let process = tokio::spawn(process_loop(child, pid, stop.clone(), writer_stop, l.grace, inbox.clone()));
        Ok(StdioLink { tx, stop, process: Mutex::new(Some(process)), pid })
    }

    pub(crate) async fn send(&self, body: String) -> Result<(), LinkError> {
        // A client's pretty-printed params must not split the line.
        self.tx.send(crate::protocol::framing::one_line(body)).await.map_err(|_| LinkError::Closed)
    }

    pub(crate) fn try_send(&self, body: String) {
        let _ = self.tx.try_send(body);
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Stops the child with the spec's escalation and waits until it is reaped.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        let handle = self.process.locked().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the prctl(2) system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

async fn write_loop(mut stdin: ChildStdin, mut rx: mpsc::Receiver<String>, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        let write = async {
            stdin.write_all(msg.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            r = write => if r.is_err() { break },
        }
    }
    // Dropping stdin closes it: the first step of the spec's shutdown.
}

async fn read_loop<R: tokio::io::AsyncBufRead + Unpin>(
    mut out: R,
    inbox: Arc<Inbox>,
    max: usize,
    stop: CancellationToken,
) {
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        match framing::read_line(&mut out, &mut buf, max).await {
            Ok(Line::Ok) if buf.iter().all(u8::is_ascii_whitespace) => {}
            Ok(Line::Ok) => inbox.deliver(&buf),
            Ok(Line::TooLong) => {
                tracing::warn!(upstream = %inbox.upstream(), max_bytes = max, "Upstream sent a message over the size limit; skipped.");
                // Fail the call it answers now rather than at its deadline.
                inbox.fail_oversized(framing::id_in_head(&buf), max);
            }
            Ok(Line::Eof) | Err(_) => break,
        }
        if buf.capacity() > 1024 * 1024 {
            buf = Vec::with_capacity(8 * 1024); // Do not keep a huge buffer alive.
        }
    }
    // stdout closed: the child is gone or broken; make sure it is stopped.
    stop.cancel();
}

async fn stderr_loop<R: tokio::io::AsyncBufRead + Unpin>(mut err: R, upstream: String, redactor: Redactor) {
    let mut buf = Vec::new();
    while let Ok(Line::Ok | Line::TooLong) = framing::read_line(&mut err, &mut buf, 16 * 1024).await {
        let line = String::from_utf8_lossy(&buf);
        if !line.trim().is_empty() {
            tracing::info!(target: "mcp_gateway::upstream::stderr", upstream = %upstream, "{}", redactor.redact(&line));
        }
    }
}

async fn process_loop(
    mut child: Child,
    pid: Option<u32>,
    stop: CancellationToken,
    writer_stop: CancellationToken,
    grace: Duration,
    inbox: Arc<Inbox>,
) {
    let group = pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
    let signal = |s: Signal| {
        if let Some(g) = group {
            let _ = killpg(g, s);
        }
    };
    let status = tokio::select! {
        s = child.wait() => s,
        _ = stop.cancelled() => {
            writer_stop.cancel();
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    tracing::debug!(upstream = %inbox.upstream(), "Upstream ignored stdin close; sending SIGTERM.");
                    signal(Signal::SIGTERM);
                    match tokio::time::timeout(grace, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            tracing::warn!(upstream = %inbox.upstream(), "Upstream ignored SIGTERM; sending SIGKILL.");
                            signal(Signal::SIGKILL);
                            child.wait().await
                        }
                    }
                }
            }
        }
    };
    writer_stop.cancel();
    // Wrappers such as npx may leave their own children behind.
    signal(Signal::SIGKILL);
    let reason = match status {
        Ok(s) => format!("process exited ({s})"),
        Err(e) => format!("process could not be waited for: {e}"),
    };
    inbox.close(reason);
}
