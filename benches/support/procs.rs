//! The bench's child processes and what `/proc` says about them.
//!
//! Every child stops by itself: the echo upstream when its stdin closes
//! (so also when the bench dies, however it dies) or its lifetime ends; the
//! gateway and HAProxy run under a tiny watchdog (this binary with
//! `--watchdog`) that SIGTERMs them on the same two conditions. The guards
//! here shut them down by PID on drop, so also when the bench panics.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
// tokio's Instant (clippy.toml): the real clock here, as nothing pauses time.
use tokio::time::Instant;

/// How long a child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// How often the same gateway log message is passed on before it is only
/// counted.
const SHOWN_REPEATS: u64 = 3;

// === watchdog ===

/// `--watchdog <lifetime secs> <program> <args...>`: runs the program,
/// prints `PID <pid>` on stdout, and SIGTERMs it when our stdin closes or the
/// lifetime ends; exits when the program does.
pub(crate) fn watchdog(args: &[String]) -> Result<(), String> {
    let [lifetime, program, rest @ ..] = args else {
        return Err("usage: --watchdog <lifetime secs> <program> <args...>".into());
    };
    let lifetime = parse_secs(lifetime)?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "PID {}", child.id()).and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    }
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
    });
    let deadline = Instant::now() + lifetime;
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                eprintln!("watchdog: max lifetime reached, stopping {program}");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    terminate(&mut child, true);
    Ok(())
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("not a number of seconds: {s:?}"))
}

/// Optionally SIGTERMs `child`, waits up to [`GRACE`] for it, then kills it.
pub(crate) fn terminate(child: &mut Child, sigterm: bool) {
    if sigterm {
        let _ = kill(pid_of(child.id()), Signal::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("PIDs fit in i32"))
}

// === echo upstream ===

/// The echo upstream process; stopped (stdin closed) on drop.
#[derive(Debug)]
pub(crate) struct Upstream {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
}

impl Upstream {
    pub(crate) fn start(lifetime: Duration) -> Result<Self, String> {
        Self::start_with_env(lifetime, &[])
    }

    /// [`Upstream::start`] with more environment (`ECHO_RESULT_BYTES`).
    pub(crate) fn start_with_env(lifetime: Duration, env: &[(&str, String)]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--echo-upstream")
            .arg(lifetime.as_secs().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the echo upstream: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let mut up = Upstream { child, stdin, base: String::new() };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| format!("echo upstream said {line:?}, expected `LISTENING <port>`"))?;
        up.base = format!("http://127.0.0.1:{port}");
        Ok(up)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes stdin and waits for the exit (kills after a grace period).
    pub(crate) fn shutdown(&mut self) {
        if self.stdin.take().is_some() {
            terminate(&mut self.child, false);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// === a child under the watchdog ===

/// A program run under the watchdog (this binary with `--watchdog`): it
/// stops when the bench's stdin pipe to the watchdog closes, however the
/// bench ends. SIGTERMed by PID on [`Watched::shutdown`].
#[derive(Debug)]
struct Watched {
    watchdog: Child,
    stdin: Option<ChildStdin>,
    pid: Option<u32>,
}

impl Watched {
    /// Starts `program` with `args` (and `env`), stderr piped to the caller.
    fn start(
        program: &std::ffi::OsStr,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
        lifetime: Duration,
    ) -> Result<(Self, std::process::ChildStderr), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut watchdog = Command::new(exe)
            .arg("--watchdog")
            .arg(lifetime.as_secs().to_string())
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the watchdog of {}: {e}", program.to_string_lossy()))?;
        let stdin = watchdog.stdin.take();
        let stdout = watchdog.stdout.take().expect("piped");
        let stderr = watchdog.stderr.take().expect("piped");
        let mut watched = Watched { watchdog, stdin, pid: None };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
        let pid = line
            .strip_prefix("PID ")
            .and_then(|p| p.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("watchdog said {line:?}, expected `PID <pid>`"))?;
        watched.pid = Some(pid);
        Ok((watched, stderr))
    }

    /// SIGTERMs the program by PID, closes the watchdog's stdin and waits
    /// for both to exit.
    fn shutdown(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill(pid_of(pid), Signal::SIGTERM);
        }
        if self.stdin.take().is_some() {
            // The watchdog exits once the program has; it needs at most GRACE
            // plus a poll interval for that.
            let deadline = Instant::now() + GRACE + Duration::from_secs(2);
            while Instant::now() < deadline {
                match self.watchdog.try_wait() {
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// === gateway ===

/// The gateway under its watchdog; SIGTERMed on drop.
#[derive(Debug)]
pub(crate) struct Gateway {
    proc: Watched,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
}

impl Gateway {
    /// Starts `mcp-gateway serve` on an ephemeral port and waits for its
    /// `Listening on ...` log line.
    pub(crate) fn start(config: &Path, lifetime: Duration) -> Result<Self, String> {
        // BENCH_GATEWAY_BIN measures another build (an older commit's) in
        // the same sitting.
        let bin = std::env::var_os("BENCH_GATEWAY_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_mcp-gateway").into());
        let args =
            ["serve".as_ref(), "--config".as_ref(), config.as_os_str(), "--listen".as_ref(), "127.0.0.1:0".as_ref()];
        let env = [("RUST_LOG", "warn,mcp_gateway=info"), ("NO_COLOR", "1")];
        let (proc, stderr) = Watched::start(&bin, &args, &env, lifetime)?;

        // Keep draining stderr for the whole run (a full pipe would block the
        // gateway's logging); pass on everything but INFO lines, and each
        // message (the line without its timestamp) only the first few times:
        // the isolation bench makes the gateway warn about every refused
        // call, hundreds of times the same line.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut seen = std::collections::HashMap::<String, u64>::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("Listening on http://") {
                    let rest = &line[at + "Listening on ".len()..];
                    let base = rest.split("/mcp").next().unwrap_or(rest).to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(base);
                    }
                } else if !line.contains(" INFO ") {
                    let message = line.split_once(' ').map_or(line.as_str(), |(_, m)| m.trim_start());
                    let n = seen.entry(message.to_owned()).or_default();
                    *n += 1;
                    if *n <= SHOWN_REPEATS {
                        eprintln!("  [gateway] {line}");
                    }
                }
            }
            for (message, n) in seen.into_iter().filter(|(_, n)| *n > SHOWN_REPEATS) {
                eprintln!("  [gateway] ({} more times) {message}", n - SHOWN_REPEATS);
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the gateway did not log `Listening on http://...` within 30 s".to_owned())?;
        Ok(Gateway { proc, base })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid.expect("set in start")
    }

    /// SIGTERMs the gateway by PID, closes the watchdog's stdin and waits for
    /// both to exit.
    pub(crate) fn shutdown(&mut self) {
        self.proc.shutdown();
    }
}

// === HAProxy: the floor of any relay ===

/// HAProxy (Debian's; `scripts/test.sh` installs it) in TCP mode in front of
/// one upstream: it copies bytes both ways and parses nothing, so what it
/// adds to a call is the least any proxy adds on this machine (two more
/// loopback hops and a process between them). Under the watchdog.
#[derive(Debug)]
#[allow(dead_code, reason = "proxy_hop and large use it; the other benches do not")]
pub(crate) struct Relay {
    proc: Watched,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
}

#[allow(dead_code, reason = "proxy_hop and large use it; the other benches do not")]
impl Relay {
    /// Starts HAProxy relaying to `upstream` (`http://host:port`), its
    /// config in `dir`; `None` when HAProxy is not installed.
    pub(crate) fn start(dir: &Path, upstream: &str, lifetime: Duration) -> Result<Option<Self>, String> {
        let Some(haproxy) = find_program("haproxy") else {
            return Ok(None);
        };
        let to = upstream.strip_prefix("http://").ok_or_else(|| format!("not http://host:port: {upstream}"))?;
        // A port the kernel handed out and we let go of: HAProxy cannot
        // tell us one it chose.
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        // 1 MiB buffers: with the default 16 KiB a 10 MiB result took
        // 1.98–2.35× direct through it, with 1 MiB 1.34–1.46× (by hand).
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  tune.bufsize 1048576\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10m\n  timeout server 10m\n\
                 listen relay\n  bind 127.0.0.1:{port}\n  server upstream {to}\n"
            ),
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        let args = ["-f".as_ref(), config.as_os_str(), "-db".as_ref()];
        let (mut proc, stderr) = Watched::start(haproxy.as_os_str(), &args, &[], lifetime)?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  [haproxy] {line}");
            }
        });
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            // The watchdog exits with HAProxy (a bad config, a port taken
            // since we let it go): no use waiting.
            if proc.watchdog.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Err(format!("haproxy exited before listening on 127.0.0.1:{port}"));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("haproxy did not listen on 127.0.0.1:{port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(Relay { proc, base: format!("http://127.0.0.1:{port}") }))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid.expect("set in start")
    }
}

#[allow(dead_code, reason = "proxy_hop and large use it; the other benches do not")]
/// The executable `name` on `PATH` or in the sbin directories (Debian puts
/// HAProxy in `/usr/sbin`, which is not on every user's `PATH`).
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

// === temp dir ===

/// A directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("mcp-gateway-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// === /proc ===

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`;
/// 100 on every Linux we run on if getconf is missing).
pub(crate) fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// `utime + stime` of every thread of `pid`, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (`VmHWM`) of `pid`, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident set size now (`VmRSS`) of `pid`, in KiB.
#[allow(dead_code, reason = "large and scale use it; proxy_hop, isolation and shared_state do not")]
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Busy time of the whole machine (all CPUs, everything but idle and
/// iowait), in clock ticks, from the first line of `/proc/stat`.
pub(crate) fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user.
    let total: u64 = fields.iter().take(8).sum();
    Some(total - fields.get(3)? - fields.get(4).unwrap_or(&0))
}
