//! The supervisor: start (connect, `initialize`, the GET stream), serve
//! (health checks, events from the connection, list changes), restart
//! with backoff, and crash-loop and unreachable detection.

use super::*;

impl Upstream {
    pub(super) async fn supervise(self: Arc<Self>) {
        let mut max = self.spec().restart_max_delay.max(RESTART_MIN);
        let mut backoff = Backoff::try_new(RESTART_MIN, max).expect("the config checks restart_max_delay");
        let network = self.spec().transport.network() == "tcp";
        // Failed starts and short lives in a row.
        let mut short_runs = 0u32;
        let mut connection = 0u64;
        loop {
            self.set(State::Starting { since: Instant::now() });
            let (tx, rx) = mpsc::channel(64);
            let inbox = Inbox::new(Arc::from(self.spec().id.as_str()), tx, self.json, &self.metrics);
            let outcome = tokio::select! {
                o = self.connect(&inbox) => o,
                () = self.shutdown.cancelled() => break,
            };
            let (reason, class) = match outcome {
                Ok((conn, negotiated)) => {
                    let since = Instant::now();
                    connection += 1;
                    let version = crate::telemetry::standard::version_label(&negotiated.version);
                    let life =
                        self.metrics.standard.client_session(&self.label, version, self.spec().transport.network());
                    let (reason, class) = self.serve(conn, negotiated, connection, rx, &inbox).await;
                    // `error.type` unless the gateway ended it.
                    if let Some(life) = life {
                        life.end((!self.shutdown.is_cancelled()).then(|| class.as_str()));
                    }
                    if self.shutdown.is_cancelled() {
                        break;
                    }
                    if since.elapsed() >= self.spec().stable_after {
                        // Stable (`serve` cleared a crash loop already).
                        backoff.reset();
                        short_runs = 0;
                    } else if class != ErrorClass::UpstreamAuth {
                        short_runs += 1;
                    }
                    (reason, class)
                }
                Err(e) => {
                    // The status names the upstream already.
                    let prefix = format!("upstream `{}` ", self.id());
                    let reason = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
                    // Waiting for a login is not a crash loop, and neither is
                    // a server that cannot be reached (not up yet, or away):
                    // nothing of ours crashed, it is "unreachable".
                    if e.class != ErrorClass::UpstreamAuth && !(network && e.not_delivered) {
                        short_runs += 1;
                    }
                    (reason.strip_prefix("is ").unwrap_or(reason).to_owned(), e.class)
                }
            };
            // A reload may have changed the longest delay in place.
            let want = self.spec().restart_max_delay.max(RESTART_MIN);
            if want != max {
                max = want;
                backoff = Backoff::try_new(RESTART_MIN, max).expect("the config checks restart_max_delay");
            }
            let delay = backoff.next_delay();
            if short_runs >= CRASH_LOOP && !self.crash_loop.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    upstream = %self.id(), failures = short_runs, retry_in_ms = delay.as_millis() as u64,
                    "Upstream is crash-looping; restart delays keep growing (up to {}s).", max.as_secs_f64()
                );
            }
            let unreachable =
                network && matches!(&*self.state(), State::Starting { .. }) && class == ErrorClass::Transport;
            if unreachable {
                tracing::warn!(upstream = %self.id(), retry_in_ms = delay.as_millis() as u64, "Upstream is unreachable: {reason}.");
            } else {
                tracing::warn!(upstream = %self.id(), class = %class, retry_in_ms = delay.as_millis() as u64, "Upstream is down: {reason}.");
            }
            self.record_error(class, reason.clone());
            self.set(State::Down { reason, class, retry_at: Instant::now() + delay });
            // Down for want of a token: a login (the token file changes)
            // brings it up at once rather than after the backoff.
            let login = async {
                match self.credential.as_ref().filter(|c| class == ErrorClass::UpstreamAuth && c.uses_file()) {
                    Some(c) => c.file_changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = login => {
                    tracing::info!(upstream = %self.id(), "The token file changed; starting again now.");
                }
                () = self.shutdown.cancelled() => break,
            }
            self.counters.restarts.inc();
        }
        self.set(State::Stopped);
    }

    /// Opens the transport and runs `initialize` within the start-up
    /// deadline. On failure the half-open transport is shut down properly.
    pub(super) async fn connect(&self, inbox: &Arc<Inbox>) -> Result<(Arc<Connection>, Negotiated), CallError> {
        let started = Instant::now();
        let deadline = self.spec().startup_timeout;
        let observe = |outcome| {
            self.metrics
                .initialize_duration
                .get_or_create(&OutcomeLabels { upstream: self.label.clone(), outcome })
                .observe(started.elapsed().as_secs_f64());
        };
        let link = tokio::time::timeout(deadline, self.open_link(inbox))
            .await
            .map_err(|_| self.error(ErrorClass::Timeout, format!("did not connect within {}s", deadline.as_secs_f64())))
            .and_then(|r| r.map_err(|e| self.error(ErrorClass::Transport, e)))
            .inspect_err(|_| observe("error"))?;
        let conn = Arc::new(Connection::new(inbox.clone(), link, self.client_capabilities()));
        let negotiated = tokio::select! {
            r = self.handshake(&conn, started + deadline) => r,
            // A process that dies during start-up fails fast, not at the deadline.
            () = inbox.closed() => Err(self.error(ErrorClass::Transport, format!("{} during initialize", inbox.close_reason()))),
        };
        observe(if negotiated.is_ok() { "ok" } else { "error" });
        match negotiated {
            Ok(n) => {
                // A modern upstream has no session and no GET stream.
                if conn.era() == crate::protocol::Era::Legacy {
                    conn.link.start_listening(inbox).await;
                }
                tracing::info!(
                    upstream = %self.id(),
                    protocol_version = %n.version,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Upstream initialized."
                );
                Ok((conn, n))
            }
            Err(mut e) => {
                conn.link.shutdown().await;
                if e.class == ErrorClass::Timeout {
                    e.message = format!(
                        "upstream `{}` did not answer initialize within {}s",
                        self.spec().id,
                        deadline.as_secs_f64()
                    );
                }
                Err(e)
            }
        }
    }

    /// The handshake in the era `protocol` asks for (docs/design.md D13):
    /// `initialize`, `server/discover`, or one and then the other when the
    /// first is refused (not when it timed out: the start-up deadline is
    /// then spent). The second's error is reported only when the first was
    /// the fallback; otherwise the first's, which says what the operator
    /// configured.
    async fn handshake(&self, conn: &Connection, deadline: Instant) -> Result<Negotiated, CallError> {
        use crate::config::UpstreamProtocol;
        let left = || deadline.saturating_duration_since(Instant::now());
        let learned = self.learned_modern.load(Ordering::Relaxed);
        let modern_first = match self.spec().protocol {
            UpstreamProtocol::Legacy => return conn.initialize(left()).await,
            UpstreamProtocol::Modern => true,
            UpstreamProtocol::Auto => learned,
        };
        let first = match modern_first {
            true => conn.discover(left()).await,
            false => conn.initialize(left()).await,
        };
        let e = match first {
            Ok(n) => {
                self.learned_modern.store(conn.era() == crate::protocol::Era::Modern, Ordering::Relaxed);
                return Ok(n);
            }
            Err(e) if e.class == ErrorClass::Timeout => return Err(e),
            // The connection is gone (a process that exited): the other
            // era's request cannot reach it either, and a log line saying
            // it was refused would mislead.
            Err(e) if conn.inbox.is_closed() => return Err(e),
            Err(e) => e,
        };
        let again = match modern_first {
            true => {
                tracing::info!(upstream = %self.id(), error = %e.message, "Upstream refused server/discover; trying initialize.");
                conn.initialize(left()).await
            }
            false => {
                tracing::info!(upstream = %self.id(), error = %e.message, "Upstream refused initialize; trying server/discover (2026-07-28).");
                conn.discover(left()).await
            }
        };
        match again {
            Ok(n) => {
                self.learned_modern.store(conn.era() == crate::protocol::Era::Modern, Ordering::Relaxed);
                Ok(n)
            }
            Err(_) => Err(e),
        }
    }

    pub(super) async fn open_link(&self, inbox: &Arc<Inbox>) -> Result<Link, OpenError> {
        let spec = self.spec_full();
        match &spec.transport {
            TransportSpec::Stdio { command, args, env, cwd, shutdown_grace, stderr_level } => {
                let launch = stdio::Launch {
                    command,
                    args,
                    env,
                    cwd,
                    grace: *shutdown_grace,
                    max_bytes: self.max_bytes,
                    redactor: &self.redactor,
                    stderr_level: *stderr_level,
                    last_stderr: self.last_stderr.clone(),
                };
                let link = stdio::StdioLink::spawn(&launch, inbox)
                    .map_err(|source| OpenError::Spawn { command: command.clone(), source })?;
                Ok(Link::Stdio(Arc::new(link)))
            }
            TransportSpec::Http { url, headers } => {
                let url = reqwest::Url::parse(url.expose())?;
                let link = http::HttpLink::new(
                    self.http.clone(),
                    url,
                    header_map(headers),
                    self.max_bytes,
                    self.credential.clone(),
                );
                Ok(Link::Http(Arc::new(link)))
            }
            TransportSpec::Sse { url, headers } => {
                let url = reqwest::Url::parse(url.expose())?;
                let link =
                    legacy::LegacyLink::connect(self.http.clone(), url, header_map(headers), self.max_bytes, inbox)
                        .await
                        .map_err(OpenError::Sse)?;
                Ok(Link::Legacy(Arc::new(link)))
            }
        }
    }

    /// Serves a ready connection until it closes or the gateway shuts down;
    /// returns why it ended.
    pub(super) async fn serve(
        &self,
        conn: Arc<Connection>,
        negotiated: Negotiated,
        connection: u64,
        mut events: mpsc::Receiver<Event>,
        inbox: &Arc<Inbox>,
    ) -> (String, ErrorClass) {
        let lists = match self.fetch_lists(&conn, negotiated.capabilities.checked()).await {
            Ok(l) => l,
            Err(e) => {
                conn.link.shutdown().await;
                // Refused for want of a token or scope: a person must act
                // (and a login brings it back); not a crash.
                let class = if e.class == ErrorClass::UpstreamAuth { e.class } else { ErrorClass::Transport };
                return (format!("tools/list failed: {}", e.message), class);
            }
        };
        let ready = |lists: Lists| {
            State::Ready(Ready {
                conn: conn.clone(),
                negotiated: negotiated.clone(),
                lists,
                connection,
                since: Instant::now(),
            })
        };
        self.set(ready(lists));
        let health = self.health_loop(&conn);
        tokio::pin!(health);
        let listen = self.listen_loop(&conn);
        tokio::pin!(listen);
        // Up `stable_after`: a crash loop is over, while it stays up (not
        // only when this connection ends).
        let stable = tokio::time::sleep(self.spec().stable_after);
        tokio::pin!(stable);
        let mut stable_seen = false;
        loop {
            tokio::select! {
                () = &mut stable, if !stable_seen => {
                    stable_seen = true;
                    if self.crash_loop.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            upstream = %self.id(), stable_s = self.spec().stable_after.as_secs_f64(),
                            "Upstream left its crash loop: up and stable."
                        );
                    }
                }
                () = &mut listen => {}
                reason = &mut health => {
                    tracing::warn!(upstream = %self.id(), "Giving up the connection: {reason}.");
                    inbox.close(reason.clone());
                    conn.link.shutdown().await;
                    return (reason, ErrorClass::Transport);
                }
                ev = events.recv() => match ev {
                    Some(Event::Request(m, related)) => self.answer(&conn, m, related),
                    Some(Event::Answer(body)) => {
                        let conn = conn.clone();
                        tokio::spawn(async move { conn.respond(body).await });
                    }
                    Some(Event::Notification(m)) => match ListKind::changed_by(m.method()) {
                        Some(kind) => self.refresh(&conn, kind, &ready).await,
                        None => self.pass_on(m),
                    },
                    None => return ("event channel closed".into(), ErrorClass::Transport),
                },
                () = inbox.closed() => {
                    conn.link.shutdown().await;
                    return (inbox.close_reason(), ErrorClass::Transport);
                }
                () = self.shutdown.cancelled() => {
                    conn.link.shutdown().await;
                    inbox.close("gateway shutting down".into());
                    return ("gateway shutting down".into(), ErrorClass::Transport);
                }
            }
        }
    }
}

impl Ready {
    /// The protocol era its connection speaks.
    pub fn era(&self) -> crate::protocol::Era {
        self.conn.era()
    }
}

/// Longest wait before a 2026-07-28 upstream's listen stream is opened
/// again (it doubles from a second after each failure).
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(60);

impl Upstream {
    /// A 2026-07-28 upstream tells its list changes only on a
    /// `subscriptions/listen` stream (there is no session GET stream): one
    /// is kept open while the connection lives, its notifications going to
    /// the supervisor like any other, and opened again when it ends. Never
    /// returns; pending at once for a 2025 connection.
    async fn listen_loop(&self, conn: &Connection) {
        if conn.era() != crate::protocol::Era::Modern {
            return std::future::pending().await;
        }
        let filter = serde_json::json!({
            "notifications": { "toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true }
        });
        let params = crate::protocol::CheckedBox::from_value(&filter);
        let mut wait = Duration::from_secs(1);
        loop {
            let opened = Instant::now();
            let ended =
                conn.request("subscriptions/listen", Some(params.checked()), Duration::from_secs(86_400 * 365)).await;
            let why = match &ended {
                Ok(m) if m.error().is_some() => "refused",
                Ok(_) => "ended",
                Err(_) => "failed",
            };
            // A stream that stayed up a while starts the backoff over.
            if opened.elapsed() > LISTEN_RETRY_MAX {
                wait = Duration::from_secs(1);
            }
            tracing::debug!(upstream = %self.id(), outcome = why, retry_in_ms = wait.as_millis() as u64, "The upstream's listen stream closed.");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LISTEN_RETRY_MAX);
        }
    }
}

pub(super) fn header_map(headers: &std::collections::BTreeMap<String, crate::config::Resolved>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        // Validated at config load.
        if let (Ok(name), Ok(mut value)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.expose())) {
            value.set_sensitive(v.is_secret());
            map.insert(name, value);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    //! The supervisor, over real processes: a command that cannot start, a
    //! scripted server that lives as long as the test says, and an HTTP port
    //! nobody listens on. Time is paused; where a child process or a socket is
    //! awaited it is also frozen ([`Frozen`]), so only the test moves it and
    //! every delay is exact.

    use std::time::Duration;

    use super::super::tests::{Frozen, NO_SUCH_COMMAND, conn, fixture, settle, spec, start};
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn failed_starts_back_off_to_the_maximum_and_are_a_crash_loop_from_the_third() {
        let h = start(spec(&format!("command = {NO_SUCH_COMMAND:?}\nrestart_max_delay = \"4s\"")));
        let mut last = None;
        let mut seen = Vec::new();
        for _ in 0..6 {
            let (at, delay) = h.next_down(last).await;
            last = Some(at);
            seen.push((delay, h.up.restarts(), h.crash_looping()));
        }
        assert_eq!(
            seen,
            [
                (ms(500), 0, false),
                (ms(1000), 1, false),
                (ms(2000), 2, true),
                (ms(4000), 3, true),
                (ms(4000), 4, true),
                (ms(4000), 5, true),
            ]
        );
        let State::Down { reason, class, .. } = &*h.up.state() else { unreachable!() };
        assert_eq!(*class, ErrorClass::Transport);
        assert_eq!(reason, &format!("cannot start `{NO_SUCH_COMMAND}`: No such file or directory (os error 2)"));
        h.up.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_maximum_below_the_first_delay_is_raised_to_it() {
        // The config refuses less than 500ms; the supervisor does not rely on it.
        let mut s = spec(&format!("command = {NO_SUCH_COMMAND:?}"));
        s.restart_max_delay = ms(100);
        let h = start(s);
        let mut last = None;
        let mut delays = Vec::new();
        for _ in 0..3 {
            let (at, delay) = h.next_down(last).await;
            last = Some(at);
            delays.push(delay);
        }
        assert_eq!(delays, [RESTART_MIN; 3]);
        h.up.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait_for_a_restart() {
        let h = start(spec(&format!("command = {NO_SUCH_COMMAND:?}")));
        h.next_down(None).await;
        h.up.shutdown().await;
        assert!(matches!(&*h.up.state(), State::Stopped));
        assert_eq!(h.up.restarts(), 0, "stopped during the backoff, not after another start");
    }

    #[tokio::test(start_paused = true)]
    async fn short_lives_are_a_crash_loop_that_a_stable_run_ends_and_resets() {
        let _frozen = Frozen::new();
        let h = start(fixture("stable_after = \"10s\"\nrestart_max_delay = \"4s\"\nhealth.interval = \"0s\""));
        let mut last = None;
        let mut seen = Vec::new();
        for n in 1..=3 {
            // Up, and gone at once (no time passes while it is up).
            let ready = h.ready(n).await;
            conn(&ready).notify("test/exit", None).await.expect("sent");
            let (at, delay) = h.next_down(last).await;
            last = Some(at);
            seen.push((delay, h.crash_looping()));
            tokio::time::advance(delay).await;
        }
        assert_eq!(seen, [(ms(500), false), (ms(1000), false), (ms(2000), true)]);

        // The fourth stays up `stable_after`: the crash loop ends while it is up ...
        let ready = h.ready(4).await;
        assert_eq!(h.up.restarts(), 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(settle(|| !h.crash_looping()).await, "the crash loop still stands after a stable run");
        // ... and when it goes, the next start waits the shortest delay again.
        conn(&ready).notify("test/exit", None).await.expect("sent");
        let (_, delay) = h.next_down(last).await;
        assert_eq!((delay, h.crash_looping()), (RESTART_MIN, false));
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_cannot_be_reached_is_unreachable_not_a_crash_loop() {
        let _frozen = Frozen::new();
        // A port nobody listens on (bound, then let go).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let h = start(spec(&format!("url = \"http://127.0.0.1:{port}/mcp\"\nhealth.interval = \"0s\"")));
        let mut last = None;
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (at, delay) = h.next_down(last).await;
            last = Some(at);
            let State::Down { reason, class, .. } = &*h.up.state() else { unreachable!() };
            assert!(reason.starts_with("unreachable: "), "{reason}");
            seen.push((delay, *class, h.crash_looping()));
            tokio::time::advance(delay).await;
        }
        let t = ErrorClass::Transport;
        assert_eq!(seen, [(ms(500), t, false), (ms(1000), t, false), (ms(2000), t, false), (ms(4000), t, false)]);
        h.stop().await;
    }
}
