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
    let root = manifest_dir().join("../..");
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

#[test]
fn shipped_experiment_configs_are_valid() {
    let root = manifest_dir().join("../..");
    // Experiment paths are relative to the repository root, where evocomp runs.
    std::env::set_current_dir(&root).unwrap();
    let mut studies = vec![PathBuf::from("configs/quickstart.ron")];
    ron_files(Path::new("configs/studies"), &mut studies);
    assert!(studies.len() >= 10, "{studies:?}");
    let mut experiments = Vec::new();
    ron_files(Path::new("experiments"), &mut experiments);
    assert!(experiments.len() >= 20, "{experiments:?}");
    let mut sweeps = 0;
    for files in [studies, experiments] {
        let mut names = std::collections::HashSet::new();
        for f in files {
            let v = evocomp_config::load_experiments(&f).unwrap_or_else(|e| panic!("{e}"));
            for e in &v {
                assert!(names.insert(e.name.clone()), "two configs named {}", e.name);
                match &e.sweep {
                    Some(sweep) => {
                        assert_eq!(e.sweep_dir(), Path::new("results").join(sweep));
                        sweeps += 1;
                    }
                    None => assert_eq!(e.output, Path::new("results").join(&e.name)),
                }
            }
            // The config's first line says how to run it.
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                text.starts_with(&format!("// evocomp run {}", f.display())),
                "{}",
                f.display()
            );
        }
    }
    assert!(sweeps >= 6, "the experiments use sweeps");
}

/// The crate's folder, read when the test runs (cargo sets it): a test
/// binary built from another checkout sharing the target folder (CI's
/// clone) must not point at that checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
