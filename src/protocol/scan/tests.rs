//! Tests of `scan`.

use super::*;

fn check(text: &str) -> Result<(), ScanError> {
    scan(text, &Limits::default())
}

fn refused(text: &str) -> (Reason, String) {
    match check(text) {
        Err(ScanError::Ambiguous(a)) => (a.reason, a.path),
        other => panic!("{text}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn accepts_ordinary_json() {
    for ok in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[1,2.5,-3e10,true,null,"s"]}}}"#,
        r#"{}"#,
        r#"[]"#,
        r#" { "a" : [ { "a" : 1 } , { "a" : 2 } ] , "b" : { "a" : 3 } } "#,
        // Same names in different objects are fine.
        r#"{"a":{"a":{"a":1}},"b":[{"a":1,"b":2},{"a":1,"b":2}]}"#,
        // A surrogate pair is one character.
        r#"{"s":"\ud83d\ude00","\ud83d\ude00":1}"#,
        // Big but finite numbers; tiny ones round to zero.
        r#"{"big":123456789012345678901234567890,"f":1.7976931348623157e308,"tiny":1e-400}"#,
        r#"{"e":"\u00e9\/\b\f\n\r\t\"\\"}"#,
    ] {
        assert_eq!(check(ok), Ok(()), "{ok}");
    }
}

#[test]
fn refuses_duplicates_at_any_depth_after_decoding() {
    let table = [
        (r#"{"jsonrpc":"2.0","params":{"name":"a","arguments":{},"name":"b"}}"#, "params.name"),
        (r#"{"params":{"n\u0061me":"a","name":"b"}}"#, "params.name"),
        (r#"{"params":{"name":"a","\u006e\u0061\u006d\u0065":"b"}}"#, r#"params["\u006e\u0061\u006d\u0065"]"#),
        (r#"{"a":1,"a":2}"#, "a"),
        (r#"{"a":[{"x":1},{"y":1,"y":2}]}"#, "a[1].y"),
        (r#"{"p":{"_meta":{"progressToken":1,"progressToken":2}}}"#, "p._meta.progressToken"),
        (r#"{"a\/b":1,"a/b":2}"#, r#"["a/b"]"#),
        (r#"{"a b":1,"a b":2}"#, r#"["a b"]"#),
    ];
    for (text, path) in table {
        assert_eq!(refused(text), (Reason::DuplicateMember, path.to_owned()), "{text}");
    }
}

#[test]
fn refuses_names_that_differ_only_in_letter_case() {
    for (text, path) in [
        (r#"{"params":{"name":"a","Name":"b"}}"#, "params.Name"),
        (r#"{"params":{"NAME":"a","name":"b"}}"#, "params.name"),
        // Long s and the Kelvin sign fold to ASCII (Go's EqualFold).
        ("{\"params\":{\"taskId\":\"a\",\"ta\u{17f}kId\":\"b\"}}", "params[\"ta\u{17f}kId\"]"),
        (r#"{"a":{"k":1,"\u212a":2}}"#, r#"a["\u212a"]"#),
        (r#"{"a":{"Path":1,"p\u0061th":2}}"#, r#"a["p\u0061th"]"#),
    ] {
        assert_eq!(refused(text), (Reason::CaseVariant, path.to_owned()), "{text}");
    }
    // Among many members too (the hash set).
    let mut members: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
    members.push(r#""K7":0"#.to_owned());
    assert_eq!(refused(&format!("{{{}}}", members.join(","))).0, Reason::CaseVariant);
    members.pop();
    members.push(r#""k7":0"#.to_owned());
    assert_eq!(refused(&format!("{{{}}}", members.join(","))).0, Reason::DuplicateMember);
    // Different letters are different names; ß is not SS.
    assert_eq!(check(r#"{"a":1,"b":2,"ab":3,"straße":4,"STRASSE":5}"#), Ok(()));
}

#[test]
fn refuses_duplicates_among_many_members() {
    // Past the linear phase: the hash set finds it, escaped or not.
    let mut members: Vec<String> = (0..100).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let ok = format!("{{{}}}", members.join(","));
    assert_eq!(check(&ok), Ok(()));
    members.push(r#""k\u0034\u0032":0"#.to_owned());
    let dup = format!("{{{}}}", members.join(","));
    assert_eq!(refused(&dup).0, Reason::DuplicateMember);
    // A duplicate inside a nested object of a big one, and names reused
    // after a nested object closed.
    let nested = format!(
        r#"{{"outer":{{{}, "inner":{{"a":1,"b":{{"a":1}},"a":2}}}}}}"#,
        (0..40).map(|i| format!(r#""o{i}":1"#)).collect::<Vec<_>>().join(",")
    );
    assert_eq!(refused(&nested), (Reason::DuplicateMember, "outer.inner.a".to_owned()));
}

#[test]
fn a_duplicate_sixty_levels_down() {
    let mut text = String::from(r#"{"params":{"arguments":"#);
    for _ in 0..57 {
        text.push_str(r#"{"x":"#);
    }
    text.push_str(r#"{"path":"/srv/ok","path":"/etc/shadow"}"#);
    text.push_str(&"}".repeat(57));
    text.push_str("}}");
    let (reason, path) = refused(&text);
    assert_eq!(reason, Reason::DuplicateMember);
    assert!(path.starts_with("params.arguments.x.x") && path.ends_with("…"), "{path}");
    // Under a limit that allows it, the same text without the duplicate passes.
    let fine = text.replace(r#","path":"/etc/shadow""#, "");
    assert_eq!(check(&fine), Ok(()));
}

#[test]
fn refuses_nesting_past_the_limit_iteratively() {
    let limits = Limits { max_depth: 4 };
    assert_eq!(scan(r#"{"a":{"b":[{}]}}"#, &limits), Ok(()));
    match scan(r#"{"a":{"b":[{"c":[]}]}}"#, &limits) {
        Err(ScanError::Ambiguous(a)) => assert_eq!((a.reason, a.path.as_str()), (Reason::TooDeep, "a.b[0].c")),
        other => panic!("{other:?}"),
    }
    // 16 MiB of `[` ends at the limit, without recursion.
    let deep = "[".repeat(16 << 20);
    assert!(matches!(check(&deep), Err(ScanError::Ambiguous(Ambiguous { reason: Reason::TooDeep, .. }))));
    let depth_64 = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert_eq!(check(&depth_64), Ok(()));
    let depth_65 = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert_eq!(refused(&depth_65).0, Reason::TooDeep);
}

#[test]
fn refuses_numbers_out_of_range_and_lone_surrogates() {
    let huge = format!(r#"{{"x":{}}}"#, "9".repeat(400));
    for (text, reason, path) in [
        (r#"{"args":{"path":"/srv","x":1e400}}"#, Reason::NumberOutOfRange, "args.x"),
        (r#"{"a":[-1E+309]}"#, Reason::NumberOutOfRange, "a[0]"),
        (huge.as_str(), Reason::NumberOutOfRange, "x"),
        (r#"{"a":"x\ud800"}"#, Reason::LoneSurrogate, "a"),
        (r#"{"a":"\udc00y"}"#, Reason::LoneSurrogate, "a"),
        (r#"{"a":"\ud800\u0041"}"#, Reason::LoneSurrogate, "a"),
        (r#"{"a":["ok","\ud800"]}"#, Reason::LoneSurrogate, "a[1]"),
        (r#"{"o":{"\ud800":1}}"#, Reason::LoneSurrogate, r#"o["\ud800"]"#),
    ] {
        assert_eq!(refused(text), (reason, path.to_owned()), "{text}");
    }
}

#[test]
fn syntax_errors_are_not_ambiguities() {
    for bad in [
        "",
        "{",
        r#"{"a"}"#,
        r#"{"a":}"#,
        "[1,]",
        "[1 2]",
        r#"{"a":1,}"#,
        "tru",
        "01x",
        r#""\x""#,
        "{} {}",
        r#"{"a":"\u12"}"#,
        "-",
        "1.",
        "1e",
        // A leading zero; control characters unescaped in a string or name.
        "01",
        "[-00]",
        "\"a\u{1}b\"",
        "[\"\t\"]",
        "{\"a\nb\":1}",
    ] {
        assert_eq!(check(bad), Err(ScanError::Syntax), "{bad:?}");
    }
}

#[test]
fn plans_skim_jump_and_find_members() {
    let limits = Limits { max_depth: 3 };
    // A tool result: its own names unique, `isError` and `_meta` checked,
    // the rest skimmed (deep and duplicated inside, which is not ours to read).
    const TOOL: &[(&str, Plan<'static>)] = &[("isError", Plan::Full), ("_meta", Plan::Full)];
    let plan = Plan::Object(TOOL, &Plan::Skim);
    let result = r#"{"content":[[[[[{"a":1,"a":2}]]]]],"isError" : true,"_meta":{"k":1}}"#;
    let found = scan_with(result, &limits, plan).unwrap();
    let got: Vec<(&str, &str)> = found.iter().map(|(i, r)| (TOOL[*i].0, &result[r.clone()])).collect();
    assert_eq!(got, [("isError", "true"), ("_meta", r#"{"k":1}"#)]);
    for bad in [
        r#"{"content":[],"isError":false,"isError":true}"#,
        r#"{"content":[],"is\u0045rror":false,"isError":true}"#,
        r#"{"_meta":{"k":1,"k":2}}"#,
        r#"{"content":1,"content":2}"#,
    ] {
        assert!(matches!(scan_with(bad, &limits, plan), Err(ScanError::Ambiguous(_))), "{bad}");
    }
    // The envelope: `result` jumped over by its known length.
    let envelope = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result},"x":{{"y":1}}}}"#);
    let listed = [("result", Plan::Jump(result.len()))];
    assert!(scan_with(&envelope, &limits, Plan::Object(&listed, &Plan::Full)).is_ok());
    let dup_outside = envelope.replace(r#""x":{"y":1}"#, r#""x":{"y":1,"y":2}"#);
    assert!(scan_with(&dup_outside, &limits, Plan::Object(&listed, &Plan::Full)).is_err());
    // Read by its grammar (as the envelope's members are), a value is still
    // checked for being JSON: only D12's checks are skipped.
    let grammar = Plan::Object(TOOL, &Plan::Grammar);
    assert!(scan_with(result, &limits, grammar).is_ok(), "deep and duplicated inside is JSON");
    for bad in [
        r#"{"content":[1 2]}"#,
        r#"{"content":{"a" 1}}"#,
        "{\"content\":\"\u{1f}\"}",
        r#"{"content":[01]}"#,
        r#"{"content":[1,]}"#,
    ] {
        assert_eq!(scan_with(bad, &limits, grammar).unwrap_err(), ScanError::Syntax, "{bad}");
    }
    // Skimming stops at the value's end, whatever it is.
    for (text, rest) in [(r#"{"a":12 , "b":2}"#, 1), (r#"{"a":"x\"}" ,"b":2}"#, 1), (r#"{"a":[{"}":1}],"b":2}"#, 1)] {
        let listed = [("b", Plan::Full)];
        let found = scan_with(text, &limits, Plan::Object(&listed, &Plan::Skim)).unwrap();
        assert_eq!(found.len(), rest, "{text}");
        assert_eq!(&text[found[0].1.clone()], "2");
    }
}

#[test]
fn a_costly_name_sends_its_object_to_hash_mode_and_clashes_are_still_found() {
    // Escaped, non-ASCII or long names are hashed at once (compared
    // linearly, each was decoded and folded again against every earlier
    // one: the hostile review's F1). Every clash is still found, whichever
    // name comes first.
    let long = "n".repeat(300);
    let cases = [
        (r#"{"a":1,"b\u0061":2,"ba":3}"#.to_owned(), Reason::DuplicateMember, "ba"),
        (r#"{"ba":1,"a":2,"b\u0061":3}"#.to_owned(), Reason::DuplicateMember, r#"["b\u0061"]"#),
        ("{\"a\":1,\"stra\u{df}e\":2,\"STRA\u{df}E\":3}".to_owned(), Reason::CaseVariant, "STRAßE"),
        ("{\"\u{17f}\":1,\"s\":2}".to_owned(), Reason::CaseVariant, "s"),
        (format!(r#"{{"x":1,"{long}":2,"{}":3}}"#, long.to_uppercase()), Reason::CaseVariant, ""),
    ];
    for (text, reason, at) in cases {
        let (got, path) = refused(&text);
        assert_eq!(got, reason, "{text}");
        assert!(path.contains(at), "{text}: {path}");
    }
    // Distinct costly names pass, in objects below and above the linear limit.
    let many: Vec<String> = (0..40).map(|i| format!(r#""k\u00e9{i}{long}":{i}"#)).collect();
    assert!(check(&format!("{{{}}}", many.join(","))).is_ok());
    assert!(check(r#"{"\u0061":1,"b":{"\u0061":2},"c":3}"#).is_ok());
}
