use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::*;

/// An environment with nothing set: what a test loads does not depend on
/// the machine it runs on.
fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn load(src: &str) -> Result<Config, ConfigError> {
    Config::from_str(src, Path::new("dir/gateway.toml"), &no_env())
}

#[test]
fn committed_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let cfg = Config::load(&path, &no_env()).unwrap();
    assert!(cfg.upstreams.iter().any(|u| u.id == "filesystem"));
    assert!(cfg.upstreams.iter().any(|u| u.id == "everything"));
}

#[test]
fn defaults() {
    let cfg = load("[upstreams.a]\ncommand = \"x\"\n").unwrap();
    assert_eq!(cfg.gateway.listen.to_string(), "127.0.0.1:8080");
    let u = &cfg.upstreams[0];
    assert!(u.prefix);
    assert_eq!(u.startup_timeout, Duration::from_secs(60));
    let TransportSpec::Stdio { cwd, .. } = &u.transport else { panic!() };
    // The config's folder (`dir`, relative), made absolute.
    assert_eq!(cwd, &std::env::current_dir().unwrap().join("dir"));
    assert!(u.roots.is_empty());
    assert_eq!(cfg.gateway.page_size, 200);
}

#[test]
fn resilience_defaults_follow_production_guidance() {
    let cfg = load("[upstreams.a]\ncommand = \"x\"\n").unwrap();
    let u = &cfg.upstreams[0];
    assert_eq!((u.retry.attempts, u.retry.initial_delay), (5, Duration::from_millis(100)));
    assert_eq!((u.breaker.consecutive_failures, u.breaker.cooldown), (5, Duration::from_secs(5)));
    assert!(u.breaker.enabled && !u.breaker.per_tool && !u.trusted);
    assert_eq!((u.max_concurrency, u.max_queue), (64, 256));
    assert_eq!(u.max_request_timeout, Duration::from_secs(600));
    assert_eq!(u.health.interval, Duration::from_secs(30));
    assert!(!u.idempotent_tools.exposes("anything"));
    assert_eq!(cfg.gateway.drain_timeout, Duration::from_secs(10));
}

#[test]
fn telemetry_defaults_and_paths() {
    let cfg = load("[upstreams.a]\ncommand = \"x\"\n").unwrap();
    assert!(cfg.admin.listen.is_none() && cfg.traces.endpoint.is_none() && cfg.audit.path.is_none());
    assert_eq!(cfg.traces.protocol, None, "from OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf");
    assert_eq!(cfg.traces.service_name, "mcp-gateway");
    assert_eq!((cfg.audit.max_file_bytes, cfg.audit.max_files, cfg.audit.queue), (100 << 20, 5, 8192));
    assert!(!cfg.audit.include_arguments);
    assert_eq!(cfg.gateway.log_level, "info");
    let cfg = load("[audit]\npath = \"logs/a.jsonl\"\n[traces]\nprotocol = \"grpc\"\n").unwrap();
    assert_eq!(cfg.audit.path.as_deref(), Some(Path::new("dir/logs/a.jsonl")), "relative to the config file");
    assert_eq!(cfg.traces.protocol, Some(OtlpProtocol::Grpc));
}

#[test]
fn tool_timeouts_longest_pattern_wins() {
    let cfg = load(concat!(
        "[upstreams.a]\ncommand = \"x\"\nidempotent_tools = [\"get_*\"]\n",
        "tool_timeouts = { \"*\" = \"20s\", \"export_*\" = \"5m\", \"export_big\" = \"15m\" }\n",
    ))
    .unwrap();
    let u = &cfg.upstreams[0];
    assert_eq!(u.tool_timeouts.get("export_big"), Some(Duration::from_secs(900)));
    assert_eq!(u.tool_timeouts.get("export_small"), Some(Duration::from_secs(300)));
    assert_eq!(u.tool_timeouts.get("other"), Some(Duration::from_secs(20)));
    // The hard maximum grows to the longest configured timeout.
    assert_eq!(u.max_request_timeout, Duration::from_secs(900));
    assert!(u.idempotent_tools.exposes("get_user") && !u.idempotent_tools.exposes("set_user"));
}

#[test]
fn errors_name_file_line_and_key() {
    let cases = [
        ("[upstreams.a]\ncomand = \"x\"\n", "dir/gateway.toml:2:1", "unknown field `comand`"),
        ("[gateway]\nlisten = 5\n", "dir/gateway.toml:2:10", "invalid type"),
        ("[upstreams.Bad_Id]\ncommand = \"x\"\n", "dir/gateway.toml:1:12", "upstreams.Bad_Id: upstream id"),
        ("\n[upstreams.a]\nurl = \"ftp://x\"\n", "dir/gateway.toml:3:1", "upstreams.a.url: must be an absolute"),
        ("[upstreams.a]\n", "dir/gateway.toml:1:12", "missing `command`"),
        ("[upstreams.a]\ncommand = \"x\"\nurl = \"http://h\"\n", "dir/gateway.toml:1:12", "not both"),
        ("[upstreams.a]\ncommand = \"x\"\ntools = { allow = [\"[\"] }\n", ":3:1", "invalid glob"),
        ("[upstreams.a]\ncommand = \"x\"\nstartup_timeout = \"soon\"\n", ":3:19", ""),
        ("[upstreams.a]\ncommand = \"x\"\nrequest_timeout = \"0s\"\n", ":3:1", "greater than zero"),
        (
            "[upstreams.a]\ncommand = \"x\"\nenv = { T = \"${NOPE_NOT_SET_42}\" }\n",
            ":3:9",
            "upstreams.a.env.T: `${NOPE_NOT_SET_42}` is not defined",
        ),
        ("[gateway]\nmax_message_bytes = 10\n", ":2:1", "at least 1024"),
        ("[upstreams.a]\ncommand = \"x\"\n[upstreams.a.retry]\nattempts = 0\n", ":4:1", "upstreams.a.retry.attempts"),
        ("[upstreams.a]\ncommand = \"x\"\n[upstreams.a.retry]\nretries = 3\n", ":4:1", "unknown field `retries`"),
        (
            "[upstreams.a]\ncommand = \"x\"\n[upstreams.a.breaker]\nwindow = 5\nmin_calls = 6\n",
            ":5:1",
            "upstreams.a.breaker.min_calls: must be between 1 and window",
        ),
        ("[upstreams.a]\ncommand = \"x\"\n[upstreams.a.breaker]\nfailure_rate = 1.5\n", ":4:1", "failure_rate"),
        (
            "[upstreams.a]\ncommand = \"x\"\ntool_timeouts = { \"[\" = \"5s\" }\n",
            ":3:1",
            "upstreams.a.tool_timeouts: invalid glob",
        ),
        (
            "[upstreams.a]\ncommand = \"x\"\nrequest_timeout = \"2m\"\nmax_request_timeout = \"1m\"\n",
            ":4:1",
            "must be at least the longest request or tool timeout (120s)",
        ),
        ("[upstreams.a]\ncommand = \"x\"\nmax_concurrency = 0\n", ":3:1", "at least 1"),
        ("[traces]\nendpoint = \"localhost:4318\"\n", ":2:1", "traces.endpoint: must be an absolute"),
        ("[traces]\nsample_ratio = 2.0\n", ":2:1", "traces.sample_ratio: must be between 0 and 1"),
        ("[traces]\nmetrics_interval = \"10ms\"\n", ":2:1", "traces.metrics_interval: must be at least 100ms"),
        ("[traces]\nprotocol = \"udp\"\n", ":2:12", "unknown variant `udp`"),
        ("[traces]\nheaders = { \"bad header\" = \"x\" }\n", ":2:1", "not a valid HTTP header"),
        ("[audit]\npath = \"a.jsonl\"\nmax_file_bytes = 10\n", ":3:1", "audit.max_file_bytes: must be at least 1024"),
        ("[audit]\nqueue = 0\n", ":2:1", "audit.queue: must be at least 1"),
        ("[admin]\nlisten = \"nowhere\"\n", ":2:10", "invalid"),
        ("[gateway]\nlog_level = \"info,[\"\n", ":2:1", "gateway.log_level: not a valid filter"),
        (
            "[upstreams.a]\ncommand = \"x\"\nroots = [\"/srv\"]\n",
            ":3:1",
            "upstreams.a.roots: \"/srv\" is not a file:// URI",
        ),
    ];
    for (src, loc, msg) in cases {
        let err = load(src).expect_err(src).to_string();
        assert!(err.contains(loc), "{err:?} lacks {loc:?}");
        assert!(err.contains(msg), "{err:?} lacks {msg:?}");
    }
}

#[test]
fn secrets_expand_and_stay_hidden() {
    let s = Secrets::from_pairs([("TOKEN", "s3cr3t-value"), ("A", "b")]);
    let env = no_env();
    let r = s.expand("Bearer ${TOKEN}", &env).unwrap();
    assert_eq!(r.expose(), "Bearer s3cr3t-value");
    assert_eq!(format!("{r:?}"), "\"***\"");
    assert_eq!(s.expand("$$HOME", &env).unwrap().expose(), "$HOME");
    assert_eq!(format!("{:?}", s.expand("plain", &env).unwrap()), "\"plain\"");
    let e = s.expand("${MISSING_ONE_X}", &env).unwrap_err().to_string();
    assert!(e.contains("MISSING_ONE_X"));
    assert!(s.expand("${TOKEN", &env).is_err());
    assert_eq!(s.redactor().redact("token=s3cr3t-value;"), "token=***;");
}

#[test]
fn a_secrets_file_that_does_not_parse_is_refused_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.env");
    std::fs::write(&path, "FIRST=first-secret-1\nOTHER=\"unterminated-secret-2\nLAST=supersecret3\n").unwrap();
    let e = Secrets::load(&path).unwrap_err().to_string();
    assert!(e.contains("entry 2 (after `FIRST`)"), "{e}");
    for value in ["first-secret-1", "unterminated-secret-2", "supersecret3"] {
        assert!(!e.contains(value), "the error quotes a value: {e}");
    }
}

#[test]
fn redaction_masks_every_value_in_one_pass_and_keeps_json_valid() {
    let r = Redactor::from_values(vec!["abc".into(), "pa\"ss\\word".into(), "s3cr3t".into(), "s3cr3t-longer".into()]);
    // Short values are never masked (everything would be).
    assert_eq!(r.redact_counted("abc"), (std::borrow::Cow::Borrowed("abc"), 0));
    // Longest first: the longer secret goes whole.
    assert_eq!(r.redact_counted("x s3cr3t-longer y s3cr3t").0, "x *** y ***");
    // Inside JSON a value appears escaped; masked either way, and the
    // text stays valid JSON.
    let json = serde_json::json!({ "text": "the pass is pa\"ss\\word" }).to_string();
    let (masked, n) = r.redact_counted(&json);
    assert_eq!(n, 1);
    let back: serde_json::Value = serde_json::from_str(&masked).unwrap();
    assert_eq!(back["text"], "the pass is ***");
    assert!(matches!(r.redact_counted("nothing here").0, std::borrow::Cow::Borrowed(_)), "no copy without a match");
}

#[test]
fn a_value_is_found_in_parts_within_each_across_joints_and_escaped() {
    let r = Redactor::from_values(vec!["s3cr3t-value".into(), "é-key-é".into()]);
    assert!(!Redactor::default().finds_in(&["s3cr3t-value"]));
    assert!(!r.finds_in(&[r#"{"id":1,"result":"#, r#"{"text":"nothing"}"#, "}"]));
    assert!(r.finds_in(&[r#"{"id":1,"result":"#, r#"{"text":"a s3cr3t-value"}"#, "}"]));
    // Across a joint, whichever part holds how much of it.
    for cut in 1.."s3cr3t-value".len() {
        let (a, b) = "s3cr3t-value".split_at(cut);
        assert!(r.finds_in(&[&format!("xx{a}"), &format!("{b}{}", "y".repeat(40)), "}"]), "cut at {cut}");
    }
    // Across a joint next to multibyte characters (no cut inside one).
    assert!(r.finds_in(&["ééé-key", "-éééé"]));
    assert!(!r.finds_in(&["ééé-ke", "-éééé"]));
    // Escaped inside a literal of one part.
    assert!(r.finds_in(&["{", r#"{"t":"s3cr3t\u002dvalue"}"#, "}"]));
    // Across a part shorter than a value, whole.
    assert!(r.finds_in(&["a s3cr", "3t-v", "alue"]));
}

#[test]
fn finding_in_parts_agrees_with_masking_the_whole_text() {
    // A deterministic generator: the same cases on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let values = ["s3cr3t-v@lue", "pa\"ss/wé€rd", "k:{}😀key"];
    let r = Redactor::from_values(values.iter().map(|v| v.to_string()).collect());
    let escape_all = |v: &str| v.encode_utf16().map(|u| format!("\\u{u:04x}")).collect::<String>();
    let (mut positives, mut across) = (0, 0);
    for _ in 0..20_000 {
        let v = values[next(values.len())];
        let spelling = match next(4) {
            0 => v.to_owned(),
            1 => serde_json::to_string(v).unwrap().trim_matches('"').to_owned(),
            2 => escape_all(v),
            _ => v.chars().take(1 + next(v.chars().count())).collect(),
        };
        let filler = |n: usize| "ab é:{}".chars().cycle().skip(n % 6).take(n).collect::<String>();
        let text = format!("{}{}{}", filler(next(40)), spelling, filler(next(40)));
        let result = serde_json::to_string(&serde_json::json!({ "text": text })).unwrap();
        let head = format!(r#"{{"jsonrpc":"2.0","id":"{}","result":"#, filler(next(20)).replace(['"', '\\'], ""));
        let whole = format!("{head}{result}}}");
        let expected = r.redact_counted(&whole).1 > 0;
        assert_eq!(r.finds_in(&[&head, &result, "}"]), expected, "{whole}");
        // Cut anywhere on a character boundary (a part may then end inside
        // a literal: only plain spellings are promised there).
        // Half the time inside the value, where it is written plainly.
        let (from, len) = match whole.find(v) {
            Some(at) if next(2) == 0 => (at, v.len()),
            _ => (0, whole.len()),
        };
        let cut = (from..=from + len).filter(|i| whole.is_char_boundary(*i)).nth(next(len + 1));
        if let Some(cut) = cut
            && !whole.contains('\\')
        {
            let (a, b) = whole.split_at(cut);
            assert_eq!(r.finds_in(&[a, b]), expected, "{a} | {b}");
            across += usize::from(expected && r.redact_counted(a).1 == 0 && r.redact_counted(b).1 == 0);
        }
        positives += usize::from(expected);
    }
    assert!(positives > 5_000 && across > 100, "{positives} positives, {across} only across a joint");
}

#[test]
fn tool_globs_deny_wins() {
    let m = ToolMatcher::new(&ToolFilter {
        allow: vec!["read_*".into(), "list*".into()],
        deny: vec!["read_secret*".into()],
    })
    .unwrap();
    assert!(m.exposes("read_file"));
    assert!(m.exposes("list_directory"));
    assert!(!m.exposes("write_file"));
    assert!(!m.exposes("read_secret_key"));
    assert!(ToolMatcher::all().exposes("anything"));
}

#[test]
fn ids() {
    for ok in ["a", "fs", "my-server-2", &"a".repeat(32)] {
        assert!(valid_id(ok), "{ok}");
    }
    for bad in ["", "A", "a_b", "a.b", &"a".repeat(33), "é"] {
        assert!(!valid_id(bad), "{bad}");
    }
}

#[test]
fn oauth_defaults_and_errors() {
    let http = "[upstreams.bb]\nurl = \"https://BB.example:8443/mcp/?x=1#f\"\n[upstreams.bb.oauth]\n";
    let cfg = load(&format!("{http}grant = \"authorization_code\"\n")).unwrap();
    let o = cfg.upstreams[0].oauth.as_deref().unwrap();
    assert_eq!(o.resource, "https://bb.example:8443/mcp", "canonical: lower-case host, no query, fragment or slash");
    assert_eq!(o.token_file, Path::new("dir/tokens.json"), "beside the config file");
    assert!(!o.per_principal && o.client_id.is_none() && o.scopes.is_empty() && o.redirect_port == 0);
    let bad = [
        ("[upstreams.s]\ncommand = \"x\"\n[upstreams.s.oauth]\ngrant = \"authorization_code\"\n", "for http"),
        (
            &format!("{http}grant = \"client_credentials\"\nclient_id = \"c\"\n") as &str,
            "needs `client_id` and `client_secret`",
        ),
        (
            &format!(
                "{http}grant = \"client_credentials\"\nclient_id = \"c\"\nclient_secret = \"s\"\nper_principal = true\n"
            ),
            "authorization_code",
        ),
        (&format!("{http}grant = \"authorization_code\"\nclient_secret = \"s\"\n"), "needs `client_id`"),
        (&format!("{http}grant = \"authorization_code\"\nscopes = [\"a b\"]\n"), "not a scope"),
        (&format!("{http}grant = \"authorization_code\"\nresource = \"urn:x\"\n"), "absolute http(s)"),
        (&format!("{http}grant = \"authorization_code\"\nauthorization_server = \"https://as/?q\"\n"), "issuer URL"),
        (&format!("{http}grant = \"implicit\"\n"), "unknown variant"),
    ];
    for (src, want) in bad {
        let e = load(src).unwrap_err().to_string();
        assert!(e.contains(want), "{src}\n→ {e}");
        assert!(e.contains("oauth") || e.contains("grant"), "names the key: {e}");
    }
}

/// The names of `T`'s fields, from serde itself: a struct that denies
/// unknown fields lists them all when it meets one.
fn fields<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let err = serde_json::from_str::<T>(r#"{"__probe__": 1}"#).err().expect("an unknown field is refused").to_string();
    let (_, expected) = err.split_once("expected").unwrap_or_else(|| panic!("no field list in {err:?}"));
    expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Every section of `gateway.toml` by its dotted path (`<id>` for an
/// upstream's id, `<glob>` for a map's key), with its keys from serde.
fn sections() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("", fields::<FileConfig>()),
        ("gateway", fields::<GatewaySection>()),
        ("admin", fields::<AdminSection>()),
        ("traces", fields::<TracesSection>()),
        ("audit", fields::<AuditSection>()),
        ("upstreams.<id>", fields::<UpstreamSection>()),
        ("upstreams.<id>.retry", fields::<RetrySection>()),
        ("upstreams.<id>.breaker", fields::<BreakerSection>()),
        ("upstreams.<id>.health", fields::<HealthSection>()),
        ("auth", fields::<AuthSection>()),
        ("upstreams.<id>.oauth", fields::<OAuthSection>()),
        ("auth.api_keys", fields::<ApiKeySection>()),
        ("auth.jwt", fields::<JwtSection>()),
        ("access", fields::<AccessSection>()),
        ("access.arguments", fields::<ArgumentRule>()),
        ("pinning", fields::<PinningSection>()),
        ("rules", fields::<RulesSection>()),
        ("limits", fields::<LimitsSection>()),
        ("limits.tools.<glob>", fields::<RateSection>()),
        ("limits.results.<glob>", fields::<ResultCap>()),
        ("upstreams.<id>.tools", fields::<ToolFilter>()),
        ("redis", fields::<RedisSection>()),
        ("redis.on_unreachable", fields::<OnUnreachable>()),
        ("bridge", fields::<super::BridgeSection>()),
    ]
}

/// Every key of every `gateway.toml` section is in the configuration
/// reference (docs/configuration.md), written in backticks (alone or as
/// the end of a dotted path), so a new key cannot ship undocumented.
#[test]
fn every_config_key_is_in_the_configuration_reference() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let spans: Vec<&str> = docs.split('`').skip(1).step_by(2).collect();
    let sections = sections();
    let mut missing = Vec::new();
    for (section, names) in &sections {
        assert!(!names.is_empty(), "{section}: no fields read");
        for name in names {
            // `name`, `a.name`, `…name`, `name = …`, `{ name, … }`.
            let documented = spans
                .iter()
                .any(|s| s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|word| word == name));
            if !documented {
                missing.push(format!("{section}.{name}"));
            }
        }
    }
    assert!(missing.is_empty(), "keys not in docs/configuration.md: {missing:?}");
}

/// The text between backticks in `text`.
fn backticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// `a.b.c` → `a.b`; `a` → the root, ``.
fn parent(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(p, _)| p)
}

/// The keys of docs/configuration.md, as full dotted paths with what was
/// written: the first cell of every row of its tables, and the `[section]`
/// names of the paragraph that introduces each table.
///
/// How the page writes them: a key is relative to the section its table's
/// paragraph names (one: that section; several: their common parent, as in
/// "`[admin]`, `[traces]`, `[audit]`"; none, under a heading: the root). A
/// cell may list more keys; one without a dot is a sibling of the cell's
/// first (`auth.jwt.jwks_url` / `public_key_pem`). A key that starts with
/// `…` continues the path of the row above from its first name
/// (`…oauth.scopes` after `upstreams.<id>.oauth.grant`).
fn documented_keys(docs: &str) -> Vec<(String, String)> {
    let join = |a: &str, b: &str| if a.is_empty() { b.to_owned() } else { format!("{a}.{b}") };
    let mut keys = Vec::new();
    let (mut paragraph, mut last_paragraph) = (Vec::new(), Vec::new());
    let mut context: Option<String> = None;
    let mut above = String::new();
    for line in docs.lines() {
        if !line.starts_with('|') {
            context = None;
            if line.trim().is_empty() {
                if !paragraph.is_empty() {
                    last_paragraph = std::mem::take(&mut paragraph);
                }
            } else {
                paragraph.push(line);
            }
            continue;
        }
        let context = context.get_or_insert_with(|| {
            let named: Vec<&str> = last_paragraph
                .iter()
                .flat_map(|l| backticked(l))
                .filter(|s| s.starts_with('[') && s.ends_with(']'))
                .map(|s| s.trim_matches(|c| c == '[' || c == ']'))
                .collect();
            for s in &named {
                keys.push(((*s).to_owned(), format!("[{s}]")));
            }
            let mut common: Vec<&str> = named.first().map(|s| s.split('.').collect()).unwrap_or_default();
            for s in named.iter().skip(1) {
                let same = common.iter().zip(s.split('.')).take_while(|(a, b)| *a == b).count();
                common.truncate(same);
            }
            common.join(".")
        });
        let first = line.trim_matches('|').split('|').next().unwrap_or("").trim();
        if first == "key" || first.starts_with("---") {
            continue;
        }
        let mut siblings_of: Option<String> = None;
        for written in backticked(first) {
            let full = if let Some(rest) = written.strip_prefix('…') {
                let head = rest.split('.').next().unwrap_or(rest);
                let segments: Vec<&str> = above.split('.').collect();
                match segments.iter().rposition(|s| *s == head) {
                    Some(at) => join(&segments[..at].join("."), rest),
                    None => written.to_owned(),
                }
            } else if let (Some(p), false) = (&siblings_of, written.contains('.')) {
                join(p, written)
            } else {
                join(context, written)
            };
            siblings_of.get_or_insert_with(|| parent(&full).to_owned());
            above = full.clone();
            keys.push((full, written.to_owned()));
        }
    }
    keys
}

/// The converse of the test above: every key docs/configuration.md
/// documents is a key of its section, so a key renamed or removed in the
/// code cannot stay documented.
#[test]
fn every_documented_key_exists() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let sections = sections();
    let keys = documented_keys(&docs);
    assert!(keys.len() >= 80, "the tables were not read: {keys:?}");
    let is_section = |path: &str| sections.iter().any(|(s, _)| *s == path);
    let mut stale = Vec::new();
    for (path, written) in &keys {
        let leaf = path.rsplit('.').next().unwrap_or(path);
        let known =
            is_section(path) || sections.iter().any(|(s, names)| *s == parent(path) && names.iter().any(|n| n == leaf));
        if !known {
            stale.push(format!("`{written}` ({path})"));
        }
    }
    assert!(stale.is_empty(), "docs/configuration.md documents keys the config does not have: {stale:?}");
}

#[test]
fn documented_keys_are_read_as_the_page_writes_them() {
    let page = "`[upstreams.<id>]`: an upstream.\n\n| key | default |\n| --- | --- |\n\
                | `command`, `args` | — |\n| `tools.allow`, `tools.deny` | all |\n\n\
                `[admin]`, `[traces]`\n\n| key |\n| --- |\n| `admin.listen` |\n\n\
                ## Security\n\n| key |\n| --- |\n| `auth.jwt.jwks_url` / `public_key_pem` |\n\
                | `upstreams.<id>.oauth.grant` |\n| `…oauth.client_id`, `client_secret` |\n";
    let paths: Vec<String> = documented_keys(page).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "upstreams.<id>",
            "upstreams.<id>.command",
            "upstreams.<id>.args",
            "upstreams.<id>.tools.allow",
            "upstreams.<id>.tools.deny",
            "admin",
            "traces",
            "admin.listen",
            "auth.jwt.jwks_url",
            "auth.jwt.public_key_pem",
            "upstreams.<id>.oauth.grant",
            "upstreams.<id>.oauth.client_id",
            "upstreams.<id>.oauth.client_secret",
        ]
    );
}

mod validate;

#[test]
fn session_keys_come_from_the_secrets_file_and_a_previous_key_needs_a_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.env");
    let config = |text: &str| {
        std::fs::write(&secrets, text).unwrap();
        let src = format!("[gateway]\nsecrets_file = {:?}\n", secrets.display().to_string());
        Config::from_str(&src, &dir.path().join("gateway.toml"), &BTreeMap::new())
    };
    let k1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let k2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    assert_eq!(config("").unwrap().session_keys, None);
    let keys = config(&format!("MCP_GATEWAY_SESSION_KEY={k1}\nMCP_GATEWAY_SESSION_KEY_PREVIOUS={k2}\n"))
        .unwrap()
        .session_keys
        .unwrap();
    assert_eq!(keys.current.bytes()[0], 1);
    assert_eq!(keys.previous.unwrap().bytes()[0], 2);
    let e = config(&format!("MCP_GATEWAY_SESSION_KEY_PREVIOUS={k2}\n")).unwrap_err().to_string();
    assert!(e.contains("MCP_GATEWAY_SESSION_KEY_PREVIOUS is set without MCP_GATEWAY_SESSION_KEY"), "{e}");
    let e = config("MCP_GATEWAY_SESSION_KEY=c2hvcnQta2V5LXZhbHVl\n").unwrap_err().to_string();
    assert!(e.contains("MCP_GATEWAY_SESSION_KEY: is 15 bytes"), "{e}");
    assert!(!e.contains("c2hvcnQta2V5LXZhbHVl"), "the value is never quoted: {e}");
}

#[test]
fn redis_url_is_expanded_and_must_be_a_redis_url() {
    let err = load("[redis]\nurl = \"http://127.0.0.1:6379\"\n").unwrap_err().to_string();
    assert_eq!(err, "dir/gateway.toml:2:1: redis.url: must be a redis://, rediss:// or unix:// URL");
    let err = load("[redis]\nurl = \"${NOPE}\"\n").unwrap_err().to_string();
    assert!(err.contains("redis.url:") && err.contains("NOPE"), "{err}");
    let env: BTreeMap<String, String> = [("REDIS_URL".to_owned(), "rediss://:pw@h:6380/1".to_owned())].into();
    let cfg = Config::from_str("[redis]\nurl = \"${REDIS_URL}\"\n", Path::new("dir/gateway.toml"), &env).unwrap();
    let redis = cfg.redis.expect("[redis] read");
    assert_eq!(redis.url.expose(), "rediss://:pw@h:6380/1");
    let shown = format!("{redis:?}");
    assert!(
        !shown.contains("pw") && shown.contains("rediss://***@h:6380/1"),
        "the password stays out of Debug: {shown}"
    );
    assert!(load("").unwrap().redis.is_none(), "no [redis]: state in process");
}

#[test]
fn a_relative_argument_prefix_is_taken_from_the_config_files_folder() {
    let src = "[[access]]\nprincipals = [\"*\"]\ntools = { allow = [\"*\"] }\n\
               arguments = [{ tools = \"*\", argument = \"path\", prefix = [\"/srv/data\", \"files\", \"../shared/./x\"] }]\n";
    let cfg = Config::from_str(src, Path::new("/etc/gw/gateway.toml"), &BTreeMap::new()).unwrap();
    assert_eq!(cfg.access[0].arguments[0].prefix, ["/srv/data", "/etc/gw/files", "/etc/shared/x"]);
    // A config named by a relative path: the folder is taken from the
    // current directory, so the prefix can hold an absolute value.
    let src = format!("{src}[upstreams.fs]\ncommand = \"node\"\ncwd = \"files\"\n");
    let cfg = Config::from_str(&src, Path::new("examples/gateway.toml"), &BTreeMap::new()).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(cfg.access[0].arguments[0].prefix[1], cwd.join("examples/files").display().to_string());
    // So is the upstream's working directory, which a relative value is
    // taken from (it used to stay `examples/files`, and no relative value
    // passed a rule).
    let TransportSpec::Stdio { cwd: dir, .. } = &cfg.upstreams[0].transport else { panic!("stdio") };
    assert_eq!(dir, &cwd.join("examples/files"));
}
