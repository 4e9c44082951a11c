//! The library's layers: every `crate::` import in `src/` points down the
//! order the README's architecture section lists, so no module imports one
//! above it and the import graph has no circle.
//!
//! The check reads the source, not the compiler's view: it finds every
//! `crate::name` path (plain, in a `use` list, or inline in code) outside
//! comments, test files and `#[cfg(test)]` items, and takes `name` as the
//! top-level module the file depends on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first; a module may import only modules listed before it.
/// `cli` and `main.rs` sit above all of them and are not checked.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary and utilities",
        &["choice", "vocab", "files", "rng", "cpu", "memory"],
    ),
    (
        "computation",
        &["data", "model", "curve", "optim", "loader", "runtime"],
    ),
    (
        "storage",
        &[
            "checkpoint",
            "config",
            "schema",
            "observe",
            "experiment",
            "shard",
            "lock",
        ],
    ),
    ("analysis", &["eval", "landscape", "train", "align"]),
    ("pipelines", &["steps", "merge"]),
    ("output and orchestration", &["report", "plan"]),
];

fn order() -> Vec<&'static str> {
    LAYERS.iter().flat_map(|(_, m)| m.iter().copied()).collect()
}

/// The source with line comments and `#[cfg(test)]` items removed.
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        if t.starts_with("#[cfg(test)]") {
            let mut j = i + 1;
            while j < lines.len() && lines[j].trim_start().starts_with("#[") {
                j += 1;
            }
            if j < lines.len() && lines[j].trim_end().ends_with(';') {
                i = j + 1;
                continue;
            }
            let (mut depth, mut opened) = (0i64, false);
            while j < lines.len() {
                for c in lines[j].chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if opened && depth <= 0 {
                    break;
                }
                j += 1;
            }
            i = j + 1;
            continue;
        }
        let code = match lines[i].find("//") {
            Some(k) => &lines[i][..k],
            None => lines[i],
        };
        out.push_str(code);
        out.push('\n');
        i += 1;
    }
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named by `crate::` paths in `code`.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(k) = code[from..].find("crate::") {
        let at = from + k;
        from = at + "crate::".len();
        let before = if at == 0 { b' ' } else { bytes[at - 1] };
        if before == b'$' || before.is_ascii_alphanumeric() || before == b'_' {
            continue;
        }
        let rest = &code[from..];
        if let Some(list) = rest.strip_prefix('{') {
            // `crate::{a::x, b::{y, z}}`: the first name of each top-level item.
            let (mut depth, mut item) = (0usize, String::new());
            let mut items = Vec::new();
            for c in list.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            for it in items {
                let name = ident(it.trim());
                if !name.is_empty() {
                    found.insert(name.to_string());
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name.to_string());
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read src/") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().unwrap().to_string_lossy();
    name.contains("tests") || name == "testdata.rs"
}

/// `(importing module, imported module) -> files`, for the whole of `src/`.
fn import_graph(src: &Path) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for p in files {
        if is_test_file(&p) {
            continue;
        }
        let rel = p.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_string();
        if matches!(top.as_str(), "main" | "cli" | "lib") {
            continue;
        }
        let code = production_code(&fs::read_to_string(&p).expect("read a source file"));
        for m in imported_modules(&code) {
            if m != top {
                edges
                    .entry((top.clone(), m))
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = order();
    let rank = |m: &str| order.iter().position(|o| *o == m);
    let mut problems = Vec::new();
    let edges = import_graph(&src);
    assert!(
        edges.len() > 50,
        "the import scan found only {} edges in src/: the parser is broken",
        edges.len()
    );
    for ((from, to), files) in &edges {
        match (rank(from), rank(to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(_), Some(_)) => problems.push(format!(
                "{from} imports {to}, a layer above it, in {files:?}"
            )),
            (None, _) => problems.push(format!(
                "module {from} is in no layer: add it to LAYERS (and the README)"
            )),
            (_, None) => problems.push(format!(
                "{from} imports {to}, which is in no layer, in {files:?}"
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_module_of_lib_rs_has_a_layer_and_the_readme_lists_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let layered: BTreeSet<String> = order().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        declared, layered,
        "src/lib.rs's modules and the LAYERS of this test differ"
    );
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let missing: Vec<&str> = order()
        .into_iter()
        .filter(|m| !readme.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's architecture section does not name {missing:?}"
    );
}

#[test]
fn the_scan_sees_the_shapes_of_imports_the_tree_uses() {
    let code = production_code(
        "use crate::a::x;\nuse crate::{b::y, c::{z, w}};\nfn f() { crate::d::g(); $crate::e; }\n\
         // crate::f::comment\n#[cfg(test)]\nmod tests {\n    use crate::g;\n}\n#[cfg(test)]\nmod more;\n",
    );
    let got: Vec<String> = imported_modules(&code).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "d"]);
}
