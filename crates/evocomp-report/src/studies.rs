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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub evaluations: usize,
    pub seconds: f64,
    pub best: Option<f64>,
    /// NSGA-II: the front as (search fitness, cost) after this step.
    #[serde(default)]
    pub front: Vec<(f64, u64)>,
}

/// What a report needs of one study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyInput {
    pub name: String,
    pub strategy: String,
    /// The series it is drawn in: a sweep's studies share one (the sweep's name).
    pub series: String,
    /// The budget it was run at, as written (`level-2`, `dropped6`, ...).
    pub budget: String,
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
    /// The uniform baseline: drawn black and dashed, whatever its length.
    #[serde(default)]
    pub baseline: bool,
}

impl Series {
    /// A plain line of one study.
    fn line(s: &StudyInput, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: format!("{} ({})", s.name, s.strategy),
            reference: false,
            baseline: false,
            points,
        }
    }
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
            let color = if s.baseline {
                BLACK.to_rgba()
            } else {
                Palette99::pick(i).to_rgba()
            };
            if s.baseline {
                chart
                    .draw_series(DashedLineSeries::new(
                        s.points.clone(),
                        6,
                        4,
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| Cross::new(p, 6, color.stroke_width(2))),
                    )
                    .map_err(|e| e.to_string())?;
            } else if s.reference {
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

/// The studies grouped by series, in first-appearance order.
pub fn series_groups(studies: &[StudyInput]) -> Vec<(String, Vec<&StudyInput>)> {
    let mut out: Vec<(String, Vec<&StudyInput>)> = Vec::new();
    for s in studies {
        match out.iter_mut().find(|(n, _)| *n == s.series) {
            Some((_, v)) => v.push(s),
            None => out.push((s.series.clone(), vec![s])),
        }
    }
    out
}

/// Quality against cost: each series' held-out KL at its points' costs (a
/// sweep joins its studies' results; NSGA-II gives its whole front), in
/// percent of the full cost. Single points are reference markers; the
/// uniform baseline is marked as such.
pub fn front_plot(studies: &[StudyInput]) -> Result<SeriesPlot, ReportError> {
    let unit = studies.first().map_or("cost", |s| s.cost_unit.as_str());
    // Percent of the least compressed configuration when every study shares
    // it (one database); otherwise (one grid per target) absolute cost, in
    // millions, the only axis on which they line up.
    let same_full = studies.windows(2).all(|w| w[0].full_cost == w[1].full_cost);
    let x_of = |s: &StudyInput, cost: u64| -> f64 {
        if same_full {
            100.0 * cost as f64 / s.full_cost.max(1) as f64
        } else {
            cost as f64 / 1e6
        }
    };
    let series = series_groups(studies)
        .into_iter()
        .map(|(name, members)| {
            let strategy = members[0].strategy.clone();
            let mut pts: Vec<(f64, f64)> = members
                .iter()
                .flat_map(|s| s.front.iter().map(|m| (x_of(s, m.cost), m.held_out_kl)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let baseline = strategy == "uniform";
            Series {
                name: if baseline && name == strategy {
                    format!("{name} (baseline)")
                } else if baseline {
                    format!("{name} (uniform baseline)")
                } else if name == strategy {
                    name
                } else {
                    format!("{name} ({strategy})")
                },
                reference: pts.len() == 1 && strategy != "EvoPress",
                baseline,
                points: pts,
            }
        })
        .collect();
    SeriesPlot::new(
        "Held-out KL against size",
        &if same_full {
            format!("{unit}, % of the least compressed configuration")
        } else {
            format!("{unit} (millions)")
        },
        "held-out KL to the uncompressed model (nats/token)",
        series,
    )
}

/// Hypervolume of each NSGA-II study's front after every step, against one
/// reference point shared by all of them: (1.1 × the largest search fitness
/// seen on any recorded front, 100% of the cost). Cost is in fractions of
/// the full cost, so the value is comparable across studies.
pub fn hypervolume_plot(studies: &[StudyInput]) -> Result<SeriesPlot, ReportError> {
    let with_fronts: Vec<&StudyInput> = studies
        .iter()
        .filter(|s| s.history.iter().any(|h| !h.front.is_empty()))
        .collect();
    let worst = with_fronts
        .iter()
        .flat_map(|s| s.history.iter().flat_map(|h| h.front.iter().map(|p| p.0)))
        .fold(f64::NEG_INFINITY, f64::max);
    let reference = [1.1 * worst.max(0.0) + 1e-12, 1.0];
    let series = with_fronts
        .iter()
        .map(|s| {
            let points = s
                .history
                .iter()
                .filter(|h| !h.front.is_empty())
                .map(|h| {
                    let pts: Vec<[f64; 2]> = h
                        .front
                        .iter()
                        .map(|&(f, c)| [f, c as f64 / s.full_cost.max(1) as f64])
                        .collect();
                    (
                        h.evaluations as f64,
                        evocomp_search::pareto::hypervolume_2d(&pts, reference),
                    )
                })
                .collect();
            Series::line(s, points)
        })
        .collect();
    SeriesPlot::new(
        &format!(
            "NSGA-II hypervolume (reference: fitness {:.4}, 100% cost)",
            reference[0]
        ),
        "evaluations",
        "hypervolume of (search fitness, cost fraction)",
        series,
    )
}

/// Best fitness against evaluations (`by_time` false) or wall seconds.
pub fn convergence_plot(studies: &[StudyInput], by_time: bool) -> Result<SeriesPlot, ReportError> {
    let series = studies
        .iter()
        .map(|s| {
            let points: Vec<(f64, f64)> = s
                .history
                .iter()
                .filter_map(|h| {
                    let x = if by_time {
                        h.seconds
                    } else {
                        h.evaluations as f64
                    };
                    h.best.map(|b| (x, b))
                })
                .collect();
            Series::line(s, points)
        })
        // A curve needs two points (one-shot baselines have one).
        .filter(|s| s.points.len() > 1)
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
            "candidates scored (computed or from a cache)"
        },
        "best search fitness (KL on its last sample)",
        series,
    )
}

/// Where the budget went: one row per study (its best configuration), one
/// column per layer, the cell its mean level across the layer's units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<usize>,
    /// rows x cols; None where a study has no unit in that layer.
    pub values: Vec<Vec<Option<f64>>>,
    /// The colour scale's ends (lowest and highest level seen).
    pub range: (f64, f64),
}

/// The level profile of every study, on one colour scale.
pub fn profile_heatmap(studies: &[StudyInput]) -> Result<Heatmap, ReportError> {
    let per: Vec<Vec<(usize, f64)>> = studies.iter().map(level_by_layer).collect();
    let mut cols: Vec<usize> = per.iter().flatten().map(|(l, _)| *l).collect();
    cols.sort_unstable();
    cols.dedup();
    if cols.is_empty() {
        return Err(ReportError::Empty("profile: no unit names a layer".into()));
    }
    let values: Vec<Vec<Option<f64>>> = per
        .iter()
        .map(|p| {
            cols.iter()
                .map(|c| p.iter().find(|(l, _)| l == c).map(|x| x.1))
                .collect()
        })
        .collect();
    let all = values.iter().flatten().flatten();
    let lo = all.clone().fold(f64::INFINITY, |a, &b| a.min(b));
    let hi = all.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    Ok(Heatmap {
        title: format!(
            "Mean level per layer of each best configuration (white = level {lo:+.1}, darkest = {hi:+.1})"
        ),
        rows: studies
            .iter()
            .map(|s| format!("{} ({})", s.name, s.strategy))
            .collect(),
        cols,
        values,
        range: (lo, hi),
    })
}

impl Heatmap {
    /// Room for the longest row label (about 7 px a character at 13 px).
    fn label_width(&self) -> u32 {
        let longest = self
            .rows
            .iter()
            .map(|r| r.chars().count())
            .max()
            .unwrap_or(0);
        (24 + 7 * longest as u32).clamp(120, 520)
    }

    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n_rows = self.rows.len();
        let n_cols = self.cols.len();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(self.label_width())
            .build_cartesian_2d(-0.5f64..n_cols as f64 - 0.5, -0.5f64..n_rows as f64 - 0.5)
            .map_err(|e| e.to_string())?;
        let rows = self.rows.clone();
        let cols = self.cols.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("layer")
            .x_labels(n_cols.min(16))
            .y_labels(n_rows)
            .x_label_formatter(&|x| {
                let i = x.round();
                match cols.get(i as usize) {
                    Some(l) if (x - i).abs() < 1e-6 && i >= 0.0 => l.to_string(),
                    _ => String::new(),
                }
            })
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < rows.len() {
                    rows[rows.len() - 1 - i as usize].clone()
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        let (lo, hi) = self.range;
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut cells = Vec::new();
        for (r, row) in self.values.iter().enumerate() {
            let y = (n_rows - 1 - r) as f64;
            for (c, v) in row.iter().enumerate() {
                let color = match v {
                    Some(v) => {
                        let t = ((v - lo) / span).clamp(0.0, 1.0);
                        // White (least compressed) to dark blue (most).
                        RGBColor(
                            (245.0 - 215.0 * t) as u8,
                            (245.0 - 185.0 * t) as u8,
                            (250.0 - 110.0 * t) as u8,
                        )
                    }
                    None => RGBColor(220, 220, 220),
                };
                let x = c as f64;
                cells.push(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    color.filled(),
                ));
            }
        }
        chart.draw_series(cells).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }

    /// Draw as `<stem>.svg` and `<stem>.png`.
    pub fn draw(&self, stem: &Path) -> Result<(), ReportError> {
        register_fonts();
        let svg = stem.with_extension("svg");
        let png = stem.with_extension("png");
        let h = (120 + 34 * self.rows.len()) as u32;
        let w = 740 + self.label_width();
        let err = |p: &Path, m: String| ReportError::Draw {
            path: p.display().to_string(),
            message: m,
        };
        self.draw_on(&SVGBackend::new(&svg, (w, h)).into_drawing_area())
            .map_err(|m| err(&svg, m))?;
        self.draw_on(&BitMapBackend::new(&png, (w, h)).into_drawing_area())
            .map_err(|m| err(&png, m))?;
        Ok(())
    }
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
        "| study | strategy | budget | cost | % of max | held-out KL | held-out perplexity | evaluations | cache hits | search time (s) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for s in studies {
        let b = &s.best;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2}% | {:.4} | {:.2} | {} | {} | {:.0} |",
            s.name,
            s.strategy,
            s.budget,
            b.cost,
            100.0 * b.cost as f64 / s.full_cost.max(1) as f64,
            b.held_out_kl,
            b.held_out_perplexity,
            s.evaluations,
            s.cache_hits,
            s.seconds
        );
    }
    // Best configuration per budget: every strategy side by side.
    let mut budgets: Vec<&str> = Vec::new();
    for s in studies {
        if !budgets.contains(&s.budget.as_str()) {
            budgets.push(&s.budget);
        }
    }
    let groups = series_groups(studies);
    if groups.len() > 1 && !budgets.is_empty() {
        let _ = writeln!(
            md,
            "\n## Held-out perplexity (KL) per budget\n\nThe best of each row in bold.\n"
        );
        let _ = write!(md, "| budget |");
        for (n, _) in &groups {
            let _ = write!(md, " {n} |");
        }
        let _ = writeln!(md);
        let _ = writeln!(md, "|---|{}", "---|".repeat(groups.len()));
        for b in &budgets {
            let cells: Vec<Option<&MeasuredPoint>> = groups
                .iter()
                .map(|(_, m)| m.iter().find(|s| s.budget == *b).map(|s| &s.best))
                .collect();
            let best = cells
                .iter()
                .flatten()
                .map(|m| m.held_out_perplexity)
                .fold(f64::INFINITY, f64::min);
            let _ = write!(md, "| {b} |");
            for c in cells {
                let _ = match c {
                    Some(m) if m.held_out_perplexity == best => write!(
                        md,
                        " **{:.2}** ({:.4}) |",
                        m.held_out_perplexity, m.held_out_kl
                    ),
                    Some(m) => write!(md, " {:.2} ({:.4}) |", m.held_out_perplexity, m.held_out_kl),
                    None => write!(md, " - |"),
                };
            }
            let _ = writeln!(md);
        }
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
    draw("hypervolume", hypervolume_plot(studies))?;
    match profile_heatmap(studies) {
        Ok(h) => {
            h.draw(&plots_dir.join("profile"))?;
            names.push("profile".into());
        }
        Err(ReportError::Empty(_)) => {}
        Err(e) => return Err(e),
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
        // One row per budget, one column per series, the best in bold.
        assert!(md.contains("| budget | uniform | evopress |"), "{md}");
        assert!(
            md.contains("| level-2 | 18.00 (0.8000) | **16.00** (0.6000) |"),
            "{md}"
        );
        assert!(
            md.contains("| level2 | 29.00 (1.9000) | **25.00** (1.5000) |"),
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
}
