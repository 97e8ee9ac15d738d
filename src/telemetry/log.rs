//! Log output: `tracing` to stderr, human or JSON, with every secret value
//! from the secrets file masked before a line is written.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, Redactor};

/// Installs the global subscriber: `RUST_LOG` if set, else `filter` (the
/// config's `log_level`). Stderr always: stdout belongs to the MCP stream
/// in stdio mode. Colours only on a terminal.
pub fn init(format: LogFormat, filter: &str, redactor: Redactor) {
    let from_env = std::env::var_os("RUST_LOG").map(|_| tracing_subscriber::EnvFilter::try_from_default_env());
    let (filter, bad_env) = match from_env {
        Some(Ok(f)) => (f, None),
        Some(Err(e)) => (tracing_subscriber::EnvFilter::new(filter), Some(e)),
        None => (tracing_subscriber::EnvFilter::new(filter), None),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = Redacting { inner: std::io::stderr, redactor };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
    if let Some(e) = bad_env {
        tracing::warn!(error = %e, "RUST_LOG is not a valid filter; using log_level instead.");
    }
}

/// A writer with secret values masked. The fmt layer writes each event
/// with one `write_all`, so a secret is never split across two writes.
#[derive(Debug, Clone)]
struct Redacting<M> {
    inner: M,
    redactor: Redactor,
}

/// One event's writer.
#[derive(Debug)]
struct Line<'a, W> {
    inner: W,
    redactor: &'a Redactor,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = Line<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { inner: self.inner.make_writer(), redactor: &self.redactor }
    }
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.redactor.is_empty() {
            self.inner.write_all(buf)?;
        } else {
            let text = String::from_utf8_lossy(buf);
            self.inner.write_all(self.redactor.redact(&text).as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn secrets_are_masked_in_fields_and_messages_of_both_formats() {
        let redactor = Redactor::from_values(vec!["s3cr3t-token".into()]);
        for json in [false, true] {
            let buf = Buffer::default();
            let sink = buf.clone();
            let writer = Redacting { inner: move || sink.clone(), redactor: redactor.clone() };
            let builder = tracing_subscriber::fmt().with_writer(writer).with_ansi(false);
            let emit = || tracing::warn!(url = "https://x/?t=s3cr3t-token", "Connect to {} failed.", "s3cr3t-token");
            if json {
                tracing::subscriber::with_default(builder.json().finish(), emit);
            } else {
                tracing::subscriber::with_default(builder.finish(), emit);
            }
            let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert!(!out.contains("s3cr3t-token"), "{out}");
            assert_eq!(out.matches("***").count(), 2, "{out}");
        }
    }
}
