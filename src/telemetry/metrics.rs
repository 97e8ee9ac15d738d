//! Every Prometheus metric the gateway exports, in one place (docs/design.md D8).
//!
//! Names are an API: dashboards and alert rules in `dashboards/` use them,
//! and a test checks that each name they use is exported. Labels are
//! bounded: `upstream` (configured ids), `tool` (names in the catalog, never
//! what a client typed), `method` (a fixed list), `class` (the error
//! classes), `state`, `outcome`, `transport`. Never session ids, arguments
//! or error text.
//!
//! Counters and histograms are updated on the request path (a read lock and
//! a hash of the label set each); gauges that mirror state (upstream up,
//! breaker state, bulkhead occupancy, sessions, tools exposed) are set when
//! `/metrics` is scraped, so the request path pays nothing for them.
//!
//! Architecture Invariant: no global registry; one [`Metrics`] is created
//! with the [`crate::routing::Gateway`] and passed to whoever records.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The prefix of every metric name.
pub const PREFIX: &str = "mcp_gateway";

/// Latency buckets in seconds: 1 ms to 5 min (tool calls can be slow).
const LATENCY: [f64; 17] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Size buckets in bytes: 64 B to 16 MiB, ×4.
const SIZES: [f64; 10] = [64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0];
/// `initialize` buckets in seconds: 10 ms to 2 min (npx downloads are slow).
const STARTUP: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 120.0];

/// A label value shared without copying (upstream ids, tool names).
pub type Name = Arc<str>;

mod labels;

pub use self::labels::*;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// One upstream's counters with fixed labels (see
/// [`Metrics::upstream_counters`]).
#[derive(Debug, Clone)]
pub struct UpstreamCounters {
    /// `retry_budget_exhausted`.
    pub budget_exhausted: Counter,
    /// `upstream_restarts`.
    pub restarts: Counter,
    /// `bulkhead_rejections{class="overloaded"}`: the queue was full.
    pub rejected_queue_full: Counter,
    /// `bulkhead_rejections{class="timeout"}`: no slot before the deadline.
    pub rejected_no_slot: Counter,
    /// `health_checks{outcome="ok"}`.
    pub pings_ok: Counter,
    /// `health_checks{outcome="failed"}`.
    pub pings_failed: Counter,
}

/// `version`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A family that is described (`# HELP`, `# TYPE`) even before its first
/// sample, so a scraper and the dashboards test see the whole API from the
/// start.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// The gateway's metrics. Cheap to share: every field is a handle.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Client requests answered, by upstream, method, tool and class.
    pub requests: Family<RequestLabels, Counter>,
    /// Whole-request latency as the client sees it.
    pub request_duration: HistogramFamily<DurationLabels>,
    /// Size of the params forwarded.
    pub request_bytes: HistogramFamily<MethodLabels>,
    /// Size of the reply.
    pub response_bytes: HistogramFamily<MethodLabels>,
    /// Client requests being handled (set at scrape time).
    pub in_flight_requests: Gauge,
    /// Each attempt sent upstream, by class.
    pub attempt_duration: HistogramFamily<ClassLabels>,
    /// Retries, by the class of the attempt that failed.
    pub retries: Family<ClassLabels, Counter>,
    /// Retries refused by the retry budget.
    pub retry_budget_exhausted: Family<UpstreamLabels, Counter>,
    /// Breaker state: 0 closed, 1 half-open, 2 open (set at scrape time).
    pub breaker_state: Family<BreakerLabels, Gauge>,
    /// Breaker transitions, by the state entered.
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    /// Calls holding a bulkhead slot (set at scrape time).
    pub upstream_in_flight: Family<UpstreamLabels, Gauge>,
    /// Calls waiting for a slot (set at scrape time).
    pub upstream_queued: Family<UpstreamLabels, Gauge>,
    /// Calls the bulkhead refused: `overloaded` (queue full) or `timeout`.
    pub bulkhead_rejections: Family<ClassLabels, Counter>,
    /// 1 while the upstream is ready (set at scrape time).
    pub upstream_up: Family<UpstreamLabels, Gauge>,
    /// 1 for the upstream's current state (set at scrape time).
    pub upstream_state: Family<StateLabels, Gauge>,
    /// Supervisor restarts.
    pub upstream_restarts: Family<UpstreamLabels, Counter>,
    /// 1 while the supervisor sees a crash loop (set at scrape time).
    pub upstream_crash_looping: Family<UpstreamLabels, Gauge>,
    /// Connect + `initialize` time, by outcome.
    pub initialize_duration: HistogramFamily<OutcomeLabels>,
    /// Health pings, by outcome.
    pub health_checks: Family<OutcomeLabels, Counter>,
    /// Tools clients see, per upstream (set at scrape time).
    pub tools_exposed: Family<UpstreamLabels, Gauge>,
    /// Catalog rebuilds: `changed` or `unchanged`.
    pub catalog_refreshes: Family<Outcome, Counter>,
    /// How long the catalog task took over each rebuild: build, pin
    /// review, publish and telling the sessions.
    pub catalog_rebuild_duration: Histogram,
    /// Calls to a tool listed from the warm-start cache, by what became of
    /// the wait (`live`, `changed`, `withdrawn`, `timed_out`,
    /// `failed_start`, `overloaded`).
    pub warm_start_calls: Family<Outcome, Counter>,
    /// Loads and writes of the warm-start cache file (`loaded`,
    /// `load_refused`, `saved`, `save_failed`).
    pub catalog_cache_operations: Family<Outcome, Counter>,
    /// Tools listed from the warm-start cache now.
    pub tools_cached: Gauge,
    /// Sessions this replica did not hold, presented by their token: what
    /// became of each (`rebuilt`, `ended`, `expired`, `future`,
    /// `unknown_key`, `forged`, `not_a_token`, `other_principal`,
    /// `unsupported_version`, `bad_capabilities`, `full`).
    pub session_rebuilds: Family<Outcome, Counter>,
    /// Round trips to Redis (`[redis]`): `ok`, `failed`, `timeout`.
    pub redis_requests: Family<Outcome, Counter>,
    /// How long each round trip to Redis took.
    pub redis_request_duration: Histogram,
    /// 1 when the last round trip to Redis succeeded.
    pub redis_up: Gauge,
    /// Decisions made without Redis, by feature (`rules`, `limits`,
    /// `revocation`, `sessions`) and what was done (`refused`, `local`).
    pub redis_fallbacks: Family<FallbackLabels, Counter>,
    /// Config reloads: `applied`, `unchanged` or `refused`.
    pub config_reloads: Family<Outcome, Counter>,
    /// When a reload was last applied (Unix seconds; the start-up load
    /// counts as the first).
    pub config_last_reload_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Open client sessions, by transport.
    pub sessions: Family<TransportLabels, Gauge>,
    /// Open client connections, by listener.
    pub connections: Family<ListenerLabels, Gauge>,
    /// Bytes of client request bodies held now (read, being read, or being
    /// handled).
    pub inflight_request_bytes: Gauge,
    /// Bytes of client `capabilities` kept by open sessions.
    pub client_capabilities_bytes: Gauge,
    /// Audit records: `written`, `dropped` (queue full), `failed`.
    pub audit_records: Family<Outcome, Counter>,
    /// Spans handed to the OTLP exporter: `ok` or `failed` (lost).
    pub trace_exports: Family<Outcome, Counter>,
    /// Notifications to clients, by upstream, method and outcome.
    pub notifications: Family<NotificationLabels, Counter>,
    /// Calls refused by policy, by upstream, tool and reason.
    pub policy_denials: Family<DenialLabels, Counter>,
    /// Clients refused at authentication, by reason.
    pub auth_failures: Family<ReasonLabels, Counter>,
    /// HTTP requests (or connections) refused before they reached routing,
    /// by reason: `header_timeout`, `body_timeout`, `body_too_large`,
    /// `content_type`, `accept`, `host`, `origin`, `authority_mismatch`,
    /// `connections`, `inflight_bytes`, `principal_inflight_bytes`,
    /// `sessions`, `principal_sessions`, `capabilities_too_large`.
    pub http_rejections: Family<ReasonLabels, Counter>,
    /// Client messages refused before routing (docs/design.md D12), by
    /// transport and reason.
    pub client_messages_refused: Family<RefusalLabels, Counter>,
    /// Upstream messages refused (docs/design.md D12), by upstream and reason.
    pub upstream_messages_refused: Family<UpstreamRefusalLabels, Counter>,
    /// Lines on a stdio upstream's stdout that were no JSON-RPC message, by
    /// upstream.
    pub upstream_stdout_noise_lines: Family<UpstreamLabels, Counter>,
    /// Tools whose definition changed since pinned, held until approved.
    pub tools_quarantined: Gauge,
    /// Results over their size cap: `truncated` or `refused`.
    pub results_capped: Family<OutcomeLabels, Counter>,
    /// Exchanges bridged between the protocol eras, by direction and outcome.
    pub bridge_exchanges: Family<BridgeLabels, Counter>,
    /// Bridged exchanges open now, by direction.
    pub bridge_in_flight: Family<DirectionLabels, Gauge>,
    /// Sequence rule hits (the security work fills it).
    pub rule_hits: Family<RuleLabels, Counter>,
    /// Secret values masked in results (the security work fills it).
    pub secrets_masked: Family<UpstreamLabels, Counter>,
    /// Upstream OAuth tokens obtained (or failed to), by grant.
    pub upstream_tokens: Family<TokenLabels, Counter>,
    /// The standard MCP histograms sent over OTLP (`[traces] metrics`;
    /// off by default).
    pub standard: super::standard::Standard,
}

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix(PREFIX);
        let latency: fn() -> Histogram = || Histogram::new(LATENCY);
        let sizes: fn() -> Histogram = || Histogram::new(SIZES);
        let startup: fn() -> Histogram = || Histogram::new(STARTUP);
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            request_bytes: Family::new_with_constructor(sizes),
            response_bytes: Family::new_with_constructor(sizes),
            in_flight_requests: Gauge::default(),
            attempt_duration: Family::new_with_constructor(latency),
            retries: Family::default(),
            retry_budget_exhausted: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            upstream_in_flight: Family::default(),
            upstream_queued: Family::default(),
            bulkhead_rejections: Family::default(),
            upstream_up: Family::default(),
            upstream_state: Family::default(),
            upstream_restarts: Family::default(),
            upstream_crash_looping: Family::default(),
            initialize_duration: Family::new_with_constructor(startup),
            health_checks: Family::default(),
            tools_exposed: Family::default(),
            catalog_refreshes: Family::default(),
            catalog_rebuild_duration: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ]),
            warm_start_calls: Family::default(),
            catalog_cache_operations: Family::default(),
            tools_cached: Gauge::default(),
            session_rebuilds: Family::default(),
            redis_requests: Family::default(),
            redis_request_duration: Histogram::new([
                0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            redis_up: Gauge::default(),
            redis_fallbacks: Family::default(),
            config_reloads: Family::default(),
            config_last_reload_success: Gauge::default(),
            sessions: Family::default(),
            connections: Family::default(),
            inflight_request_bytes: Gauge::default(),
            client_capabilities_bytes: Gauge::default(),
            audit_records: Family::default(),
            trace_exports: Family::default(),
            notifications: Family::default(),
            policy_denials: Family::default(),
            auth_failures: Family::default(),
            http_rejections: Family::default(),
            client_messages_refused: Family::default(),
            upstream_messages_refused: Family::default(),
            upstream_stdout_noise_lines: Family::default(),
            tools_quarantined: Gauge::default(),
            results_capped: Family::default(),
            bridge_exchanges: Family::default(),
            bridge_in_flight: Family::default(),
            rule_hits: Family::default(),
            secrets_masked: Family::default(),
            upstream_tokens: Family::default(),
            standard: super::standard::Standard::disabled(),
            registry: Registry::default(),
        };
        let build: Family<BuildLabels, Gauge> = Family::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        r.register("build_info", "Always 1; `version` is the gateway's version", Listed(build));
        r.register(
            "requests",
            "Client requests answered, by upstream, method, tool and class (ok or the error class)",
            Listed(m.requests.clone()),
        );
        r.register_with_unit(
            "request_duration",
            "Whole-request latency as the client sees it",
            Unit::Seconds,
            Listed(m.request_duration.clone()),
        );
        r.register(
            "request_bytes",
            "Size of the request params forwarded upstream, in bytes",
            Listed(m.request_bytes.clone()),
        );
        r.register(
            "response_bytes",
            "Size of the reply sent to the client, in bytes",
            Listed(m.response_bytes.clone()),
        );
        r.register("in_flight_requests", "Client requests being handled now", Listed(m.in_flight_requests.clone()));
        r.register_with_unit(
            "upstream_attempt_duration",
            "Each attempt sent to an upstream (a retry is another attempt), by class",
            Unit::Seconds,
            Listed(m.attempt_duration.clone()),
        );
        r.register("retries", "Retries made, by the class of the failed attempt", Listed(m.retries.clone()));
        r.register(
            "retry_budget_exhausted",
            "Retries refused because the upstream's retry budget was empty",
            Listed(m.retry_budget_exhausted.clone()),
        );
        r.register(
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open (tool is empty for the upstream's breaker)",
            Listed(m.breaker_state.clone()),
        );
        r.register(
            "breaker_transitions",
            "Circuit breaker transitions, by the state entered",
            Listed(m.breaker_transitions.clone()),
        );
        r.register(
            "upstream_in_flight_calls",
            "Calls holding one of the upstream's bulkhead slots",
            Listed(m.upstream_in_flight.clone()),
        );
        r.register(
            "upstream_queued_calls",
            "Calls waiting for one of the upstream's bulkhead slots",
            Listed(m.upstream_queued.clone()),
        );
        r.register(
            "bulkhead_rejections",
            "Calls refused by the bulkhead: overloaded (queue full) or timeout (no slot before the deadline)",
            Listed(m.bulkhead_rejections.clone()),
        );
        r.register("upstream_up", "1 while the upstream is initialized and serving", Listed(m.upstream_up.clone()));
        r.register(
            "upstream_state",
            "1 for the upstream's current state (starting, ready, down, stopped)",
            Listed(m.upstream_state.clone()),
        );
        r.register(
            "upstream_restarts",
            "Restarts of the upstream's connection or process by its supervisor",
            Listed(m.upstream_restarts.clone()),
        );
        r.register(
            "upstream_crash_looping",
            "1 while the upstream fails to start or dies young repeatedly",
            Listed(m.upstream_crash_looping.clone()),
        );
        r.register_with_unit(
            "upstream_initialize_duration",
            "Connect and initialize time, by outcome",
            Unit::Seconds,
            Listed(m.initialize_duration.clone()),
        );
        r.register(
            "health_checks",
            "Health pings to upstreams, by outcome (ok, failed)",
            Listed(m.health_checks.clone()),
        );
        r.register("tools_exposed", "Tools clients see from the upstream now", Listed(m.tools_exposed.clone()));
        r.register(
            "catalog_refreshes",
            "Rebuilds of the merged catalog, by outcome (changed, unchanged)",
            Listed(m.catalog_refreshes.clone()),
        );
        r.register_with_unit(
            "catalog_rebuild_duration",
            "How long each catalog rebuild took: build, pin review, publish and telling the sessions",
            Unit::Seconds,
            Listed(m.catalog_rebuild_duration.clone()),
        );
        r.register(
            "warm_start_calls",
            "Calls to a tool listed from the warm-start cache, by what the wait for its upstream's first start \
             ended in (live, changed, withdrawn, timed_out, failed_start, overloaded)",
            Listed(m.warm_start_calls.clone()),
        );
        r.register(
            "catalog_cache_operations",
            "Loads and writes of the warm-start cache file, by outcome (loaded, load_refused, saved, save_failed)",
            Listed(m.catalog_cache_operations.clone()),
        );
        r.register(
            "tools_cached",
            "Tools listed from the warm-start cache now (their upstream is on its first start)",
            m.tools_cached.clone(),
        );
        r.register(
            "session_rebuilds",
            "Session ids this replica did not hold, by what became of them: rebuilt from the token, or refused \
             (ended, expired, future, unknown_key, forged, not_a_token, other_principal, unsupported_version, \
             bad_capabilities, full)",
            Listed(m.session_rebuilds.clone()),
        );
        r.register(
            "redis_requests",
            "Round trips to Redis for the state replicas share, by outcome (ok, failed, timeout)",
            Listed(m.redis_requests.clone()),
        );
        r.register_with_unit(
            "redis_request_duration",
            "How long each round trip to Redis took (one per tools/call with rules or limits)",
            Unit::Seconds,
            Listed(m.redis_request_duration.clone()),
        );
        r.register(
            "redis_up",
            "1 when the last round trip to Redis succeeded, 0 when it failed ([redis] configured only)",
            Listed(m.redis_up.clone()),
        );
        r.register(
            "redis_fallbacks",
            "Decisions made without Redis, by feature (rules, limits, revocation, sessions) and outcome \
             (refused: failed closed; local: this replica's own state)",
            Listed(m.redis_fallbacks.clone()),
        );
        r.register(
            "config_reloads",
            "Config reloads, by outcome (applied, unchanged, needs_restart, refused)",
            Listed(m.config_reloads.clone()),
        );
        r.register_with_unit(
            "config_last_reload_success_timestamp",
            "When the config in force was loaded (start-up or the last applied reload), Unix time",
            Unit::Seconds,
            Listed(m.config_last_reload_success.clone()),
        );
        r.register("downstream_sessions", "Open client sessions, by transport", Listed(m.sessions.clone()));
        r.register(
            "http_connections",
            "Open client connections, by listener (main, admin); at most gateway.max_connections each",
            Listed(m.connections.clone()),
        );
        r.register_with_unit(
            "inflight_request",
            "Client request bodies the gateway holds now (read, being read, or being handled); at most \
             gateway.max_inflight_request_bytes",
            Unit::Bytes,
            m.inflight_request_bytes.clone(),
        );
        r.register_with_unit(
            "client_capabilities",
            "Client capabilities kept by open sessions (each at most gateway.max_client_capabilities_bytes)",
            Unit::Bytes,
            m.client_capabilities_bytes.clone(),
        );
        r.register(
            "audit_records",
            "Audit log records, by outcome (written, dropped when the queue is full, failed)",
            Listed(m.audit_records.clone()),
        );
        r.register(
            "trace_spans_exported",
            "Spans sent to the OTLP collector, by outcome (ok, failed: lost)",
            Listed(m.trace_exports.clone()),
        );
        r.register(
            "notifications",
            "Notifications on their way to clients (progress, log messages, list and resource changes), by upstream, \
             method and outcome (sent, dropped: a full queue)",
            Listed(m.notifications.clone()),
        );
        r.register("policy_denials", "Calls refused by policy, by reason", Listed(m.policy_denials.clone()));
        r.register("auth_failures", "Clients refused at authentication, by reason", Listed(m.auth_failures.clone()));
        r.register(
            "http_rejections",
            "HTTP requests or connections refused before routing (time limits, size, media types, Host/Origin), \
             by reason",
            Listed(m.http_rejections.clone()),
        );
        r.register(
            "client_messages_refused",
            "Client messages refused before routing: ambiguous JSON (duplicate member, too deep, number out of \
             range, lone surrogate), duplicate headers, or not JSON-RPC at all, by transport and reason",
            Listed(m.client_messages_refused.clone()),
        );
        r.register(
            "upstream_messages_refused",
            "Upstream messages refused as ambiguous JSON or invalid JSON-RPC, by upstream and reason",
            Listed(m.upstream_messages_refused.clone()),
        );
        r.register(
            "upstream_stdout_noise_lines",
            "Lines a stdio upstream wrote to stdout that were no JSON-RPC message (logs on the wrong stream): \
             skipped, warned once per start, by upstream",
            Listed(m.upstream_stdout_noise_lines.clone()),
        );
        r.register(
            "tools_quarantined",
            "Tools whose definition changed since pinned, held until `mcp-gateway tools approve`",
            m.tools_quarantined.clone(),
        );
        r.register(
            "results_capped",
            "Results over their size cap, truncated or refused",
            Listed(m.results_capped.clone()),
        );
        r.register(
            "bridge_exchanges",
            "Exchanges bridged between 2025 and 2026-07-28 (input-required results and server requests), by direction and outcome",
            Listed(m.bridge_exchanges.clone()),
        );
        r.register("bridge_in_flight", "Bridged exchanges open now, by direction", Listed(m.bridge_in_flight.clone()));
        r.register("rule_hits", "Sequence rule hits, by rule and action", Listed(m.rule_hits.clone()));
        r.register("secrets_masked", "Secret values masked in upstream results", Listed(m.secrets_masked.clone()));
        r.register(
            "upstream_tokens",
            "The gateway's own OAuth tokens for upstreams obtained or failed, by grant (client_credentials, \
             refresh_token, stored)",
            Listed(m.upstream_tokens.clone()),
        );
        Metrics { registry: r, ..m }
    }

    /// The counters of an upstream whose labels are fixed, created at 0
    /// (so alerts that take `increase()` see the first event). The upstream
    /// keeps the handles: an event costs no label lookup, and `/status`
    /// reads the same numbers.
    pub fn upstream_counters(&self, upstream: &Name, breaker: bool) -> UpstreamCounters {
        let u = UpstreamLabels { upstream: upstream.clone() };
        let class =
            |class| self.bulkhead_rejections.get_or_create_owned(&ClassLabels { upstream: upstream.clone(), class });
        let pings =
            |outcome| self.health_checks.get_or_create_owned(&OutcomeLabels { upstream: upstream.clone(), outcome });
        if breaker {
            for state in ["open", "half_open", "closed"] {
                let labels = TransitionLabels { upstream: upstream.clone(), tool: Name::from(""), state };
                let _ = self.breaker_transitions.get_or_create(&labels);
            }
        }
        UpstreamCounters {
            budget_exhausted: self.retry_budget_exhausted.get_or_create_owned(&u),
            restarts: self.upstream_restarts.get_or_create_owned(&u),
            rejected_queue_full: class("overloaded"),
            rejected_no_slot: class("timeout"),
            pings_ok: pings("ok"),
            pings_failed: pings("failed"),
        }
    }

    /// Creates the zero series of the audit log's counters.
    pub fn init_audit(&self) {
        for outcome in ["written", "dropped", "failed"] {
            let _ = self.audit_records.get_or_create(&Outcome { outcome });
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String never fails");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics reference (docs/observability.md) and the registry say
    /// the same: every exported metric is documented, with its type, and
    /// every documented one is exported.
    #[test]
    fn the_metrics_reference_matches_the_registry() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/observability.md")).unwrap();
        let documented: std::collections::BTreeMap<String, String> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| `mcp_gateway_"))
            .map(|rest| {
                let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
                (format!("mcp_gateway_{}", cells[0].trim_end_matches('`')), cells[1].to_owned())
            })
            .collect();
        let exported: std::collections::BTreeMap<String, String> = Metrics::new()
            .encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').unwrap();
                // OpenMetrics names a counter's family without `_total`.
                let name = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
                (name, kind.to_owned())
            })
            .collect();
        assert!(exported.len() >= 30, "{exported:?}");
        let undocumented: Vec<_> = exported.keys().filter(|n| !documented.contains_key(*n)).collect();
        let missing: Vec<_> = documented.keys().filter(|n| !exported.contains_key(*n)).collect();
        assert!(undocumented.is_empty(), "exported but not in docs/observability.md: {undocumented:?}");
        assert!(missing.is_empty(), "documented but not exported: {missing:?}");
        for (name, kind) in &exported {
            assert_eq!(&documented[name], kind, "{name}: the reference says another type");
        }
    }

    #[test]
    fn names_carry_the_prefix_and_suffixes() {
        let m = Metrics::new();
        let up: Name = Arc::from("fs");
        m.requests
            .get_or_create(&RequestLabels {
                upstream: up.clone(),
                method: "tools/call",
                tool: Arc::from("read"),
                class: "ok",
            })
            .inc();
        m.request_duration
            .get_or_create(&DurationLabels { upstream: up, method: "tools/call", tool: Arc::from("read") })
            .observe(0.003);
        let text = m.encode();
        assert!(
            text.contains(
                "mcp_gateway_requests_total{upstream=\"fs\",method=\"tools/call\",tool=\"read\",class=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE mcp_gateway_request_duration_seconds histogram"), "{text}");
        assert!(text.contains("mcp_gateway_request_duration_seconds_bucket{le=\"0.005\",upstream=\"fs\""), "{text}");
        assert!(text.contains("mcp_gateway_build_info{version=\""), "{text}");
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(line.starts_with("# TYPE mcp_gateway_"), "{line}");
        }
    }

    #[test]
    fn client_methods_cannot_mint_labels() {
        assert_eq!(method_label("tools/call"), "tools/call");
        assert_eq!(method_label("tools/call\u{0}x"), "other");
        assert_eq!(method_label("anything/else"), "other");
        // 2026-07-28's own methods.
        assert_eq!(method_label("server/discover"), "server/discover");
        assert_eq!(method_label("subscriptions/listen"), "subscriptions/listen");
    }
}
