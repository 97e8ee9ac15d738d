//! The layering of the crate's modules, checked against the table in
//! ARCHITECTURE.md ("Layers"): no module reaches one its row does not name,
//! and the table itself has no circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The table: module → the modules it may use.
fn table() -> BTreeMap<String, BTreeSet<String>> {
    table_of("### Layers")
}

/// A table of ARCHITECTURE.md under `heading`: row → the rows it may use.
fn table_of(heading: &str) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let section = text.split(heading).nth(1).unwrap_or_else(|| panic!("ARCHITECTURE.md has a `{heading}` section"));
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split(',').map(|n| n.trim().trim_matches('`').to_owned()).filter(|n| !n.is_empty() && n != "—").collect()
    };
    let mut rows = BTreeMap::new();
    for line in section.lines().skip_while(|l| !l.starts_with("| `")).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        let module = cells[0].trim().trim_matches('`').to_owned();
        rows.insert(module, names(cells[1]));
    }
    rows
}

/// The `crate::<module>` paths in `file`'s code: comments and the test
/// module at its end left out.
fn uses(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            // `$crate::`, or a path in another crate (`mcp_gateway::…`).
            let before = &line[..at];
            if !name.is_empty() && !before.ends_with('$') && !before.ends_with("_") {
                found.insert(name);
            }
        }
    }
    found
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_what_the_layer_table_allows() {
    let table = table();
    assert!(table.len() >= 10, "the Layers table was not read: {table:?}");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    for file in &all {
        let relative = file.strip_prefix(&src).unwrap();
        let mut parts = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
        let first = parts.next().unwrap();
        let module = first.trim_end_matches(".rs").to_owned();
        // The crate root, the binary (`main.rs`, `cli/`, which use the
        // library by its name) and this test wire everything together.
        if ["lib", "main", "cli", "layering"].contains(&module.as_str()) {
            continue;
        }
        // Test files beside the code (`tests.rs`, `tests/…`) may use anything.
        if relative.components().any(|c| c.as_os_str() == "tests" || c.as_os_str() == "tests.rs") {
            continue;
        }
        let allowed = table.get(&module).unwrap_or_else(|| panic!("{module} has no row in the Layers table"));
        for used in uses(file) {
            if used != module && !allowed.contains(&used) {
                wrong.push(format!("{} uses crate::{used}", relative.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "edges the Layers table does not allow:\n{}", wrong.join("\n"));
}

/// The routing files `file` (under `src/routing/`) uses: `crate::routing::X`,
/// and `super::X` from a file directly in `routing/` (`super::super::X` one
/// folder down). Comments and the test module left out.
fn routing_uses(file: &Path, depth: usize) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let up = if depth == 0 { "super::".to_owned() } else { "super::".repeat(depth + 1) };
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for prefix in ["crate::routing::", up.as_str()] {
            for (at, _) in line.match_indices(prefix) {
                // `super::super::x` also contains `super::x`, one level up.
                if prefix == up && line[..at].ends_with("super::") {
                    continue;
                }
                let rest = &line[at + prefix.len()..];
                let names: Vec<String> = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or("").split(',').map(str::to_owned).collect(),
                    None => vec![rest.to_owned()],
                };
                for n in names {
                    let name: String = n.trim().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if !name.is_empty() && name != "super" && name != "self" {
                        found.insert(name);
                    }
                }
            }
        }
    }
    found
}

#[test]
fn routing_files_use_only_what_their_row_allows() {
    let table = table_of("### Inside routing");
    assert!(table.len() >= 10, "the routing table was not read: {table:?}");
    assert_no_circle(&table);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routing");
    let mut all = Vec::new();
    files(&dir, &mut all);
    let mut wrong = Vec::new();
    for file in &all {
        let relative = file.strip_prefix(&dir).unwrap();
        if relative == Path::new("mod.rs")
            || relative.components().any(|c| c.as_os_str() == "tests" || c.as_os_str() == "tests.rs")
        {
            continue;
        }
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let row = first.trim_end_matches(".rs").to_owned();
        let depth = relative.components().count() - 1;
        let allowed = table.get(&row).unwrap_or_else(|| panic!("routing/{row} has no row in `Inside routing`"));
        for used in routing_uses(file, depth) {
            // One folder down, `super::x` is a sibling in the same folder.
            if used != row && !allowed.contains(&used) && table.contains_key(&used) {
                wrong.push(format!("routing/{} uses {used}", relative.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "edges the `Inside routing` table does not allow:\n{}", wrong.join("\n"));
}

#[test]
fn the_layer_table_has_no_circle() {
    assert_no_circle(&table());
}

fn assert_no_circle(table: &BTreeMap<String, BTreeSet<String>>) {
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        table: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        assert!(!path.contains(&m), "a circle: {} -> {m}", path.join(" -> "));
        path.push(m);
        for next in table.get(m).into_iter().flatten() {
            visit(next, table, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in table.keys() {
        visit(m, table, &mut Vec::new(), &mut done);
    }
}

/// Most lines of code (before its test module) a file in `src/` may have.
const MAX_LINES: usize = 600;

#[test]
fn no_file_grows_past_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    for file in &all {
        let relative = file.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let lines = text.split("#[cfg(test)]").next().unwrap_or("").lines().count();
        if lines > MAX_LINES {
            wrong.push(format!("{relative}: {lines} lines of code, over {MAX_LINES}: split it by concern"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every request body is read by `App::read_body` (`max_message_bytes`,
/// the in-flight budget, the whole-body deadline): an axum body extractor
/// or `to_bytes` in the HTTP front end would skip the budget and be held
/// only to axum's default 2 MiB (there is no `DefaultBodyLimit` layer,
/// `downstream/http/layers/mod.rs` says why).
#[test]
fn http_bodies_are_read_only_by_read_body() {
    const READERS: [&str; 7] = ["Json<", "Form<", "RawForm", "to_bytes(", ": Bytes", "body: String", "Multipart"];
    let mut all = Vec::new();
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/downstream/http"), &mut all);
    assert!(all.len() >= 5, "{all:?}");
    let mut wrong = Vec::new();
    for file in &all {
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for r in READERS.iter().filter(|r| line.contains(**r)) {
                wrong.push(format!("{}:{}: `{r}`: read bodies with App::read_body", file.display(), n + 1));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
