//! Tests of `catalog`.

use super::*;

fn checked(text: &str) -> CheckedBox {
    CheckedBox::parse(text, &crate::protocol::Limits::default()).unwrap()
}

fn defs(names: &[&str]) -> Arc<[CheckedBox]> {
    names
        .iter()
        .map(|n| checked(&format!(r#"{{"name":"{n}","x-extra":{{"b":1,"a":2}},"inputSchema":{{"type":"object"}}}}"#)))
        .collect()
}

fn raw(items: &[&str]) -> Arc<[CheckedBox]> {
    items.iter().map(|d| checked(d)).collect()
}

fn tools(names: &[&str]) -> Lists {
    Lists { tools: defs(names), ..Lists::default() }
}

fn src<'a>(upstream: usize, id: &'a str, prefix: bool, all: &'a ToolMatcher, lists: &'a Lists) -> Source<'a> {
    Source {
        upstream: UpstreamIx::new(upstream),
        id,
        prefix,
        filter: all,
        lists,
        hidden: false,
        hidden_tools: &[],
        cached: false,
    }
}

#[test]
fn prefixes_sorts_and_keeps_other_members() {
    let all = ToolMatcher::all();
    let l = tools(&["read_file", "a.b-c_d"]);
    let c = Catalog::build(&[src(0, "fs", true, &all, &l)], 128, &[]);
    let names: Vec<_> = c.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["fs__a.b-c_d", "fs__read_file"]);
    assert_eq!(&*c.get("fs__a.b-c_d").unwrap().original, "a.b-c_d");
    assert_eq!(
        c.page(ListKind::Tools, None, 0).unwrap(),
        r#"{"tools":[{"name":"fs__a.b-c_d","x-extra":{"b":1,"a":2},"inputSchema":{"type":"object"}},{"name":"fs__read_file","x-extra":{"b":1,"a":2},"inputSchema":{"type":"object"}}]}"#
    );
}

#[test]
fn unprefixed_collisions_are_refused_not_shadowed() {
    let all = ToolMatcher::all();
    let (a, b, c) = (tools(&["echo", "only_b"]), tools(&["echo", "x"]), tools(&["echo"]));
    let cat = Catalog::build(
        &[src(0, "b", false, &all, &a), src(1, "c", false, &all, &b), src(2, "d", true, &all, &c)],
        128,
        &["d"],
    );
    assert_eq!(cat.get("echo").unwrap().upstream.index(), 0);
    assert_eq!(cat.get("d__echo").unwrap().upstream.index(), 2);
    assert_eq!(cat.collisions, vec![Collision { name: "echo".into(), refused: "c".into(), owner: "b".into() }]);
    assert_eq!(cat.tools().len(), 4);
}

#[test]
fn hidden_tools_route_but_are_not_listed() {
    let all = ToolMatcher::all();
    let (a, b) = (tools(&["x", "y"]), tools(&["z"]));
    let hidden_y = ["y".to_owned()];
    let cat = Catalog::build(
        &[
            Source { hidden_tools: &hidden_y, ..src(0, "a", true, &all, &a) },
            Source { hidden: true, ..src(1, "b", true, &all, &b) },
        ],
        128,
        &["a", "b"],
    );
    assert!(cat.get("a__y").unwrap().hidden && cat.get("b__z").unwrap().hidden);
    assert!(!cat.get("a__x").unwrap().hidden);
    let listed: serde_json::Value = serde_json::from_str(&cat.page(ListKind::Tools, None, 0).unwrap()).unwrap();
    assert_eq!(listed["tools"].as_array().unwrap().len(), 1);
    assert_eq!(listed["tools"][0]["name"], "a__x");
}

#[test]
fn annotations_become_hints() {
    let all = ToolMatcher::all();
    let l = Lists {
        tools: raw(&[
            r#"{"name":"r","annotations":{"readOnlyHint":true}}"#,
            r#"{"name":"i","annotations":{"idempotentHint":true,"readOnlyHint":false}}"#,
            r#"{"name":"n","annotations":{"readOnlyHint":"yes"}}"#,
        ]),
        ..Lists::default()
    };
    let c = Catalog::build(&[src(0, "s", true, &all, &l)], 128, &[]);
    assert_eq!(c.get("s__r").unwrap().hints, ToolHints { read_only: true, idempotent: false });
    assert_eq!(c.get("s__i").unwrap().hints, ToolHints { read_only: false, idempotent: true });
    assert_eq!(c.get("s__n").unwrap().hints, ToolHints::default());
}

#[test]
fn long_names_are_shortened_stably_and_route() {
    let long = "t".repeat(128);
    let all = ToolMatcher::all();
    let l = tools(&[&long]);
    let c = Catalog::build(&[src(0, "srv", true, &all, &l)], 64, &[]);
    let name = &c.tools()[0].name;
    assert_eq!(name.len(), 64);
    assert_eq!(name, &shorten(&format!("srv__{long}"), 64));
    assert_eq!(*c.get(name).unwrap().original, *long);
    assert_ne!(shorten(&format!("srv__{long}a"), 64), *name);
    assert_eq!(shorten("short", 64), "short");
    // Policy knows it by its whole name, never the shortened one.
    let t = c.get(name).unwrap();
    assert_eq!(t.ident(), Ident { key: &format!("srv__{long}"), bare: None });
}

#[test]
fn names_that_shorten_alike_are_refused_both() {
    // Find two long names whose shortened forms collide (same head, and
    // the 8 hex digits of their hashes match): rare, so search a little.
    let all = ToolMatcher::all();
    let head = "h".repeat(80);
    let mut seen: HashMap<String, String> = HashMap::new();
    let (a, b) = (0u32..)
        .find_map(|n| {
            let name = format!("{head}{n}");
            let short = shorten(&format!("s__{name}"), 20);
            seen.insert(short, name.clone()).map(|other| (other, name))
        })
        .unwrap();
    let l = tools(&[&a, &b, "ok"]);
    let c = Catalog::build(&[src(0, "s", true, &all, &l)], 20, &[]);
    let names: Vec<&str> = c.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["s__ok"], "neither of the two is exposed");
    assert_eq!(c.collisions.len(), 2, "{:?}", c.collisions);
}

#[test]
fn an_unprefixed_upstream_never_owns_another_upstreams_namespace() {
    let all = ToolMatcher::all();
    // `chaos` is configured and prefixed but down: its namespace stays its own.
    let squatter = Lists {
        tools: defs(&["chaos__counts", "gateway__list_secret_names", "mine", "other__x", "sq2__y", "sq__own"]),
        prompts: raw(&[r#"{"name":"chaos__p"}"#]),
        resources: raw(&[r#"{"uri":"file+chaos:///etc/x","name":"r"}"#, r#"{"uri":"file:///ok","name":"ok"}"#]),
        ..Lists::default()
    };
    // `sq2` is another unprefixed upstream: its namespace is its own too.
    let c = Catalog::build(&[src(1, "sq", false, &all, &squatter)], 128, &["chaos", "sq", "sq2"]);
    let tools: Vec<&str> = c.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tools, ["mine", "other__x", "sq__own"], "`other` is no configured upstream; `sq__` is its own");
    assert!(c.prompt("chaos__p").is_none());
    assert!(c.resource("file+chaos:///etc/x").is_none() && c.resource("file:///ok").is_some());
    assert!(c.collisions.iter().all(|x| x.refused == "sq"));
    assert_eq!(c.collisions.len(), 5, "{:?}", c.collisions);
    // The unprefixed tool's identity: its key, and its bare name.
    assert_eq!(c.get("mine").unwrap().ident(), Ident { key: "sq__mine", bare: Some("mine") });
}

#[test]
fn uris_are_namespaced_reversibly() {
    for (id, uri) in [
        ("fs", "file:///tmp/a b.txt"),
        ("db-1", "postgres://u@h/db?x=1#f"),
        ("x", "git+ssh://host/repo"),
        ("e", "test://static/resource/1"),
        ("u", "urn:isbn:0451450523"),
    ] {
        let ns = namespace_uri(id, uri).unwrap();
        let scheme = uri.split(':').next().unwrap();
        assert!(ns.starts_with(&format!("{scheme}+{id}:")), "{ns}: the original scheme comes first");
        assert_eq!(split_uri(&ns), Some((id, uri.to_owned())), "{ns}");
    }
    assert_eq!(namespace_uri("fs", "no-scheme"), None);
    assert_eq!(namespace_uri("fs", "1abc:x"), None);
    assert_eq!(split_uri("file:///a"), None, "no id");
    assert_eq!(split_uri("+fs:///a"), None);
    assert_eq!(split_uri("file+UPPER:///a"), None, "ids are lower-case");
}

#[test]
fn templates_match_their_uris() {
    assert!(template_matches("db://main/{table}", "db://main/users"));
    assert!(template_matches("file:///data/{path}", "file:///data/a/b.txt"));
    assert!(template_matches("test://t/{id}/data", "test://t/42/data"));
    assert!(!template_matches("test://t/{id}/data", "test://t/42/meta"));
    assert!(!template_matches("db://main/{table}", "db://other/users"));
    assert!(template_matches("x://{a}{b}", "x://anything"));
    assert!(template_matches("x://fixed", "x://fixed"));
    assert!(!template_matches("x://fixed", "x://fixed2"));
    assert!(!template_matches("x://{broken", "x://a"));
}

#[test]
fn prompts_resources_and_templates_merge() {
    let all = ToolMatcher::all();
    let a = Lists {
        prompts: raw(&[r#"{"name":"greet","arguments":[{"name":"n"}]}"#]),
        resources: raw(&[r#"{"uri":"file:///r.txt","name":"r","x":1}"#, r#"{"name":"no uri"}"#]),
        templates: raw(&[r#"{"uriTemplate":"db://main/{t}","name":"t"}"#, r#"{"uriTemplate":"{+any}","name":"bad"}"#]),
        ..Lists::default()
    };
    let b = Lists {
        prompts: raw(&[r#"{"name":"greet"}"#]),
        resources: raw(&[r#"{"uri":"file:///r.txt","name":"same uri, unprefixed"}"#]),
        ..Lists::default()
    };
    let c = Catalog::build(&[src(0, "a", true, &all, &a), src(1, "b", false, &all, &b)], 128, &[]);
    assert_eq!(c.prompt("a__greet").unwrap().upstream.index(), 0);
    assert_eq!(c.prompt("greet").unwrap().upstream.index(), 1);
    let r = c.resource("file+a:///r.txt").unwrap();
    assert_eq!((r.upstream.index(), &*r.original), (0, "file:///r.txt"));
    assert_eq!(r.def.text(), r#"{"uri":"file+a:///r.txt","name":"r","x":1}"#);
    // The bare URI is b's own (listed unprefixed), not a fallback to a.
    assert_eq!(c.resource("file:///r.txt").unwrap().upstream.index(), 1);
    assert_eq!(c.template("db+a://main/{t}").unwrap().upstream.index(), 0);
    assert_eq!(c.items(ListKind::Templates).len(), 1, "a template without a literal scheme is skipped");
    assert_eq!(c.items(ListKind::Resources).len(), 2);
}

#[test]
fn original_uris_route_when_unique() {
    let all = ToolMatcher::all();
    let a = Lists {
        resources: raw(&[r#"{"uri":"file:///only-a","name":"x"}"#, r#"{"uri":"file:///both","name":"x"}"#]),
        ..Lists::default()
    };
    let b = Lists { resources: raw(&[r#"{"uri":"file:///both","name":"x"}"#]), ..Lists::default() };
    let c = Catalog::build(&[src(0, "a", true, &all, &a), src(1, "b", true, &all, &b)], 128, &[]);
    assert_eq!(c.resource("file:///only-a").unwrap().key, "file+a:///only-a");
    assert!(c.resource("file:///both").is_none(), "ambiguous: never guessed");
}

fn walk(c: &Catalog, kind: ListKind, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page: serde_json::Value = serde_json::from_str(&c.page(kind, cursor.as_deref(), size).unwrap()).unwrap();
        let field = if kind == ListKind::Tools { "name" } else { "uri" };
        out.extend(page[kind.key()].as_array().unwrap().iter().map(|t| t[field].as_str().unwrap().to_owned()));
        match page.get("nextCursor") {
            Some(n) => cursor = Some(n.as_str().unwrap().to_owned()),
            None => return out,
        }
    }
}

#[test]
fn pages_walk_everything_once_even_when_lists_change() {
    let all = ToolMatcher::all();
    let names: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let l = tools(&refs);
    let c = Catalog::build(&[src(0, "s", true, &all, &l)], 128, &[]);
    let walked = walk(&c, ListKind::Tools, 10);
    assert_eq!(walked.len(), 25);
    assert_eq!(walked, refs.iter().map(|n| format!("s__{n}")).collect::<Vec<_>>());
    assert_eq!(walk(&c, ListKind::Tools, 0).len(), 25);
    assert_eq!(walk(&c, ListKind::Tools, 25).len(), 25);

    // First page from the old catalog, then the list changes: t05 (already
    // served) and t15 (not yet) are removed, t99 is added.
    let first: serde_json::Value = serde_json::from_str(&c.page(ListKind::Tools, None, 10).unwrap()).unwrap();
    let cursor = first["nextCursor"].as_str().unwrap();
    let changed: Vec<&str> = refs.iter().copied().filter(|n| *n != "t05" && *n != "t15").chain(["t99"]).collect();
    let l2 = tools(&changed);
    let c2 = Catalog::build(&[src(0, "s", true, &all, &l2)], 128, &[]);
    let second: serde_json::Value =
        serde_json::from_str(&c2.page(ListKind::Tools, Some(cursor), 100).unwrap()).unwrap();
    let rest: Vec<&str> = second["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(rest.first(), Some(&"s__t10"), "resumes right after the last name served");
    assert!(!rest.contains(&"s__t15") && rest.contains(&"s__t99"));
    assert_eq!(rest.len(), 15 - 1 + 1);
    assert_eq!(c2.changed_lists(&c), vec![ListKind::Tools]);
    assert!(c.changed_lists(&c).is_empty());
}

#[test]
fn foreign_cursors_are_invalid() {
    let all = ToolMatcher::all();
    let l =
        Lists { resources: raw(&[r#"{"uri":"a:1","name":"x"}"#, r#"{"uri":"a:2","name":"x"}"#]), ..tools(&["x", "y"]) };
    let c = Catalog::build(&[src(0, "s", true, &all, &l)], 128, &[]);
    let page: serde_json::Value = serde_json::from_str(&c.page(ListKind::Tools, None, 1).unwrap()).unwrap();
    let cursor = page["nextCursor"].as_str().unwrap();
    assert!(c.page(ListKind::Tools, Some(cursor), 1).is_ok());
    assert_eq!(
        c.page(ListKind::Resources, Some(cursor), 1),
        Err(InvalidCursor),
        "a tools cursor is not a resources one"
    );
    let altered = format!("{}00", cursor);
    let cut = &cursor[..cursor.len() - 2];
    for bad in ["", "zz", "abc", "7", "74ff", "74ff00000000", &altered, cut] {
        assert_eq!(c.page(ListKind::Tools, Some(bad), 1), Err(InvalidCursor), "{bad:?}");
    }
    assert_eq!(walk(&c, ListKind::Resources, 1), ["a+s:1", "a+s:2"]);
}
