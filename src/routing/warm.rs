//! Warm starts (docs/design.md D11): every upstream's last good
//! `tools/list`, kept in memory and on disk (`gateway.catalog_cache`), so
//! that after a restart or a reload the tools of an upstream still on its
//! **first** start are listed at once, and a call to one waits for it
//! (`gateway.startup_call_wait`, in `methods/tools.rs`).
//!
//! What comes from here is untrusted: the file is not the upstream. A
//! cached definition pins nothing and, with a pin store, is listed only
//! when it is exactly what is approved (`Gate::review_pins`); a call that
//! waited is routed by the live catalog, under the live definition's
//! pins. Only shared upstreams are kept: a `per_principal` OAuth
//! upstream's tools are what one user's token shows, never listed to
//! another. Upstreams the config in force does not name are dropped, in
//! memory and from the file, and the file is refused whole when it is
//! too large, not strict JSON, not of this format, or writable by anyone
//! but the gateway's user.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{Config, UpstreamSpec};
use crate::protocol::{CheckedBox, Limits};
use crate::sync::Locked as _;

/// The largest cache file read; a larger one is refused (each upstream's
/// list is at most `max_message_bytes`, 16 MiB by default).
pub(crate) const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The file's format version.
const FORMAT: u32 = 1;

/// Tool lists by upstream id.
type Entries = BTreeMap<String, Arc<[CheckedBox]>>;

/// The last good tool lists, by upstream id.
#[derive(Debug)]
pub(crate) struct Warm {
    entries: std::sync::Mutex<Entries>,
    /// Counts changes of `entries`, for the writer (`refresh::save_warm`).
    changed: tokio::sync::watch::Sender<u64>,
    /// The file holds upstreams the config no longer names: the writer
    /// rewrites it at once, not at the next change.
    stale: std::sync::atomic::AtomicBool,
    /// The upstreams the published catalog shows cached tools of (what
    /// the first lists and `/readyz` need not wait for).
    shown: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Calls waiting for each upstream's first start.
    waiting: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One call waiting for an upstream's first start; counted until dropped.
#[derive(Debug)]
pub(crate) struct Waiter<'a> {
    warm: &'a Warm,
    id: String,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting = self.warm.waiting.locked();
        if let Some(n) = waiting.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.id);
            }
        }
    }
}

/// Why the cache file was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WarmError {
    /// It could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// It is not what the gateway writes.
    #[error("{path}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The file as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    version: u32,
    upstreams: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    id: String,
    tools: Vec<Box<RawValue>>,
}

// === impl Warm ===

impl Warm {
    /// Nothing known.
    pub(crate) fn empty() -> Self {
        Warm {
            entries: Default::default(),
            changed: tokio::sync::watch::Sender::new(0),
            stale: Default::default(),
            shown: Default::default(),
            waiting: Default::default(),
        }
    }

    /// What the cache file of `config` holds for the upstreams it
    /// configures. A missing file, or `warm_start = false`, is an empty
    /// cache; a refused file too, and the error says why.
    pub(crate) fn load(config: &Config) -> (Self, Result<usize, WarmError>) {
        let warm = Warm::empty();
        let Some(path) = config.gateway.catalog_cache.as_deref().filter(|_| config.gateway.warm_start) else {
            return (warm, Ok(0));
        };
        let read = read(path, &config.json_limits()).map(|(entries, stored)| {
            let mut kept = warm.entries.locked();
            for (id, tools) in entries {
                if let Some(spec) = config.upstreams.iter().find(|s| s.id == id)
                    && kept_for(spec)
                {
                    kept.insert(id, tools);
                }
            }
            warm.stale.store(kept.len() != stored, std::sync::atomic::Ordering::Relaxed);
            kept.len()
        });
        (warm, read)
    }

    /// The last good tools of upstream `spec`, when it may be listed from
    /// the cache.
    pub(crate) fn tools_of(&self, spec: &UpstreamSpec) -> Option<Arc<[CheckedBox]>> {
        if !kept_for(spec) {
            return None;
        }
        self.entries.locked().get(&spec.id).cloned()
    }

    /// Records what the ready upstreams list now (`live`: id, spec,
    /// tools) and forgets the upstreams `configured` does not name. The
    /// writer is woken when anything changed.
    pub(crate) fn record<'a>(
        &self,
        live: impl Iterator<Item = (&'a UpstreamSpec, &'a Arc<[CheckedBox]>)>,
        configured: &[&str],
    ) {
        let mut entries = self.entries.locked();
        let before = entries.len();
        entries.retain(|id, _| configured.contains(&id.as_str()));
        let mut changed = entries.len() != before;
        for (spec, tools) in live {
            if !kept_for(spec) {
                continue;
            }
            let same = entries.get(&spec.id).is_some_and(|t| {
                Arc::ptr_eq(t, tools)
                    || (t.len() == tools.len() && t.iter().zip(tools.iter()).all(|(a, b)| a.text() == b.text()))
            });
            if !same {
                entries.insert(spec.id.clone(), tools.clone());
                changed = true;
            }
        }
        drop(entries);
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Forgets upstream `id` at once (a reload removed it): a reload that
    /// adds it back before the catalog task runs must not find its tools.
    pub(crate) fn forget(&self, id: &str) {
        if self.entries.locked().remove(id).is_some() {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Asks the writer to write now (a reload changed where, or whether).
    pub(crate) fn touch(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Records which upstreams the published catalog shows cached tools of.
    pub(crate) fn set_shown(&self, ids: std::collections::HashSet<String>) {
        *self.shown.locked() = ids;
    }

    /// Whether the published catalog shows cached tools of upstream `id`.
    pub(crate) fn shown(&self, id: &str) -> bool {
        self.shown.locked().contains(id)
    }

    /// Counts a call waiting for upstream `id`'s first start, unless
    /// `most` already wait.
    pub(crate) fn wait_for(&self, id: &str, most: usize) -> Option<Waiter<'_>> {
        let mut waiting = self.waiting.locked();
        let n = waiting.entry(id.to_owned()).or_default();
        if *n >= most {
            return None;
        }
        *n += 1;
        Some(Waiter { warm: self, id: id.to_owned() })
    }

    /// How many calls wait for upstream `id`'s first start now.
    #[cfg(test)]
    pub(crate) fn waiting_for(&self, id: &str) -> usize {
        self.waiting.locked().get(id).copied().unwrap_or(0)
    }

    /// Whether the file read at start holds what memory does not (and
    /// should be written at once); true only once.
    pub(crate) fn take_stale(&self) -> bool {
        self.stale.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for the next change of what is recorded.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// What is recorded now, to write (cheap: the lists are shared).
    pub(crate) fn entries(&self) -> Vec<(String, Arc<[CheckedBox]>)> {
        self.entries.locked().iter().map(|(id, t)| (id.clone(), t.clone())).collect()
    }

    /// The file's text for what is recorded now.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> String {
        render(&self.entries(), MAX_FILE_BYTES as usize).0
    }
}

/// The file's text for `entries` (sorted by id, so an unchanged cache
/// writes the same bytes), at most `max` bytes: an upstream whose list
/// would not fit is left out (and named), not the whole file.
pub(crate) fn render(entries: &[(String, Arc<[CheckedBox]>)], max: usize) -> (String, Vec<String>) {
    const TAIL: &str = "\n]}\n";
    let mut out = format!("{{\"version\":{FORMAT},\"upstreams\":[");
    let mut left_out = Vec::new();
    let mut first = true;
    for (id, tools) in entries {
        let mut entry = String::from(if first { "\n{\"id\":" } else { ",\n{\"id\":" });
        entry.push_str(&serde_json::to_string(id).expect("a string serializes"));
        entry.push_str(",\"tools\":[");
        for (k, t) in tools.iter().enumerate() {
            if k > 0 {
                entry.push(',');
            }
            entry.push_str(t.text());
        }
        entry.push_str("]}");
        if out.len() + entry.len() + TAIL.len() > max {
            left_out.push(id.clone());
            continue;
        }
        out.push_str(&entry);
        first = false;
    }
    out.push_str(TAIL);
    (out, left_out)
}

/// Whether upstream `spec`'s tools may be kept: not what one principal's
/// own token shows.
fn kept_for(spec: &UpstreamSpec) -> bool {
    !spec.oauth.as_ref().is_some_and(|o| o.per_principal)
}

/// How deep the file may nest: the deepest `gateway.max_json_depth` and
/// the file's own four levels above a tool. Each tool is then held to the
/// limit in force, so a limit lowered since the write costs only the
/// entries it now refuses.
const FILE_DEPTH: usize = 1024 + 4;

/// Reads the file: its entries and how many it stored. A missing file is
/// empty. The file is refused whole when it is not the gateway's own, too
/// large or not of this format; an entry whose tools are not strict JSON
/// under today's limits is left out alone (logged), so one upstream's odd
/// list does not cost the others their warm start.
fn read(path: &Path, limits: &Limits) -> Result<(Entries, usize), WarmError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let refused = |reason: String| WarmError::Refused { path: path.to_path_buf(), reason };
    let io = |source| WarmError::Io { path: path.to_path_buf(), source };
    // Non-blocking: a FIFO put there must not hold the start.
    let opened = std::fs::OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits()).open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((BTreeMap::new(), 0)),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(refused("not a regular file".into()));
    }
    trusted(&meta).map_err(refused)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(refused(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let mut text = String::new();
    // `take`: the file may grow after the size was read.
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(refused(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    // The strict scan first (docs/design.md D12): a duplicate member
    // anywhere is refused, not read one way here and another elsewhere.
    let envelope = Limits { max_depth: FILE_DEPTH };
    CheckedBox::parse(&text, &envelope).ok_or_else(|| refused("not strict JSON".into()))?;
    let file: FileIn = serde_json::from_str(&text).map_err(|e| refused(e.to_string()))?;
    if file.version != FORMAT {
        return Err(refused(format!("format {} (this gateway writes {FORMAT})", file.version)));
    }
    let stored = file.upstreams.len();
    let mut out = BTreeMap::new();
    for e in file.upstreams {
        if out.contains_key(&e.id) {
            return Err(refused(format!("upstream `{}` is there twice", e.id)));
        }
        // Each definition as deep as a reply may carry it.
        let tools: Option<Vec<CheckedBox>> = e.tools.iter().map(|t| CheckedBox::parse(t.get(), limits)).collect();
        match tools {
            Some(tools) => {
                out.insert(e.id, tools.into());
            }
            None => tracing::warn!(
                path = %path.display(),
                upstream = %e.id,
                "A warm-start cache entry is left out: a tool is not strict JSON under gateway.max_json_depth."
            ),
        }
    }
    Ok((out, stored))
}

/// A file someone else could have written is not the gateway's: owned by
/// another user, or writable by the group or others.
fn trusted(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not the gateway's ({me})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("writable by its group or others (mode {:o})", meta.mode() & 0o777));
    }
    Ok(())
}

/// Writes `text` to `path` whole or not at all: a new file of a name of
/// its own beside it (`O_EXCL`, so never a symlink or another file put
/// there), 0600, synced, renamed over `path`, and the folder synced.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), WarmError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| WarmError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io(std::io::ErrorKind::InvalidInput.into()))?;
    let nonce = fastrand::u64(..);
    let tmp = dir.join(format!(".{}.{}.{nonce:016x}.tmp", name.to_string_lossy(), std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)
        .map_err(io)?;
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    // The rename is durable once the folder is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
