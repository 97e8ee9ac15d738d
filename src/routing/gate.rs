//! The security gate (docs/design.md D9, D12): every policy a routed call
//! meets — `[[access]]` grants, pinned definitions, argument checks, rate
//! limits, sequence rules and their histories — behind one [`Gate::check_tool`]
//! that returns a typed decision.
//!
//! The order of the checks is part of the contract (tests pin it): what is
//! hidden answers like what does not exist and costs the same; no refused
//! call spends a rate-limit token or enters a rule history.
//!
//! Architecture Invariant: the gate decides and counts; it does not answer
//! the client or write the request's outcome. Routing turns a [`Refusal`]
//! into the reply and the audit record.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::value::RawValue;

use super::caller::Caller;
use super::catalog::Catalog;
use super::peer::Peer;
use super::upstreams::Upstreams;
use crate::config::{Config, QuarantineMode, ResultCap};
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Checked, CheckedBox};
use crate::security::access::{Access, Grants, Kind};
use crate::security::auth::{Principal, Via};
use crate::security::limits::Limits;
use crate::security::pins::Pins;
use crate::security::rules::{Action, Call as RuleCall, History, RuleSet, Tags};
use crate::security::{DenyReason, Ident};
use crate::shared::Shared;
use crate::sync::Locked;
use crate::telemetry::Telemetry;
use crate::telemetry::audit::{self, Record};
use crate::telemetry::metrics::{FallbackLabels, RuleLabels};
use on_shared::SharedView;

/// Most principals whose call history is kept for principal-scoped rules.
const MAX_PRINCIPAL_HISTORIES: usize = 10_000;

/// How long a history kept in Redis outlives its last call at least (the
/// idle timeout and the rules' longest time window may make it longer): a
/// window of calls has no time bound, and a principal's history in process
/// lasts while the process does.
const HISTORY_TTL: Duration = Duration::from_secs(86_400);

/// How long a `confirm` rule waits for the user.
const CONFIRM_WAIT: Duration = Duration::from_secs(120);

/// The rules in force and every tool's tags under them.
#[derive(Debug)]
struct RulesState {
    set: Arc<RuleSet>,
    tags: HashMap<String, Tags>,
}

/// The tool a call is for, as the catalog knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ToolRef<'a> {
    /// What policy knows it by.
    pub(crate) ident: Ident<'a>,
    /// Its definition changed since it was pinned.
    pub(crate) quarantined: bool,
    /// The `confirm` rule (its [`confirm_token`]) a 2026-07-28 client has
    /// already confirmed this call for, answering an input-required result.
    pub(crate) confirmed: Option<&'a str>,
    /// A 2026-07-28 client's retry continuing its upstream's input-required
    /// exchange: its rate limits and rules counted it on its first leg.
    pub(crate) continued: bool,
}

/// A call the gate lets through, with what the audit record says of it.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    /// Rule hits and confirmations (`rule:<id>:<action>`).
    pub(crate) policy: Vec<String>,
    /// The tool's tags under the rules (when audited).
    pub(crate) tags: Vec<String>,
}

/// A call the gate refuses.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// Which check refused it.
    pub(crate) reason: DenyReason,
    /// What the client is told.
    pub(crate) answer: Answer,
    /// Rule hits before the refusal (`rule:<id>:<action>`).
    pub(crate) policy: Vec<String>,
    /// The tool's tags under the rules (when audited).
    pub(crate) tags: Vec<String>,
}

/// What a refused client is told.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Exactly what an unknown name gets (docs/design.md D12): the caller
    /// may not learn that it exists.
    AsUnknown,
    /// This error, classed `policy`.
    Told(CallError),
    /// A `confirm` rule stopped the call of a 2026-07-28 client, which no
    /// request can ask: the client may confirm it through an
    /// input-required result (the rule's [`confirm_token`], and what to
    /// ask), else `err`.
    Confirm { rule: String, ask: CheckedBox, err: CallError },
}

/// What a reload replaces whole (docs/design.md D11): the policy of the
/// config in force. The gate's state (rate-limit buckets, histories) is
/// kept across reloads.
#[derive(Debug)]
struct Policy {
    /// `[[access]]`, compiled.
    access: Access,
    /// The grants of a request without a session.
    sessionless: Arc<Grants>,
    /// The pin store (`[pinning]`), kept by a reload that keeps its file.
    pins: Option<Arc<Pins>>,
    quarantine: QuarantineMode,
    /// Rate limits and result caps (`[limits]`); a reload moves the
    /// buckets of unchanged rules over.
    limits: Limits,
    /// `session_idle_timeout`: how long shared last-use records live.
    idle: Duration,
    /// `max_sessions_per_principal` in force (all replicas together, with
    /// `[redis]`).
    cap: usize,
}

/// A new config's policy, built and checked, ready to put in force with
/// [`Gate::apply`]: building it is where a reload can still fail.
#[derive(Debug)]
pub(crate) struct Prepared {
    policy: Policy,
    /// `Some`: the rules file changed (to this set, or to none).
    rules: Option<Option<RuleSet>>,
}

/// Why a new config's policy cannot be put in force.
#[derive(Debug, thiserror::Error)]
#[error("[rules] file: {0}")]
pub(crate) struct PrepareError(String);

/// The security gate.
#[derive(Debug)]
pub(crate) struct Gate {
    /// The policy in force (swapped whole by a reload).
    policy: ArcSwap<Policy>,
    /// Sequence rules and each tool's tags under them (`[rules]`).
    rules: ArcSwapOption<RulesState>,
    /// Call histories of principals (principal-scoped rules), bounded.
    principal_histories: Mutex<HashMap<Arc<str>, History>>,
    /// Rule times are counted from here.
    started: tokio::time::Instant,
    telemetry: Telemetry,
    /// The state replicas share (`[redis]`): buckets and histories there,
    /// this replica's own kept beside them for when Redis is down.
    shared: Option<Arc<Shared>>,
}

// === impl Gate ===

impl Gate {
    /// The gate of `config`'s `[[access]]`, `[pinning]`, `[limits]` and
    /// `[rules]`. A rules file that does not load is loud, and no rules
    /// are in force until a good one replaces it.
    pub(crate) fn new(config: &Config, telemetry: Telemetry, started: tokio::time::Instant) -> Self {
        let rules = config.rules.file.as_deref().and_then(|path| match RuleSet::load(path) {
            Ok(set) => Some(Arc::new(RulesState { set: Arc::new(set), tags: HashMap::new() })),
            Err(e) => {
                // Fail closed would block every call; rules are tuned live,
                // so a bad file is loud, and fixed by a reload.
                tracing::error!(error = %e, "Sequence rules not loaded.");
                None
            }
        });
        let shared = config.redis.as_ref().and_then(|r| match Shared::new(r, telemetry.metrics.clone()) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                // The URL was checked when the config loaded; this is the
                // client refusing it. Every call would fall back: be loud.
                tracing::error!(error = %e, "[redis] client not created: state is per replica.");
                None
            }
        });
        if let Some(shared) = &shared {
            shared.watch();
            let m = &telemetry.metrics;
            for feature in ["rules", "limits", "revocation", "sessions"] {
                for outcome in ["refused", "local"] {
                    let _ = m.redis_fallbacks.get_or_create(&FallbackLabels { feature, outcome });
                }
            }
        }
        Self {
            policy: ArcSwap::from_pointee(Policy::new(config, None)),
            rules: ArcSwapOption::new(rules),
            principal_histories: Mutex::default(),
            started,
            telemetry,
            shared,
        }
    }

    /// Builds the policy of `next` (the config replacing `now`), loading
    /// its rules file when it names another one; nothing changes yet.
    pub(crate) fn prepare(&self, now: &Config, next: &Config) -> Result<Prepared, PrepareError> {
        let rules = match (&next.rules.file, now.rules.file == next.rules.file) {
            (_, true) => None,
            (None, false) => Some(None),
            (Some(path), false) => Some(Some(RuleSet::load(path).map_err(|e| PrepareError(e.to_string()))?)),
        };
        let pins = (now.pinning.file == next.pinning.file).then(|| self.policy.load().pins.clone()).flatten();
        Ok(Prepared { policy: Policy::new(next, pins), rules })
    }

    /// Puts a prepared policy in force for every call that starts from
    /// now: the buckets of unchanged rate rules move over. The sessions'
    /// grants are the caller's to recompute ([`Gate::grants_of`]).
    pub(crate) fn apply(&self, prepared: Prepared) {
        let Prepared { policy, rules } = prepared;
        let old = self.policy.swap(Arc::new(policy));
        self.policy.load().limits.take_buckets_from(&old.limits);
        match rules {
            None => {}
            Some(None) => self.rules.store(None),
            Some(Some(set)) => self.load_rules(set),
        }
    }

    /// The grants of `principal` under the policy in force.
    pub(crate) fn grants_of(&self, principal: &Principal) -> Arc<Grants> {
        self.policy.load().access.grants(principal)
    }

    /// The grants of the caller's principal.
    pub(crate) fn grants(&self, caller: &Caller<'_>) -> Arc<Grants> {
        caller.peer.map_or_else(|| self.policy.load().sessionless.clone(), |p| p.grants())
    }

    /// Whether the caller may see and use `ident` (a prompt, a resource,
    /// the gateway's own tool).
    pub(crate) fn allows(&self, caller: &Caller<'_>, kind: Kind, ident: Ident<'_>) -> bool {
        self.grants(caller).allows(kind, ident)
    }

    /// The `[limits.results]` cap of a tool's results.
    pub(crate) fn result_cap(&self, tool: Ident<'_>) -> Option<ResultCap> {
        self.policy.load().limits.result_cap(tool)
    }

    /// Decides a `tools/call` of `tool` (found in the catalog under `name`,
    /// upstream `upstream_id`) with `arguments`; `local` is the working
    /// directory of a stdio upstream (path arguments resolve against it).
    /// In order: access, quarantine, arguments, rate limit, rules; a call
    /// the rules refuse gives its rate-limit token back, and only a call
    /// that goes ahead enters the rule histories.
    pub(crate) async fn check_tool(
        &self,
        caller: &Caller<'_>,
        name: &str,
        tool: ToolRef<'_>,
        upstream_id: &str,
        arguments: Option<Checked<'_>>,
        local: Option<&Path>,
    ) -> Result<Admitted, Refusal> {
        let grants = self.grants(caller);
        let ident = tool.ident;
        let refuse = |reason, answer| Refusal { reason, answer, policy: Vec::new(), tags: Vec::new() };
        if !grants.allows(Kind::Tool, ident) {
            return Err(refuse(DenyReason::Access, Answer::AsUnknown));
        }
        let policy = self.policy.load_full();
        if tool.quarantined {
            return Err(match policy.quarantine {
                QuarantineMode::Hide => refuse(DenyReason::Quarantined, Answer::AsUnknown),
                QuarantineMode::Refuse => {
                    let msg = format!(
                        "{name} is held: its definition changed since it was approved \
                         (an operator must run `mcp-gateway tools approve {}`)",
                        ident.key
                    );
                    refuse(DenyReason::Quarantined, Answer::Told(CallError::protocol(protocol::INVALID_PARAMS, msg)))
                }
            });
        }
        if let Err(e) = grants.check_arguments(ident, arguments, local) {
            let err = CallError::new(ErrorClass::Policy, None, e.to_string());
            let err = CallError { code: protocol::INVALID_PARAMS, ..err };
            return Err(refuse(DenyReason::Argument, Answer::Told(err)));
        }
        // A continuation of a call the gate admitted on its first leg.
        if tool.continued {
            return Ok(Admitted::default());
        }
        if let Some(shared) = &self.shared {
            return self.check_shared(shared, &policy, caller, tool, upstream_id, arguments).await;
        }
        let who = policy.limits.rates().then(|| caller.principal_id());
        if let Some(who) = &who
            && let Err(limited) = policy.limits.check(who, ident, tokio::time::Instant::now())
        {
            return Err(limited_refusal(&limited));
        }
        let ruled = self.apply_rules(tool, upstream_id, arguments.map(Checked::raw), caller, SharedView::None).await;
        if ruled.is_err()
            && let Some(who) = &who
        {
            // A call the rules refuse costs no token either (to the
            // limits in force now, which took the buckets over if a
            // reload came in between).
            self.policy.load().limits.give_back(who, ident);
        }
        ruled
    }

    /// Applies the sequence rules to a call about to be forwarded: counts
    /// and logs every hit, refuses on `block` (and on `confirm`, which asks
    /// the user when the client can be asked), and records a call that
    /// goes ahead in the session's and the principal's histories.
    async fn apply_rules(
        &self,
        tool_ref: ToolRef<'_>,
        upstream_id: &str,
        arguments: Option<&RawValue>,
        caller: &Caller<'_>,
        shared: SharedView,
    ) -> Result<Admitted, Refusal> {
        let mut admitted = Admitted::default();
        let tool = tool_ref.ident;
        let Some(state) = self.rules.load_full() else { return Ok(admitted) };
        let set = &state.set;
        let fallback;
        let tags = match state.tags.get(tool.key) {
            Some(t) => t,
            None => {
                fallback = set.tags_for(tool, upstream_id, None);
                &fallback
            }
        };
        let name = tool.key;
        if self.telemetry.audit.is_some() {
            admitted.tags = tags.names().map(str::to_owned).collect();
        }
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let call = RuleCall { tool, tags, arguments, at_ms };
        // Anonymous clients share one id; their principal-scoped rules look
        // at the session instead of joining unrelated clients' calls.
        let principal = caller.peer.filter(|p| p.principal.via != Via::Anonymous).map(|p| p.principal.identity.clone());
        let mut eval = {
            let empty = History::default();
            let session = caller.peer.map(|p| p.lock_history());
            let principals = self.principal_histories.locked();
            let p = principal.as_ref().and_then(|id| principals.get(id));
            set.evaluate(&call, session.as_deref().unwrap_or(&empty), p)
        };
        match shared {
            SharedView::None => {}
            // Every replica's calls, and this one's own (which hold what
            // went ahead here while Redis was down).
            SharedView::Read { now_ms, session, principal } => {
                let call = RuleCall { at_ms: now_ms, ..call };
                eval.merge_hits(&set.evaluate(&call, &session, principal.as_ref()));
            }
            SharedView::Unreachable => self.rules_unreachable(set, &call, &mut admitted.tags)?,
        }
        for hit in eval.hits() {
            let rule = set.rule(hit.rule);
            let labels = RuleLabels { rule: Arc::from(rule.id()), action: hit.action.as_str() };
            self.telemetry.metrics.rule_hits.get_or_create(&labels).inc();
            admitted.policy.push(format!("rule:{}:{}", rule.id(), hit.action.as_str()));
            match hit.action {
                Action::Shadow => tracing::debug!(rule = rule.id(), tool = name, "Sequence rule hit (shadow)."),
                _ => tracing::warn!(rule = rule.id(), action = hit.action.as_str(), tool = name, "Sequence rule hit."),
            }
        }
        if let Some(hit) = eval.strongest().filter(|h| h.action.stops_call()) {
            let rule = set.rule(hit.rule);
            let confirming = hit.action == Action::Confirm;
            let modern = caller.era == protocol::Era::Modern;
            let token = confirm_token(rule.id(), rule.message());
            let allowed = confirming
                && (tool_ref.confirmed == Some(token.as_str())
                    || (!modern && confirm(caller, name, rule.message()).await));
            if !allowed {
                let msg = format!("Refused by rule `{}`: {}", rule.id(), rule.message());
                let err = CallError::new(ErrorClass::Policy, None, msg);
                let Admitted { policy, tags } = admitted;
                // A confirmation of another rule (or of this one before a
                // reload changed what it asks) asks again.
                let answer = match confirming && modern {
                    true => Answer::Confirm { rule: token, ask: confirm_params(name, rule.message()), err },
                    false => Answer::Told(err),
                };
                return Err(Refusal { reason: DenyReason::Rule, answer, policy, tags });
            }
            admitted.policy.push(format!("rule:{}:confirmed", rule.id()));
        }
        if let Some(p) = caller.peer {
            set.record(&mut p.lock_history(), &eval);
        }
        if let Some(id) = principal {
            let mut principals = self.principal_histories.locked();
            if principals.len() >= MAX_PRINCIPAL_HISTORIES && !principals.contains_key(&id) {
                // Bounded: forget one (its sequences in progress) to make room.
                if let Some(k) = principals.keys().next().cloned() {
                    principals.remove(&k);
                }
            }
            set.record(principals.entry(id).or_insert_with(|| set.new_history()), &eval);
        }
        Ok(admitted)
    }

    /// Puts `set` in force (its tags are computed by the next
    /// [`Gate::retag`]).
    pub(crate) fn load_rules(&self, set: RuleSet) {
        self.rules.store(Some(Arc::new(RulesState { set: Arc::new(set), tags: HashMap::new() })));
    }

    /// Computes every tool's tags under the current rules (once per
    /// catalog or rules change, so a call pays no glob match). Tags always
    /// go with the rule set of the moment: the catalog task and a rules
    /// reload may both retag, and a compare-and-swap keeps the first from
    /// putting back the rule set the second replaced.
    pub(crate) fn retag(&self, catalog: &Catalog, upstreams: &Upstreams) {
        let upstreams = upstreams.now();
        self.rules.rcu(|current| {
            let state = current.as_ref()?;
            let tags = catalog
                .tools()
                .iter()
                .map(|t| {
                    let u = &upstreams[t.upstream];
                    // Only a trusted upstream's annotations count: an
                    // untrusted one could call a destructive tool read-only
                    // to slip past a rule. Untrusted tools get the spec's
                    // defaults.
                    let annotations = t.def.checked().get("annotations").filter(|_| u.spec().trusted);
                    (t.key.clone(), state.set.tags_for(t.ident(), u.id(), annotations.map(Checked::raw)))
                })
                .collect();
            Some(Arc::new(RulesState { set: state.set.clone(), tags }))
        });
    }

    /// Whether the pin store changed on disk (an operator approved a
    /// tool); false without one.
    pub(crate) fn pins_changed(&self) -> bool {
        self.policy.load().pins.as_ref().is_some_and(|p| p.reload_if_changed())
    }

    /// Checks a new catalog against the pin store: first-seen tools are
    /// pinned, changed ones quarantined (counted, logged, audited).
    pub(crate) fn review_pins(&self, next: &mut Catalog, upstreams: &Upstreams) {
        let policy = self.policy.load();
        let Some(pins) = &policy.pins else { return };
        pins.reload_if_changed();
        let upstreams = upstreams.now();
        let tools = next
            .tools()
            .iter()
            .filter(|t| !t.cached)
            .map(|t| (&*t.key, &*t.name, upstreams[t.upstream].id(), t.def.raw()));
        let review = pins.review(tools);
        // A cached definition pins nothing and is listed only as approved:
        // the cache file is not the upstream (routing/warm.rs).
        let unverified: std::collections::HashSet<String> = next
            .tools()
            .iter()
            .filter(|t| t.cached && !pins.verify(&t.key, t.def.raw()))
            .map(|t| t.key.clone())
            .collect();
        if !unverified.is_empty() {
            tracing::info!(
                tools = unverified.len(),
                "Cached tool definitions not listed: not as approved in the pin store (listed once their upstream answers)."
            );
        }
        next.quarantine(&unverified, true);
        next.quarantine(&review.quarantined, policy.quarantine == QuarantineMode::Hide);
        self.telemetry.metrics.tools_quarantined.set(review.quarantined.len() as i64);
        if review.newly_pinned > 0 {
            tracing::info!(tools = review.newly_pinned, "Pinned tool definitions seen for the first time.");
        }
        for (upstream, name) in review.newly_changed {
            tracing::warn!(
                upstream = %upstream,
                tool = %name,
                "A tool's definition changed since it was pinned: quarantined until `mcp-gateway tools approve`."
            );
            if let Some(log) = &self.telemetry.audit {
                log.record(Record {
                    time: audit::Stamp::now(),
                    session: None,
                    principal: None,
                    transport: protocol::Transport::Gateway.as_str(),
                    method: "gateway/tool_changed",
                    name: Some(name),
                    upstream: Some(Arc::from(upstream.as_str())),
                    tool: None,
                    arguments_hmac: None,
                    arguments: None,
                    class: "policy",
                    cause: None,
                    is_error: false,
                    latency_ms: 0.0,
                    attempts: 0,
                    trace_id: None,
                    policy: vec!["pin:quarantined".to_owned()],
                    tags: Vec::new(),
                });
            }
        }
    }
}

// === impl Policy ===

impl Policy {
    /// The policy of `config`; `pins` is the store to keep (a reload that
    /// keeps the file), else the file is opened.
    fn new(config: &Config, pins: Option<Arc<Pins>>) -> Self {
        let access = Access::new(&config.access);
        Policy {
            sessionless: access.grants(&Principal::anonymous()),
            access,
            pins: pins.or_else(|| config.pinning.file.as_deref().map(|p| Arc::new(Pins::open(p)))),
            quarantine: config.pinning.on_change,
            limits: Limits::new(&config.limits),
            idle: config.gateway.session_idle_timeout,
            cap: config.gateway.max_sessions_per_principal,
        }
    }
}

/// The refusal of a call over a rate limit.
fn limited_refusal(limited: &crate::security::limits::Limited) -> Refusal {
    let err = CallError::new(ErrorClass::Policy, None, limited.to_string());
    let err = CallError { retry_after: Some(limited.retry_after), ..err };
    Refusal { reason: DenyReason::RateLimit, answer: Answer::Told(err), policy: Vec::new(), tags: Vec::new() }
}

/// Asks the user to allow a call a `confirm` rule stopped, through
/// elicitation; false when the client cannot be asked, declines, or does
/// not answer in time.
async fn confirm(caller: &Caller<'_>, tool: &str, message: &str) -> bool {
    let Some(peer): Option<&Arc<Peer>> = caller.peer else { return false };
    let params = confirm_params(tool, message);
    if !peer.supports("elicitation/create", Some(params.checked())) {
        return false;
    }
    let Some(answer) = peer.ask("elicitation/create", params.raw(), caller.stream) else { return false };
    let Ok(Ok(reply)) = tokio::time::timeout(CONFIRM_WAIT, answer).await else {
        peer.forget_unheard_asks();
        return false;
    };
    allows(reply.as_ref().map(CheckedBox::checked))
}

/// The elicitation that asks the user to allow a call a `confirm` rule
/// stopped (a 2025 request, or a 2026-07-28 input request).
pub(crate) fn confirm_params(tool: &str, message: &str) -> CheckedBox {
    CheckedBox::from_value(&serde_json::json!({
        "message": format!("{message}\n\nAllow the call to {tool}?"),
        "requestedSchema": {
            "type": "object",
            "properties": { "allow": { "type": "boolean", "title": "Allow this call" } },
            "required": ["allow"],
        },
    }))
}

/// What a 2026-07-28 client's confirmation names: the rule's id and a hash
/// of its message, so a reload that changes what the rule asks makes an
/// earlier yes count for nothing.
pub(crate) fn confirm_token(id: &str, message: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(message.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{id}\0{hex}")
}

/// Whether an elicitation's result allows the call (`accept` with
/// `allow: true`).
pub(crate) fn allows(result: Option<Checked<'_>>) -> bool {
    let Some(r) = result.and_then(Checked::object) else { return false };
    let allow = r.get("content").and_then(|c| c.get("allow")).is_some_and(Checked::is_true);
    r.str("action").as_deref() == Some("accept") && allow
}

mod on_shared;
#[cfg(test)]
mod tests;
