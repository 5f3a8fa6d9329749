//! Every config shipped under configs/ parses and validates.

use evocomp_config::{DatabaseSpec, parse_ron};
use std::path::{Path, PathBuf};

fn ron_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            ron_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "ron") {
            out.push(p);
        }
    }
}

#[test]
fn shipped_database_configs_are_valid() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    ron_files(&root.join("configs/db"), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut spec: DatabaseSpec = parse_ron(&f, &text).unwrap_or_else(|e| panic!("{e}"));
        // Paths are relative to the repository root.
        spec.model = root.join(&spec.model);
        spec.calibration.text = root.join(&spec.calibration.text);
        assert!(spec.output.starts_with("results/db/"), "{}", f.display());
        spec.resolve(&f).unwrap_or_else(|e| panic!("{e}"));
    }
}
