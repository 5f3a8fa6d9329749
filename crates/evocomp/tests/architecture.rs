//! ARCHITECTURE.md's invariants that a test can check, on the workspace's
//! manifests and sources: each fails when the rule it names is broken (the
//! model crate's own files, too, form no circle).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .to_path_buf()
}

/// Every workspace crate's folder name and its `[dependencies]` (names only,
/// not dev-dependencies).
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(crates_dir()).unwrap() {
        let dir = e.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let mut deps = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                inside = line == "[dependencies]";
                continue;
            }
            if inside && let Some((name, _)) = line.split_once(['=', '.']) {
                let name = name.trim();
                if !name.is_empty() && !name.starts_with('#') {
                    deps.push(name.to_string());
                }
            }
        }
        out.insert(
            dir.file_name().unwrap().to_string_lossy().into_owned(),
            deps,
        );
    }
    out
}

/// Every `.rs` file under `dir`, with its code: comments (`//` to the end
/// of a line, doc comments included) are left out.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let code: Vec<&str> = text
                    .lines()
                    .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
                    .collect();
                out.push((p, code.join("\n")));
            }
        }
    }
    out
}

/// The crates in layers, lowest first: a crate may depend only on crates of
/// lower layers (no arrow runs back up).
const LAYERS: &[&[&str]] = &[
    &[
        "evocomp-gguf",
        "evocomp-data",
        "evocomp-compress",
        "evocomp-search",
        "evocomp-store",
    ],
    &["evocomp-model"],
    &["evocomp-eval", "evocomp-db"],
    &["evocomp-config"],
    &["evocomp-study", "evocomp-report"],
    &["evocomp-engine"],
    &["evocomp-queue"],
    &["evocomp"],
    &["evocomp-cli"],
];

fn layer(name: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&name))
}

#[test]
fn every_crate_depends_only_on_lower_layers() {
    let deps = dependencies();
    for (krate, ds) in &deps {
        let own = layer(krate).unwrap_or_else(|| panic!("{krate} is in no layer of LAYERS"));
        for d in ds.iter().filter(|d| d.starts_with("evocomp")) {
            let theirs = layer(d).unwrap_or_else(|| panic!("{d} is in no layer"));
            assert!(
                theirs < own,
                "{krate} (layer {own}) depends on {d} (layer {theirs}): an arrow up"
            );
        }
    }
    assert_eq!(
        deps.len(),
        LAYERS.iter().map(|l| l.len()).sum::<usize>(),
        "a crate is missing from the workspace or from LAYERS"
    );
}

#[test]
fn the_search_crate_is_pure_and_one_crate_owns_sled() {
    let deps = dependencies();
    let search = &deps["evocomp-search"];
    for banned in ["burn", "burn-flex", "sled", "memmap2", "wgpu", "tokio"] {
        assert!(
            !search.iter().any(|d| d == banned),
            "evocomp-search depends on {banned}"
        );
    }
    assert!(!search.iter().any(|d| d.starts_with("evocomp")));
    for (krate, ds) in &deps {
        if ds.iter().any(|d| d == "sled") {
            assert_eq!(krate, "evocomp-store", "{krate} uses sled itself");
        }
    }
}

#[test]
fn the_binary_reaches_the_work_through_the_library() {
    let deps = dependencies();
    // The CLI parses, calls `evocomp` and prints; it reads configs and study
    // folders through their crates, and models' headers for `inspect`.
    let allowed = [
        "evocomp",
        "evocomp-model",
        "evocomp-config",
        "evocomp-study",
    ];
    for d in deps["evocomp-cli"]
        .iter()
        .filter(|d| d.starts_with("evocomp"))
    {
        assert!(allowed.contains(&d.as_str()), "evocomp-cli depends on {d}");
    }
    for (path, text) in sources(&crates_dir().join("evocomp-cli/src")) {
        for banned in [
            "evocomp_store",
            "evocomp_engine",
            "evocomp_db",
            "evocomp_eval",
            ".store()",
        ] {
            assert!(!text.contains(banned), "{} names {banned}", path.display());
        }
    }
}

/// The names the registry lists (its variants and their settings types), read
/// from its source.
fn registered_names() -> Vec<String> {
    let text =
        std::fs::read_to_string(crates_dir().join("evocomp-search/src/framework/registry.rs"))
            .unwrap();
    let start = text
        .find("pub enum StrategySpec {")
        .expect("the registry's settings enum");
    let body = &text[start..text[start..].find("\n    }").unwrap() + start];
    let mut names = Vec::new();
    for line in body.lines().skip(1) {
        let line = line.trim();
        if line.starts_with("///") || line.is_empty() {
            continue;
        }
        for word in line.split(|c: char| !c.is_alphanumeric() && c != '_') {
            if word.ends_with("Spec") && word != "StrategySpec" {
                names.push(word.to_string());
            }
        }
    }
    names
}

#[test]
fn only_the_search_crate_names_a_strategy() {
    let names = registered_names();
    assert!(
        names.len() >= 10 && names.contains(&"EvoPressSpec".to_string()),
        "{names:?}"
    );
    for krate in [
        "evocomp-config",
        "evocomp-engine",
        "evocomp-study",
        "evocomp-queue",
        "evocomp-report",
        "evocomp",
        "evocomp-cli",
    ] {
        for (path, text) in sources(&crates_dir().join(krate).join("src")) {
            for n in &names {
                assert!(!text.contains(n.as_str()), "{} names {n}", path.display());
            }
            assert!(
                !text.contains("StrategySpec::"),
                "{} matches on a strategy",
                path.display()
            );
        }
    }
}

/// The files of `krate`'s `src/` (one module each) and the modules each
/// names through `crate::`, in code (not comments).
fn module_graph(krate: &str) -> BTreeMap<String, Vec<String>> {
    let src = crates_dir().join(krate).join("src");
    let files = sources(&src);
    let names: Vec<String> = files
        .iter()
        .filter_map(|(p, _)| Some(p.strip_prefix(&src).ok()?.to_str()?.to_string()))
        .filter(|p| !p.contains('/'))
        .map(|p| p.trim_end_matches(".rs").to_string())
        .collect();
    let mut graph = BTreeMap::new();
    for (p, code) in &files {
        let Some(me) = p
            .strip_prefix(&src)
            .ok()
            .and_then(|r| r.components().next())
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs").to_string())
        else {
            continue;
        };
        let uses: &mut Vec<String> = graph.entry(me.clone()).or_default();
        for n in &names {
            if *n != me && code.contains(&format!("crate::{n}::")) && !uses.contains(n) {
                uses.push(n.clone());
            }
        }
    }
    graph
}

/// A circle in `graph`, if any (as the modules along it).
fn circle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            return Some(path[i..].to_vec());
        }
        if done.iter().any(|d| d == n) {
            return None;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.push(n.to_string());
        None
    }
    let mut done = Vec::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_model_crates_files_form_no_circle() {
    let graph = module_graph("evocomp-model");
    assert!(graph.len() >= 10, "{graph:?}");
    assert_eq!(circle(&graph), None, "{graph:?}");
    // The check itself finds one.
    let mut bad = graph.clone();
    bad.entry("error".into()).or_default().push("llama".into());
    assert!(circle(&bad).is_some());
}

/// ARCHITECTURE.md's crate table names each crate's own dependencies, no
/// more and no fewer: the map stays true when a dependency changes.
#[test]
fn the_architecture_table_lists_each_crates_dependencies() {
    let doc = std::fs::read_to_string(crates_dir().parent().unwrap().join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md");
    let deps = dependencies();
    let mut seen = Vec::new();
    for row in doc.lines().filter(|l| l.starts_with("| `evocomp")) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a crate row has three cells: {row}");
        let krate = cells[0].trim_matches('`');
        // "model (`WeightDtype`, `Matmul`), search" → model, search
        let mut listed = Vec::new();
        let mut depth = 0;
        let mut word = String::new();
        for c in cells[2].chars().chain([',']) {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    let w = word.trim();
                    if !w.is_empty() && w != "–" {
                        listed.push(if w == "evocomp" {
                            w.to_string()
                        } else {
                            format!("evocomp-{w}")
                        });
                    }
                    word.clear();
                }
                _ if depth == 0 => word.push(c),
                _ => {}
            }
        }
        listed.sort();
        let mut actual: Vec<String> = deps
            .get(krate)
            .unwrap_or_else(|| panic!("ARCHITECTURE.md lists {krate}, which is no crate"))
            .iter()
            .filter(|d| d.starts_with("evocomp"))
            .cloned()
            .collect();
        actual.sort();
        assert_eq!(listed, actual, "ARCHITECTURE.md's row for {krate}");
        seen.push(krate.to_string());
    }
    assert_eq!(
        seen.len(),
        deps.len(),
        "ARCHITECTURE.md's table misses a crate"
    );
}
