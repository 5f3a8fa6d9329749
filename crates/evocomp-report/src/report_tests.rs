//! The report's data, drawing and writing on hand-made studies.

use crate::*;
use evocomp_search::Role;

fn study(name: &str, strategy: &str, front: &[(u64, f64)], hist: &[(usize, f64)]) -> StudyInput {
    let pts: Vec<MeasuredPoint> = front
        .iter()
        .map(|&(cost, kl)| MeasuredPoint {
            cost,
            held_out_kl: kl,
            held_out_perplexity: 10.0 * (1.0 + kl),
            genome: vec![0, 1, -1, 0],
            kl_windows: vec![],
        })
        .collect();
    StudyInput {
        name: name.into(),
        strategy: strategy.into(),
        // As the study's strategy reports it.
        role: match strategy {
            "uniform" => Role::Uniform,
            "NSGA-II" => Role::Front,
            "EvoPress" => Role::Search,
            _ => Role::Heuristic,
        },
        series: name.into(),
        budget: "level0".into(),
        cost_unit: "weights".into(),
        full_cost: 1000,
        units: vec![
            "L00.q".into(),
            "L00.k".into(),
            "L01.q".into(),
            "L01.k".into(),
        ],
        best: pts[0].clone(),
        front: pts,
        held_out_id: None,
        history: hist
            .iter()
            .map(|&(e, b)| Progress {
                evaluations: e,
                seconds: e as f64 * 2.0,
                best: Some(b),
                front: Vec::new(),
            })
            .collect(),
        evaluations: hist.last().map_or(1, |h| h.0),
        cache_hits: 0,
        seconds: 1.0,
        anytime: Vec::new(),
        weights: None,
    }
}

#[test]
fn costs_read_in_the_units_users_think_in() {
    let mut s = study("q", "EvoPress", &[(3500, 0.1)], &[(1, 0.1)]);
    let m = s.best.clone();
    s.cost_unit = "bits".into();
    assert_eq!(
        user_cost(&s, &m),
        "350.00% of max",
        "no weight count: a share of the full cost (1000)"
    );
    s.weights = Some(1000);
    assert_eq!(user_cost(&s, &m), "3.500 bits/weight");
    s.cost_unit = "non-zero weights".into();
    let mut half = m.clone();
    half.cost = 400;
    assert_eq!(user_cost(&s, &half), "60.0% sparse");
    s.cost_unit = "parameters".into();
    s.units = vec!["L00.block".into(), "L01.block".into(), "L02.block".into()];
    let mut depth = m.clone();
    depth.genome = vec![1, 0, 1];
    assert_eq!(user_cost(&s, &depth), "2 of 3 blocks dropped");
    s.units = vec!["L00.attn".into(), "L00.mlp".into(), "L01.attn".into()];
    assert_eq!(user_cost(&s, &depth), "2 of 3 sub-blocks dropped");
    s.cost_unit = "cached tokens".into();
    let mut kv = m.clone();
    kv.cost = 768;
    assert_eq!(user_cost(&s, &kv), "256 cached tokens/layer");
    // The markdown table shows it.
    s.cost_unit = "bits".into();
    let md = markdown(&[s], &[]);
    assert!(
        md.contains("| size |") && md.contains("3.500 bits/weight"),
        "{md}"
    );
}

#[test]
fn plot_data_follows_the_studies() {
    let s = vec![
        study("u", "uniform", &[(500, 1.2)], &[(1, 1.2)]),
        study(
            "e",
            "EvoPress",
            &[(500, 0.9)],
            &[(8, 1.1), (16, 1.0), (24, 0.9)],
        ),
        study(
            "n",
            "NSGA-II",
            &[(700, 0.5), (400, 1.5)],
            &[(10, 2.0), (20, 1.4)],
        ),
    ];
    let f = front_plot(&s).unwrap();
    assert_eq!(f.series.len(), 3);
    assert!(f.series[0].reference && !f.series[1].reference);
    // Percent of the full cost, sorted by cost.
    assert_eq!(f.series[2].points, vec![(40.0, 1.5), (70.0, 0.5)]);
    assert!(f.x_range.0 < 40.0 && f.x_range.1 > 70.0);
    let c = convergence_plot(&s, false).unwrap();
    // Two curves, each followed by its best so far; one-step studies have none.
    assert_eq!(c.series.len(), 4, "one-step studies have no curve");
    assert_eq!(c.series[1].companion_of, Some(0));
    assert_eq!(c.series[3].companion_of, Some(2));
    assert_eq!(
        c.series[0].points,
        vec![(8.0, 1.1), (16.0, 1.0), (24.0, 0.9)]
    );
    let t = convergence_plot(&s, true).unwrap();
    assert_eq!(t.series[0].points[0], (16.0, 1.1));
    assert!(f.series[0].baseline && f.series[0].name == "u (uniform baseline)");
    assert_eq!(level_by_layer(&s[0]), vec![(0, 0.5), (1, -0.5)]);
    let h = profile_heatmap(&s).unwrap();
    assert_eq!(h.cols, vec![0, 1]);
    assert_eq!(h.values[1], vec![Some(0.5), Some(-0.5)]);
    assert_eq!(h.range, (-0.5, 0.5));
    assert_eq!(h.rows.len(), 3);
}

#[test]
fn a_sweep_is_one_series_across_budgets() {
    let mut s = vec![
        study("u50", "uniform", &[(600, 0.8)], &[(1, 0.8)]),
        study("u70", "uniform", &[(300, 1.9)], &[(1, 1.9)]),
        study("e50", "EvoPress", &[(600, 0.6)], &[(8, 0.7), (16, 0.6)]),
        study("e70", "EvoPress", &[(300, 1.5)], &[(8, 1.6), (16, 1.5)]),
    ];
    for (x, series, budget) in [
        (0, "uniform", "level-2"),
        (1, "uniform", "level2"),
        (2, "evopress", "level-2"),
        (3, "evopress", "level2"),
    ] {
        s[x].series = series.into();
        s[x].budget = budget.into();
    }
    let f = front_plot(&s).unwrap();
    assert_eq!(f.series.len(), 2);
    assert_eq!(f.series[0].points, vec![(30.0, 1.9), (60.0, 0.8)]);
    assert!(f.series[0].baseline && !f.series[0].reference);
    assert_eq!(f.series[1].points, vec![(30.0, 1.5), (60.0, 0.6)]);
    // Studies on different databases (full costs) line up on absolute cost.
    let mut t = s.clone();
    t[1].full_cost = 2000;
    t[3].full_cost = 2000;
    let g = front_plot(&t).unwrap();
    assert_eq!(g.series[1].points, vec![(0.0003, 1.5), (0.0006, 0.6)]);
    assert!(g.x_label.contains("millions"));
    let md = markdown(&s, &[]);
    // One row per budget, one column per series, the lowest KL in bold.
    assert!(md.contains("| budget | uniform | evopress |"), "{md}");
    assert!(
        md.contains("| level-2 | 0.8000 (18.00) | **0.6000** (16.00) |"),
        "{md}"
    );
    assert!(
        md.contains("| level2 | 1.9000 (29.00) | **1.5000** (25.00) |"),
        "{md}"
    );
    // Studies measured on the same windows: KL ± its standard error, and the
    // other cell's difference from the bold one with its interval.
    let mut paired = s.clone();
    paired[0].best.kl_windows = vec![0.7, 0.9, 0.75, 0.85];
    paired[2].best.kl_windows = vec![0.55, 0.65, 0.58, 0.62];
    for p in &mut paired {
        p.held_out_id = Some("h".into());
    }
    let md = markdown(&paired, &[]);
    let row = md
        .lines()
        .find(|l| l.starts_with("| level-2 |"))
        .unwrap()
        .to_string();
    assert!(
        row.contains("| 0.8000 ± 0.0456 (18.00); +0.2000 ["),
        "{row}"
    );
    assert!(
        row.contains("] worse | **0.6000 ± 0.0220** (16.00) |"),
        "{row}"
    );
    // On other windows, no interval is claimed.
    paired[0].held_out_id = Some("other".into());
    let md = markdown(&paired, &[]);
    let row = md.lines().find(|l| l.starts_with("| level-2 |")).unwrap();
    assert_eq!(
        row,
        "| level-2 | 0.8000 ± 0.0456 (18.00) | **0.6000 ± 0.0220** (16.00) |"
    );
    // Bold goes by KL, the objective, even where the perplexity says otherwise.
    let mut by_kl = s.clone();
    by_kl[3].best.held_out_perplexity = 30.0;
    let md = markdown(&by_kl, &[]);
    assert!(
        md.contains("| level2 | 1.9000 (29.00) | **1.5000** (30.00) |"),
        "{md}"
    );
}

#[test]
fn hypervolume_grows_as_the_front_improves() {
    let mut n = study("n", "NSGA-II", &[(400, 1.0)], &[(10, 2.0), (20, 1.0)]);
    n.history[0].front = vec![(2.0, 500)];
    n.history[1].front = vec![(1.0, 500), (1.5, 250)];
    let hv = hypervolume_plot(&[n.clone()]).unwrap();
    let p = &hv.series[0].points;
    // Reference (2.2, 1.0): step 1 = 0.2 * 0.5; step 2 = 1.2*0.5 + 0.7*0.25.
    assert_eq!(p.len(), 2);
    assert!((p[0].1 - 0.1).abs() < 1e-9, "{p:?}");
    assert!((p[1].1 - 0.775).abs() < 1e-9, "{p:?}");
    assert_eq!((p[0].0, p[1].0), (10.0, 20.0));
    // Without fronts there is nothing to plot.
    let e = study("e", "EvoPress", &[(500, 0.9)], &[(8, 1.1)]);
    assert!(hypervolume_plot(&[e]).is_err());
}

#[test]
fn the_report_holds_every_study_and_its_plots() {
    let s = vec![
        study("uni", "uniform", &[(500, 1.2)], &[(1, 1.2)]),
        study("evo", "EvoPress", &[(500, 0.9)], &[(8, 1.1), (16, 0.9)]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let names = write_report(&s, dir.path()).unwrap();
    assert!(names.contains(&"front".to_string()));
    assert!(names.contains(&"profile".to_string()));
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for s in &s {
        assert!(md.contains(&format!("| {} |", s.name)), "{md}");
    }
    for n in &names {
        let png = dir.path().join("plots").join(format!("{n}.png"));
        let svg = dir.path().join("plots").join(format!("{n}.svg"));
        assert!(std::fs::metadata(&png).unwrap().len() > 1000, "{n}.png");
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    }
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("evo"));
    assert!(write_report(&[], dir.path()).is_err());
}

#[test]
fn anytime_curves_join_the_seeds_of_a_variant() {
    assert_eq!(variant("depth-racing-s2"), "depth-racing");
    assert_eq!(variant("depth-racing"), "depth-racing");
    assert_eq!(variant("depth-s"), "depth-s");
    assert_eq!(variant("depth-sx1"), "depth-sx1");
    let with = |name: &str, pts: &[(u64, f64)]| {
        let mut s = study(name, "EvoPress", &[(500, 0.9)], &[(1, 1.0), (2, 0.9)]);
        s.anytime = pts.to_vec();
        s
    };
    let studies = vec![
        with("pub-s0", &[(100, 1.0), (200, 0.8)]),
        with("pub-s1", &[(150, 0.9), (300, 0.6)]),
        with("fast-s0", &[(50, 0.7), (300, 0.5)]),
        // No anytime points: not a curve.
        study("uniform", "uniform", &[(500, 1.2)], &[(1, 1.2)]),
    ];
    let c = anytime_curves(&studies);
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].variant.as_str(), c[0].seeds), ("pub", 2));
    // From 150 tokens on both seeds have a value; each holds until its next.
    let want = [
        (150.0, 0.95, 0.9, 1.0),
        (200.0, 0.85, 0.8, 0.9),
        (300.0, 0.7, 0.6, 0.8),
    ];
    assert_eq!(c[0].points.len(), want.len());
    for (p, w) in c[0].points.iter().zip(want) {
        assert_eq!((p.0, p.2, p.3), (w.0, w.2, w.3));
        assert!((p.1 - w.1).abs() < 1e-12, "{p:?} vs {w:?}");
    }
    assert!((c[0].final_kl - 0.7).abs() < 1e-12);
    assert_eq!(c[0].final_tokens, 250.0);
    assert_eq!(c[1].tokens_to_reach(0.7), Some(50.0));
    assert_eq!(c[0].tokens_to_reach(0.7), Some(300.0));
    assert_eq!(c[0].tokens_to_reach(0.1), None);
    assert_eq!(c[1].at(250.0), Some(0.7));
    assert_eq!(c[1].at(10.0), None);
    let p = anytime_plot(&studies).unwrap();
    assert_eq!(p.series.len(), 2);
    assert_eq!(p.series[0].band.len(), 3);
    // One seed: no band. The y range covers the bands. Drawn as steps.
    assert!(p.series[1].band.is_empty());
    assert!(p.series.iter().all(|s| s.steps));
    assert_eq!(
        step_corners(&[(1.0, 3.0), (2.0, 2.0), (4.0, 1.0)]),
        vec![(1.0, 3.0), (2.0, 3.0), (2.0, 2.0), (4.0, 2.0), (4.0, 1.0)]
    );
    assert!(p.y_range.0 < 0.5 && p.y_range.1 > 1.0);
    let md = markdown(&studies, &[]);
    assert!(md.contains("| fast | 1 | 0.5000 |"), "{md}");
    assert!(md.contains("| 50 | 20% |"), "{md}");
    // Drawing works, and without anytime points there is no plot.
    let dir = tempfile::tempdir().unwrap();
    p.draw(&dir.path().join("anytime")).unwrap();
    assert!(dir.path().join("anytime.svg").exists());
    assert!(anytime_plot(&studies[3..]).is_err());
    // A value nobody measured (NaN) leaves a gap in the mean, not a NaN.
    let gap = vec![
        with("g-s0", &[(100, 1.0), (150, f64::NAN), (200, 0.5)]),
        with("g-s1", &[(120, 0.8)]),
    ];
    let c = anytime_curves(&gap);
    assert_eq!(
        c[0].points.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![120.0, 200.0]
    );
    assert!((c[0].points[1].1 - 0.65).abs() < 1e-12);
}

#[test]
fn convergence_curves_have_their_best_so_far_and_ticks_read_as_numbers() {
    assert_eq!(
        best_so_far(&[(1.0, 3.0), (2.0, 2.0), (3.0, 2.5), (4.0, 1.0), (5.0, 1.5)]),
        vec![(1.0, 3.0), (2.0, 2.0), (4.0, 1.0), (5.0, 1.0)]
    );
    assert!(best_so_far(&[]).is_empty());
    let s = vec![study(
        "e",
        "EvoPress",
        &[(500, 1.0)],
        &[(1, 3.0), (2, 2.0), (3, 2.5)],
    )];
    let p = convergence_plot(&s, false).unwrap();
    assert_eq!(p.series.len(), 2);
    assert_eq!(p.series[1].companion_of, Some(0));
    assert!(p.series[1].steps);
    assert_eq!(p.series[1].points, vec![(1.0, 3.0), (2.0, 2.0), (3.0, 2.0)]);
    assert_eq!(crate::draw::tick(&20.0), "20");
    assert_eq!(crate::draw::tick(&-3.0), "-3");
    assert_eq!(crate::draw::tick(&1.25), "1.25");
    assert_eq!(crate::draw::tick(&0.123456), "0.1235");
    assert_eq!(crate::draw::tick(&1234.5), "1234.5");
}
