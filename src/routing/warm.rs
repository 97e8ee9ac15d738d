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

/// The last good tool lists, by upstream id.
#[derive(Debug)]
pub(crate) struct Warm {
    entries: std::sync::Mutex<BTreeMap<String, Arc<[CheckedBox]>>>,
    /// Counts changes of `entries`, for the writer (`refresh::save_warm`).
    changed: tokio::sync::watch::Sender<u64>,
    /// The file holds upstreams the config no longer names: the writer
    /// rewrites it at once, not at the next change.
    stale: std::sync::atomic::AtomicBool,
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
        Warm { entries: Default::default(), changed: tokio::sync::watch::Sender::new(0), stale: Default::default() }
    }

    /// What the cache file of `config` holds for the upstreams it
    /// configures. A missing file, or `warm_start = false`, is an empty
    /// cache; a refused file too, and the error says why.
    pub(crate) fn load(config: &Config) -> (Self, Result<usize, WarmError>) {
        let warm = Warm::empty();
        let Some(path) = config.gateway.catalog_cache.as_deref().filter(|_| config.gateway.warm_start) else {
            return (warm, Ok(0));
        };
        let read = read(path, &config.json_limits()).map(|entries| {
            let mut kept = warm.entries.locked();
            let stored = entries.len();
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

    /// Whether the file read at start holds what memory does not (and
    /// should be written at once); true only once.
    pub(crate) fn take_stale(&self) -> bool {
        self.stale.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for the next change of what is recorded.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The file's text for what is recorded now (sorted by id, so an
    /// unchanged cache writes the same bytes).
    pub(crate) fn snapshot(&self) -> String {
        let entries = self.entries.locked();
        let mut out = format!("{{\"version\":{FORMAT},\"upstreams\":[");
        for (n, (id, tools)) in entries.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str("\n{\"id\":");
            out.push_str(&serde_json::to_string(id).expect("a string serializes"));
            out.push_str(",\"tools\":[");
            for (k, t) in tools.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                out.push_str(t.text());
            }
            out.push_str("]}");
        }
        out.push_str("\n]}\n");
        out
    }
}

/// Whether upstream `spec`'s tools may be kept: not what one principal's
/// own token shows.
fn kept_for(spec: &UpstreamSpec) -> bool {
    !spec.oauth.as_ref().is_some_and(|o| o.per_principal)
}

/// Reads the file: a missing one is empty.
fn read(path: &Path, limits: &Limits) -> Result<BTreeMap<String, Arc<[CheckedBox]>>, WarmError> {
    use std::io::Read as _;
    let refused = |reason: String| WarmError::Refused { path: path.to_path_buf(), reason };
    let io = |source| WarmError::Io { path: path.to_path_buf(), source };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
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
    // The strict scan first (docs/design.md D12): a duplicate member or a
    // depth past the limit is refused, not read one way here and another
    // by an upstream's client.
    CheckedBox::parse(&text, limits).ok_or_else(|| refused("not strict JSON".into()))?;
    let file: FileIn = serde_json::from_str(&text).map_err(|e| refused(e.to_string()))?;
    if file.version != FORMAT {
        return Err(refused(format!("format {} (this gateway writes {FORMAT})", file.version)));
    }
    let mut out = BTreeMap::new();
    for e in file.upstreams {
        // Each definition is a part of the scanned text, so it passes the
        // same scan.
        let tools: Option<Vec<CheckedBox>> = e.tools.iter().map(|t| CheckedBox::parse(t.get(), limits)).collect();
        let tools = tools.ok_or_else(|| refused(format!("upstream `{}`: a tool is not strict JSON", e.id)))?;
        if out.insert(e.id.clone(), tools.into()).is_some() {
            return Err(refused(format!("upstream `{}` is there twice", e.id)));
        }
    }
    Ok(out)
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

/// Writes `text` to `path` whole or not at all: a file beside it, 0600,
/// synced, then renamed over it.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), WarmError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let io = |source| WarmError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    // `mode` applies only to a file it creates: a leftover keeps its own.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests;
