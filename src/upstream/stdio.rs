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
use crate::config::{Redactor, Resolved, StderrLevel};
use crate::protocol::SPLICE_FROM;
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
    pub(crate) stderr_level: StderrLevel,
    /// Where the child's last stderr line is kept (masked, cut), for
    /// `/status` to say why a process that exited did (the operator's
    /// view only: a client's error never quotes it).
    pub(crate) last_stderr: LastLine,
}

/// The last non-blank line a child wrote to stderr, masked and cut to
/// [`LAST_LINE_MAX_CHARS`].
pub(crate) type LastLine = Arc<Mutex<Option<Box<str>>>>;

/// Longest stderr line kept for `/status`.
const LAST_LINE_MAX_CHARS: usize = 300;

// === impl StdioLink ===

impl StdioLink {
    /// Starts the child and its reader, writer, stderr and process tasks.
    pub(crate) fn spawn(l: &Launch<'_>, inbox: &Arc<Inbox>) -> std::io::Result<Self> {
        // A line of an earlier process would explain this one's failure.
        *l.last_stderr.locked() = None;
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
        let upstream = inbox.upstream().to_owned();
        let err =
            StderrSink { upstream, redactor: l.redactor.clone(), level: l.stderr_level, last: l.last_stderr.clone() };
        tokio::spawn(stderr_loop(BufReader::new(stderr), err));
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
    // Biased to what is queued: a stop writes the messages already queued
    // (the `notifications/cancelled` of calls dropped just before it) as
    // far as the pipe takes them at once, and never waits for a child that
    // does not read.
    loop {
        let msg = tokio::select! {
            biased;
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = stop.cancelled() => break,
        };
        let write = async {
            stdin.write_all(msg.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        tokio::select! {
            biased;
            r = write => if r.is_err() { break },
            _ = stop.cancelled() => break,
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
    // One per process: its first stray line is warned about.
    let noise = inbox.noise();
    loop {
        match framing::read_line(&mut out, &mut buf, max).await {
            Ok(Line::Ok) if buf.iter().all(u8::is_ascii_whitespace) => {}
            // A long line is given away: a large result is forwarded from
            // it (protocol::Reply), and a new buffer starts small anyway.
            Ok(Line::Ok) if buf.len() >= SPLICE_FROM => {
                inbox.deliver_line_owned(std::mem::replace(&mut buf, Vec::with_capacity(8 * 1024)), &noise)
            }
            Ok(Line::Ok) => inbox.deliver_line(&buf, &noise),
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

/// Where a child's stderr lines go.
struct StderrSink {
    upstream: String,
    redactor: Redactor,
    level: StderrLevel,
    last: LastLine,
}

/// Logs each line of the child's stderr at its level (read to the end
/// even when `off`, so the child never blocks on a full pipe), and keeps
/// the last one (even when `off`: it is what says why a start failed).
async fn stderr_loop<R: tokio::io::AsyncBufRead + Unpin>(mut err: R, sink: StderrSink) {
    const TARGET: &str = "mcp_gateway::upstream::stderr";
    let StderrSink { upstream, redactor, level, last } = sink;
    let mut buf = Vec::new();
    while let Ok(Line::Ok | Line::TooLong) = framing::read_line(&mut err, &mut buf, 16 * 1024).await {
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            continue;
        }
        let line = redactor.redact(&line);
        let kept: String = line.trim().chars().take(LAST_LINE_MAX_CHARS).collect();
        *last.locked() = Some(kept.into());
        // The level of a `tracing` event is fixed at the call site: one
        // call per level.
        match level {
            StderrLevel::Off => {}
            StderrLevel::Error => tracing::error!(target: TARGET, upstream = %upstream, "{line}"),
            StderrLevel::Warn => tracing::warn!(target: TARGET, upstream = %upstream, "{line}"),
            StderrLevel::Info => tracing::info!(target: TARGET, upstream = %upstream, "{line}"),
            StderrLevel::Debug => tracing::debug!(target: TARGET, upstream = %upstream, "{line}"),
            StderrLevel::Trace => tracing::trace!(target: TARGET, upstream = %upstream, "{line}"),
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

#[cfg(test)]
mod tests {
    //! The reader's handling of stray stdout lines and the stderr level, on
    //! byte slices standing for the child's pipes, with the log captured.

    use std::io::Write;

    use tracing::instrument::WithSubscriber as _;

    use super::*;
    use crate::protocol::Limits;
    use crate::telemetry::Metrics;
    use crate::telemetry::metrics::UpstreamLabels;

    /// What a subscriber wrote, one event a line, without colours or time.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.locked().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        /// A subscriber at every level that writes here.
        fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
            self.subscriber_at(tracing::Level::TRACE)
        }

        /// A subscriber at `level` and above that writes here.
        fn subscriber_at(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync + 'static {
            let sink = self.clone();
            tracing_subscriber::fmt()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .without_time()
                .with_max_level(level)
                .finish()
        }

        fn lines(&self) -> Vec<String> {
            String::from_utf8_lossy(&self.0.locked()).lines().map(|l| l.trim_start().to_owned()).collect()
        }

        /// Lines at `level` that contain `text`.
        fn count(&self, level: &str, text: &str) -> usize {
            self.lines().iter().filter(|l| l.starts_with(level) && l.contains(text)).count()
        }
    }

    /// A stdout with a log line, a JSON log record, a real notification
    /// and a line that is not UTF-8: three stray lines.
    const STDOUT: &[u8] = b"Server listening on stdio\n{\"level\":30,\"msg\":\"ready\"}\n\
        {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\xff\xfe\n";

    #[tokio::test]
    async fn stray_stdout_lines_are_counted_each_and_warned_once_per_start() {
        let metrics = Metrics::new();
        let (tx, mut events) = mpsc::channel(8);
        let inbox = Inbox::new(Arc::from("x"), tx, Limits::default(), &metrics);
        let count =
            || metrics.upstream_stdout_noise_lines.get_or_create(&UpstreamLabels { upstream: "x".into() }).get();
        let log = Log::default();
        for start in 1..=2u64 {
            // Each read loop is one process's stdout.
            let stop = CancellationToken::new();
            read_loop(STDOUT, inbox.clone(), 1 << 20, stop.clone()).with_subscriber(log.subscriber()).await;
            assert!(stop.is_cancelled(), "the end of stdout stops the child");
            assert_eq!(count(), 3 * start, "every stray line counts");
            assert_eq!(log.count("WARN", "invalid JSON-RPC message on stdout") as u64, start, "{:#?}", log.lines());
            assert_eq!(log.count("DEBUG", "non-JSON-RPC line on stdout") as u64, 2 * start, "{:#?}", log.lines());
            let event = events.try_recv().expect("the notification between them got through");
            assert!(
                matches!(event, super::super::inbox::Event::Notification(m) if m.method().ends_with("list_changed"))
            );
        }
        // The warning shows the line, so the operator sees what prints.
        assert!(log.lines()[0].contains("line=\"Server listening on stdio\""), "{:#?}", log.lines());

        // With debug off: the warning and the count, nothing else.
        let quiet = Log::default();
        read_loop(STDOUT, inbox.clone(), 1 << 20, CancellationToken::new())
            .with_subscriber(quiet.subscriber_at(tracing::Level::INFO))
            .await;
        assert_eq!(count(), 9);
        assert_eq!(quiet.lines().len(), 1, "{:#?}", quiet.lines());
        assert!(quiet.lines()[0].starts_with("WARN"), "{:#?}", quiet.lines());
        // Noise is not a refused message.
        assert!(metrics.encode().lines().all(|l| !l.starts_with("mcp_gateway_upstream_messages_refused_total{")));
    }

    #[tokio::test]
    async fn a_new_process_forgets_the_last_stderr_line_of_the_one_before() {
        let metrics = Metrics::new();
        let (tx, _events) = mpsc::channel(8);
        let inbox = Inbox::new(Arc::from("x"), tx, Limits::default(), &metrics);
        let last = LastLine::default();
        *last.locked() = Some("Error: from the process before".into());
        let (args, env) = (Vec::new(), std::collections::BTreeMap::new());
        let launch = Launch {
            command: "/nonexistent/mcp-server",
            args: &args,
            env: &env,
            cwd: Path::new("/"),
            grace: Duration::from_millis(10),
            max_bytes: 1 << 20,
            redactor: &Redactor::default(),
            stderr_level: StderrLevel::Info,
            last_stderr: last.clone(),
        };
        assert!(StdioLink::spawn(&launch, &inbox).is_err(), "it cannot start");
        assert_eq!(*last.locked(), None, "not the earlier process's words");
    }

    #[tokio::test]
    async fn a_message_with_an_id_is_still_refused_not_noise() {
        let metrics = Metrics::new();
        let (tx, _events) = mpsc::channel(8);
        let inbox = Inbox::new(Arc::from("x"), tx, Limits::default(), &metrics);
        let noise = inbox.noise();
        // A reply with two `result` members: ambiguous (design D12).
        inbox.deliver_line(br#"{"jsonrpc":"2.0","id":7,"result":{},"result":{}}"#, &noise);
        assert_eq!(noise.count(), 0);
        assert!(
            metrics.encode().contains(r#"upstream_messages_refused_total{upstream="x",reason="duplicate_member"} 1"#)
        );
    }

    #[tokio::test]
    async fn stderr_lines_are_logged_at_the_configured_level_and_masked() {
        let redactor = Redactor::from_values(vec!["s3cr3t".into()]);
        for (level, shown) in [
            (StderrLevel::Off, None),
            (StderrLevel::Error, Some("ERROR")),
            (StderrLevel::Warn, Some("WARN")),
            (StderrLevel::Info, Some("INFO")),
            (StderrLevel::Debug, Some("DEBUG")),
            (StderrLevel::Trace, Some("TRACE")),
        ] {
            let log = Log::default();
            let stderr: &[u8] = b"starting\n\n  \ntoken s3cr3t loaded\n";
            let last = LastLine::default();
            let sink = StderrSink { upstream: "x".into(), redactor: redactor.clone(), level, last: last.clone() };
            stderr_loop(stderr, sink).with_subscriber(log.subscriber()).await;
            // Kept at every level, masked.
            assert_eq!(last.locked().as_deref(), Some("token *** loaded"), "{level:?}");
            let lines = log.lines();
            let Some(shown) = shown else {
                assert!(lines.is_empty(), "off logs nothing: {lines:#?}");
                continue;
            };
            assert_eq!(lines.len(), 2, "blank lines are skipped: {lines:#?}");
            for l in &lines {
                assert!(l.starts_with(&format!("{shown} mcp_gateway::upstream::stderr:")), "{level:?}: {l}");
                assert!(l.contains("upstream=x"), "{l}");
            }
            assert!(lines[1].contains("token *** loaded") && !lines[1].contains("s3cr3t"), "{}", lines[1]);
        }
    }
}
