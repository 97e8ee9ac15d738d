//! The cache file: what is kept, what is refused, and how it is written.

use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::routing::tests::{config_in, down, tool_defs};

const LIMITS: Limits = Limits { max_depth: 64 };

fn file_with(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(crate::config::CATALOG_CACHE);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn names(tools: &[CheckedBox]) -> Vec<String> {
    tools.iter().map(|t| t.checked().object().unwrap().str("name").unwrap()).collect()
}

const ONE: &str = r#"{"version":1,"upstreams":[{"id":"a","tools":[{"name":"x","inputSchema":{}}]}]}"#;

#[test]
fn what_is_recorded_is_written_and_read_back_for_configured_shared_upstreams_only() {
    let dir = tempfile::tempdir().unwrap();
    let oauth =
        "url = \"http://127.0.0.1:9/mcp\"\n[upstreams.p.oauth]\ngrant = \"authorization_code\"\nper_principal = true\n";
    let config = config_in(dir.path(), &format!("{}{}[upstreams.p]\n{oauth}", down("a", ""), down("b", "")));
    let (a, b, p) = (&config.upstreams[0], &config.upstreams[1], &config.upstreams[2]);
    assert_eq!(config.gateway.catalog_cache.as_deref(), Some(&*dir.path().join("catalog-cache.json")));

    let warm = Warm::empty();
    let mut seen = warm.subscribe();
    let (ta, tb, tp) = (tool_defs(&["x", "y"]), tool_defs(&["z"]), tool_defs(&["secret"]));
    warm.record([(a, &ta), (b, &tb), (p, &tp)].into_iter(), &["a", "b", "p"]);
    assert!(seen.has_changed().unwrap());
    seen.borrow_and_update();
    assert!(warm.tools_of(p).is_none(), "one principal's tools are never kept");
    // The same lists again change nothing.
    warm.record([(a, &tool_defs(&["x", "y"]))].into_iter(), &["a", "b", "p"]);
    assert!(!seen.has_changed().unwrap());

    let path = config.gateway.catalog_cache.clone().unwrap();
    write(&path, &warm.snapshot()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!path.with_extension("tmp").exists());
    let (loaded, n) = Warm::load(&config);
    assert_eq!(n.unwrap(), 2);
    assert_eq!(names(&loaded.tools_of(a).unwrap()), ["x", "y"]);
    assert_eq!(names(&loaded.tools_of(b).unwrap()), ["z"]);
    assert_eq!(loaded.snapshot(), warm.snapshot(), "the same bytes for the same lists");
    assert!(!loaded.take_stale(), "nothing to drop");

    // An upstream the config no longer names is not read back, and leaves
    // the memory at the next record.
    let only_a = config_in(dir.path(), &down("a", ""));
    let (loaded, n) = Warm::load(&only_a);
    assert_eq!(n.unwrap(), 1);
    assert!(loaded.take_stale() && !loaded.take_stale(), "the file is rewritten once, at start");
    warm.record(std::iter::empty(), &["a"]);
    assert!(seen.has_changed().unwrap());
    assert!(warm.tools_of(b).is_none() && warm.tools_of(a).is_some());
    assert!(loaded.tools_of(b).is_none());

    // Off: nothing is read.
    let off = config_in(dir.path(), &format!("[gateway]\nwarm_start = false\n{}", down("a", "")));
    assert_eq!(Warm::load(&off).1.unwrap(), 0);
}

#[test]
fn a_file_someone_else_could_have_written_or_not_as_written_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |text: &str, mode: u32| -> String {
        let path = file_with(dir.path(), text, mode);
        match read(&path, &LIMITS) {
            Err(WarmError::Refused { reason, .. }) => reason,
            other => panic!("{text:?} mode {mode:o} was not refused: {other:?}"),
        }
    };
    assert!(read(&file_with(dir.path(), ONE, 0o600), &LIMITS).is_ok());
    assert!(refused(ONE, 0o620).contains("writable by its group or others"));
    assert!(refused(ONE, 0o602).contains("writable"));
    let dup_member = r#"{"version":1,"upstreams":[{"id":"a","tools":[{"name":"x","name":"y"}]}]}"#;
    assert_eq!(refused(dup_member, 0o600), "not strict JSON");
    let dup_id = r#"{"version":1,"upstreams":[{"id":"a","tools":[]},{"id":"a","tools":[]}]}"#;
    assert!(refused(dup_id, 0o600).contains("there twice"));
    assert!(refused(r#"{"version":2,"upstreams":[]}"#, 0o600).contains("format 2"));
    assert!(refused(r#"{"version":1,"upstreams":[],"extra":1}"#, 0o600).contains("unknown field"));
    let deep = format!(
        "{{\"version\":1,\"upstreams\":[{{\"id\":\"a\",\"tools\":[{}{}]}}]}}",
        "[".repeat(1100),
        "]".repeat(1100)
    );
    assert_eq!(refused(&deep, 0o600), "not strict JSON", "deeper than any limit allows");

    // Too large: refused from its size, before it is read.
    let path = file_with(dir.path(), "", 0o600);
    std::fs::File::options().write(true).open(&path).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
    assert!(refused_at(&path).contains("larger than"));

    // Missing is empty, not an error.
    assert!(read(&dir.path().join("none.json"), &LIMITS).unwrap().0.is_empty());
}

fn refused_at(path: &Path) -> String {
    match read(path, &LIMITS) {
        Err(WarmError::Refused { reason, .. }) => reason,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn one_upstreams_odd_list_costs_only_its_own_entry() {
    let dir = tempfile::tempdir().unwrap();
    // As deep as a reply may carry it (a tool at the limit), the file
    // itself nesting the tool four levels further.
    let at_limit = format!("{}{}", "[".repeat(LIMITS.max_depth - 1), "]".repeat(LIMITS.max_depth - 1));
    let past = format!("{}{}", "[".repeat(LIMITS.max_depth + 1), "]".repeat(LIMITS.max_depth + 1));
    let tool = |x: &str| format!(r#"{{"name":"t","inputSchema":{{"type":"object"}},"x":{x}}}"#);
    assert!(CheckedBox::parse(&tool(&at_limit[2..at_limit.len() - 2]), &LIMITS).is_some());
    let text = format!(
        r#"{{"version":1,"upstreams":[{{"id":"ok","tools":[{}]}},{{"id":"odd","tools":[{}]}}]}}"#,
        tool(&at_limit[2..at_limit.len() - 2]),
        tool(&past),
    );
    let (entries, stored) = read(&file_with(dir.path(), &text, 0o600), &LIMITS).unwrap();
    assert_eq!(stored, 2);
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["ok"], "the deep one alone is left out");

    // The writer leaves out what would pass the size limit, not the file.
    let big: Arc<[CheckedBox]> = tool_defs(&["x".repeat(400).as_str()]);
    let small = tool_defs(&["y"]);
    let (text, left_out) = render(&[("a".into(), big), ("b".into(), small)], 300);
    assert_eq!(left_out, ["a"]);
    assert!(text.len() <= 300 && text.contains("\"b\""), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["upstreams"].as_array().unwrap().len(), 1);
}

#[test]
fn the_write_never_follows_a_symlink_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("pins.json");
    std::fs::write(&victim, "precious").unwrap();
    let path = dir.path().join("c.json");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    write(&path, ONE).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "the link is replaced, its target untouched");
    assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), ONE);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    // A folder that cannot be written: an error, nothing half-written.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    if nix::unistd::geteuid().is_root() {
        return; // root writes anyway
    }
    assert!(matches!(write(&ro.join("c.json"), ONE), Err(WarmError::Io { .. })));
}

#[test]
fn the_cache_may_not_be_another_file_of_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let src = "[gateway]\ncatalog_cache = \"pins.json\"\n[pinning]\nfile = \"pins.json\"\n";
    let e = Config::from_str(src, &dir.path().join("gateway.toml"), &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("must be a file of its own, not the pin store"), "{e}");
    let src = "[gateway]\ncatalog_cache = \"gateway.toml\"\n";
    let e = Config::from_str(src, &dir.path().join("gateway.toml"), &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("not the config file"), "{e}");
}

#[test]
fn waiters_are_counted_up_to_the_most_and_let_go_when_dropped() {
    let warm = Warm::empty();
    let a = warm.wait_for("u", 2).unwrap();
    let b = warm.wait_for("u", 2).unwrap();
    assert!(warm.wait_for("u", 2).is_none());
    assert!(warm.wait_for("v", 2).is_some(), "per upstream");
    drop(a);
    assert_eq!(warm.waiting_for("u"), 1);
    let _c = warm.wait_for("u", 2).unwrap();
    drop(b);
    assert_eq!(warm.waiting_for("u"), 1);
}

#[test]
fn the_default_file_sits_beside_the_pin_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), "[pinning]\nfile = \"state/pins.json\"\n");
    assert_eq!(config.gateway.catalog_cache.unwrap(), dir.path().join("state/catalog-cache.json"));
    let config = config_in(dir.path(), "[gateway]\ncatalog_cache = \"/var/lib/gw/cache.json\"\n");
    assert_eq!(config.gateway.catalog_cache.unwrap(), Path::new("/var/lib/gw/cache.json"));
}
