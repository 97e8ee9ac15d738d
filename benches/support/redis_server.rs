//! A `redis-server` for the shared-state bench, under the bench binary's
//! watchdog (so it stops however the bench ends).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

// tokio's Instant (clippy.toml): the real clock here, as nothing pauses time.
use tokio::time::Instant;

use crate::procs::terminate;

/// A `redis-server` on a free loopback port, nothing persisted, under the
/// watchdog; SIGTERMed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    watchdog: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    /// `redis://127.0.0.1:<port>/0`.
    pub(crate) url: String,
}

impl RedisServer {
    /// Starts it and waits until it accepts connections.
    pub(crate) fn start(lifetime: Duration) -> Result<Self, String> {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut watchdog = Command::new(exe)
            .arg("--watchdog")
            .arg(lifetime.as_secs().to_string())
            .args(["redis-server", "--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (scripts/test.sh installs it): {e}"))?;
        let stdin = watchdog.stdin.take();
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("piped")).read_line(&mut line).map_err(|e| e.to_string())?;
        let pid = line
            .strip_prefix("PID ")
            .and_then(|p| p.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("watchdog said {line:?}, expected `PID <pid>`"))?;
        let server = RedisServer { watchdog, stdin, pid, url: format!("redis://127.0.0.1:{port}/0") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err("redis-server did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            terminate(&mut self.watchdog, false);
        }
    }
}
