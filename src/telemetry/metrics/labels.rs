//! The label sets of [`Metrics`](super::Metrics), and the functions that
//! turn what a client sent into a bounded label value.

use prometheus_client::encoding::EncodeLabelSet;

use super::Name;
use crate::error::ErrorClass;

/// `upstream`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream id.
    pub upstream: Name,
}

/// `upstream`, `class`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// The upstream id.
    pub upstream: Name,
    /// `ok` or an error class.
    pub class: &'static str,
}

/// `upstream`, `outcome`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The upstream id.
    pub upstream: Name,
    /// `ok`, `error`, `failed`, …
    pub outcome: &'static str,
}

/// `direction`, `outcome`: one bridged exchange between the eras.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BridgeLabels {
    /// `to_modern` (a 2026-07-28 client, a 2025 upstream) or `to_legacy`.
    pub direction: &'static str,
    /// `asked`, `completed`, `timeout`, `refused`, `limited`, …
    pub outcome: &'static str,
}

/// `direction`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `to_modern` or `to_legacy`.
    pub direction: &'static str,
}

/// `upstream`, `method`, `tool`, `class`: one client request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The upstream that served it; empty when the gateway answered.
    pub upstream: Name,
    /// The method, from a fixed list (see [`method_label`]).
    pub method: &'static str,
    /// The upstream's own tool name; empty for other methods.
    pub tool: Name,
    /// `ok` or an error class.
    pub class: &'static str,
}

/// `upstream`, `method`, `tool`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// As in [`RequestLabels`].
    pub upstream: Name,
    /// As in [`RequestLabels`].
    pub method: &'static str,
    /// As in [`RequestLabels`].
    pub tool: Name,
}

/// `upstream`, `method`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// As in [`RequestLabels`].
    pub upstream: Name,
    /// As in [`RequestLabels`].
    pub method: &'static str,
}

/// `upstream`, `method`, `outcome`: a notification on its way to clients.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// The upstream it came from (empty: the gateway's own).
    pub upstream: Name,
    /// From [`notification_label`].
    pub method: &'static str,
    /// `sent`, or `dropped` (a full queue: the client reads too slowly).
    pub outcome: &'static str,
}

/// `upstream`, `tool`: a breaker (tool empty for the upstream's own).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    /// The upstream id.
    pub upstream: Name,
    /// The tool of a per-tool breaker; empty for the upstream's.
    pub tool: Name,
}

/// `upstream`, `tool`, `state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The upstream id.
    pub upstream: Name,
    /// As in [`BreakerLabels`].
    pub tool: Name,
    /// The state entered: `closed`, `half_open`, `open`.
    pub state: &'static str,
}

/// `upstream`, `state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The upstream id.
    pub upstream: Name,
    /// `starting`, `ready`, `down`, `stopped`.
    pub state: &'static str,
}

/// `outcome` alone.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// What happened.
    pub outcome: &'static str,
}

/// `feature`, `outcome`: a decision made without Redis.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// `rules`, `limits`, `revocation` or `sessions`.
    pub feature: &'static str,
    /// `refused` (failed closed) or `local`.
    pub outcome: &'static str,
}

/// `transport`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// `http` or `stdio`.
    pub transport: &'static str,
}

/// `listener`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `main` (`gateway.listen`) or `admin` (`admin.listen`).
    pub listener: &'static str,
}

/// `transport`, `reason`: a client message refused before routing.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `http` or `stdio`.
    pub transport: &'static str,
    /// `duplicate_member`, `case_variant`, `too_deep`,
    /// `number_out_of_range`, `lone_surrogate` (the strict scan), `duplicate_header`, or `json`,
    /// `utf8`, `invalid` (not a JSON-RPC message at all).
    pub reason: &'static str,
}

/// `upstream`, `reason`: an upstream message refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamRefusalLabels {
    /// The upstream id.
    pub upstream: Name,
    /// As in [`RefusalLabels`] (no headers).
    pub reason: &'static str,
}

/// `upstream`, `tool`, `reason` (policy denials).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// The upstream that owns the item (empty: none does).
    pub upstream: Name,
    /// The upstream's own tool name (empty for prompts and resources).
    pub tool: Name,
    /// `access`, `argument`, `rate_limit`, `quarantined`, `rule`,
    /// `result_size`.
    pub reason: &'static str,
}

/// `reason` (client authentication failures, HTTP requests refused).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Authentication: from `AuthError::reason`, or `session_principal` (a
    /// session id presented by another principal). HTTP refusals: a fixed
    /// word of `downstream` (`header_timeout`, `body_timeout`, ...).
    pub reason: &'static str,
}

/// `upstream`, `grant`, `outcome` (the gateway's own upstream tokens).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The upstream id.
    pub upstream: Name,
    /// `client_credentials`, `refresh_token`, or `stored` (read from the
    /// token file after a login or another process's refresh).
    pub grant: &'static str,
    /// `ok`, `error`, or `issuer_changed` (a token dropped because the
    /// upstream named another authorization server, SEP-2352).
    pub outcome: &'static str,
}

/// `rule`, `action` (sequence rules).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The rule's configured name.
    pub rule: Name,
    /// `shadow`, `alert`, `block`, `confirm`.
    pub action: &'static str,
}

/// The `class` label of an outcome: `ok` or the error class.
pub fn class_label(class: Option<ErrorClass>) -> &'static str {
    class.map_or("ok", ErrorClass::as_str)
}

/// The `method` label (and `mcp.method.name` of the standard metrics):
/// known MCP methods of both eras as themselves, anything else `other` (a
/// client must not be able to mint label values).
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 22] = [
        "initialize",
        "server/discover",
        "subscriptions/listen",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
    ];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// The bounded `method` label of a message to a client: a notification, or
/// a server request relayed to it.
pub fn notification_label(method: &str) -> &'static str {
    const KNOWN: [&str; 11] = [
        "sampling/createMessage",
        "elicitation/create",
        "notifications/progress",
        "notifications/message",
        "notifications/resources/updated",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/cancelled",
        "notifications/tasks/status",
        "notifications/elicitation/complete",
    ];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("other")
}
