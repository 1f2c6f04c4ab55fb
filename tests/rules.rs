//! Every rule number cited in the code and the tests ("R2.1") is defined in docs/behaviour.md.

use std::collections::BTreeSet;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The rules the document defines: its `## R2` headings and their numbered items (`R2.1`).
fn defined() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/behaviour.md"))
        .expect("docs/behaviour.md is readable");
    let mut rules = BTreeSet::new();
    let mut section = None;
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("## R") {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            rules.insert(format!("R{n}"));
            section = Some(n);
        } else if let (Some(s), Some((item, _))) = (&section, line.split_once(". ")) {
            if !item.is_empty() && item.chars().all(|c| c.is_ascii_digit()) {
                rules.insert(format!("R{s}.{item}"));
            }
        }
    }
    rules
}

/// `R` followed by digits (and `.digits`), standing alone, in `text`.
fn cited(text: &str, out: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('R') {
        let before = i.checked_sub(1).map(|j| bytes[j] as char);
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + 1..];
        let major: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if major.len() != 1 {
            continue;
        }
        let mut rule = format!("R{major}");
        let after = &rest[1..];
        if let Some(minor) = after.strip_prefix('.') {
            let minor: String = minor.chars().take_while(char::is_ascii_digit).collect();
            if !minor.is_empty() {
                rule = format!("{rule}.{minor}");
            }
        }
        let end = rest[1..]
            .trim_start_matches(|c: char| c == '.' || c.is_ascii_digit())
            .chars()
            .next();
        if !end.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            out.insert(rule);
        }
    }
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_cited_rule_is_defined() {
    let defined = defined();
    let mut all = Vec::new();
    for dir in [
        "runner-core/src",
        "runner-macros/src",
        "src",
        "tests",
        "examples",
        "benches",
    ] {
        sources(&Path::new(ROOT).join(dir), &mut all);
    }
    let mut missing = Vec::new();
    for file in all {
        let mut rules = BTreeSet::new();
        cited(
            &std::fs::read_to_string(&file).expect("readable"),
            &mut rules,
        );
        for rule in rules.difference(&defined) {
            missing.push(format!("{} cites {rule}", file.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "rules not in docs/behaviour.md:\n{}",
        missing.join("\n")
    );
    assert!(defined.contains("R2.7") && defined.contains("R9.4"));
}
