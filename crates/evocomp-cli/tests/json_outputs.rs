//! Machine-readable outputs: `inspect`, `db info` and `status` with --json,
//! and `trials` as CSV and JSON, on a finished tiny study.

mod common;

use common::{EVO, evocomp, experiment, journal, ok, setup};

fn json(d: &std::path::Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(&evocomp(d, args))).unwrap()
}

#[test]
fn inspect_db_info_status_and_trials_speak_json_and_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let m = json(
        d,
        &["inspect", "--model", "tiny.gguf", "--json", "--tensors"],
    );
    assert_eq!(m["config"]["n_layers"], 4);
    assert!(m["parameters"].as_u64().unwrap() > 0);
    let tensors = m["tensors"].as_array().unwrap();
    assert_eq!(tensors.len() as u64, m["tensor_count"].as_u64().unwrap());
    let by_dtype: u64 = m["dtypes"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_dtype, tensors.len() as u64);

    ok(&evocomp(d, &["db", "build", "grid.ron"]));
    let info = json(d, &["db", "info", "db/grid", "--json"]);
    assert_eq!(info["manifest"]["complete"], true);
    assert_eq!(info["manifest"]["units"].as_array().unwrap().len(), 4 * 7);

    experiment(d, "evo", "grid", "UniformLevel(0)", EVO);
    ok(&evocomp(d, &["run", "evo.ron"]));
    let st = json(d, &["status", "results/evo", "--json"]);
    assert_eq!(st["state"], "finished");
    let best = json(d, &["best", "results/evo", "--json"]);
    assert_eq!(st["summary"]["best"], best["best"]);

    // Trials: one per journal entry, in order, with the journal's numbers.
    let trials = journal(&d.join("results/evo"));
    let j = json(d, &["trials", "results/evo", "--json"]);
    let j = j.as_array().unwrap();
    assert_eq!(j.len(), trials.len());
    for (a, t) in j.iter().zip(&trials) {
        assert_eq!(a["number"].as_u64(), Some(t.number));
        assert_eq!(a["fitness"].as_f64(), Some(t.fitness));
        assert_eq!(a["cost"].as_u64(), Some(t.cost));
    }
    let csv = ok(&evocomp(d, &["trials", "results/evo", "--csv"]));
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..5], ["number", "step", "fitness", "cost", "tokens"]);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), trials.len());
    for (row, t) in rows.iter().zip(&trials) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{row}");
        assert_eq!(cells[2].parse::<f64>().unwrap(), t.fitness);
        let genome: Vec<i64> = cells[10].split(' ').map(|g| g.parse().unwrap()).collect();
        assert_eq!(genome, t.genome);
    }
    let text = ok(&evocomp(d, &["trials", "results/evo"]));
    assert!(text.contains(&format!("{} trials", trials.len())), "{text}");
}

#[test]
fn threads_are_a_global_option_that_the_device_line_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let args = [
        "perplexity",
        "--model",
        "tiny.gguf",
        "--text",
        "text.txt",
        "--tokens",
        "128",
        "--context",
        "64",
        "--backend",
        "cpu",
    ];
    let one = evocomp(d, &[&["--threads", "1"][..], &args[..]].concat());
    let e = String::from_utf8_lossy(&one.stderr);
    assert!(
        one.status.success() && e.contains("cpu (burn flex, 1 thread)"),
        "{e}"
    );
    // After the subcommand too, and the same result on 1 and 2 threads.
    let two = evocomp(d, &[&args[..], &["--threads", "2"][..]].concat());
    assert!(String::from_utf8_lossy(&two.stderr).contains("2 threads"));
    assert_eq!(ok(&one), ok(&two));
    let zero = evocomp(d, &[&args[..], &["--threads", "0"][..]].concat());
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("at least 1"));
}
