//! Each section's `validate()`, one bad value per check: the error names
//! the key within the section and says what loading has always said.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;

use super::super::*;

/// A section from its TOML text (its keys, without a header).
fn parse<T: DeserializeOwned>(toml: &str) -> T {
    toml::from_str(toml).unwrap_or_else(|e| panic!("{toml:?}: {e}"))
}

/// `want` exactly, or (ending in `…`) as the start, e.g. before globset's
/// own words.
fn check(toml: &str, got: Result<(), ConfigError>, want: &str) {
    let got = got.expect_err(toml).to_string();
    match want.strip_suffix('…') {
        Some(start) => assert!(got.starts_with(start), "{toml:?}: {got:?} does not start with {start:?}"),
        None => assert_eq!(got, want, "{toml:?}"),
    }
}

/// Every case refused with its message, and the empty section accepted.
fn cases<T: DeserializeOwned>(valid: &str, validate: impl Fn(&T) -> Result<(), ConfigError>, cases: &[(&str, &str)]) {
    validate(&parse(valid)).unwrap_or_else(|e| panic!("{valid:?} is valid: {e}"));
    for (toml, want) in cases {
        check(toml, validate(&parse(&format!("{valid}\n{toml}"))), want);
    }
}

#[test]
fn gateway() {
    cases::<GatewaySection>(
        "",
        GatewaySection::validate,
        &[
            ("max_message_bytes = 1023", "max_message_bytes: must be at least 1024"),
            ("max_sessions = 0", "max_sessions: must be at least 1"),
            ("max_sessions_per_principal = 0", "max_sessions_per_principal: must be at least 1"),
            ("max_client_capabilities_bytes = 255", "max_client_capabilities_bytes: must be at least 256"),
            ("max_connections = 0", "max_connections: must be at least 1"),
            ("connection_idle_timeout = \"999ms\"", "connection_idle_timeout: must be at least 1s"),
            (
                "max_message_bytes = 2048\nmax_inflight_request_bytes_per_principal = 2047",
                "max_inflight_request_bytes_per_principal: must be at least max_message_bytes (2048)",
            ),
            (
                "max_inflight_request_bytes = 67108863",
                "max_inflight_request_bytes: must be at least max_inflight_request_bytes_per_principal",
            ),
            ("max_json_depth = 7", "max_json_depth: must be between 8 and 1024"),
            ("max_json_depth = 1025", "max_json_depth: must be between 8 and 1024"),
            ("max_tool_name_length = 15", "max_tool_name_length: must be between 16 and 1024"),
            ("log_level = \"info,[\"", "log_level: not a valid filter: …"),
            ("drain_delay = \"301s\"", "drain_delay: must be at most 5m"),
        ],
    );
}

#[test]
fn redis() {
    cases::<RedisSection>(
        "url = \"redis://127.0.0.1:6379/0\"",
        RedisSection::validate,
        &[
            ("timeout = \"0s\"", "timeout: must be between 1ms and 10s (every call may wait this long)"),
            ("timeout = \"11s\"", "timeout: must be between 1ms and 10s (every call may wait this long)"),
            ("key_prefix = \"a b\"", "key_prefix: at most 64 characters, no spaces or control characters"),
            ("key_prefix = \"a\\nb\"", "key_prefix: at most 64 characters, no spaces or control characters"),
            (
                &format!("key_prefix = \"{}\"", "x".repeat(65)),
                "key_prefix: at most 64 characters, no spaces or control characters",
            ),
        ],
    );
    let r: RedisSection = parse("url = \"redis://h/0\"");
    assert_eq!(r.key_prefix, "mcp-gateway:");
    assert_eq!(r.timeout, std::time::Duration::from_millis(250));
    // The defaults of issue 19: rules closed, limits and revocation local.
    assert_eq!(
        r.on_unreachable,
        OnUnreachable { rules: Fallback::Closed, limits: Fallback::Local, revocation: Fallback::Local }
    );
    let r: RedisSection =
        parse("url = \"redis://h/0\"\non_unreachable = { rules = \"local\", revocation = \"closed\" }");
    assert_eq!(r.on_unreachable.rules, Fallback::Local);
    assert_eq!(r.on_unreachable.revocation, Fallback::Closed);
    assert_eq!(r.on_unreachable.limits, Fallback::Local);
    assert!(toml::from_str::<RedisSection>("url = \"redis://h/0\"\non_unreachable = { rules = \"open\" }").is_err());
    assert!(toml::from_str::<RedisSection>("url = \"redis://h/0\"\ncluster = true").is_err());
}

#[test]
fn traces_and_audit() {
    cases::<TracesSection>(
        "",
        TracesSection::validate,
        &[
            ("endpoint = \"localhost:4318\"", "endpoint: must be an absolute http:// or https:// URL"),
            ("sample_ratio = 1.5", "sample_ratio: must be between 0 and 1"),
            ("service_name = \" \"", "service_name: must not be empty"),
        ],
    );
    cases::<AuditSection>(
        "",
        AuditSection::validate,
        &[
            ("max_file_bytes = 1023", "max_file_bytes: must be at least 1024"),
            ("queue = 0", "queue: must be at least 1"),
        ],
    );
}

#[test]
fn upstream() {
    let refused = [
        ("", "missing `command` (stdio) or `url` (http or sse)"),
        ("command = \"x\"\nurl = \"http://h\"", "set either `command` (stdio) or `url` (http), not both"),
        ("transport = \"stdio\"\ncommand = \" \"", "command: a stdio upstream needs a non-empty `command`"),
        (
            "command = \"x\"\ntransport = \"stdio\"\nheaders = { a = \"b\" }",
            "url: `url` and `headers` are for http and sse upstreams",
        ),
        ("transport = \"sse\"\ncommand = \"x\"", "url: an http or sse upstream needs `url`"),
        ("url = \"http://h\"\nargs = [\"a\"]", "command: `command`, `args` and `env` are for stdio upstreams"),
        (
            "command = \"x\"\noauth = { grant = \"authorization_code\" }",
            "oauth: `oauth` is for http (Streamable HTTP) upstreams",
        ),
        (
            "url = \"http://h\"\noauth = { grant = \"authorization_code\", client_id = \"\" }",
            "oauth.client_id: must not be empty",
        ),
        ("command = \"x\"\ntools = { deny = [\"[\"] }", "tools: invalid glob `[`: …"),
        ("command = \"x\"\nrestart_max_delay = \"499ms\"", "restart_max_delay: must be at least 500ms"),
        ("command = \"x\"\nstartup_timeout = \"0s\"", "startup_timeout: must be greater than zero"),
        ("command = \"x\"\nrequest_timeout = \"0s\"", "request_timeout: must be greater than zero"),
        ("command = \"x\"\nstable_after = \"0s\"", "stable_after: must be greater than zero"),
        ("command = \"x\"\ntool_timeouts = { \"[\" = \"5s\" }", "tool_timeouts: invalid glob `[`: …"),
        ("command = \"x\"\ntool_timeouts = { \"a\" = \"0s\" }", "tool_timeouts: `a`: must be greater than zero"),
        (
            "command = \"x\"\ntool_timeouts = { \"a\" = \"15m\" }\nmax_request_timeout = \"10m\"",
            "max_request_timeout: must be at least the longest request or tool timeout (900s)",
        ),
        ("command = \"x\"\nidempotent_tools = [\"[\"]", "idempotent_tools: invalid glob `[`: …"),
        ("command = \"x\"\nmax_concurrency = 0", "max_concurrency: must be at least 1"),
        ("command = \"x\"\nroots = [\"/srv\"]", "roots: \"/srv\" is not a file:// URI (roots are file:// URIs)"),
        ("command = \"x\"\nretry = { attempts = 0 }", "retry.attempts: must be at least 1"),
        ("command = \"x\"\nbreaker = { window = 0 }", "breaker.window: must be between 1 and 10000"),
        ("command = \"x\"\nhealth = { timeout = \"0s\" }", "health.timeout: must be greater than zero"),
    ];
    parse::<UpstreamSection>("command = \"x\"").validate().unwrap();
    parse::<UpstreamSection>("url = \"http://h\"\noauth = { grant = \"authorization_code\" }").validate().unwrap();
    for (toml, want) in refused {
        check(toml, parse::<UpstreamSection>(toml).validate(), want);
    }
}

#[test]
fn retry_breaker_and_health() {
    cases::<RetrySection>(
        "",
        RetrySection::validate,
        &[
            ("attempts = 0", "attempts: must be at least 1"),
            ("initial_delay = \"0s\"", "initial_delay: must be greater than zero"),
            ("max_delay = \"99ms\"", "max_delay: must be at least initial_delay"),
            ("budget_ratio = 1.5", "budget_ratio: must be between 0 and 1"),
            ("budget_min_per_second = -1.0", "budget_min_per_second: must be zero or more"),
            ("budget_min_per_second = nan", "budget_min_per_second: must be zero or more"),
        ],
    );
    cases::<BreakerSection>(
        "",
        BreakerSection::validate,
        &[
            ("consecutive_failures = 0", "consecutive_failures: must be at least 1"),
            ("failure_rate = 0.0", "failure_rate: must be above 0 and at most 1"),
            ("failure_rate = 1.5", "failure_rate: must be above 0 and at most 1"),
            ("window = 10001", "window: must be between 1 and 10000"),
            ("min_calls = 0", "min_calls: must be between 1 and window"),
            ("min_calls = 21", "min_calls: must be between 1 and window"),
            ("cooldown = \"0s\"", "cooldown: must be greater than zero"),
            ("max_cooldown = \"4s\"", "max_cooldown: must be at least cooldown"),
            ("half_open_probes = 0", "half_open_probes: must be at least 1"),
        ],
    );
    cases::<HealthSection>("", HealthSection::validate, &[("timeout = \"0s\"", "timeout: must be greater than zero")]);
    // With pings off the timeout is never used.
    parse::<HealthSection>("interval = \"0s\"\ntimeout = \"0s\"").validate().unwrap();
}

#[test]
fn oauth() {
    cases::<OAuthSection>(
        "grant = \"authorization_code\"",
        OAuthSection::validate,
        &[
            ("resource = \"urn:x\"", "resource: must be an absolute http(s) URI without a fragment"),
            (
                "authorization_server = \"https://as/?q\"",
                "authorization_server: must be an http(s) issuer URL without query or fragment",
            ),
            ("client_secret = \"s\"", "client_secret: needs `client_id`"),
            ("client_id = \" \"", "client_id: must not be empty"),
            ("scopes = [\"a b\"]", "scopes: \"a b\" is not a scope (no spaces)"),
        ],
    );
    let refused = [
        (
            "grant = \"client_credentials\"\nclient_id = \"c\"",
            "grant: `client_credentials` needs `client_id` and `client_secret`",
        ),
        (
            "grant = \"client_credentials\"\nclient_id = \"c\"\nclient_secret = \"s\"\nper_principal = true",
            "per_principal: per-principal tokens come from `auth login`: use `grant = \"authorization_code\"`",
        ),
    ];
    for (toml, want) in refused {
        check(toml, parse::<OAuthSection>(toml).validate(), want);
    }
}

#[test]
fn auth() {
    let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let key = |c: char| c.to_string().repeat(64);
    let refused = [
        (
            format!("mode = \"none\"\napi_keys = [{{ principal = \"a\", sha256 = \"{}\" }}]", key('a')),
            "mode: is \"none\" but api_keys or jwt are configured",
        ),
        ("mode = \"required\"".to_owned(), "mode: is \"required\" but neither api_keys nor jwt is configured"),
        ("resource = \"urn:x\"".to_owned(), "resource: must be an absolute http(s) URL without a fragment"),
        ("resource = \"http://h/mcp#f\"".to_owned(), "resource: must be an absolute http(s) URL without a fragment"),
        (
            format!("api_keys = [{{ principal = \" \", sha256 = \"{}\" }}]", key('a')),
            "api_keys.0.principal: must not be empty",
        ),
        (
            format!("api_keys = [{{ principal = \"a:b\", sha256 = \"{}\" }}]", key('a')),
            "api_keys.0.principal: must not contain `:`",
        ),
        (
            "api_keys = [{ principal = \"a\", sha256 = \"abc\" }]".to_owned(),
            "api_keys.0.sha256: must be 64 hex digits (`mcp-gateway auth hash-key` prints it)",
        ),
        (
            format!(
                "api_keys = [{{ principal = \"a\", sha256 = \"{}\" }}, {{ principal = \"b\", sha256 = \"{}\" }}]",
                key('a'),
                key('A')
            ),
            "api_keys.1.sha256: the same key is listed twice",
        ),
        (
            "jwt = { issuer = \"i\", jwks_url = \"ftp://x\" }".to_owned(),
            "jwt.jwks_url: must be an absolute http(s) URL",
        ),
        ("jwt = { issuer = \"i\" }".to_owned(), "jwt: set exactly one of `jwks_url` and `public_key_pem`"),
        (
            "jwt = { issuer = \"i\", jwks_url = \"https://k\", public_key_pem = \"k.pem\" }".to_owned(),
            "jwt: set exactly one of `jwks_url` and `public_key_pem`",
        ),
        ("jwt = { issuer = \"\", jwks_url = \"https://k\" }".to_owned(), "jwt.issuer: must not be empty"),
        (
            "jwt = { issuer = \"i\", jwks_url = \"https://k\", algorithms = [\"HS256\"] }".to_owned(),
            "jwt.algorithms: `HS256` is not an asymmetric JWS algorithm (RS*, PS*, ES256, ES384, EdDSA)",
        ),
        ("sensitive_headers = [\"bad header\"]".to_owned(), "sensitive_headers: `bad header` is not a header name"),
    ];
    parse::<AuthSection>("").validate(loopback).unwrap();
    for (toml, want) in &refused {
        check(toml, parse::<AuthSection>(toml).validate(loopback), want);
    }
    let anywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    check(
        "",
        parse::<AuthSection>("").validate(anywhere),
        "the gateway listens on 0.0.0.0:8080 (not loopback) without client authentication: configure \
         [[auth.api_keys]] or [auth.jwt], or write `mode = \"none\"` to accept anyone",
    );
    parse::<AuthSection>("mode = \"none\"").validate(anywhere).unwrap();
}

#[test]
fn access_limits_and_rules() {
    cases::<AccessSection>(
        "principals = [\"*\"]",
        AccessSection::validate,
        &[
            ("tools = { allow = [\"[\"] }", "tools: invalid glob `[`: …"),
            ("prompts = { deny = [\"[\"] }", "prompts: invalid glob `[`: …"),
            ("resources = { allow = [\"[\"] }", "resources: invalid glob `[`: …"),
            (
                "arguments = [{ tools = \"[\", argument = \"path\", prefix = [\"/srv\"] }]",
                "arguments: invalid glob `[`: …",
            ),
            (
                "arguments = [{ tools = \"*\", argument = [\"\"], prefix = [\"/srv\"] }]",
                "arguments: `argument` must name at least one argument",
            ),
            (
                "arguments = [{ tools = \"*\", argument = [\"a\", \"b\"], prefix = [] }]",
                "arguments: `a`, `b` needs at least one `prefix`",
            ),
        ],
    );
    check(
        "",
        parse::<AccessSection>("").validate(),
        "principals: an entry needs `principals` or `groups` (\"*\" for everyone)",
    );
    cases::<LimitsSection>(
        "",
        LimitsSection::validate,
        &[
            ("per_principal = { rate = 0.0 }", "per_principal: rate must be > 0 and burst ≥ 1"),
            ("per_principal = { rate = inf }", "per_principal: rate must be > 0 and burst ≥ 1"),
            ("tools = { \"[\" = { rate = 1.0 } }", "tools.[: invalid glob: …"),
            ("tools = { \"a\" = { rate = 1.0, burst = 0 } }", "tools.a: rate must be > 0 and burst ≥ 1"),
            ("results = { \"[\" = { max_bytes = 1024 } }", "results.[: invalid glob: …"),
            ("results = { \"a\" = { max_bytes = 255 } }", "results.a: max_bytes must be at least 256"),
        ],
    );
    cases::<RulesSection>(
        "",
        RulesSection::validate,
        &[("reload_interval = \"0s\"", "reload_interval: must be greater than zero")],
    );
}

/// The whole file: sections in order, each error put under its section's
/// key; a disabled upstream is not checked, its id still is.
#[test]
fn file() {
    let refused = [
        ("[gateway]\nmax_sessions = 0", "gateway.max_sessions: must be at least 1"),
        ("[upstreams.a]\ncommand = \"x\"\nmax_concurrency = 0", "upstreams.a.max_concurrency: must be at least 1"),
        (
            "[upstreams.A]\nenabled = false",
            "upstreams.A: upstream id `A` must match [a-z0-9-]{1,32} (no `_`: it separates namespace and tool)",
        ),
        (
            "[upstreams.gateway]\ncommand = \"x\"",
            "upstreams.gateway: `gateway` is reserved for the gateway's own tools",
        ),
        ("[traces]\nsample_ratio = 2.0", "traces.sample_ratio: must be between 0 and 1"),
        ("[audit]\nqueue = 0", "audit.queue: must be at least 1"),
        ("[gateway]\nlisten = \"0.0.0.0:1\"", "auth: the gateway listens on 0.0.0.0:1 …"),
        ("[[access]]\nprincipals = [\"*\"]\n[[access]]\ngroups = []", "access.1.principals: an entry needs …"),
        ("[limits]\nresults = { \"a\" = { max_bytes = 1 } }", "limits.results.a: max_bytes must be at least 256"),
        ("[rules]\nreload_interval = \"0s\"", "rules.reload_interval: must be greater than zero"),
    ];
    parse::<FileConfig>("[upstreams.a]\nenabled = false").validate().unwrap();
    for (toml, want) in refused {
        check(toml, parse::<FileConfig>(toml).validate(), want);
    }
}
