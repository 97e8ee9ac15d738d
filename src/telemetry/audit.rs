//! The audit log: one JSON line per routed call (design.md D8, D9), the
//! input the security rules will replay.
//!
//! The request path only builds a [`Record`] and hands it to a bounded
//! queue (`try_send`: it never waits). A dedicated thread serializes and
//! writes the lines, flushes whenever the queue runs empty, and rotates the
//! file when it would pass `max_file_bytes` (`audit.jsonl` →
//! `audit.jsonl.1` → … → `audit.jsonl.<max_files>`, the oldest deleted).
//! A full queue drops the record and counts it
//! (`mcp_gateway_audit_records_total{outcome="dropped"}`): losing an audit
//! line is bad, stalling every agent behind a slow disk is worse.
//!
//! Argument values are written only with `include_arguments = true`, and
//! then with every secret value masked; otherwise only their SHA-256.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::metrics::{Metrics, Outcome};
use crate::config::{AuditSection, Redactor};
use crate::upstream::LogPace;

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

/// One audit line. Field order is the line's order.
#[derive(Debug, Serialize)]
pub struct Record {
    /// RFC 3339 UTC time the request arrived, with milliseconds.
    pub time: String,
    /// A digest of the downstream session id (the id itself is a
    /// credential); `null` for sessionless requests.
    pub session: Option<String>,
    /// The authenticated principal; `null` until client authentication.
    pub principal: Option<String>,
    /// `http` or `stdio`.
    pub transport: &'static str,
    /// The JSON-RPC method.
    pub method: String,
    /// The name the client used (e.g. `fs__read_file`).
    pub name: Option<String>,
    /// The upstream that owns it; `null` when none does.
    pub upstream: Option<Arc<str>>,
    /// The tool's name as the upstream knows it.
    pub tool: Option<Arc<str>>,
    /// `sha256:<hex>` of the arguments' JSON text as the client sent it.
    pub arguments_sha256: Option<String>,
    /// The arguments, secrets masked; only with `include_arguments`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Box<serde_json::value::RawValue>>,
    /// `ok` or the error class.
    pub class: &'static str,
    /// With `class` `breaker_open` after retries: the class of the failure
    /// before it (the breaker opened while the call was being retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// Whether the tool reported an error in its result (`isError`).
    pub is_error: bool,
    /// Milliseconds from arrival to reply.
    pub latency_ms: f64,
    /// Attempts sent upstream (0: refused before any was sent).
    pub attempts: u32,
    /// The trace this call belongs to, when traces are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Policy decisions taken on the call (filled by the policy engine).
    pub policy: Vec<String>,
    /// The tool's tags under the sequence rules (for `rules replay`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The audit log's sending side.
#[derive(Debug)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    include_arguments: bool,
    redactor: Redactor,
    metrics: Arc<Metrics>,
    drop_log: LogPace,
}

#[derive(Debug)]
enum Msg {
    Record(Box<Record>),
    Stop,
}

struct Writer {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    max_bytes: u64,
    max_files: u32,
    metrics: Arc<Metrics>,
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (appends to) the file and starts the writer thread.
    pub fn open(
        cfg: &AuditSection,
        path: &Path,
        redactor: Redactor,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AuditError> {
        let err = |source| AuditError { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let (file, size) = open_append(path).map_err(err)?;
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let mut writer = Writer {
            path: path.to_owned(),
            file: BufWriter::new(file),
            size,
            max_bytes: cfg.max_file_bytes,
            max_files: cfg.max_files,
            metrics: metrics.clone(),
        };
        let handle =
            std::thread::Builder::new().name("audit-log".into()).spawn(move || writer.run(&rx)).map_err(err)?;
        tracing::info!(path = %path.display(), include_arguments = cfg.include_arguments, "Audit log open.");
        Ok(AuditLog {
            tx,
            writer: Mutex::new(Some(handle)),
            include_arguments: cfg.include_arguments,
            redactor,
            metrics,
            drop_log: LogPace::default(),
        })
    }

    /// Whether argument values are recorded (so the caller copies them).
    pub fn wants_arguments(&self) -> bool {
        self.include_arguments
    }

    /// The `arguments` of a record: masked, and only when configured.
    pub fn arguments(&self, raw: &serde_json::value::RawValue) -> Option<Box<serde_json::value::RawValue>> {
        if !self.include_arguments {
            return None;
        }
        // Masking replaces text inside JSON strings with `***`, which keeps
        // the JSON valid unless a secret spans syntax; then drop the value.
        let masked = self.redactor.redact(raw.get());
        serde_json::value::RawValue::from_string(masked.into_owned()).ok()
    }

    /// Queues a record; never waits. A full queue drops it (counted).
    pub fn record(&self, rec: Record) {
        match self.tx.try_send(Msg::Record(Box::new(rec))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.audit_records.get_or_create(&Outcome { outcome: "dropped" }).inc();
                if self.drop_log.ready() {
                    tracing::warn!("Audit log queue full; dropping records (the disk is slower than the calls).");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.audit_records.get_or_create(&Outcome { outcome: "failed" }).inc();
            }
        }
    }

    /// Writes what is queued and stops the writer (blocking: call it off
    /// the async workers).
    pub fn close(&self) {
        let handle = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(h) = handle {
            let _ = self.tx.send(Msg::Stop);
            let _ = h.join();
        }
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// [`now_rfc3339`] of a moment in the (recent) past.
pub fn time_of(at: tokio::time::Instant) -> String {
    let ago = at.elapsed();
    humantime::format_rfc3339_millis(SystemTime::now().checked_sub(ago).unwrap_or_else(SystemTime::now)).to_string()
}

fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

// === impl Writer ===

impl Writer {
    fn run(&mut self, rx: &Receiver<Msg>) {
        let mut line = Vec::with_capacity(1024);
        while let Ok(msg) = rx.recv() {
            let mut next = Some(msg);
            // Write everything queued, then flush once.
            while let Some(msg) = next.take() {
                let Msg::Record(rec) = msg else {
                    self.flush();
                    return;
                };
                line.clear();
                serde_json::to_writer(&mut line, &rec).expect("a record always serializes");
                line.push(b'\n');
                self.write(&line);
                next = rx.try_recv().ok();
            }
            self.flush();
        }
        self.flush();
    }

    fn write(&mut self, line: &[u8]) {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate();
        }
        let outcome = match self.file.write_all(line) {
            Ok(()) => {
                self.size += line.len() as u64;
                "written"
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "Audit log write failed; record lost.");
                "failed"
            }
        };
        self.metrics.audit_records.get_or_create(&Outcome { outcome }).inc();
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "Audit log flush failed.");
        }
    }

    /// `path.(n-1)` → `path.n` … `path` → `path.1`, then a fresh `path`.
    fn rotate(&mut self) {
        self.flush();
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let result = (|| {
            if self.max_files == 0 {
                std::fs::remove_file(&self.path)?;
            } else {
                for n in (1..self.max_files).rev() {
                    if numbered(n).exists() {
                        std::fs::rename(numbered(n), numbered(n + 1))?;
                    }
                }
                std::fs::rename(&self.path, numbered(1))?;
            }
            open_append(&self.path)
        })();
        match result {
            Ok((file, size)) => {
                self.file = BufWriter::new(file);
                self.size = size;
                tracing::info!(path = %self.path.display(), "Audit log rotated.");
            }
            // Keep appending to the open file: an oversized log beats a lost one.
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "Audit log rotation failed."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> Record {
        Record {
            time: now_rfc3339(),
            session: None,
            principal: None,
            transport: "stdio",
            method: "tools/call".into(),
            name: Some(format!("fs__read_{n}")),
            upstream: Some(Arc::from("fs")),
            tool: Some(Arc::from("read")),
            arguments_sha256: Some(digest(b"{}")),
            arguments: None,
            class: "ok",
            cause: None,
            is_error: false,
            latency_ms: 1.5,
            attempts: 1,
            trace_id: None,
            policy: Vec::new(),
            tags: Vec::new(),
        }
    }

    fn section(max_file_bytes: u64, max_files: u32) -> AuditSection {
        AuditSection { path: None, max_file_bytes, max_files, include_arguments: false, queue: 64 }
    }

    #[test]
    fn writes_one_json_line_per_record_and_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let metrics = Arc::new(Metrics::new());
        let log = AuditLog::open(&section(600, 2), &path, Redactor::default(), metrics.clone()).expect("opens");
        for n in 0..20 {
            // A full queue would drop; pace the writes so this test counts lines.
            while log.tx.try_send(Msg::Record(Box::new(record(n)))).is_err() {
                std::thread::yield_now();
            }
        }
        log.close();
        let mut lines = Vec::new();
        for name in ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"] {
            let p = dir.path().join(name);
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(text.len() <= 600, "{name} is {} bytes", text.len());
            lines.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line")));
        }
        assert!(!dir.path().join("audit.jsonl.3").exists(), "only max_files rotated files are kept");
        // The newest records survive, in order, without gaps.
        let names: Vec<String> = lines.iter().map(|l| l["name"].as_str().unwrap_or_default().to_owned()).collect();
        let last: u32 =
            names.last().and_then(|n| n.strip_prefix("fs__read_")).and_then(|n| n.parse().ok()).unwrap_or(0);
        assert_eq!(last, 19, "{names:?}");
        for pair in names.windows(2) {
            let a: u32 = pair[0].trim_start_matches("fs__read_").parse().unwrap_or(0);
            let b: u32 = pair[1].trim_start_matches("fs__read_").parse().unwrap_or(0);
            assert_eq!(a + 1, b, "{names:?}");
        }
        assert_eq!(lines[0]["class"], "ok");
        assert_eq!(lines[0]["arguments_sha256"], digest(b"{}"));
        assert!(lines[0].get("arguments").is_none());
        assert!(metrics.encode().contains("mcp_gateway_audit_records_total{outcome=\"written\"} 20"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let mut cfg = section(1 << 20, 1);
        cfg.queue = 1;
        let log =
            AuditLog::open(&cfg, &dir.path().join("a.jsonl"), Redactor::default(), metrics.clone()).expect("opens");
        for n in 0..2000 {
            log.record(record(n));
        }
        log.close();
        let text = metrics.encode();
        let count = |outcome: &str| -> u64 {
            let key = format!("mcp_gateway_audit_records_total{{outcome=\"{outcome}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        assert!(count("dropped") > 0, "{text}");
        assert_eq!(count("dropped") + count("written"), 2000, "{text}");
    }

    #[test]
    fn arguments_only_when_configured_and_masked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let redactor = Redactor::from_values(vec!["hunter2".into()]);
        let mut cfg = section(1 << 20, 1);
        let raw = serde_json::value::RawValue::from_string(r#"{"password":"hunter2","n":1}"#.into()).expect("json");
        let off = AuditLog::open(&cfg, &dir.path().join("a.jsonl"), redactor.clone(), metrics.clone()).expect("opens");
        assert!(off.arguments(&raw).is_none());
        cfg.include_arguments = true;
        let on = AuditLog::open(&cfg, &dir.path().join("b.jsonl"), redactor, metrics).expect("opens");
        assert_eq!(on.arguments(&raw).expect("kept").get(), r#"{"password":"***","n":1}"#);
    }
}
