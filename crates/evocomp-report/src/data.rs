//! The data of every plot and table of a report over finished studies,
//! computed from plain values (and tested) apart from drawing.

use crate::{ReportError, padded};
use evocomp_search::Role;
use serde::{Deserialize, Serialize};

/// One configuration measured on held-out data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredPoint {
    pub cost: u64,
    pub held_out_kl: f64,
    pub held_out_perplexity: f64,
    pub genome: Vec<i64>,
    /// Each held-out window's KL (empty for studies from before they were kept).
    #[serde(default)]
    pub kl_windows: Vec<f64>,
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
    /// What the result is: the uniform baseline is drawn as such, one-shot
    /// heuristics with one point as reference markers.
    pub role: Role,
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
    /// The held-out sample's id: studies with the same id were measured on
    /// the same windows, so their difference has a paired interval.
    #[serde(default)]
    pub held_out_id: Option<String>,
    pub history: Vec<Progress>,
    pub evaluations: usize,
    pub cache_hits: usize,
    pub seconds: f64,
    /// The best genome's held-out KL after some tokens of search: (tokens,
    /// KL), the value holding until the next point; NaN where it is unknown
    /// (a best genome that was never measured).
    #[serde(default)]
    pub anytime: Vec<(u64, f64)>,
    /// Weights over the database's units (linear layers), where the
    /// database was at hand: what bits per weight and sparsity are over.
    #[serde(default)]
    pub weights: Option<u64>,
}

/// A configuration's cost as a user reads it: bits per weight, % sparse,
/// blocks dropped, cached tokens per layer; a share of the least compressed
/// configuration's cost where the unit has no better reading (or the
/// weights are unknown).
pub fn user_cost(s: &StudyInput, m: &MeasuredPoint) -> String {
    let per = |total: u64| m.cost as f64 / total.max(1) as f64;
    match (s.cost_unit.as_str(), s.weights) {
        ("bits", Some(w)) => format!("{:.3} bits/weight", per(w)),
        ("non-zero weights", Some(w)) => format!("{:.1}% sparse", 100.0 * (1.0 - per(w))),
        ("parameters", _) if !m.genome.is_empty() => {
            let dropped = m.genome.iter().filter(|&&g| g == 1).count();
            let what = if s.units.iter().all(|u| u.ends_with(".block")) {
                "blocks"
            } else {
                "sub-blocks"
            };
            format!("{dropped} of {} {what} dropped", s.units.len())
        }
        ("cached tokens", _) if !s.units.is_empty() => {
            format!("{:.0} cached tokens/layer", per(s.units.len() as u64))
        }
        ("bits per cached token", _) if !s.units.is_empty() => {
            format!("{:.1} bits/cached token/unit", per(s.units.len() as u64))
        }
        _ => format!("{:.2}% of max", 100.0 * per(s.full_cost)),
    }
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
    /// A shaded spread around the line: (x, low, high).
    #[serde(default)]
    pub band: Vec<(f64, f64, f64)>,
    /// Drawn as steps: each value holds until the next point's x.
    #[serde(default)]
    pub steps: bool,
    /// A companion of the series at this index: drawn dashed in its colour.
    #[serde(default)]
    pub companion_of: Option<usize>,
}

/// The running minimum of `points`' y, as the points where it changes
/// (and the last x): a best-so-far line.
pub fn best_so_far(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut best = f64::INFINITY;
    for &(x, y) in points {
        if y < best {
            best = y;
            out.push((x, y));
        }
    }
    if let (Some(&(lx, _)), Some(last)) = (points.last(), out.last())
        && last.0 < lx
    {
        out.push((lx, best));
    }
    out
}

/// `points` as the corners of a step line: each y holds until the next x.
pub fn step_corners(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(2 * points.len());
    for (i, &p) in points.iter().enumerate() {
        if i > 0 {
            out.push((p.0, points[i - 1].1));
        }
        out.push(p);
    }
    out
}

impl Series {
    /// A plain line of one study.
    fn line(s: &StudyInput, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: format!("{} ({})", s.name, s.strategy),
            reference: false,
            baseline: false,
            band: Vec::new(),
            steps: false,
            companion_of: None,
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

impl SeriesPlot {
    pub fn new(
        title: &str,
        x_label: &str,
        y_label: &str,
        series: Vec<Series>,
    ) -> Result<Self, ReportError> {
        // The ranges cover the lines and their bands.
        let pts: Vec<(f64, f64)> = series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .copied()
                    .chain(s.band.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]))
            })
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
            let role = members[0].role;
            let mut pts: Vec<(f64, f64)> = members
                .iter()
                .flat_map(|s| s.front.iter().map(|m| (x_of(s, m.cost), m.held_out_kl)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let baseline = role == Role::Uniform;
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
                reference: pts.len() == 1 && role != Role::Search,
                baseline,
                band: Vec::new(),
                steps: false,
                companion_of: None,
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
        .collect::<Vec<Series>>();
    // Each curve, then its best so far (dashed, in its colour): a step's
    // best is on that step's sample, so the curve itself goes up and down.
    let series = series
        .into_iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let best = Series {
                // Listed right under its curve, in its colour.
                name: "  best so far".to_string(),
                points: best_so_far(&s.points),
                steps: true,
                companion_of: Some(2 * i),
                ..s.clone()
            };
            [s, best]
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
            "candidates scored (computed or from a cache)"
        },
        "best search fitness (KL on its last sample)",
        series,
    )
}

/// A study's variant for anytime curves: its name without a trailing
/// seed suffix (`-s<digits>`), so that the seeds of one variant are one curve.
pub fn variant(name: &str) -> &str {
    match name.rsplit_once("-s") {
        Some((v, seed)) if !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()) => v,
        _ => name,
    }
}

/// One variant's anytime curve over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnytimeCurve {
    pub variant: String,
    pub seeds: usize,
    /// (tokens, mean, lowest, highest) of the seeds' held-out KL, at every
    /// token count where any seed's value changes and every seed's value
    /// is known (a seed's value holds until its next point).
    pub points: Vec<(f64, f64, f64, f64)>,
    /// The seeds' mean final KL and mean total tokens.
    pub final_kl: f64,
    pub final_tokens: f64,
}

impl AnytimeCurve {
    /// The first token count at which the mean reaches `kl` (None if never).
    pub fn tokens_to_reach(&self, kl: f64) -> Option<f64> {
        self.points.iter().find(|p| p.1 <= kl).map(|p| p.0)
    }

    /// The mean KL at `tokens` (the last point at or before it).
    pub fn at(&self, tokens: f64) -> Option<f64> {
        self.points
            .iter()
            .take_while(|p| p.0 <= tokens)
            .last()
            .map(|p| p.1)
    }
}

/// The anytime curve of every variant whose studies have anytime points,
/// in first-appearance order.
pub fn anytime_curves(studies: &[StudyInput]) -> Vec<AnytimeCurve> {
    let mut groups: Vec<(String, Vec<&StudyInput>)> = Vec::new();
    for s in studies.iter().filter(|s| !s.anytime.is_empty()) {
        let v = variant(&s.name);
        match groups.iter_mut().find(|(n, _)| n == v) {
            Some((_, m)) => m.push(s),
            None => groups.push((v.to_string(), vec![s])),
        }
    }
    groups
        .into_iter()
        .map(|(variant, members)| {
            let mut grid: Vec<u64> = members
                .iter()
                .flat_map(|s| s.anytime.iter().map(|p| p.0))
                .collect();
            grid.sort_unstable();
            grid.dedup();
            let value = |s: &StudyInput, t: u64| {
                s.anytime
                    .iter()
                    .take_while(|p| p.0 <= t)
                    .last()
                    .map(|p| p.1)
            };
            let points = grid
                .into_iter()
                .filter_map(|t| {
                    let v: Option<Vec<f64>> = members.iter().map(|s| value(s, t)).collect();
                    let v = v?;
                    if v.iter().any(|x| x.is_nan()) {
                        return None;
                    }
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    Some((t as f64, mean, lo, hi))
                })
                .collect();
            let n = members.len() as f64;
            let last = |s: &&StudyInput| *s.anytime.last().expect("non-empty");
            AnytimeCurve {
                variant,
                seeds: members.len(),
                points,
                final_kl: members.iter().map(|s| last(s).1).sum::<f64>() / n,
                final_tokens: members.iter().map(|s| last(s).0 as f64).sum::<f64>() / n,
            }
        })
        .collect()
}

/// Held-out KL against tokens scored: one line (the seeds' mean) and a
/// band (their lowest and highest) per variant.
pub fn anytime_plot(studies: &[StudyInput]) -> Result<SeriesPlot, ReportError> {
    let series = anytime_curves(studies)
        .into_iter()
        .map(|c| Series {
            name: format!("{} ({} seeds)", c.variant, c.seeds),
            reference: false,
            baseline: false,
            points: c.points.iter().map(|p| (p.0, p.1)).collect(),
            band: if c.seeds > 1 {
                c.points.iter().map(|p| (p.0, p.2, p.3)).collect()
            } else {
                Vec::new()
            },
            steps: true,
            companion_of: None,
        })
        .collect::<Vec<_>>();
    SeriesPlot::new(
        "Anytime: the best genome's held-out KL against tokens scored",
        "tokens scored (cache hits excluded)",
        "held-out KL of the best genome so far",
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
