//! A report over finished studies: the data of every plot and table is
//! computed here from plain values (tested), then drawn and written.

use crate::{ReportError, register_fonts};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// One configuration measured on held-out data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredPoint {
    pub cost: u64,
    pub held_out_kl: f64,
    pub held_out_perplexity: f64,
    pub genome: Vec<i64>,
}

/// Where a search stood after one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub evaluations: usize,
    pub seconds: f64,
    pub best: Option<f64>,
}

/// What a report needs of one study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyInput {
    pub name: String,
    pub strategy: String,
    pub cost_unit: String,
    /// Cost of every unit at its least compressed level (100% on the cost axis).
    pub full_cost: u64,
    pub units: Vec<String>,
    pub best: MeasuredPoint,
    pub front: Vec<MeasuredPoint>,
    pub history: Vec<Progress>,
    pub evaluations: usize,
    pub cache_hits: usize,
    pub seconds: f64,
}

/// One named series of (x, y) points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn as a reference (a baseline with one point) rather than a line.
    pub reference: bool,
}

/// A plot of several series on shared axes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1e-3) };
    (lo - 0.06 * span, hi + 0.06 * span)
}

impl SeriesPlot {
    pub fn new(
        title: &str,
        x_label: &str,
        y_label: &str,
        series: Vec<Series>,
    ) -> Result<Self, ReportError> {
        let pts: Vec<(f64, f64)> = series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if pts.is_empty() {
            return Err(ReportError::Empty(title.into()));
        }
        let fold = |f: fn(f64, f64) -> f64, init: f64, by: fn(&(f64, f64)) -> f64| {
            pts.iter().map(by).fold(init, f)
        };
        Ok(Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_range: padded(
                fold(f64::min, f64::INFINITY, |p| p.0),
                fold(f64::max, f64::NEG_INFINITY, |p| p.0),
            ),
            y_range: padded(
                fold(f64::min, f64::INFINITY, |p| p.1),
                fold(f64::max, f64::NEG_INFINITY, |p| p.1),
            ),
            series,
        })
    }

    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(
                self.x_range.0..self.x_range.1,
                self.y_range.0..self.y_range.1,
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in self.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            if s.reference {
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| TriangleMarker::new(p, 8, color.filled())),
                    )
                    .map_err(|e| e.to_string())?
                    .label(&s.name)
                    .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 6, color.filled()));
            } else {
                chart
                    .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }

    /// Draw as `<stem>.svg` and `<stem>.png`.
    pub fn draw(&self, stem: &Path) -> Result<(), ReportError> {
        register_fonts();
        let svg = stem.with_extension("svg");
        let png = stem.with_extension("png");
        let err = |p: &Path, m: String| ReportError::Draw {
            path: p.display().to_string(),
            message: m,
        };
        self.draw_on(&SVGBackend::new(&svg, (900, 600)).into_drawing_area())
            .map_err(|m| err(&svg, m))?;
        self.draw_on(&BitMapBackend::new(&png, (900, 600)).into_drawing_area())
            .map_err(|m| err(&png, m))?;
        Ok(())
    }
}

/// Quality against cost: each study's held-out KL at its front's costs, in
/// percent of the full cost; single-point baselines are reference markers.
pub fn front_plot(studies: &[StudyInput]) -> Result<SeriesPlot, ReportError> {
    let unit = studies.first().map_or("cost", |s| s.cost_unit.as_str());
    let series = studies
        .iter()
        .map(|s| {
            let mut pts: Vec<(f64, f64)> = s
                .front
                .iter()
                .map(|m| {
                    (
                        100.0 * m.cost as f64 / s.full_cost.max(1) as f64,
                        m.held_out_kl,
                    )
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name: format!("{} ({})", s.name, s.strategy),
                reference: pts.len() == 1 && s.strategy != "EvoPress",
                points: pts,
            }
        })
        .collect();
    SeriesPlot::new(
        "Held-out KL against size",
        &format!("{unit}, % of the least compressed configuration"),
        "held-out KL to the uncompressed model (nats/token)",
        series,
    )
}

/// Best fitness against evaluations (`by_time` false) or wall seconds.
pub fn convergence_plot(studies: &[StudyInput], by_time: bool) -> Result<SeriesPlot, ReportError> {
    let series = studies
        .iter()
        .filter(|s| s.history.len() > 1)
        .map(|s| Series {
            name: format!("{} ({})", s.name, s.strategy),
            reference: false,
            points: s
                .history
                .iter()
                .filter_map(|h| {
                    h.best.map(|b| {
                        (
                            if by_time {
                                h.seconds
                            } else {
                                h.evaluations as f64
                            },
                            b,
                        )
                    })
                })
                .collect(),
        })
        .collect();
    SeriesPlot::new(
        if by_time {
            "Convergence against time"
        } else {
            "Convergence against evaluations"
        },
        if by_time {
            "search time (s)"
        } else {
            "evaluations"
        },
        "best search fitness (KL on its last sample)",
        series,
    )
}

/// The best configuration's level per unit, as one series over unit index.
pub fn profile_plot(s: &StudyInput) -> Result<SeriesPlot, ReportError> {
    SeriesPlot::new(
        &format!("{}: level per unit (higher = more compressed)", s.name),
        "unit (model order)",
        "level",
        vec![Series {
            name: s.strategy.clone(),
            reference: false,
            points: s
                .best
                .genome
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as f64, l as f64))
                .collect(),
        }],
    )
}

/// Mean level per layer, from unit names `Lnn.kind`: where the budget went.
pub fn level_by_layer(s: &StudyInput) -> Vec<(usize, f64)> {
    let mut acc: std::collections::BTreeMap<usize, (f64, usize)> = Default::default();
    for (name, &l) in s.units.iter().zip(&s.best.genome) {
        if let Some(layer) = name
            .strip_prefix('L')
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            let e = acc.entry(layer).or_insert((0.0, 0));
            e.0 += l as f64;
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(k, (sum, n))| (k, sum / n as f64))
        .collect()
}

/// The report's tables as Markdown.
pub fn markdown(studies: &[StudyInput], plots: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# evocomp report\n");
    let _ = writeln!(
        md,
        "| study | strategy | cost | % of max | held-out KL | held-out perplexity | evaluations | cache hits | search time (s) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for s in studies {
        let b = &s.best;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2}% | {:.4} | {:.2} | {} | {} | {:.0} |",
            s.name,
            s.strategy,
            b.cost,
            100.0 * b.cost as f64 / s.full_cost.max(1) as f64,
            b.held_out_kl,
            b.held_out_perplexity,
            s.evaluations,
            s.cache_hits,
            s.seconds
        );
    }
    for s in studies.iter().filter(|s| s.front.len() > 1) {
        let _ = writeln!(md, "\n## {}: front\n", s.name);
        let _ = writeln!(
            md,
            "| cost | % of max | held-out KL | held-out perplexity |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for m in &s.front {
            let _ = writeln!(
                md,
                "| {} | {:.2}% | {:.4} | {:.2} |",
                m.cost,
                100.0 * m.cost as f64 / s.full_cost.max(1) as f64,
                m.held_out_kl,
                m.held_out_perplexity
            );
        }
    }
    for s in studies {
        let layers = level_by_layer(s);
        if layers.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n## {}: mean level per layer\n", s.name);
        let row: Vec<String> = layers
            .iter()
            .map(|(l, v)| format!("L{l:02} {v:+.2}"))
            .collect();
        for chunk in row.chunks(10) {
            let _ = writeln!(md, "    {}", chunk.join("  "));
        }
    }
    if !plots.is_empty() {
        let _ = writeln!(md, "\n## Plots\n");
        for p in plots {
            let _ = writeln!(md, "![{p}](plots/{p}.png)");
        }
    }
    md
}

/// Write `report.md`, `report.html` (SVGs inlined) and `plots/*.{svg,png}` under `out`.
pub fn write_report(studies: &[StudyInput], out: &Path) -> Result<Vec<String>, ReportError> {
    if studies.is_empty() {
        return Err(ReportError::Empty("no study given".into()));
    }
    let plots_dir = out.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(|e| ReportError::Draw {
        path: plots_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut names = Vec::new();
    let mut draw = |name: &str, p: Result<SeriesPlot, ReportError>| -> Result<(), ReportError> {
        match p {
            Ok(p) => {
                p.draw(&plots_dir.join(name))?;
                names.push(name.to_string());
                Ok(())
            }
            Err(ReportError::Empty(_)) => Ok(()),
            Err(e) => Err(e),
        }
    };
    draw("front", front_plot(studies))?;
    draw("convergence-evaluations", convergence_plot(studies, false))?;
    draw("convergence-time", convergence_plot(studies, true))?;
    for s in studies {
        draw(&format!("profile-{}", s.name), profile_plot(s))?;
    }
    let md = markdown(studies, &names);
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text).map_err(|e| ReportError::Draw {
            path: p.display().to_string(),
            message: format!("{e} (is the disk full?)"),
        })
    };
    write(&out.join("report.md"), &md)?;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>evocomp report</title>\
         <style>body{font-family:sans-serif;max-width:960px;margin:auto}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>\n<pre>",
    );
    html.push_str(&md.replace('&', "&amp;").replace('<', "&lt;"));
    html.push_str("</pre>\n");
    for n in &names {
        let svg = std::fs::read_to_string(plots_dir.join(format!("{n}.svg"))).unwrap_or_default();
        html.push_str(&svg);
        html.push('\n');
    }
    html.push_str("</body></html>\n");
    write(&out.join("report.html"), &html)?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(
        name: &str,
        strategy: &str,
        front: &[(u64, f64)],
        hist: &[(usize, f64)],
    ) -> StudyInput {
        let pts: Vec<MeasuredPoint> = front
            .iter()
            .map(|&(cost, kl)| MeasuredPoint {
                cost,
                held_out_kl: kl,
                held_out_perplexity: 10.0 * (1.0 + kl),
                genome: vec![0, 1, -1, 0],
            })
            .collect();
        StudyInput {
            name: name.into(),
            strategy: strategy.into(),
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
            history: hist
                .iter()
                .map(|&(e, b)| Progress {
                    evaluations: e,
                    seconds: e as f64 * 2.0,
                    best: Some(b),
                })
                .collect(),
            evaluations: hist.last().map_or(1, |h| h.0),
            cache_hits: 0,
            seconds: 1.0,
        }
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
        assert_eq!(c.series.len(), 2, "one-step studies have no curve");
        assert_eq!(
            c.series[0].points,
            vec![(8.0, 1.1), (16.0, 1.0), (24.0, 0.9)]
        );
        let t = convergence_plot(&s, true).unwrap();
        assert_eq!(t.series[0].points[0], (16.0, 1.1));
        assert_eq!(level_by_layer(&s[0]), vec![(0, 0.5), (1, -0.5)]);
        let p = profile_plot(&s[1]).unwrap();
        assert_eq!(p.series[0].points[2], (2.0, -1.0));
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
}
