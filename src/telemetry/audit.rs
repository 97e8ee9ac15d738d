//! The audit log: one JSON line per routed call (docs/design.md D8, D9), the
//! input the security rules will replay.
//!
//! The request path only builds a [`Record`] and appends it to a bounded
//! batch (a short lock, never a wait, and no thread woken per call: waking
//! the writer for every call cost more than the call's own routing). A
//! dedicated thread takes the whole batch every [`FLUSH_EVERY`] (100 ms),
//! when [`WAKE_AT`] records are waiting (the call that makes them so wakes
//! it, one call in [`WAKE_AT`]) and at close, serializes and writes the
//! lines, flushes once, and rotates
//! the file when it would pass `max_file_bytes` (`audit.jsonl` →
//! `audit.jsonl.1` → … → `audit.jsonl.<max_files>`, the oldest deleted).
//! So a crash loses at most the last 100 ms of records, and a drain none.
//! A full batch (`queue` records) drops the record and counts it
//! (`mcp_gateway_audit_records_total{outcome="dropped"}`): losing an audit
//! line is bad, stalling every agent behind a slow disk is worse.
//!
//! Argument values are written only with `include_arguments = true`, and
//! then with every secret value masked; otherwise only their SHA-256.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::LogPace;
use super::metrics::{Metrics, Outcome};
use crate::config::{AuditKey, AuditSection, Redactor};
use crate::sync::Locked;

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
    pub time: Stamp,
    /// A digest of the downstream session id (the id itself is a
    /// credential); `null` for sessionless requests.
    pub session: Option<SessionDigest>,
    /// The authenticated principal; `null` until client authentication.
    pub principal: Option<String>,
    /// `http` or `stdio`.
    pub transport: &'static str,
    /// The JSON-RPC method (or the gateway's own event).
    pub method: &'static str,
    /// The name the client used (e.g. `fs__read_file`).
    pub name: Option<String>,
    /// The upstream that owns it; `null` when none does.
    pub upstream: Option<Arc<str>>,
    /// The tool's name as the upstream knows it.
    pub tool: Option<Arc<str>>,
    /// `hmac-sha256:<hex>` of the arguments' JSON text as the client sent
    /// it, keyed (`MCP_GATEWAY_AUDIT_KEY`): equal arguments give equal
    /// digests, but a short secret cannot be found by trying candidates
    /// without the key.
    pub arguments_hmac: Option<KeyedDigest>,
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

// A record's time and digests are kept as values and written as text by
// the writer thread: formatting them on the request path cost an
// allocation and a formatting pass each, per call.

/// A moment, written as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(SystemTime);

impl Stamp {
    /// Now.
    pub fn now() -> Self {
        Stamp(SystemTime::now())
    }

    /// A moment in the (recent) past.
    pub fn of(at: tokio::time::Instant) -> Self {
        let now = SystemTime::now();
        Stamp(now.checked_sub(at.elapsed()).unwrap_or(now))
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // humantime panics before 1970 and fails after 9999, and the writer
        // thread formats this: a wrong wall clock must not stop the log.
        const LAST: std::time::Duration = std::time::Duration::from_millis(253_402_300_799_999);
        let since = self.0.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().min(LAST);
        humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + since).fmt(f)
    }
}

/// A session id's digest (the id itself is a credential): the first 16
/// hex digits of its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionDigest([u8; 8]);

impl SessionDigest {
    /// The digest of `session`.
    pub fn of(session: &str) -> Self {
        let hash = Sha256::digest(session.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        SessionDigest(first)
    }
}

impl std::fmt::Display for SessionDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        hex(f, &self.0)
    }
}

/// A keyed digest of a call's arguments, written `hmac-sha256:<hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedDigest([u8; 32]);

impl std::fmt::Display for KeyedDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hmac-sha256:")?;
        hex(f, &self.0)
    }
}

/// Lowercase hex of `bytes`.
fn hex(f: &mut std::fmt::Formatter<'_>, bytes: &[u8]) -> std::fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// A value written in its record as a JSON string of its `Display` text.
macro_rules! serialize_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_text!(Stamp, SessionDigest, KeyedDigest);

/// How often the writer takes the batch: at most this much is lost when
/// the process dies without a drain.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Records waiting that wake the writer before its [`FLUSH_EVERY`].
///
/// Why: a batch is a `Vec<Record>` (about 330 bytes each, plus their
/// strings), and the writer keeps the vector it swapped out for the next
/// batch. At 25,000 calls a second a 100 ms batch held about 2,500
/// records and two vectors of 4,096, about 3 MB, a sixth of the gateway's
/// memory under that load. Taken at 256, a batch stays near 100 KB and the
/// writer is woken at most once per 256 calls.
pub const WAKE_AT: usize = 256;

/// The audit log's sending side.
#[derive(Debug)]
pub struct AuditLog {
    /// Keys the argument digests.
    key: AuditKey,
    batch: Arc<Batch>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The writer thread, to wake when [`WAKE_AT`] records wait.
    writer_thread: std::thread::Thread,
    include_arguments: bool,
    redactor: Redactor,
    metrics: Arc<Metrics>,
    drop_log: LogPace,
}

/// Records waiting for the writer, and whether it should stop.
#[derive(Debug)]
struct Batch {
    records: Mutex<Vec<Record>>,
    /// Most records waiting (`audit.queue`).
    cap: usize,
    stop: std::sync::atomic::AtomicBool,
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
        key: Option<AuditKey>,
        redactor: Redactor,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AuditError> {
        Self::start(cfg, path, key, redactor, metrics, FLUSH_EVERY)
    }

    /// [`AuditLog::open`] with the writer taking its batch every `every`.
    fn start(
        cfg: &AuditSection,
        path: &Path,
        key: Option<AuditKey>,
        redactor: Redactor,
        metrics: Arc<Metrics>,
        every: std::time::Duration,
    ) -> Result<Self, AuditError> {
        let err = |source| AuditError { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let key = match key {
            Some(k) => k,
            None => {
                let key_path = key_file(path);
                let key_err = |source| AuditError { path: key_path.clone(), source };
                load_or_generate_key(&key_path).map_err(key_err)?
            }
        };
        let (file, size) = open_append(path).map_err(err)?;
        let cap = cfg.queue.max(1);
        let batch = Arc::new(Batch {
            records: Mutex::new(Vec::with_capacity(cap.min(2 * WAKE_AT))),
            cap,
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let rx = batch.clone();
        let mut writer = Writer {
            path: path.to_owned(),
            file: BufWriter::new(file),
            size,
            max_bytes: cfg.max_file_bytes,
            max_files: cfg.max_files,
            metrics: metrics.clone(),
        };
        let handle =
            std::thread::Builder::new().name("audit-log".into()).spawn(move || writer.run(&rx, every)).map_err(err)?;
        tracing::info!(path = %path.display(), include_arguments = cfg.include_arguments, "Audit log open.");
        Ok(AuditLog {
            key,
            batch,
            writer_thread: handle.thread().clone(),
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

    /// The HMAC-SHA256 of `bytes` under the audit key.
    pub fn keyed_digest(&self, bytes: &[u8]) -> KeyedDigest {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(self.key.bytes()).expect("HMAC takes any key length");
        mac.update(bytes);
        KeyedDigest(mac.finalize().into_bytes().into())
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

    /// Adds a record to the batch; never waits, and wakes the writer only
    /// when the record is the [`WAKE_AT`]th waiting. A full batch drops it
    /// (counted), as does a closed log.
    pub fn record(&self, rec: Record) {
        let queued = {
            let mut records = self.batch.records.locked();
            if self.batch.stop.load(std::sync::atomic::Ordering::Relaxed) {
                Err("failed")
            } else if records.len() >= self.batch.cap {
                Err("dropped")
            } else {
                records.push(rec);
                // Exactly one push makes the count WAKE_AT (the lock orders
                // them).
                Ok(records.len() == WAKE_AT)
            }
        };
        let outcome = match queued {
            // The wake is outside the lock.
            Ok(true) => return self.writer_thread.unpark(),
            Ok(false) => return,
            Err(outcome) => outcome,
        };
        self.metrics.audit_records.get_or_create(&Outcome { outcome }).inc();
        if outcome == "dropped" && self.drop_log.ready() {
            tracing::warn!("Audit log queue full; dropping records (the disk is slower than the calls).");
        }
    }

    /// Writes what is waiting and stops the writer (blocking: call it off
    /// the async workers).
    pub fn close(&self) {
        let handle = self.writer.locked().take();
        if let Some(h) = handle {
            self.batch.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// Where the audit key is kept when the secrets file has none: beside the
/// log, `<log>.key`.
fn key_file(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// The key in `path`, or a new one written there (0600) when there is none.
fn load_or_generate_key(path: &Path) -> std::io::Result<AuditKey> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::read_to_string(path) {
        Ok(text) => AuditKey::decode(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = AuditKey::generate();
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            f.write_all(key.encode().as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            tracing::warn!(
                path = %path.display(),
                "Generated the audit log's digest key: gateways with other keys give other digests; \
                 set {} in the secrets file to share one across replicas.",
                crate::config::AUDIT_KEY_VAR
            );
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

// === impl Writer ===

impl Writer {
    /// Every `every` (or when woken: [`WAKE_AT`] records wait, or stop):
    /// takes the whole batch, writes it, flushes once. The batch is swapped
    /// with a spare vector, so neither side allocates in the steady state;
    /// a vector a burst grew (a slow disk) is shrunk back once written.
    fn run(&mut self, batch: &Batch, every: std::time::Duration) {
        let mut line = Vec::with_capacity(1024);
        let mut spare: Vec<Record> = Vec::new();
        loop {
            std::thread::park_timeout(every);
            let stop = batch.stop.load(std::sync::atomic::Ordering::Relaxed);
            std::mem::swap(&mut *batch.records.locked(), &mut spare);
            for rec in spare.drain(..) {
                line.clear();
                serde_json::to_writer(&mut line, &rec).expect("a record always serializes");
                line.push(b'\n');
                self.write(&line);
            }
            spare.shrink_to(4 * WAKE_AT);
            self.flush();
            if stop {
                return;
            }
        }
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
            time: Stamp::now(),
            session: None,
            principal: None,
            transport: "stdio",
            method: "tools/call",
            name: Some(format!("fs__read_{n}")),
            upstream: Some(Arc::from("fs")),
            tool: Some(Arc::from("read")),
            arguments_hmac: Some(KeyedDigest([0xab; 32])),
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
        let log = AuditLog::open(&section(600, 2), &path, None, Redactor::default(), metrics.clone()).expect("opens");
        for n in 0..20 {
            log.record(record(n));
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
        assert_eq!(lines[0]["arguments_hmac"], format!("hmac-sha256:{}", "ab".repeat(32)));
        let time = lines[0]["time"].as_str().unwrap_or_default();
        assert!(humantime::parse_rfc3339(time).is_ok() && time.ends_with('Z') && time.len() == 24, "{time}");
        assert!(lines[0].get("arguments").is_none());
        assert!(metrics.encode().contains("mcp_gateway_audit_records_total{outcome=\"written\"} 20"));
    }

    /// Without a close, a record reaches the file with the writer's next
    /// batch (every `FLUSH_EVERY`): what a crash can lose is bounded.
    #[test]
    fn a_record_is_written_within_a_batch_interval_without_a_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&section(1 << 20, 1), &path, None, Redactor::default(), Arc::new(Metrics::new()))
            .expect("opens");
        log.record(record(7));
        // Polled for up to 50 intervals: a liveness check, not a timing one.
        let mut polls = 0;
        while std::fs::read_to_string(&path).unwrap_or_default().lines().count() < 1 {
            polls += 1;
            assert!(polls < 200, "the batch was never written");
            std::thread::sleep(FLUSH_EVERY / 4);
        }
        log.close();
        // A closed log takes no more records (counted as failed).
        log.record(record(8));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    /// A batch of WAKE_AT records does not wait for the interval: here an
    /// hour, so only the wake can have written them.
    #[test]
    fn wake_at_records_wake_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut cfg = section(1 << 20, 1);
        cfg.queue = 4 * WAKE_AT;
        let hour = std::time::Duration::from_secs(3600);
        let log =
            AuditLog::start(&cfg, &path, None, Redactor::default(), Arc::new(Metrics::new()), hour).expect("opens");
        let lines = || std::fs::read_to_string(&path).unwrap_or_default().lines().count();
        for n in 0..WAKE_AT as u32 - 1 {
            log.record(record(n));
        }
        log.record(record(WAKE_AT as u32));
        // Polled for up to 10 s: a liveness check, not a timing one.
        let mut polls = 0;
        while lines() < WAKE_AT {
            polls += 1;
            assert!(polls < 400, "{} of {WAKE_AT} records written without the wake", lines());
            std::thread::sleep(FLUSH_EVERY / 4);
        }
        log.close();
        assert_eq!(lines(), WAKE_AT);
    }

    #[test]
    fn a_wrong_clock_still_writes_a_time() {
        let before = Stamp(SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(5));
        assert_eq!(before.to_string(), "1970-01-01T00:00:00.000Z");
        let far = Stamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(400_000_000_000));
        assert_eq!(far.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(serde_json::to_string(&far).expect("serializes"), "\"9999-12-31T23:59:59.999Z\"");
    }

    #[test]
    fn session_digests_are_the_first_16_hex_digits_of_sha256() {
        let d = SessionDigest::of("abc").to_string();
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223…
        assert_eq!(d, "ba7816bf8f01cfea");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let mut cfg = section(1 << 20, 1);
        cfg.queue = 1;
        let log = AuditLog::open(&cfg, &dir.path().join("a.jsonl"), None, Redactor::default(), metrics.clone())
            .expect("opens");
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
        let off =
            AuditLog::open(&cfg, &dir.path().join("a.jsonl"), None, redactor.clone(), metrics.clone()).expect("opens");
        assert!(off.arguments(&raw).is_none());
        cfg.include_arguments = true;
        let on = AuditLog::open(&cfg, &dir.path().join("b.jsonl"), None, redactor, metrics).expect("opens");
        assert_eq!(on.arguments(&raw).expect("kept").get(), r#"{"password":"***","n":1}"#);
    }

    #[test]
    fn argument_digests_are_keyed_and_the_key_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let path = dir.path().join("a.jsonl");
        let open = |key| AuditLog::open(&section(1 << 20, 1), &path, key, Redactor::default(), metrics.clone());
        // Without a configured key: one is made, 0600, and kept.
        let first = open(None).expect("opens");
        let d = first.keyed_digest(b"{\"pin\":\"1234\"}").to_string();
        assert!(d.starts_with("hmac-sha256:") && d.len() == 12 + 64, "{d}");
        let bare: String = Sha256::digest(b"{\"pin\":\"1234\"}").iter().map(|b| format!("{b:02x}")).collect();
        assert_ne!(d, format!("hmac-sha256:{bare}"), "not a bare SHA-256");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("a.jsonl.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        first.close();
        let again = open(None).expect("opens");
        assert_eq!(again.keyed_digest(b"{\"pin\":\"1234\"}").to_string(), d, "the same key after a restart");
        again.close();
        // A configured key wins, and gives other digests.
        let key = crate::config::AuditKey::decode("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        let keyed = open(Some(key)).expect("opens");
        assert_ne!(keyed.keyed_digest(b"{\"pin\":\"1234\"}").to_string(), d);
        // RFC 4231 test case 2 shape: HMAC-SHA256 of "what do ya want for
        // nothing?" under a 32-byte zero key, checked against a reference.
        let reference = {
            use hmac::{KeyInit, Mac};
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&[0u8; 32]).unwrap();
            mac.update(b"what do ya want for nothing?");
            mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(keyed.keyed_digest(b"what do ya want for nothing?").to_string(), format!("hmac-sha256:{reference}"));
        keyed.close();
        assert!(crate::config::AuditKey::decode("c2hvcnQ=").is_err(), "a short key is refused");
    }
}
