//! The module structure docs/architecture.md promises, checked against the source: which
//! top-level module of `geo-runtime` may import which (a layer may import only layers below it),
//! hence no module cycle, and no source file over the size limit.
//!
//! It reads `src/` as text: a reference is `crate::<module>` (or `$crate::`, or one of the
//! names in a `crate::{..}` group) outside comments and outside unit tests (a file's
//! `#[cfg(test)] mod tests`, or a `tests.rs`). `cargo test -p geo-runtime --test architecture -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import the modules of lower layers, and within its
/// own layer only what [`SAME_LAYER`] allows. docs/architecture.md shows the same table.
const LAYERS: &[&[&str]] = &[
    &["error", "descriptor", "retry", "telemetry"],
    &["db", "storage"],
    &["verification", "flags", "removals", "store_checks"],
    &["registry", "model"],
    &["events"],
    &["replicator"],
    &["strategy"],
    &["worker", "operations"],
    &["status", "graphql"],
    &["node"],
    &["check"],
    &["cli", "testkit", "testing", "__private"],
];

/// Imports allowed between modules of one layer.
const SAME_LAYER: &[(&str, &str)] = &[
    ("descriptor", "error"),
    ("graphql", "status"),
    ("testkit", "testing"),
    ("cli", "testing"),
];

/// Source files longer than this are split by concern.
const MAX_FILE_LINES: usize = 600;

/// Functions longer than this (signature to closing brace, outside unit tests) are split into
/// named steps.
const MAX_FN_LINES: usize = 80;

/// Functions that are one code template (a `quote!` or a table of SQL statements rendered in one
/// struct literal): long by nature, read top to bottom.
const TEMPLATES: &[&str] = &[
    "geo-dsl-macros/src/codegen/registry.rs expand",
    "geo-dsl-macros/src/codegen/replicator.rs expand",
    "geo-runtime/src/registry/sql.rs new",
    "geo-runtime/src/verification/sql.rs new",
];

/// The modules (a file, or a directory's files) that run SQL: the database layer and one owner
/// per table. Anything else asks an owner.
const SQL_OWNERS: &[&str] = &[
    "db/",
    "events/",
    "flags.rs",
    "model.rs",
    "node/nodes.rs",
    "registry/",
    "removals.rs",
    "store_checks.rs",
    "verification/",
];

/// Each of the runtime's own tables and the one module that names it (`db/schema.rs`, which
/// creates them, aside).
const TABLE_OWNERS: &[(&str, &str)] = &[
    ("geo_backfill_cursors", "registry/backfill.rs"),
    ("geo_blob_removals", "removals.rs"),
    ("geo_event_cursor", "events/cursor.rs"),
    ("geo_event_gaps", "events/cursor.rs"),
    ("geo_events", "events/"),
    ("geo_feature_flags", "flags.rs"),
    ("geo_leases", "db/lease.rs"),
    ("geo_nodes", "node/nodes.rs"),
    ("geo_secondary_cursors", "events/source.rs"),
    ("geo_store_checks", "store_checks.rs"),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for lib.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src_dir()).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib").then_some(name)
}

/// The code of a file without comments and without its unit tests.
fn code_of(text: &str) -> String {
    let code = text
        .lines()
        .map(|line| match line.find("//") {
            // `//` inside a string literal only shortens the line: it never adds a reference.
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    without_test_modules(&code)
}

/// `code` without the bodies of its `#[cfg(test)] mod tests { .. }` (braces matched).
fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]\nmod tests") {
        out.push_str(&rest[..at]);
        let body = &rest[at..];
        let Some(open) = body.find('{') else {
            return out;
        };
        let mut depth = 0;
        let mut end = body.len();
        for (i, c) in body[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// The names the crate root re-exports (`pub use db::{Database, ..}`), with their module:
/// `crate::Database` is a reference to `db`.
fn root_names() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).expect("read lib.rs");
    let code = code_of(&lib);
    let mut names = BTreeMap::new();
    for statement in code.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        for name in items
            .split(|c: char| !is_ident(c))
            .filter(|n| !n.is_empty())
        {
            names.insert(name.to_owned(), module.trim().to_owned());
        }
    }
    names
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules `code` names through `crate::`.
fn references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| is_ident(c) && c != '$') {
            continue; // e.g. `my_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each item at depth 1 of the group.
            let mut depth = 1;
            let mut item_start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && c == ',' {
                    if !name.is_empty() {
                        out.insert(std::mem::take(&mut name));
                    }
                    item_start = true;
                    continue;
                }
                if item_start {
                    if is_ident(c) {
                        name.push(c);
                    } else if !name.is_empty() {
                        out.insert(std::mem::take(&mut name));
                        item_start = false;
                    }
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            out.insert(name);
        }
    }
    out
}

struct Source {
    modules: BTreeSet<String>,
    edges: BTreeMap<(String, String), BTreeSet<String>>,
    lines: BTreeMap<String, usize>,
}

fn read_source() -> Source {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut modules = BTreeSet::new();
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source file");
        let rel = file
            .strip_prefix(src_dir())
            .expect("under src")
            .display()
            .to_string();
        lines.insert(rel.clone(), text.lines().count());
        let Some(from) = module_of(file) else {
            continue;
        };
        modules.insert(from.clone());
        // A `tests.rs` is a module's unit tests in a file of their own: test code, which may
        // reach for the test helpers (`testing`) like an inline `mod tests` does.
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        for to in references(&code_of(&text)) {
            if to != from && to != "self" {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    // A name the crate root re-exports stands for its module.
    let root = root_names();
    let edges = edges
        .into_iter()
        .filter_map(|((from, to), files)| {
            let to = if modules.contains(&to) {
                to
            } else {
                root.get(&to)?.clone()
            };
            (to != from).then_some(((from, to), files))
        })
        .fold(
            BTreeMap::new(),
            |mut all: BTreeMap<_, BTreeSet<String>>, (k, files)| {
                all.entry(k).or_default().extend(files);
                all
            },
        );
    Source {
        modules,
        edges,
        lines,
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn allowed(from: &str, to: &str) -> bool {
    match (layer_of(from), layer_of(to)) {
        (Some(a), Some(b)) => b < a || (a == b && SAME_LAYER.contains(&(from, to))),
        _ => false,
    }
}

#[test]
fn every_module_has_a_layer() {
    let source = read_source();
    let missing: Vec<_> = source
        .modules
        .iter()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "modules with no layer in tests/architecture.rs and docs/architecture.md: {missing:?}"
    );
}

#[test]
fn modules_import_only_lower_layers() {
    let source = read_source();
    for ((from, to), files) in &source.edges {
        println!(
            "{from} -> {to}   ({})",
            files.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let wrong: Vec<String> = source
        .edges
        .iter()
        .filter(|((from, to), _)| !allowed(from, to))
        .map(|((from, to), files)| format!("{from} -> {to} (in {files:?})"))
        .collect();
    assert!(
        wrong.is_empty(),
        "imports against the layering of docs/architecture.md:\n{}",
        wrong.join("\n")
    );
}

/// Each source file's path under `src/` (with `/`) and its code outside comments and tests.
fn source_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(src_dir()).expect("under src");
            let rel = rel.to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("read source");
            (rel, code_of(&text))
        })
        .collect()
}

fn owned_by(path: &str, owner: &str) -> bool {
    path == owner || (owner.ends_with('/') && path.starts_with(owner))
}

#[test]
fn only_the_owners_run_sql() {
    let offenders: Vec<String> = source_files()
        .into_iter()
        .filter(|(path, code)| {
            ["sqlx::query", "sqlx::raw_sql", "query_as(", "query_scalar("]
                .iter()
                .any(|call| code.contains(call))
                && !SQL_OWNERS.iter().any(|owner| owned_by(path, owner))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "these files run SQL but own no table; move the statements to the table's owner (see SQL_OWNERS): {offenders:?}"
    );
}

#[test]
fn each_table_is_named_by_its_owner_only() {
    let files = source_files();
    let mut wrong = Vec::new();
    for (table, owner) in TABLE_OWNERS {
        let named = format!("\\\"{table}\\\"");
        let mut found = false;
        for (path, code) in &files {
            if !code.contains(&named) || path == "db/schema.rs" {
                continue;
            }
            if owned_by(path, owner) {
                found = true;
            } else {
                wrong.push(format!("{path} names {table} (owned by {owner})"));
            }
        }
        assert!(
            found,
            "{owner} no longer names {table}: update TABLE_OWNERS"
        );
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn every_runtime_table_has_an_owner() {
    let schema = std::fs::read_to_string(src_dir().join("db/schema.rs")).expect("read schema");
    for statement in schema.split("CREATE TABLE \"").skip(1) {
        let table = statement.split('"').next().unwrap_or_default();
        if table == "geo_schema_migrations" {
            continue; // the migration runner's, in db/
        }
        assert!(
            TABLE_OWNERS.iter().any(|(t, _)| *t == table),
            "db/schema.rs creates {table}, which TABLE_OWNERS does not name"
        );
    }
}

#[test]
fn no_source_file_is_too_long() {
    let source = read_source();
    let long: Vec<String> = source
        .lines
        .iter()
        .filter(|(_, n)| **n > MAX_FILE_LINES)
        .map(|(file, n)| format!("{file}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines (split them by concern):\n{}",
        long.join("\n")
    );
}

/// `src` with the insides of comments, string and char literals blanked (newlines kept), so
/// that braces and `fn` in them do not count.
fn blank_literals(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let prev_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            blank(&mut out, i, end);
            i = end;
        } else if !prev_ident
            && (rest.starts_with(b"r#") || rest.starts_with(b"r\"") || rest.starts_with(b"br"))
        {
            let start = i + if rest[0] == b'b' { 2 } else { 1 };
            let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
            if b.get(start + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let body = start + hashes + 1;
            let end = src[body..]
                .find(&close)
                .map_or(b.len(), |p| body + p + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let len = if rest.get(1) == Some(&b'\\') {
                rest.iter().skip(2).position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + ch) == Some(&b'\'')).then_some(ch + 2)
            };
            match len {
                Some(len) => {
                    blank(&mut out, i, i + len);
                    i += len;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The functions of `code` longer than `max` lines: (name, lines).
fn long_functions(code: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else {
            continue;
        };
        let (mut depth, mut opened, mut end) = (0usize, false, None);
        'scan: for (k, l) in lines.iter().enumerate().skip(at) {
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if opened && depth == 0 {
                            end = Some(k);
                            break 'scan;
                        }
                    }
                    // A declaration without a body (a trait method).
                    ';' if !opened => break 'scan,
                    _ => {}
                }
            }
        }
        if let Some(end) = end
            && end - at + 1 > max
        {
            out.push((name, end - at + 1));
        }
    }
    out
}

/// The name of the function a line declares, if it does.
fn fn_name(line: &str) -> Option<String> {
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            "pub" | "async" | "const" | "unsafe" | "extern" => continue,
            _ if w.starts_with("pub(") => continue,
            "fn" => {
                let name: String = words.next()?.chars().take_while(|&c| is_ident(c)).collect();
                return (!name.is_empty()).then_some(name);
            }
            _ => return None,
        }
    }
    None
}

#[test]
fn no_function_is_too_long() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for krate in ["geo-runtime", "geo-dsl-macros"] {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        files.sort();
        // A `tests.rs` is a unit-test module of its own.
        for file in files.into_iter().filter(|f| !f.ends_with("tests.rs")) {
            let text = std::fs::read_to_string(&file).expect("read source file");
            let code = without_test_modules(&blank_literals(&text));
            let rel = file
                .strip_prefix(&root)
                .expect("under root")
                .display()
                .to_string();
            for (name, n) in long_functions(&code, MAX_FN_LINES) {
                found.push((format!("{rel} {name}"), n));
            }
        }
    }
    let long: Vec<String> = found
        .iter()
        .filter(|(f, _)| !TEMPLATES.contains(&f.as_str()))
        .map(|(f, n)| format!("{f}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (name their steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_reader_skips_literals_and_measures_bodies() {
    let code = "fn a() {\n    let s = \"}}}\";\n    let c = '}';\n    let r = r#\"{\"#;\n}\nfn b<'x>(v: &'x str) -> &'x str {\n    v\n}\ntrait T {\n    fn c(&self);\n}\n";
    let blanked = blank_literals(code);
    let all = long_functions(&blanked, 0);
    assert_eq!(all, [("a".to_owned(), 5), ("b".to_owned(), 3)], "{blanked}");
}

#[test]
fn the_reference_reader_sees_groups_and_paths() {
    let code = "use crate::db::{Database, on_pool};\nuse crate::{events::{A, B}, registry, storage::hex};\nfoo($crate::node::x); other_crate::x;";
    let found: Vec<_> = references(code).into_iter().collect();
    assert_eq!(found, ["db", "events", "node", "registry", "storage"]);
}
