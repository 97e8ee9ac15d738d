//! Log output: `tracing` to stderr, human or JSON, with every secret value
//! from the secrets file masked before a line is written.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, Redactor};

/// Installs the global subscriber: `RUST_LOG` if set, else `filter` (the
/// config's `log_level`). Stderr always: stdout belongs to the MCP stream
/// in stdio mode. Colours only on a terminal.
pub fn init(format: LogFormat, filter: &str, redactor: Redactor) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = Redacting { redactor };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

/// Stderr, with secret values masked. The fmt layer writes each event with
/// one `write_all`, so a secret is never split across two writes.
#[derive(Debug, Clone)]
struct Redacting {
    redactor: Redactor,
}

/// One event's writer.
#[derive(Debug)]
struct Line<'a> {
    redactor: &'a Redactor,
}

impl<'a> MakeWriter<'a> for Redacting {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { redactor: &self.redactor }
    }
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if self.redactor.is_empty() {
            err.write_all(buf)?;
        } else {
            let text = String::from_utf8_lossy(buf);
            err.write_all(self.redactor.redact(&text).as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
