//! A real Prometheus for the metrics tests, and helpers to read the
//! Grafana dashboards and the text exposition.
//!
//! [`Prometheus`] runs the `prometheus` binary (installed by
//! `scripts/install-peers.sh`) on a free loopback port with a generated
//! config: one job `gateway` scraping `/metrics` of the given targets every
//! second, and the given rule files evaluated every second. It is stopped
//! (SIGTERM, then SIGKILL) on drop. It is ready in about 0.1 s, but
//! Prometheus 2.x applies new scrape targets on a fixed 5 s tick, so the
//! first scrape comes 5–6 s after the start (no flag changes that in 2.42):
//! wait with [`Prometheus::wait_scraped`] before asserting on series.
//!
//! The Grafana helpers are plain functions: [`dashboard_queries`] lists
//! every PromQL expression of `dashboards/*.json`, [`grafana_to_promql`]
//! turns Grafana's variables into something Prometheus accepts, and
//! [`metric_names`], [`family_of`] and [`exposition_families`] let a test
//! compare the metrics a dashboard uses with those the gateway exports.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{PATIENCE, free_port, root};

/// The name of the one scrape job.
pub const JOB: &str = "gateway";

/// What Grafana's interval variables (`$__rate_interval`, `$__interval`,
/// `$__range`) become in [`grafana_to_promql`]: 30 scrapes at the 1 s
/// interval of the harness.
pub const INTERVAL: &str = "30s";

/// A running `prometheus` server, killed on drop.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
    /// Holds `prometheus.yml` and the TSDB (`data/`); removed on drop.
    pub dir: tempfile::TempDir,
}

/// How many ports to try when the free one was taken before Prometheus bound it.
const PORT_ATTEMPTS: usize = 5;

impl Prometheus {
    /// Starts Prometheus scraping `http://<target>/metrics` for each of
    /// `targets` (job `gateway`) and evaluating `rule_files` (absolute paths;
    /// a file Prometheus cannot load fails the start, with its error).
    /// Returns once `/-/ready` answers 200.
    pub async fn start(targets: &[SocketAddr], rule_files: &[PathBuf]) -> Prometheus {
        Self::start_with(targets, rule_files, false).await
    }

    /// [`Prometheus::start`]; with `scrape_self`, the job's one target is
    /// this Prometheus's own address (to test the harness without a gateway).
    async fn start_with(targets: &[SocketAddr], rule_files: &[PathBuf], scrape_self: bool) -> Prometheus {
        let bin = binary();
        for f in rule_files {
            assert!(f.is_absolute() && f.exists(), "rule file {} must be an existing absolute path", f.display());
        }
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let own = [addr];
            let p = Self::spawn(&bin, addr, if scrape_self { &own } else { targets }, rule_files);
            match p.wait_ready().await {
                Ok(()) => return p,
                // Someone took the port between free_port() and the bind.
                Err(logs) if logs.contains("address already in use") => last = logs,
                Err(logs) => panic!("prometheus did not become ready on {addr}:\n{logs}"),
            }
        }
        panic!("prometheus found no free port in {PORT_ATTEMPTS} attempts; last stderr:\n{last}")
    }

    fn spawn(bin: &Path, addr: SocketAddr, targets: &[SocketAddr], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::Builder::new().prefix("prometheus-test").tempdir_in(root().join("target")).unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(targets, rule_files)).unwrap();
        let mut child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
        Prometheus { child, addr, stderr, http, dir }
    }

    /// Polls `/-/ready` until 200; `Err(stderr)` if the process exits or
    /// [`PATIENCE`] passes first.
    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let url = format!("{}/-/ready", self.url());
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status() == 200
            {
                // Another Prometheus may hold the port (ours then failed to
                // bind): it must be the one with our config.
                let flags = self.try_api("status/flags", &[]).await?;
                let ours = self.dir.path().join("prometheus.yml").display().to_string();
                return match flags["config.file"].as_str() {
                    Some(f) if f == ours => Ok(()),
                    other => Err(format!("address already in use: {} answers with config.file {other:?}", self.addr)),
                };
            }
            if self.exited() {
                // Let the reader thread drain the pipe.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(format!("(exited)\n{}", self.logs()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("(not ready after {PATIENCE:?})\n{}", self.logs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited(&self) -> bool {
        // try_wait needs &mut; /proc tells the same without reaping.
        !super::alive(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it listens (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for the web UI and the API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its stderr so far (logfmt lines).
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The generated `prometheus.yml`.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.yml")).unwrap()
    }

    /// GETs `/api/v1/<path>` with `params`; panics unless the answer is
    /// `"status":"success"`. Returns `data`.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        self.try_api(path, params).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Prometheus::api`], with the failure as `Err("GET <url>: <status>
    /// <errorType>: <error>")` instead of a panic.
    pub async fn try_api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url()), params).unwrap();
        let resp = self.http.get(url.clone()).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| format!("GET {url}: {status}, body: {e}"))?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {url}: {status}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            let kind = v["errorType"].as_str().unwrap_or("?");
            return Err(format!("GET {url}: {status} {kind}: {}", v["error"].as_str().unwrap_or(&body)));
        }
        Ok(v["data"].clone())
    }

    /// An instant query; panics with Prometheus's error text if `expr` is
    /// not valid. Returns `data.result`: the samples of a vector (each
    /// `{"metric":{..},"value":[t,"v"]}`) or matrix; for a scalar or string
    /// result, one element holding its `[t, "v"]` pair.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        self.try_query(expr).await.unwrap_or_else(|e| panic!("query {expr}: {e}"))
    }

    /// [`Prometheus::query`], with Prometheus's error (`bad_data: 1:8: parse
    /// error: ..`) as `Err`: to check many expressions and report them all.
    pub async fn try_query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.try_api("query", &[("query", expr)]).await?;
        Ok(match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().cloned().unwrap_or_default(),
            _ => vec![data["result"].clone()],
        })
    }

    /// Polls `expr` every 250 ms until it returns at least one series;
    /// returns them. Panics after `patience` with the targets' health and
    /// the server's log.
    pub async fn wait_for_series(&self, expr: &str, patience: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let r = self.query(expr).await;
            if !r.is_empty() {
                return r;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("no series for {expr} after {patience:?}\n{}", self.diagnostics().await);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `/api/v1/targets` `activeTargets`: each with `health` ("up", "down",
    /// "unknown" before the first scrape), `lastError`, `scrapeUrl`, `labels`.
    pub async fn targets(&self) -> Vec<Value> {
        self.api("targets", &[("state", "active")]).await["activeTargets"].as_array().cloned().unwrap_or_default()
    }

    /// Whether every target of the job was up at its last scrape.
    pub async fn targets_up(&self) -> bool {
        let t = self.targets().await;
        !t.is_empty() && t.iter().all(|t| t["health"] == "up")
    }

    /// Waits until every target of the job was scraped successfully at
    /// least `times` times (`sum_over_time(up[1h])`: `up` is 1 for each
    /// good scrape). Panics after `patience` with the targets' last errors.
    pub async fn wait_scraped(&self, times: u32, patience: Duration) {
        let expr = format!("sum_over_time(up{{job=\"{JOB}\"}}[1h])");
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // Targets appear only at the first 5 s tick of the scrape manager.
            let want = self.targets().await.len();
            let r = self.query(&expr).await;
            let good = r.iter().filter(|s| sample_value(s) >= f64::from(times)).count();
            if want > 0 && good == want {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} of {want} targets scraped {times} times after {patience:?}: {expr} = {r:?}\n{}",
                    good,
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The alerting rules loaded from the rule files: (alert name, expr as
    /// Prometheus printed it back).
    pub async fn rules(&self) -> Vec<(String, String)> {
        self.rules_of("alert").await
    }

    /// The recording rules loaded: (record name, expr).
    pub async fn recording_rules(&self) -> Vec<(String, String)> {
        self.rules_of("record").await
    }

    async fn rules_of(&self, kind: &str) -> Vec<(String, String)> {
        let data = self.api("rules", &[("type", kind)]).await;
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        let rules = groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default());
        rules.map(|r| (r["name"].as_str().unwrap().to_owned(), r["query"].as_str().unwrap().to_owned())).collect()
    }

    /// `/api/v1/alerts`: the alerts now pending or firing, each with
    /// `labels` (`alertname` …), `state` and `value`.
    pub async fn alerts(&self) -> Vec<Value> {
        self.api("alerts", &[]).await["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Every value of `label` in the TSDB (`__name__`: every metric name).
    pub async fn label_values(&self, label: &str) -> Vec<String> {
        let data = self.api(&format!("label/{label}/values"), &[]).await;
        data.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    }

    /// The targets' health and last errors, then the server's log: what a
    /// failing wait prints.
    async fn diagnostics(&self) -> String {
        let targets: Vec<String> = self
            .targets()
            .await
            .iter()
            .map(|t| format!("  {} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
            .collect();
        format!("targets:\n{}\nprometheus log:\n{}", targets.join("\n"), self.logs())
    }
}

impl Drop for Prometheus {
    /// SIGTERM (Prometheus closes its TSDB), SIGKILL after 5 s; by pid.
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGTERM);
            for _ in 0..100 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// `$PROMETHEUS`, or `prometheus` on `PATH`.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("prometheus")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("prometheus is not on PATH: run scripts/install-peers.sh (scripts/test.sh does), or set PROMETHEUS")
    })
}

/// The generated `prometheus.yml` (YAML; strings written as JSON strings).
fn config_yaml(targets: &[SocketAddr], rule_files: &[PathBuf]) -> String {
    let q = |s: String| Value::String(s).to_string();
    let targets: Vec<String> = targets.iter().map(|t| q(t.to_string())).collect();
    let mut y = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n");
    y.push_str("rule_files:\n");
    for f in rule_files {
        y.push_str(&format!("  - {}\n", q(f.display().to_string())));
    }
    y.push_str(&format!(
        "scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    ));
    y
}

/// The value of one instant-vector sample (`{"value":[t,"v"]}`); NaN if none.
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

// === Grafana dashboards ===

/// One PromQL expression of a dashboard, as written there (Grafana
/// variables included; see [`grafana_to_promql`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelQuery {
    /// The file name (`gateway.json`).
    pub file: String,
    /// The panel title (`Row / Panel` for panels inside a collapsed row),
    /// `variable <name>` for a templating query, `annotation <name>`.
    pub panel: String,
    pub expr: String,
}

/// Every PromQL expression in `dir/*.json` (sorted by file): panel targets
/// (`targets[].expr`, rows' nested `panels` and old-style `rows[].panels`
/// included), templating query variables (`label_values(metric{..}, label)`
/// → the `metric{..}` selector; `query_result(expr)` → expr; a bare
/// selector as it is; `label_names()`, `metrics(..)` and
/// `label_values(label)` name no metric and are left out) and annotation
/// queries. Targets and variables whose datasource has a type other than
/// `prometheus` are skipped. Panics on a file that is not JSON.
pub fn dashboard_queries(dir: &Path) -> Vec<PanelQuery> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        // The API's export wraps the dashboard: {"dashboard": {...}, "meta": ...}.
        let dash = v.get("dashboard").filter(|d| d.is_object()).unwrap_or(&v);
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut push = |panel: String, expr: &str| {
            out.push(PanelQuery { file: file.clone(), panel, expr: expr.to_owned() });
        };
        panel_queries(&dash["panels"], "", &Value::Null, &mut push);
        for row in array(&dash["rows"]) {
            panel_queries(&row["panels"], row["title"].as_str().unwrap_or(""), &Value::Null, &mut push);
        }
        for var in array(&dash["templating"]["list"]) {
            if var["type"] != "query" || !is_prometheus(&var["datasource"]) {
                continue;
            }
            let q = var["query"].as_str().or_else(|| var["query"]["query"].as_str()).unwrap_or("");
            if let Some(expr) = variable_expr(q) {
                push(format!("variable {}", var["name"].as_str().unwrap_or("?")), expr);
            }
        }
        for a in array(&dash["annotations"]["list"]) {
            if let Some(expr) = a["expr"].as_str().filter(|e| !e.trim().is_empty())
                && is_prometheus(&a["datasource"])
            {
                push(format!("annotation {}", a["name"].as_str().unwrap_or("?")), expr);
            }
        }
    }
    out
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// The targets of `panels` and of the panels nested in them (collapsed rows).
fn panel_queries(panels: &Value, prefix: &str, inherited: &Value, push: &mut impl FnMut(String, &str)) {
    for p in array(panels) {
        let title = match p["title"].as_str() {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => format!("panel {}", p["id"]),
        };
        let name = if prefix.is_empty() { title } else { format!("{prefix} / {title}") };
        let ds = if p["datasource"].is_null() { inherited } else { &p["datasource"] };
        for t in array(&p["targets"]) {
            let tds = if t["datasource"].is_null() { ds } else { &t["datasource"] };
            if let Some(expr) = t["expr"].as_str().filter(|e| !e.trim().is_empty())
                && is_prometheus(tds)
            {
                push(name.clone(), expr);
            }
        }
        // A row's panels are named after the row only.
        let nested_prefix = if p["type"] == "row" { p["title"].as_str().unwrap_or("") } else { &name };
        panel_queries(&p["panels"], nested_prefix, ds, push);
    }
}

/// Unset, a name or `${DS_PROMETHEUS}`-like variable, or `{"type":"prometheus"}`.
fn is_prometheus(ds: &Value) -> bool {
    match &ds["type"] {
        Value::String(t) => t == "prometheus",
        _ => true,
    }
}

/// The PromQL inside a Prometheus templating query, if it names a metric.
fn variable_expr(q: &str) -> Option<&str> {
    let q = q.trim();
    let call = |f: &str| q.strip_prefix(f).and_then(|r| r.trim_start().strip_prefix('(')?.strip_suffix(')'));
    if let Some(args) = call("label_values") {
        // label_values(selector, label): the selector; label_values(label): none.
        return top_level_last_comma(args).map(|i| args[..i].trim());
    }
    if let Some(expr) = call("query_result") {
        return Some(expr.trim());
    }
    if q.is_empty() || call("label_names").is_some() || call("metrics").is_some() {
        return None;
    }
    Some(q)
}

/// Byte index of the last comma outside quotes and brackets.
fn top_level_last_comma(s: &str) -> Option<usize> {
    let (mut depth, mut quote, mut escaped, mut last) = (0i32, None, false, None);
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => last = Some(i),
            _ => {}
        }
    }
    last
}

/// A dashboard expression as Prometheus can run it:
/// - `$__rate_interval`, `$__interval`, `$__range` (also `${..}`) → [`INTERVAL`];
///   `$__interval_ms`, `$__range_ms` → `30000`; `$__range_s` → `30`;
/// - any other variable (`$upstream`, `${upstream}`, `${upstream:regex}`,
///   `[[upstream]]`) inside a quoted string → `.*`, and the matcher becomes a
///   regex one (`=` → `=~`, `!=` → `!~`) so that `.*` means "all"; inside a
///   range `[..]` → [`INTERVAL`]; elsewhere (`topk($n, ..)`) → `1`.
///
/// `$1`-style references (label_replace) are left alone.
pub fn grafana_to_promql(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len());
    let (mut quote, mut escaped, mut brackets) = (None::<char>, false, 0i32);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some((name, len)) = variable_at(&chars, i) {
            let value = match builtin(&name) {
                Some(v) => v,
                None if quote.is_some() => ".*",
                None if brackets > 0 => INTERVAL,
                None => "1",
            };
            out.push_str(value);
            i += len;
            continue;
        }
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' | '`' => {
                    quote = Some(c);
                    if string_has_user_variable(&chars, i) {
                        regex_matcher(&mut out);
                    }
                }
                '[' => brackets += 1,
                ']' => brackets -= 1,
                _ => {}
            },
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The value of a Grafana global interval variable.
fn builtin(name: &str) -> Option<&'static str> {
    match name {
        "__rate_interval" | "__interval" | "__range" => Some(INTERVAL),
        "__interval_ms" | "__range_ms" => Some("30000"),
        "__range_s" => Some("30"),
        _ => None,
    }
}

/// A variable reference starting at `chars[i]`: (name, length in chars).
fn variable_at(chars: &[char], i: usize) -> Option<(String, usize)> {
    let ident = |from: usize| chars[from..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').count();
    match chars[i] {
        '$' if chars.get(i + 1) == Some(&'{') => {
            let end = chars[i..].iter().position(|c| *c == '}')? + i;
            let inner: String = chars[i + 2..end].iter().collect();
            let name = inner.split([':', '.']).next().unwrap_or("").to_owned();
            (!name.is_empty()).then_some((name, end - i + 1))
        }
        '$' => {
            let n = ident(i + 1);
            // `$1` is a label_replace group, not a variable.
            (n > 0 && !chars[i + 1].is_ascii_digit()).then(|| (chars[i + 1..i + 1 + n].iter().collect(), n + 1))
        }
        '[' if chars.get(i + 1) == Some(&'[') => {
            let n = ident(i + 2);
            let rest = &chars[i + 2 + n..];
            let fmt = if rest.first() == Some(&':') { rest.iter().take_while(|c| **c != ']').count() } else { 0 };
            let close = i + 2 + n + fmt;
            (n > 0 && chars.get(close) == Some(&']') && chars.get(close + 1) == Some(&']'))
                .then(|| (chars[i + 2..i + 2 + n].iter().collect(), close + 2 - i))
        }
        _ => None,
    }
}

/// Whether the string literal opening at `chars[open]` holds a variable
/// that is not a built-in interval.
fn string_has_user_variable(chars: &[char], open: usize) -> bool {
    let q = chars[open];
    let mut i = open + 1;
    while i < chars.len() && chars[i] != q {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        if let Some((name, len)) = variable_at(chars, i) {
            if builtin(&name).is_none() {
                return true;
            }
            i += len;
        } else {
            i += 1;
        }
    }
    false
}

/// Turns the matcher operator just written (`=`, `!=`) into its regex form.
fn regex_matcher(out: &mut String) {
    let body = out.trim_end().len();
    let space = out[body..].to_owned();
    let head = &out[..body];
    let op = if head.ends_with("!=") {
        "!~"
    } else if head.ends_with('=') && !head.ends_with("==") && !head.ends_with(">=") && !head.ends_with("<=") {
        "=~"
    } else {
        return;
    };
    let cut = body - if op == "!~" { 2 } else { 1 };
    out.truncate(cut);
    out.push_str(op);
    out.push_str(&space);
}

/// Every identifier starting `mcp_gateway_` in `expr`, as written (so a
/// histogram shows as `.._bucket`; see [`family_of`]). Quoted names count
/// (`{__name__="mcp_gateway_x"}`); a bare prefix (`"mcp_gateway_.*"`) does
/// not. Recording-rule names with `:` come out whole.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("mcp_gateway_") {
        let before = rest[..at].chars().next_back();
        let len = rest[at..].find(|c: char| !is_ident(c)).unwrap_or(rest.len() - at);
        let name = &rest[at..at + len];
        if !before.is_some_and(is_ident) && !name.ends_with('_') {
            out.insert(name.to_owned());
        }
        rest = &rest[at + len..];
    }
    out
}

/// The metric family of a sample name: `_bucket`, `_sum` and `_count` are
/// stripped (histograms, summaries); other names are their own family. A
/// counter's `_total` is kept: [`exposition_families`] lists both forms.
pub fn family_of(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// The names a text exposition (Prometheus 0.0.4 or OpenMetrics) defines:
/// every `# TYPE` name, the sample names that type implies (`foo` counter →
/// `foo_total`; `foo_total` counter → `foo` too; histogram → `_bucket`,
/// `_sum`, `_count`; summary → `_sum`, `_count`; info → `foo_info`), and every
/// sample name actually present. So both `family_of(x)` and `x` itself are
/// in it for any `x` a query may use.
pub fn exposition_families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            out.insert(name.to_owned());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                "info" => &["_info"],
                _ => &[],
            };
            for s in suffixes {
                if !name.ends_with(s) {
                    out.insert(format!("{name}{s}"));
                }
            }
            if kind == "counter"
                && let Some(base) = name.strip_suffix("_total")
            {
                out.insert(base.to_owned());
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
            out.insert(line[..end].to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn grafana_variables_become_promql() {
        assert_eq!(
            grafana_to_promql(
                r#"sum by (upstream) (rate(mcp_gateway_calls_total{upstream=~"$upstream"}[$__rate_interval]))"#
            ),
            r#"sum by (upstream) (rate(mcp_gateway_calls_total{upstream=~".*"}[30s]))"#
        );
        // `=` and `!=` become regex matchers, so `.*` means every value.
        assert_eq!(
            grafana_to_promql(r#"mcp_gateway_up{upstream="${upstream}", tool != "$tool"}"#),
            r#"mcp_gateway_up{upstream=~".*", tool !~ ".*"}"#
        );
        assert_eq!(grafana_to_promql(r#"x{a="[[upstream]]",b="${b:regex}|y"}"#), r#"x{a=~".*",b=~".*|y"}"#);
        assert_eq!(grafana_to_promql("increase(x[${__range}]) / $__range_s"), "increase(x[30s]) / 30");
        assert_eq!(grafana_to_promql("topk($n, rate(x[$window]))"), "topk(1, rate(x[30s]))");
        // Built-ins inside strings do not touch the matcher; `$1` is no variable.
        assert_eq!(grafana_to_promql(r#"x{a="$__interval"}"#), r#"x{a="30s"}"#);
        assert_eq!(
            grafana_to_promql(r#"label_replace(x, "b", "$1", "a", "(.*)")"#),
            r#"label_replace(x, "b", "$1", "a", "(.*)")"#
        );
        assert_eq!(grafana_to_promql(r#"x{a=~"v\"$u"}"#), r#"x{a=~"v\".*"}"#);
    }

    #[test]
    fn metric_names_and_families() {
        let e = r#"histogram_quantile(0.99, sum by (le) (rate(mcp_gateway_call_duration_seconds_bucket[5m])))
            / ignoring(x) mcp_gateway_requests_total + count({__name__="mcp_gateway_up"})
            + count({__name__=~"mcp_gateway_.*"}) + mcp_gateway_x:rate5m + not_mcp_gateway_y"#;
        assert_eq!(
            metric_names(e),
            set(&[
                "mcp_gateway_call_duration_seconds_bucket",
                "mcp_gateway_requests_total",
                "mcp_gateway_up",
                "mcp_gateway_x:rate5m"
            ])
        );
        assert_eq!(family_of("mcp_gateway_call_duration_seconds_bucket"), "mcp_gateway_call_duration_seconds");
        assert_eq!(family_of("mcp_gateway_call_duration_seconds_count"), "mcp_gateway_call_duration_seconds");
        assert_eq!(family_of("mcp_gateway_requests_total"), "mcp_gateway_requests_total");
    }

    #[test]
    fn exposition_families_cover_both_counter_styles() {
        // OpenMetrics (prometheus-client): TYPE names `foo`, samples `foo_total`.
        let om = "# HELP mcp_gateway_requests Requests.\n# TYPE mcp_gateway_requests counter\n\
                  mcp_gateway_requests_total{method=\"tools/call\"} 3\n\
                  # TYPE mcp_gateway_call_duration_seconds histogram\n\
                  mcp_gateway_call_duration_seconds_bucket{le=\"+Inf\"} 1\n\
                  # TYPE mcp_gateway_build info\nmcp_gateway_build_info{version=\"0.1.0\"} 1\n# EOF\n";
        let f = exposition_families(om);
        for n in [
            "mcp_gateway_requests",
            "mcp_gateway_requests_total",
            "mcp_gateway_call_duration_seconds",
            "mcp_gateway_call_duration_seconds_bucket",
            "mcp_gateway_call_duration_seconds_count",
            "mcp_gateway_build_info",
        ] {
            assert!(f.contains(n), "{n} missing from {f:?}");
        }
        // Classic text format: TYPE names the sample, `foo_total`.
        let classic = "# TYPE up_total counter\nup_total 1\n# TYPE g gauge\ng 2\n";
        assert_eq!(exposition_families(classic), set(&["g", "up", "up_total"]));
    }

    #[test]
    fn dashboards_yield_every_promql_expression() {
        let dir = tempfile::tempdir().unwrap();
        let dash = serde_json::json!({
            "panels": [
                {"title": "Calls", "type": "timeseries", "targets": [{"expr": "rate(a_total[$__rate_interval])"}, {"expr": ""}]},
                {"title": "Upstreams", "type": "row", "collapsed": true, "panels": [
                    {"title": "Up", "targets": [{"expr": "b", "datasource": {"type": "prometheus", "uid": "x"}}]},
                    {"title": "Logs", "datasource": {"type": "loki"}, "targets": [{"expr": "{app=\"gw\"}"}]}
                ]}
            ],
            "templating": {"list": [
                {"name": "upstream", "type": "query", "query": {"query": "label_values(c{job=\"g\"}, upstream)", "refId": "A"}},
                {"name": "tool", "type": "query", "query": "label_values(tool)"},
                {"name": "q", "type": "query", "query": "query_result(topk(5, d))"},
                {"name": "iv", "type": "interval", "query": "1m,5m"}
            ]},
            "annotations": {"list": [{"name": "Restarts", "expr": "changes(e[1m]) > 0"}, {"name": "G", "datasource": {"type": "datasource"}}]}
        });
        std::fs::write(dir.path().join("a.json"), dash.to_string()).unwrap();
        std::fs::write(dir.path().join("b.json"), serde_json::json!({"dashboard": {"rows": [{"title": "R", "panels": [{"title": "P", "targets": [{"expr": "f"}]}]}]}}).to_string()).unwrap();
        std::fs::write(dir.path().join("alerts.yml"), "groups: []\n").unwrap();
        let got: Vec<(String, String, String)> =
            dashboard_queries(dir.path()).into_iter().map(|q| (q.file, q.panel, q.expr)).collect();
        let want = [
            ("a.json", "Calls", "rate(a_total[$__rate_interval])"),
            ("a.json", "Upstreams / Up", "b"),
            ("a.json", "variable upstream", "c{job=\"g\"}"),
            ("a.json", "variable q", "topk(5, d)"),
            ("a.json", "annotation Restarts", "changes(e[1m]) > 0"),
            ("b.json", "R / P", "f"),
        ];
        let want: Vec<(String, String, String)> =
            want.iter().map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned())).collect();
        assert_eq!(got, want);
    }

    /// The harness end to end, without a gateway: Prometheus scrapes its own
    /// /metrics as job `gateway` and evaluates a rule file.
    #[tokio::test]
    async fn prometheus_harness_scrapes_itself() {
        let rules = tempfile::Builder::new().prefix("rules").suffix(".yml").tempfile_in(root().join("target")).unwrap();
        std::fs::write(
            rules.path(),
            "groups:\n  - name: harness\n    rules:\n      - alert: HarnessTargetUp\n        expr: up{job=\"gateway\"} == 1\n      \
             - record: harness:up:sum\n        expr: sum(up)\n",
        )
        .unwrap();
        let p = Prometheus::start_with(&[], &[rules.path().to_path_buf()], true).await;
        assert!(p.config().contains(&format!("targets: [\"{}\"]", p.addr())), "{}", p.config());
        p.wait_scraped(2, PATIENCE).await;
        assert!(p.targets_up().await);
        let build = p.wait_for_series("prometheus_build_info", PATIENCE).await;
        assert_eq!(build[0]["metric"]["job"], JOB, "{build:?}");
        assert_eq!(sample_value(&build[0]), 1.0);
        assert!(p.label_values("__name__").await.contains(&"prometheus_http_requests_total".to_owned()));
        assert_eq!(p.query("1 + 1").await[0][1], "2");
        assert_eq!(p.rules().await, [("HarnessTargetUp".to_owned(), "up{job=\"gateway\"} == 1".to_owned())]);
        assert_eq!(p.recording_rules().await, [("harness:up:sum".to_owned(), "sum(up)".to_owned())]);
        // What a dashboard test does: names from a query, looked up in the exposition.
        let text = reqwest::get(format!("{}/metrics", p.url())).await.unwrap().text().await.unwrap();
        let families = exposition_families(&text);
        assert!(families.contains(family_of("prometheus_http_request_duration_seconds_bucket")), "{families:?}");
        assert!(families.contains("prometheus_http_requests_total"));
        // A bad query gives Prometheus's own error text.
        let err = p.try_query("rate(x[").await.unwrap_err();
        assert!(err.contains("bad_data") && err.contains("parse error"), "{err}");
    }
}
