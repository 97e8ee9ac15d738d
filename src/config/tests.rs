use std::path::Path;

use super::*;

fn load(src: &str) -> Result<Config, ConfigError> {
    Config::from_str(src, Path::new("dir/gateway.toml"))
}

#[test]
fn committed_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let cfg = Config::load(&path).unwrap();
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
    assert_eq!(cwd, Path::new("dir"));
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
    let r = s.expand("Bearer ${TOKEN}").unwrap();
    assert_eq!(r.expose(), "Bearer s3cr3t-value");
    assert_eq!(format!("{r:?}"), "\"***\"");
    assert_eq!(s.expand("$$HOME").unwrap().expose(), "$HOME");
    assert_eq!(format!("{:?}", s.expand("plain").unwrap()), "\"plain\"");
    let e = s.expand("${MISSING_ONE_X}").unwrap_err();
    assert!(e.contains("MISSING_ONE_X"));
    assert!(s.expand("${TOKEN").is_err());
    assert_eq!(s.redactor().redact("token=s3cr3t-value;"), "token=***;");
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
