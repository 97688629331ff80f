//! The layering the crates' docs promise, checked on their sources: every library crate of
//! the workspace (`dssmr-api`, `dssmr-engine`, `dssmr-check`, `dssmr-bench`,
//! `dssmr-operator`) has a `# Layout` section in its `lib.rs` doc that lists every top-level
//! module it declares, in dependency order; this test fails when
//!
//! - a module is declared but not listed, or listed but not declared;
//! - a module refers (`crate::x`) to a top-level module listed below it;
//! - files refer to each other in a cycle (`a.rs` uses `b.rs`, which uses `a.rs`), at any
//!   depth, `super::` paths included.
//!
//! Only code counts: comments (intra-doc links) and test modules (`#[cfg(test)] mod ...` at
//! the end of a file, and files declared only under `#[cfg(test)]`) are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library crates whose layout is checked, relative to the workspace root.
const CRATES: &[&str] = &[
    "replica/api",
    "replica/engine",
    "replica/check",
    "replica/bench",
    "operator",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("replica/engine sits two levels below the workspace root")
        .to_path_buf()
}

/// One source file: its module path (`["client", "cache"]`) and its code lines.
struct ModuleFile {
    path: Vec<String>,
    file: PathBuf,
    code: Vec<String>,
}

/// The code of a file: comment lines dropped, and everything from a trailing
/// `#[cfg(test)]` module on.
fn code_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map(|n| n.trim_start()).unwrap_or("");
        if l.trim() == "#[cfg(test)]" && (next.starts_with("mod ") || next.starts_with("pub mod "))
        {
            // A test module declared inline runs to the end of the file by convention; one
            // declared as `mod x;` is a separate file, skipped by the walk below.
            if next.ends_with('{') {
                end = i;
                break;
            }
        }
    }
    lines[..end]
        .iter()
        .map(|l| l.trim_start())
        .filter(|l| !l.starts_with("//"))
        .map(|l| l.to_string())
        .collect()
}

/// Names of the submodules a file declares outside tests (`mod x;` / `pub mod x;` /
/// `pub(crate) mod x;`).
fn declared_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut test_only = false;
    for line in text.lines().map(str::trim) {
        if line == "#[cfg(test)]" {
            test_only = true;
            continue;
        }
        let decl = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "));
        if let Some(rest) = decl {
            if let Some(name) = rest.strip_suffix(';') {
                if !test_only {
                    out.push(name.trim().to_string());
                }
            }
        }
        if !line.starts_with("#[") {
            test_only = false;
        }
    }
    out
}

/// Every non-test source file of the crate rooted at `src`, by module path.
fn walk(src: &Path) -> Vec<ModuleFile> {
    let mut out = Vec::new();
    let mut stack = vec![(Vec::<String>::new(), src.join("lib.rs"))];
    while let Some((path, file)) = stack.pop() {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let dir = if path.is_empty() || file.ends_with("mod.rs") {
            file.parent().expect("a file has a directory").to_path_buf()
        } else {
            file.with_extension("")
        };
        for name in declared_modules(&text) {
            let mut child = path.clone();
            child.push(name.clone());
            let flat = dir.join(format!("{name}.rs"));
            let nested = dir.join(&name).join("mod.rs");
            let f = if flat.exists() { flat } else { nested };
            stack.push((child, f));
        }
        // Inline modules (`pub mod proto { ... }`) have no file of their own.
        out.push(ModuleFile {
            path,
            file,
            code: code_lines(&text),
        });
    }
    out
}

/// The top-level module names the `# Layout` section of `lib.rs` lists, by rank (line).
fn layout(lib: &str) -> BTreeMap<String, usize> {
    let mut ranks = BTreeMap::new();
    let mut inside = false;
    let mut rank = 0;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            if inside {
                break;
            }
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with('#') {
            inside = doc == "# Layout";
            continue;
        }
        if !inside || !doc.starts_with("- ") {
            continue;
        }
        rank += 1;
        // Names before the first ':' of the entry, in backticks (links or not): [`a`], `b`: ...
        let head = doc.split(':').next().unwrap_or("");
        for name in head.split('`').skip(1).step_by(2) {
            ranks.insert(name.to_string(), rank);
        }
    }
    ranks
}

/// The module paths named by `crate::a::b::...` and `super::...` paths on a code line,
/// resolved against the known modules (longest known prefix).
fn references(line: &str, own: &[String], known: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (start, prefix) in [("crate::", 0usize), ("super::", 1usize)] {
        let mut rest = line;
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            let tail = &rest[i + start.len()..];
            rest = tail;
            if before.is_some_and(|c| ident(c) || c == ':') && prefix == 0 {
                continue; // `dssmr_engine::crate::` cannot happen; `x::super::` is relative.
            }
            let mut base: Vec<String> = if prefix == 0 {
                Vec::new()
            } else {
                // `super` is the parent of the module the file is (for `a/mod.rs`, the root).
                own[..own.len().saturating_sub(1)].to_vec()
            };
            let mut segs = tail.split("::");
            for seg in segs.by_ref() {
                let name: String = seg.chars().take_while(|c| ident(*c)).collect();
                if name.is_empty() || name == "super" {
                    break;
                }
                base.push(name.clone());
                if seg.len() != name.len() {
                    break;
                }
            }
            while !base.is_empty() && !known.contains(&base) {
                base.pop();
            }
            if !base.is_empty() {
                out.push(base);
            }
        }
    }
    out
}

fn check_crate(dir: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let src = workspace_root().join(dir).join("src");
    let lib_text = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let ranks = layout(&lib_text);
    if ranks.is_empty() {
        return vec![format!(
            "{dir}: lib.rs has no `# Layout` section listing its modules"
        )];
    }
    let files = walk(&src);
    let mut top: BTreeSet<String> = declared_modules(&lib_text).into_iter().collect();
    // Inline modules and modules re-exported from another crate count as declared.
    for line in lib_text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("pub mod ") {
            if let Some(name) = rest.strip_suffix(" {") {
                top.insert(name.to_string());
            }
        }
        // `pub use other_crate::{a, b};` re-exports another crate's modules as this crate's.
        if let Some(list) = line
            .strip_prefix("pub use ")
            .and_then(|r| r.split_once("::{"))
            .filter(|(root, _)| root.starts_with("dssmr_"))
            .map(|(_, l)| l.trim_end_matches("};"))
        {
            top.extend(list.split(',').map(|n| n.trim().to_string()));
        }
    }
    for name in &top {
        if !ranks.contains_key(name) {
            problems.push(format!(
                "{dir}: module `{name}` is not in the `# Layout` section"
            ));
        }
    }
    for name in ranks.keys() {
        if !top.contains(name) {
            problems.push(format!(
                "{dir}: `# Layout` lists `{name}`, which lib.rs does not declare"
            ));
        }
    }
    let mut known: BTreeSet<Vec<String>> = files.iter().map(|f| f.path.clone()).collect();
    known.extend(top.iter().map(|t| vec![t.clone()]));
    // File-level graph: module path -> module paths it refers to.
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        for line in &f.code {
            for target in references(line, &f.path, &known) {
                if f.path.starts_with(&target) || target.starts_with(&f.path) {
                    continue; // a module and its own parent or children
                }
                if let (Some(own), Some(to)) = (f.path.first(), target.first()) {
                    let (r_own, r_to) = (ranks.get(own), ranks.get(to));
                    if let (Some(a), Some(b)) = (r_own, r_to) {
                        if b > a {
                            problems.push(format!(
                                "{dir}: {} uses crate::{}, which the layout puts above it: {line}",
                                f.file.strip_prefix(&src).unwrap_or(&f.file).display(),
                                target.join("::"),
                            ));
                        }
                    }
                }
                graph.entry(f.path.clone()).or_default().insert(target);
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        let names: Vec<String> = cycle.iter().map(|p| p.join("::")).collect();
        problems.push(format!(
            "{dir}: files refer to each other in a cycle: {}",
            names.join(" -> ")
        ));
    }
    problems
}

/// A cycle of the graph, if there is one (depth-first search with colours).
fn find_cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        Open,
        Done,
    }
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        colour: &mut BTreeMap<Vec<String>, Colour>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        colour.insert(node.clone(), Colour::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match colour.get(next) {
                Some(Colour::Open) => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Colour::Done) => {}
                None => {
                    if let Some(c) = visit(next, graph, colour, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        colour.insert(node.clone(), Colour::Done);
        None
    }
    let mut colour = BTreeMap::new();
    for node in graph.keys() {
        if !colour.contains_key(node) {
            if let Some(c) = visit(node, graph, &mut colour, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn every_crate_follows_its_layout_without_cycles() {
    let problems: Vec<String> = CRATES.iter().flat_map(|c| check_crate(c)).collect();
    assert!(
        problems.is_empty(),
        "layering problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle_and_an_upward_reference() {
    let known: BTreeSet<Vec<String>> = [vec!["a".to_string()], vec!["b".to_string()]]
        .into_iter()
        .collect();
    let own = vec!["a".to_string()];
    let refs = references("use crate::b::Thing; let x = super::b::f();", &own, &known);
    assert_eq!(refs, vec![vec!["b".to_string()], vec!["b".to_string()]]);
    let mut graph = BTreeMap::new();
    graph.insert(
        vec!["a".to_string()],
        [vec!["b".to_string()]].into_iter().collect(),
    );
    graph.insert(
        vec!["b".to_string()],
        [vec!["a".to_string()]].into_iter().collect(),
    );
    assert!(find_cycle(&graph).is_some());
    graph.remove(&vec!["b".to_string()]);
    assert!(find_cycle(&graph).is_none());
    let ranks = layout("//! x\n//!\n//! # Layout\n//!\n//! - [`a`], `b`: low\n//! - [`c`]: high\n");
    assert_eq!(ranks.get("a"), Some(&1));
    assert_eq!(ranks.get("b"), Some(&1));
    assert_eq!(ranks.get("c"), Some(&2));
}
