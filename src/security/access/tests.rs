//! Tests of `access`.

use super::*;
use crate::config::{ArgumentRule, ToolFilter};

fn principal(id: &str, groups: &[&str]) -> Principal {
    let groups = groups.iter().map(|g| Arc::from(*g)).collect();
    Principal::new(id, crate::security::auth::Via::ApiKey, groups, Box::new([]))
}

fn filter(allow: &[&str], deny: &[&str]) -> ToolFilter {
    ToolFilter {
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        deny: deny.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn access() -> Access {
    Access::new(&[
        AccessSection {
            groups: vec!["analysts".into()],
            tools: filter(&["filesystem__read_*", "postgres__*"], &[]),
            resources: filter(&["file+filesystem://*"], &[]),
            arguments: vec![ArgumentRule {
                tools: "filesystem__*".into(),
                argument: vec!["path".into(), "paths".into(), "source".into(), "destination".into()],
                prefix: vec!["/srv/data/".into()],
                resolve: false,
            }],
            ..AccessSection::default()
        },
        AccessSection { principals: vec!["*".into()], tools: filter(&[], &["*delete*"]), ..AccessSection::default() },
        AccessSection {
            principals: vec!["admin".into()],
            tools: filter(&["*"], &[]),
            prompts: filter(&["*"], &[]),
            ..AccessSection::default()
        },
    ])
}

#[test]
fn no_entries_is_open() {
    let g = Access::new(&[]).grants(&principal("x", &[]));
    assert!(g.is_open() && g.allows(Kind::Tool, "anything__at_all"));
}

#[test]
fn allow_needs_an_applying_entry_and_deny_wins() {
    let a = access();
    let analyst = a.grants(&principal("ann", &["analysts"]));
    assert!(analyst.allows(Kind::Tool, "filesystem__read_text_file"));
    assert!(analyst.allows(Kind::Tool, "postgres__query"));
    assert!(!analyst.allows(Kind::Tool, "filesystem__write_file"), "not in the analysts' allow list");
    assert!(!analyst.allows(Kind::Tool, "postgres__delete_rows"), "denied to everyone");
    assert!(!analyst.allows(Kind::Prompt, "everything__simple-prompt"), "no entry allows prompts");
    assert!(analyst.allows(Kind::Resource, "file+filesystem:///srv/data/a.txt"));

    let admin = a.grants(&principal("admin", &[]));
    assert!(admin.allows(Kind::Tool, "filesystem__write_file") && admin.allows(Kind::Prompt, "p"));
    assert!(!admin.allows(Kind::Tool, "x__delete_all"), "the deny for everyone applies to admin too");

    // Only the "*" entry applies, and a deny list grants nothing.
    let other = a.grants(&principal("bob", &[]));
    assert!(!other.allows(Kind::Tool, "filesystem__write_file") && !other.allows(Kind::Tool, "x__list"));
}

#[test]
fn entries_name_identities_or_bare_names_and_nothing_in_between() {
    use crate::security::auth::Via;
    let p = |id: &str, via| Principal::new(id, via, Box::new([]), Box::new([]));
    let key_bob = p("bob", Via::ApiKey);
    let jwt_bob = p("bob", Via::Jwt);
    assert!(key_bob.is_named("bob") && jwt_bob.is_named("bob"), "a bare name is either");
    assert!(key_bob.is_named("key:bob") && !jwt_bob.is_named("key:bob"));
    assert!(jwt_bob.is_named("jwt:bob") && !key_bob.is_named("jwt:bob"));
    // A JWT whose subject is written like an identity is not that one.
    let sly = p("key:admin", Via::Jwt);
    assert!(!sly.is_named("key:admin") && sly.is_named("jwt:key:admin"));
    let fake_stdio = p("stdio", Via::Jwt);
    assert!(!fake_stdio.is_named("stdio") && Principal::stdio().is_named("stdio"));
}

#[test]
fn a_principal_no_entry_names_gets_nothing() {
    let a = Access::new(&[AccessSection {
        principals: vec!["alice".into()],
        tools: filter(&["*"], &[]),
        ..AccessSection::default()
    }]);
    let g = a.grants(&principal("mallory", &[]));
    assert!(!g.allows(Kind::Tool, "fs__read") && !g.allows(Kind::Resource, "x://y"));
}

#[test]
fn grants_are_equal_when_the_same_entries_apply_whoever_holds_them() {
    let a = access();
    let (ann, ada) = (a.grants(&principal("ann", &["analysts"])), a.grants(&principal("ada", &["analysts"])));
    assert_eq!(ann, ada, "the same group: the same entries");
    let state = std::hash::RandomState::new();
    assert_eq!(std::hash::BuildHasher::hash_one(&state, &*ann), std::hash::BuildHasher::hash_one(&state, &*ada));
    assert_ne!(ann, a.grants(&principal("admin", &[])), "other entries apply");
    assert_ne!(ann, a.grants(&principal("bob", &[])), "only the entry for everyone");
    assert_eq!(a.grants(&principal("bob", &[])), a.grants(&principal("carol", &[])));
    // The same entries compiled again (a reload) are other grants: a cache
    // keyed by them misses rather than serving the old policy.
    assert_ne!(ann, access().grants(&principal("ann", &["analysts"])));
    assert_eq!(*Grants::open(), *Access::new(&[]).grants(&principal("x", &[])));
    assert_ne!(*Grants::open(), *Grants::none());
}

/// `arguments` as a scanned message carries them.
fn args(text: &str) -> crate::protocol::CheckedBox {
    crate::protocol::CheckedBox::parse(text, &crate::protocol::Limits::default()).unwrap()
}

#[test]
fn path_arguments_stay_under_their_prefix() {
    let g = access().grants(&principal("ann", &["analysts"]));
    let check = |a: &str| g.check_arguments(Ident::plain("filesystem__read_text_file"), Some(args(a).checked()), None);
    assert_eq!(check(r#"{"path":"/srv/data/a.txt"}"#), Ok(()));
    assert_eq!(check(r#"{"path":"/srv/data"}"#), Ok(()));
    assert_eq!(check(r#"{"other":1}"#), Ok(()), "absent: nothing to check");
    assert_eq!(g.check_arguments(Ident::plain("filesystem__x"), None, None), Ok(()), "no arguments at all");
    for bad in [
        r#"{"path":"/srv/data/../../etc/passwd"}"#,
        r#"{"path":"/srv/database/x"}"#,
        r#"{"path":"relative.txt"}"#,
        r#"{"path":7}"#,
        r#"{"path":["/srv/data/a","/etc/shadow"]}"#,
        r#"{"path":"/../srv/data"}"#,
        r#"{"path":"/srv/data/a\u0000b"}"#,
    ] {
        assert!(check(bad).is_err(), "{bad}");
    }
    assert_eq!(check(r#"{"path":["/srv/data/a","/srv/data/b/../c"]}"#), Ok(()));
    let e = check(r#"{"path":"/etc/passwd"}"#).unwrap_err();
    assert!(!e.to_string().contains("passwd"), "the value is not echoed: {e}");
    // Other tools are unconstrained.
    let any = args(r#"{"path":"/etc"}"#);
    assert_eq!(g.check_arguments(Ident::plain("postgres__query"), Some(any.checked()), None), Ok(()));
}

#[test]
fn argument_rules_fail_closed() {
    let g = access().grants(&principal("ann", &["analysts"]));
    let check = |a: &str| g.check_arguments(Ident::plain("filesystem__move_file"), Some(args(a).checked()), None);
    // What cannot be checked is refused: null, other types, arguments that are no object.
    for (bad, reason) in [
        (r#"{"path":null}"#, "not a string or a list of strings"),
        (r#"{"path":{"p":"/srv/data/a"}}"#, "not a string or a list of strings"),
        (r#"{"path":true}"#, "not a string or a list of strings"),
        (r#"{"paths":["/srv/data/a",null]}"#, "not a string or a list of strings"),
        (r#"{"paths":[["/srv/data/a"]]}"#, "not a string or a list of strings"),
        (r#"[{"path":"/srv/data/a"}]"#, "the arguments are not an object"),
        (r#""/srv/data/a""#, "the arguments are not an object"),
        ("null", "the arguments are not an object"),
    ] {
        assert_eq!(check(bad).map_err(|e| e.reason), Err(reason), "{bad}");
    }
    // Every named argument, strings inside arrays too.
    assert_eq!(check(r#"{"source":"/srv/data/a","destination":"/srv/data/b"}"#), Ok(()));
    let e = check(r#"{"source":"/srv/data/a","destination":"/etc/cron.d/x"}"#).unwrap_err();
    assert_eq!((e.argument.as_str(), e.reason), ("destination", "not under an allowed prefix"));
    let e = check(r#"{"paths":["/srv/data/a","/root/.ssh/id_rsa"]}"#).unwrap_err();
    assert_eq!(e.argument, "paths");
    // A rule written for the whole name covers the tool however it is shown.
    let long = Ident { key: "filesystem__read_text_file", bare: None };
    assert!(g.check_arguments(long, Some(args(r#"{"path":"/etc"}"#).checked()), None).is_err());
}

#[test]
fn resolve_follows_symlinks_and_says_the_same_whether_a_file_exists_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let data = root.join("data");
    let secret = root.join("secret");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("key"), "k").unwrap();
    std::fs::write(data.join("ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink(&secret, data.join("escape")).unwrap();
    std::os::unix::fs::symlink(data.join("sub"), data.join("inside")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), data.join("dangling")).unwrap();
    let rule = |resolve| {
        Access::new(&[AccessSection {
            principals: vec!["*".into()],
            tools: filter(&["*"], &[]),
            arguments: vec![ArgumentRule {
                tools: "fs__*".into(),
                argument: vec!["path".into()],
                prefix: vec![data.display().to_string()],
                resolve,
            }],
            ..AccessSection::default()
        }])
        .grants(&principal("p", &[]))
    };
    let (lexical, resolved) = (rule(false), rule(true));
    let check = |g: &Grants, local: Option<&Path>, path: &Path| {
        let a = args(&serde_json::json!({ "path": path }).to_string());
        g.check_arguments(Ident::plain("fs__read"), Some(a.checked()), local).map_err(|e| e.to_string())
    };
    let base = Some(root.as_path());
    // Lexically inside, really outside: only resolve sees it.
    assert_eq!(check(&lexical, base, &data.join("escape/key")), Ok(()));
    let exists = check(&resolved, base, &data.join("escape/key")).unwrap_err();
    let missing = check(&resolved, base, &data.join("escape/no-such-file")).unwrap_err();
    assert_eq!(exists, missing, "no existence oracle");
    assert!(check(&resolved, base, &data.join("dangling/new")).is_err(), "a link to nowhere cannot be checked");
    // Inside, existing or not, through a link that stays inside.
    for ok in [data.join("ok.txt"), data.join("new/file"), data.join("inside/x"), data.clone()] {
        assert_eq!(check(&resolved, base, &ok), Ok(()), "{}", ok.display());
    }
    // A relative path resolves against the upstream's working directory.
    assert_eq!(check(&resolved, Some(&data), Path::new("ok.txt")), Ok(()));
    assert!(check(&resolved, Some(&data), Path::new("escape/key")).is_err());
    // A network upstream's files are not ours to look at: lexical.
    assert_eq!(check(&resolved, None, &data.join("escape/key")), Ok(()));
    // `..` after a link: the kernel follows the link first. Lexically
    // this is data/secret/key (inside); on disk it is root/secret/key.
    std::os::unix::fs::symlink(&root, data.join("up")).unwrap();
    assert_eq!(check(&lexical, base, Path::new(&format!("{}/up/../secret/key", data.display()))), Ok(()));
    let dotdot = check(&resolved, base, Path::new(&format!("{}/up/../secret/key", data.display())));
    assert!(dotdot.is_err(), "a link then `..` leaves the prefix");
    // Through a link that stays inside, `..` stays inside too.
    assert_eq!(check(&resolved, base, Path::new(&format!("{}/inside/../ok.txt", data.display()))), Ok(()));
    // A `..` below a part that does not exist cannot be checked.
    assert!(check(&resolved, base, Path::new(&format!("{}/nope/../ok.txt", data.display()))).is_err());
    // Too long to walk: refused, at once.
    let long = format!("{}/{}", data.display(), "a/".repeat(3000));
    assert!(check(&resolved, base, Path::new(&long)).is_err());
}
