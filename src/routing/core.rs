//! The components every method family reaches, owned in one place, and the
//! steps they share: refusing by policy, answering "unknown", finding a
//! resource's owner, forwarding upstream and relaying the reply.
//!
//! Method families (`methods/`) take a [`Core`] and one [`Rq`]; they never
//! call each other, and nothing here calls them.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::value::RawValue;

use super::caller::Caller;
use super::catalog;
use super::gate::Gate;
use super::ix::UpstreamIx;
use super::levels::Levels;
use super::outcome::Outcome;
use super::peer::CallRelay;
use super::published::Published;
use super::sessions::Sessions;
use super::subscriptions::Subscriptions;
use super::tasks::Tasks;
use super::upstreams::Upstreams;
use super::warm::Warm;
use crate::config::{Config, ResultCap};
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Checked, CheckedBox, Members, Message, Reply, encode};
use crate::security::access::Kind;
use crate::security::{DenyReason, Ident};
use crate::telemetry::metrics::{DenialLabels, Name, OutcomeLabels};
use crate::telemetry::{Span, Telemetry};
use crate::upstream::{Changes, Relay, Upstream};

mod era;
mod refusals;

pub(crate) use self::era::{era_meta, set_client_capabilities};

/// The gateway's own tool listing the secrets file's names (never values).
pub const LIST_SECRET_NAMES: &str = "gateway__list_secret_names";

/// The gateway's own tool as `tools/list` shows it.
pub(crate) const LIST_SECRET_NAMES_DEF: &str = r#"{"name":"gateway__list_secret_names","description":"Lists the names of the secrets the gateway holds for its upstreams (never their values), so you can tell which credentials are configured.","inputSchema":{"type":"object","properties":{}},"annotations":{"readOnlyHint":true,"openWorldHint":false}}"#;

/// The components of the gateway, each owning its state.
#[derive(Debug)]
pub(crate) struct Core {
    /// The config in force: swapped whole by a reload, read once per use
    /// (never held across an `.await`).
    config: ArcSwap<Config>,
    /// Masks secret values in what reaches clients: the secrets of the
    /// config in force and every value a reload replaced while upstreams
    /// may still use it (until a restart).
    mask: ArcSwap<crate::config::Redactor>,
    /// The configured upstreams and their per-session and per-principal
    /// connections.
    pub(crate) upstreams: Upstreams,
    /// The catalog clients see now.
    pub(crate) published: Published,
    /// Every upstream's last good tool list (warm starts).
    pub(crate) warm: Warm,
    /// Every policy a routed call meets.
    pub(crate) gate: Gate,
    /// Client sessions.
    pub(crate) sessions: Sessions,
    /// Resource subscriptions.
    pub(crate) subscriptions: Subscriptions,
    /// The log level upstreams were told.
    pub(crate) levels: Levels,
    /// Which session owns which upstream task.
    pub(crate) tasks: Tasks,
    /// Exchanges bridged between the protocol eras.
    pub(crate) bridges: super::bridge::Bridges,
    /// Metrics, traces and the audit log.
    pub(crate) telemetry: Telemetry,
    /// Upstream state and list changes (what the catalog task waits on).
    pub(crate) changes: Arc<Changes>,
    /// The empty label value (requests the gateway answers itself).
    pub(crate) no_label: Name,
    /// The last refusals by policy (`/status`).
    pub(crate) refusals: refusals::Refusals,
    /// Cancelled when the gateway shuts down (background work stops).
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// Cancelled when the gateway starts to drain (and at shutdown): what
    /// waits for an upstream's first start stops waiting.
    pub(crate) draining: tokio_util::sync::CancellationToken,
    /// What starting an upstream takes, for those a reload adds.
    http: reqwest::Client,
    notes: tokio::sync::mpsc::Sender<crate::upstream::Note>,
}

/// An upstream's reply to a forwarded request, and its result with the
/// upstream's `requestState` wrapped for a 2026-07-28 client, when it is an
/// input-required result that has one (to answer instead).
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub(crate) reply: Message,
    pub(crate) wrapped: Option<Box<RawValue>>,
}

/// One request as a method family sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rq<'a> {
    /// Its JSON-RPC id (a request always has one: [`protocol::Request`]).
    pub(crate) id: &'a RawValue,
    /// Its params, scanned.
    pub(crate) params: Option<Checked<'a>>,
    /// Who sent it.
    pub(crate) caller: &'a Caller<'a>,
    /// The request's span.
    pub(crate) span: &'a Span,
}

// === impl Core ===

impl Core {
    /// The components over `config`, every upstream started (in the
    /// background: nothing here waits for one). The background tasks
    /// (`refresh`, `notes`) are the caller's to spawn.
    pub(crate) fn start(
        config: Config,
        telemetry: Telemetry,
        http: &reqwest::Client,
        notes: &tokio::sync::mpsc::Sender<crate::upstream::Note>,
    ) -> Arc<Core> {
        let changes = Arc::new(Changes::default());
        let bounds =
            crate::upstream::Bounds { max_bytes: config.gateway.max_message_bytes, json: config.json_limits() };
        let list = config
            .upstreams
            .iter()
            .map(|spec| {
                let metrics = telemetry.metrics.clone();
                let (redactor, changes) = (config.redactor.clone(), changes.clone());
                Upstream::start(spec.clone(), bounds, redactor, changes, http.clone(), metrics, notes.clone())
            })
            .collect();
        let upstreams = Upstreams::new(list);
        let published = Published::new(config.gateway.startup_list_wait);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (warm, loaded) = Warm::load(&config);
        // Every outcome exported from the start, at 0: a rate over a
        // series that appears only with its first call reads as no data.
        let m = &telemetry.metrics;
        for outcome in ["live", "changed", "withdrawn", "timed_out", "failed_start", "overloaded"] {
            let _ = m.warm_start_calls.get_or_create(&crate::telemetry::metrics::Outcome { outcome });
        }
        for direction in ["to_modern", "to_legacy"] {
            let labels = crate::telemetry::metrics::DirectionLabels { direction };
            let _ = m.bridge_in_flight.get_or_create(&labels);
            for outcome in ["asked", "completed", "timeout", "limited", "other_replica"] {
                let _ =
                    m.bridge_exchanges.get_or_create(&crate::telemetry::metrics::BridgeLabels { direction, outcome });
            }
        }
        for outcome in ["loaded", "load_refused", "saved", "save_failed"] {
            let _ = m.catalog_cache_operations.get_or_create(&crate::telemetry::metrics::Outcome { outcome });
        }
        let counted = |outcome| {
            telemetry
                .metrics
                .catalog_cache_operations
                .get_or_create(&crate::telemetry::metrics::Outcome { outcome })
                .inc()
        };
        match loaded {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    upstreams = n,
                    "Warm start: listing the last good tools of upstreams until they are ready."
                );
                counted("loaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "The warm-start cache is refused; upstreams are listed once ready.");
                counted("load_refused");
            }
        }
        Arc::new(Core {
            gate: Gate::new(&config, telemetry.clone(), published.started()),
            subscriptions: Subscriptions::new(),
            sessions: Sessions::default(),
            levels: Levels::default(),
            tasks: Tasks::default(),
            bridges: super::bridge::Bridges::new(
                config.session_keys.as_ref().map(|k| k.current.bytes()),
                telemetry.metrics.clone(),
            ),
            no_label: Name::from(""),
            refusals: Default::default(),
            upstreams,
            published,
            warm,
            telemetry,
            changes,
            mask: ArcSwap::from_pointee(config.redactor.clone()),
            http: http.clone(),
            notes: notes.clone(),
            draining: shutdown.child_token(),
            shutdown,
            config: ArcSwap::from_pointee(config),
        })
    }

    /// The upstreams that hold the first lists: their first start has not
    /// ended, and the catalog shows no tools of theirs from the warm-start
    /// cache (not merely has none: a pin store may hide them all, and then
    /// the first list waits for the live ones).
    pub(crate) fn first_starts_unlisted(&self) -> Vec<Arc<Upstream>> {
        let warm = self.config().gateway.warm_start;
        self.upstreams.all().into_iter().filter(|u| !(u.has_settled() || (warm && self.warm.shown(u.id())))).collect()
    }

    /// The config in force now.
    pub(crate) fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Starts upstream `spec` under the config in force (in the
    /// background: nothing here waits for it).
    pub(crate) fn start_upstream(&self, spec: crate::config::UpstreamSpec) -> Arc<Upstream> {
        let config = self.config();
        let bounds =
            crate::upstream::Bounds { max_bytes: config.gateway.max_message_bytes, json: config.json_limits() };
        let redactor = (**self.mask()).clone();
        let metrics = self.telemetry.metrics.clone();
        Upstream::start(spec, bounds, redactor, self.changes.clone(), self.http.clone(), metrics, self.notes.clone())
    }

    /// The mask of secret values in force now.
    pub(crate) fn mask(&self) -> arc_swap::Guard<Arc<crate::config::Redactor>> {
        self.mask.load()
    }

    /// Puts `mask` in force for every reply from now.
    pub(crate) fn set_mask(&self, mask: crate::config::Redactor) {
        self.mask.store(Arc::new(mask));
    }

    /// Puts `config` in force for every request that starts from now.
    pub(crate) fn set_config(&self, config: Arc<Config>) {
        self.config.store(config);
    }

    /// Whether `gateway__list_secret_names` is on and the caller may use it.
    pub(crate) fn builtin_listed(&self, caller: &Caller<'_>) -> bool {
        self.config().gateway.list_secret_names && self.gate.allows(caller, Kind::Tool, Ident::plain(LIST_SECRET_NAMES))
    }

    /// Checks `[[access]]` for a prompt or resource: a denied one is
    /// answered like an unknown one (`unknown`), and counted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn permit(
        &self,
        caller: &Caller<'_>,
        kind: Kind,
        name: &str,
        ident: Ident<'_>,
        upstream: UpstreamIx,
        out: &mut Outcome,
        unknown: impl FnOnce() -> CallError,
    ) -> Result<(), CallError> {
        if self.gate.allows(caller, kind, ident) {
            return Ok(());
        }
        out.name = Some(name.to_owned());
        Err(self.hide(caller, upstream, None, DenyReason::Access, out, unknown()))
    }

    /// A refusal by policy the client is told of: `err` (what the client
    /// sees) classed `policy`, counted in
    /// `mcp_gateway_policy_denials_total`, logged and noted for the audit
    /// record.
    pub(crate) fn deny(
        &self,
        caller: &Caller<'_>,
        upstream: UpstreamIx,
        tool: Option<&Arc<str>>,
        reason: DenyReason,
        out: &mut Outcome,
        err: CallError,
    ) -> CallError {
        let err = self.hide(caller, upstream, tool, reason, out, err);
        CallError { class: ErrorClass::Policy, ..err }
    }

    /// A refusal by policy of something the caller may not know exists
    /// (docs/design.md D12): the client gets `err`, the very answer an
    /// unknown name gets (class `protocol`, nothing that tells them apart);
    /// the metrics, the log and the audit record say `policy`.
    pub(crate) fn hide(
        &self,
        caller: &Caller<'_>,
        upstream: UpstreamIx,
        tool: Option<&Arc<str>>,
        reason: DenyReason,
        out: &mut Outcome,
        err: CallError,
    ) -> CallError {
        let labels = DenialLabels {
            upstream: self.upstreams.get(upstream).label(),
            tool: tool.cloned().unwrap_or_else(|| self.no_label.clone()),
            reason: reason.as_str(),
        };
        self.telemetry.metrics.policy_denials.get_or_create(&labels).inc();
        let principal = caller.peer.map_or("anonymous", |p| &*p.principal.identity);
        let name = protocol::echo(out.name.as_deref().unwrap_or(""));
        tracing::info!(principal, reason = reason.as_str(), name = %name, "Refused by policy.");
        self.refusals.note(principal, &labels.upstream, &name, reason.as_str(), &out.policy);
        out.upstream = Some(labels.upstream);
        out.tool = tool.cloned();
        out.class = Some(ErrorClass::Policy);
        out.policy.push(format!("{}:denied", reason.as_str()));
        err
    }

    /// The error of a resource nobody serves.
    pub(crate) fn unknown_resource(&self, uri: &str) -> CallError {
        CallError::protocol(protocol::RESOURCE_NOT_FOUND, format!("Resource not found: {}", protocol::echo(uri)))
    }

    /// The answer to a tool or prompt that does not exist, or that the
    /// caller may not see (the same answer). It names what is down only to
    /// a caller who may know: every upstream's state to one whom nothing is
    /// hidden, the state of the name's own upstream to one who may use that
    /// name; to anyone else the bare "Unknown …", so a hidden upstream is
    /// not revealed by its outages.
    pub(crate) fn unknown(&self, kind: Kind, name: &str, caller: &Caller<'_>) -> CallError {
        let grants = self.gate.grants(caller);
        let may_know = grants.allows(kind, Ident::plain(name));
        if may_know
            && let Some((ns, _)) = name.split_once(catalog::SEPARATOR)
            && let Some(i) = self.upstreams.find(ns)
            && let Err(e) = self.upstreams.ready(i)
        {
            return e;
        }
        let down = match grants.is_open() {
            true => self.upstreams.not_serving(),
            false => Vec::new(),
        };
        let what = if kind == Kind::Prompt { "prompt" } else { "tool" };
        let name = protocol::echo(name);
        let msg = if down.is_empty() {
            format!("Unknown {what}: {name}")
        } else {
            format!("Unknown {what}: {name} (not serving right now: {})", down.join(", "))
        };
        CallError::protocol(protocol::INVALID_PARAMS, msg)
    }

    /// Routes a resource URI: a namespaced one to its upstream; a bare one
    /// to the upstream that lists it, or whose template matches it, or to
    /// the only unprefixed upstream serving resources. Never guesses among
    /// several.
    pub(crate) fn resource_owner(&self, uri: &str) -> Result<(UpstreamIx, String), CallError> {
        let ups = self.upstreams.now();
        if let Some((ns, original)) = catalog::split_uri(uri)
            && let Some(i) = ups.find(ns)
            && ups[i].spec().prefix
        {
            // Not checked for readiness here: access first, so a hidden
            // upstream's outage tells nothing (the call says it, if allowed).
            return Ok((i, original));
        }
        let catalog = self.published.load();
        if let Some(r) = catalog.resource(uri) {
            return Ok((r.upstream, r.original.to_string()));
        }
        let unprefixed = |i: UpstreamIx| !ups[i].spec().prefix;
        if let Some(i) = catalog.template(uri).map(|t| t.upstream).or_else(|| catalog.template_owner(uri, unprefixed)) {
            return Ok((i, uri.to_owned()));
        }
        let serving: Vec<UpstreamIx> = ups
            .iter()
            .filter(|&(i, u)| {
                unprefixed(i)
                    && matches!(&*u.state(), crate::upstream::State::Ready(r) if r.has_capability("resources"))
            })
            .map(|(i, _)| i)
            .collect();
        if let [only] = serving[..] {
            return Ok((only, uri.to_owned()));
        }
        Err(self.unknown_resource(uri))
    }

    /// Forwards a routed request and relays its reply as it came.
    pub(crate) async fn forward(
        &self,
        rq: &Rq<'_>,
        method: &'static str,
        upstream: UpstreamIx,
        params: Members<'_>,
        out: &mut Outcome,
    ) -> Result<Reply, CallError> {
        let fwd = self.forward_raw(rq, method, upstream, params, out, None).await?;
        Ok(match fwd.wrapped {
            Some(result) => encode::result(rq.id, &result).into(),
            None => self.reply_owned(rq.id, upstream, fwd.reply),
        })
    }

    /// Forwards a routed request; returns the upstream's reply message.
    pub(crate) async fn forward_raw(
        &self,
        rq: &Rq<'_>,
        method: &'static str,
        i: UpstreamIx,
        mut obj: Members<'_>,
        out: &mut Outcome,
        timeout: Option<Duration>,
    ) -> Result<Forwarded, CallError> {
        let upstream = self.upstreams.instance(i, rq.caller.peer).await;
        out.upstream = Some(upstream.label());
        let modern = matches!(&*upstream.state(), crate::upstream::State::Ready(r) if r.era() == protocol::Era::Modern);
        era_meta(&mut obj, rq.caller.era, modern);
        // A 2025 client, a 2026-07-28 upstream: what the client can answer
        // is declared, and an input-required result asked of it.
        let client = match (modern, rq.caller.era, rq.caller.peer) {
            (true, protocol::Era::Legacy, Some(peer)) => {
                set_client_capabilities(&mut obj, &peer.relayable(), !upstream.spec().roots.is_empty());
                Some(peer)
            }
            _ => None,
        };
        // Both 2026-07-28: the upstream's state travels wrapped for the caller.
        let wrap = (modern && rq.caller.era == protocol::Era::Modern).then(|| {
            let target = obj.str("name").or_else(|| obj.str("uri")).unwrap_or_default();
            let args = obj.get("arguments").map_or(&b"null"[..], |a| a.text().as_bytes());
            super::bridge::through::binding(&rq.caller.principal_id(), upstream.id(), method, &target, args)
        });
        if let Some(b) = &wrap {
            self.bridges.unwrap_state(&mut obj, b)?;
        }
        let (progress, relay) = related(&mut obj, rq.caller, &upstream);
        let call = super::bridge::Call {
            method,
            timeout,
            params: obj.to_checked(),
            tool: None,
            hints: crate::upstream::ToolHints::default(),
            progress,
            relay,
            span: rq.span.clone(),
            mirrored: Vec::new(),
            upstream: upstream.clone(),
        };
        let spec = upstream.spec();
        let client =
            client.map(|peer| super::bridge::to_legacy::Client { peer, stream: rq.caller.stream, roots: &spec.roots });
        let limits = if client.is_some() { self.config().bridge.clone() } else { Default::default() };
        // The request's span is the pipeline's to end.
        // The bridge's future only where it may be needed (boxed: it would
        // otherwise grow every forwarded request's).
        let called = match client {
            Some(client) => Box::pin(super::bridge::to_legacy::send(&call, Some(client), &limits, &self.bridges)).await,
            None => call.send(Some(call.params.checked())).await,
        };
        out.class = called.class;
        out.attempts = called.attempts;
        let reply = called.result?;
        let wrapped = match &wrap {
            Some(b) => self.bridges.wrap_state(&reply, b, self.config().bridge.answer_timeout)?,
            None => None,
        };
        Ok(Forwarded { reply, wrapped })
    }

    /// The reply to the client: the upstream's result (after `expose`,
    /// which may rewrite it) or its error, relayed.
    pub(crate) fn reply_with(
        &self,
        id: &RawValue,
        i: UpstreamIx,
        reply: &Message,
        expose: impl Fn(UpstreamIx, &Message) -> Option<Box<RawValue>>,
    ) -> String {
        match (reply.result_raw(), reply.error()) {
            (Some(r), _) => match expose(i, reply) {
                Some(r) => encode::result(id, &r),
                None => encode::forward(id, r),
            },
            (None, Some(e)) => crate::error::relay_error(id, e, self.upstreams.get(i).id()),
            (None, None) => unreachable!("a response has a result or an error"),
        }
    }

    /// [`Core::reply_with`] of a reply relayed as it came, taking it: a
    /// large result is sent from the upstream's message, not copied
    /// ([`Reply::forward`]).
    pub(crate) fn reply_owned(&self, id: &RawValue, i: UpstreamIx, reply: Message) -> Reply {
        if reply.result_raw().is_none() {
            return self.reply_with(id, i, &reply, |_, _| None).into();
        }
        Reply::forward(id, reply).expect("a reply with a result")
    }

    /// A tool's result over its `[limits.results]` cap: truncated (counted,
    /// logged, audited) or refused. `None`: it fits, or there is no cap.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn capped(
        &self,
        id: &RawValue,
        cap: Option<ResultCap>,
        reply: &Message,
        i: UpstreamIx,
        tool: Option<&Arc<str>>,
        caller: &Caller<'_>,
        out: &mut Outcome,
    ) -> Option<Result<String, CallError>> {
        let (cap, result) = (cap?, reply.result_raw()?);
        match self.cap_raw(cap, result, i, tool, caller, out) {
            Ok(None) => None,
            Ok(Some(cut)) => Some(Ok(encode::result(id, &cut))),
            Err(e) => Some(Err(e)),
        }
    }

    /// [`Core::capped`] of a tool result `result` wherever it is (a
    /// 2026-07-28 task inlines it in `tasks/get`): `None` when it fits, the
    /// cut result, or the refusal (counted, logged, noted).
    pub(crate) fn cap_raw(
        &self,
        cap: ResultCap,
        result: protocol::Forward<'_>,
        i: UpstreamIx,
        tool: Option<&Arc<str>>,
        caller: &Caller<'_>,
        out: &mut Outcome,
    ) -> Result<Option<Box<RawValue>>, CallError> {
        use crate::security::limits::{Capped, cap_result};
        let labels = |outcome| OutcomeLabels { upstream: self.upstreams.get(i).label(), outcome };
        let name = out.name.clone().unwrap_or_default();
        match cap_result(result.text(), cap, &name, &self.config().json_limits()) {
            Capped::Fits => Ok(None),
            Capped::Truncated(cut) => {
                self.telemetry.metrics.results_capped.get_or_create(&labels("truncated")).inc();
                tracing::info!(tool = %protocol::echo(&name), bytes = result.text().len(), "Truncated a result over its cap.");
                out.policy.push("result_size:truncated".to_owned());
                Ok(Some(cut))
            }
            Capped::Refused(message) => {
                self.telemetry.metrics.results_capped.get_or_create(&labels("refused")).inc();
                let err = CallError::new(ErrorClass::Policy, None, message);
                Err(self.deny(caller, i, tool, DenyReason::ResultSize, out, err))
            }
        }
    }
}

/// Gives the call a gateway-unique progress token (so progress from a
/// shared connection is never confused between clients) and, when the
/// client can hear them, a relay that takes progress (with the client's
/// own token) and related notifications back to the client.
pub(crate) fn related(
    params: &mut Members<'_>,
    caller: &Caller<'_>,
    upstream: &Upstream,
) -> (Option<String>, Option<Arc<dyn Relay>>) {
    let client_token = rewrite_progress_token(params);
    let Some(peer) = caller.peer else { return (client_token.map(|(ours, _)| ours), None) };
    // Only an HTTP upstream's response stream carries other messages
    // about one call.
    let network = matches!(upstream.spec().transport.network(), "tcp");
    if client_token.is_none() && !network {
        return (None, None);
    }
    let (ours, theirs) = client_token.unzip();
    let relay: Arc<dyn Relay> =
        Arc::new(CallRelay::new(peer.clone(), caller.stream.cloned(), theirs, upstream.label()));
    (ours, Some(relay))
}

/// Replaces a client's `_meta.progressToken` with one unique in the
/// gateway, so progress from a shared upstream connection is never
/// confused between clients. Returns ours and theirs (raw JSON).
fn rewrite_progress_token(params: &mut Members<'_>) -> Option<(String, CheckedBox)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let (meta, theirs, token) = {
        let mut meta = params.get("_meta")?.object()?;
        let theirs = meta.get("progressToken")?.to_box();
        // Made only when the client asked for progress (most calls do not).
        let token = format!("mcpgw-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        meta.set_str("progressToken", &token);
        (meta.to_checked(), theirs, token)
    };
    params.set("_meta", meta);
    Some((serde_json::to_string(&token).expect("a string always serializes"), theirs))
}

#[cfg(test)]
mod tests;
