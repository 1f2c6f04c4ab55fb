//! runner-core's files form layers: no two files import each other, directly or around a circle.
//!
//! Every `crate::` path in a file (in `use` declarations and in code, doc comments aside) is
//! resolved to the file that defines the module it names: the longest prefix of the path that is
//! a module file. A path that stops at `lib.rs` or a `mod.rs` (an item re-exported there) counts
//! as an import of that file, so files import from the file that defines what they use. Run with
//! `--nocapture` to see the files in an order where each imports only from those before it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runner-core/src");

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("runner-core/src is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `task/scope.rs` -> `task::scope`; `task/mod.rs` -> `task`; `lib.rs` -> ``.
fn module_of(file: &Path) -> String {
    let rel = file
        .strip_prefix(SRC)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The `crate::` paths a source text uses, with `use crate::a::{b, c::d}` groups expanded.
fn crate_paths(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `runner_core::`, not `crate::`
        }
        expand("", rest, &mut paths);
    }
    paths
}

/// Read a path (and a `{..}` group after it) at the start of `text`, prefixed by `prefix`.
fn expand(prefix: &str, text: &str, out: &mut Vec<String>) {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let path = format!("{prefix}{}", &text[..end]);
    if text[end..].starts_with('{') {
        let body = &text[end + 1..];
        let mut depth = 0;
        let mut item_start = 0;
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&path, body[item_start..i].trim(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&path, body[item_start..i].trim(), out);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
    } else {
        out.push(path.trim_end_matches(':').to_owned());
    }
}

#[test]
fn runner_core_files_import_each_other_in_no_circle() {
    let mut all = Vec::new();
    files(Path::new(SRC), &mut all);
    let modules: BTreeMap<String, PathBuf> =
        all.iter().map(|f| (module_of(f), f.clone())).collect();
    let name = |module: &str| -> String {
        let file = &modules[module];
        file.strip_prefix(SRC)
            .expect("under src")
            .display()
            .to_string()
    };

    // file -> the files it imports
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        let deps = imports.entry(name(module)).or_default();
        for path in crate_paths(&text) {
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let target = (0..=segments.len())
                .rev()
                .map(|k| segments[..k].join("::"))
                .find(|candidate| modules.contains_key(candidate))
                .unwrap_or_default();
            if &target != module {
                deps.insert(name(&target));
            }
        }
    }

    // Order the files so that each imports only from files before it; what cannot be ordered
    // is a circle.
    let mut placed: Vec<String> = Vec::new();
    let mut left = imports.clone();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| placed.contains(d)))
            .map(|(file, _)| file.clone())
            .collect();
        assert!(
            !ready.is_empty(),
            "these files import each other, directly or around a circle:\n{}",
            left.iter()
                .map(|(file, deps)| {
                    let open: Vec<_> = deps.iter().filter(|d| !placed.contains(d)).collect();
                    format!("  {file} imports {open:?}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        );
        for file in ready {
            left.remove(&file);
            placed.push(file);
        }
    }
    println!("runner-core, each file importing only from files above it:");
    for file in &placed {
        println!("  {file:<22} <- {:?}", imports[file]);
    }
}

/// The check itself: a circle is found, and `use` groups are read.
#[test]
fn the_path_reader_expands_groups() {
    let paths = crate_paths(
        "use crate::task::{header::Header, scope::{self, Scope}};\n\
         // crate::not::this\n\
         fn f() { crate::report::write(runner_core::x) }",
    );
    assert_eq!(
        paths,
        [
            "task::header::Header",
            "task::scope::self",
            "task::scope::Scope",
            "report::write"
        ]
    );
}
