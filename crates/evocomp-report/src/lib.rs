//! Reports: plot data computed apart from drawing (so it can be tested),
//! then drawn with plotters.
//!
//! - `data.rs`: every plot's and table's data from finished studies
//!   ([`StudyInput`], built by the caller from a study's summary);
//! - `draw.rs`: drawing those plots (PNG + SVG, bundled DejaVu font);
//! - `write.rs`: `report.md`, `report.html` and `plots/`;
//! - this file: the single-study front plot and the font registration.
//!
//! The first plot is the quality-versus-size Pareto front: every evaluated
//! configuration as (cost, fitness), the non-dominated ones joined in a
//! staircase, and named reference points (uniform, baselines) marked.

use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

mod data;
mod draw;
pub mod stats;
mod write;
pub use data::{
    AnytimeCurve, Heatmap, MeasuredPoint, Progress, Series, SeriesPlot, StudyInput, anytime_curves,
    anytime_plot, best_so_far, convergence_plot, front_plot, hypervolume_plot, level_by_layer,
    profile_heatmap, series_groups, step_corners, user_cost, variant,
};
pub use evocomp_search::Role;
pub use write::{markdown, write_report};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: cannot draw: {message}")]
    Draw { path: String, message: String },
    #[error("nothing to plot: {0}")]
    Empty(String),
}

/// One evaluated configuration: its cost (smaller is cheaper) and fitness
/// (smaller is better).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub cost: f64,
    pub fitness: f64,
    pub label: Option<String>,
}

/// What the Pareto-front plot shows, computed from the points alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontPlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Every point.
    pub all: Vec<Point>,
    /// The non-dominated points, by increasing cost.
    pub front: Vec<Point>,
    /// Points with a label (reference configurations).
    pub marked: Vec<Point>,
    /// Axis ranges with a 5% margin.
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
}

/// The non-dominated subset (both coordinates minimised), by increasing cost;
/// among equal points the first is kept.
pub fn pareto_front(points: &[Point]) -> Vec<Point> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].cost.is_finite() && points[i].fitness.is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        points[a]
            .cost
            .total_cmp(&points[b].cost)
            .then(points[a].fitness.total_cmp(&points[b].fitness))
            .then(a.cmp(&b))
    });
    let mut front: Vec<Point> = Vec::new();
    for i in order {
        if front
            .last()
            .is_none_or(|p: &Point| points[i].fitness < p.fitness)
        {
            front.push(points[i].clone());
        }
    }
    front
}

/// DejaVu Sans (free licence: fonts/DejaVuSans-LICENSE.txt), bundled so
/// that drawing needs no system fonts.
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// Register the bundled font as plotters' "sans-serif" (once per process).
pub fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TTF compiled into the binary.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

pub(crate) fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    (lo - 0.05 * span, hi + 0.05 * span)
}

impl FrontPlot {
    pub fn new(
        title: &str,
        x_label: &str,
        y_label: &str,
        points: Vec<Point>,
    ) -> Result<Self, ReportError> {
        let finite: Vec<&Point> = points
            .iter()
            .filter(|p| p.cost.is_finite() && p.fitness.is_finite())
            .collect();
        if finite.is_empty() {
            return Err(ReportError::Empty(title.to_string()));
        }
        let (xs, ys): (Vec<f64>, Vec<f64>) = finite.iter().map(|p| (p.cost, p.fitness)).unzip();
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Ok(Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            front: pareto_front(&points),
            marked: points
                .iter()
                .filter(|p| p.label.is_some())
                .cloned()
                .collect(),
            x_range: padded(min(&xs), max(&xs)),
            y_range: padded(min(&ys), max(&ys)),
            all: points,
        })
    }

    /// Draw as SVG (text needs no font files).
    pub fn draw_svg(&self, path: &Path) -> Result<(), ReportError> {
        register_fonts();
        let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| ReportError::Draw {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(
                self.x_range.0..self.x_range.1,
                self.y_range.0..self.y_range.1,
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(
                self.all
                    .iter()
                    .map(|p| Circle::new((p.cost, p.fitness), 3, RGBColor(150, 150, 150).filled())),
            )
            .map_err(|e| err(&e))?
            .label("evaluated")
            .legend(|(x, y)| Circle::new((x, y), 3, RGBColor(150, 150, 150).filled()));
        // The front as a staircase: each point holds until the next cheaper-better one.
        let mut stairs = Vec::new();
        for (i, p) in self.front.iter().enumerate() {
            if i > 0 {
                stairs.push((p.cost, self.front[i - 1].fitness));
            }
            stairs.push((p.cost, p.fitness));
        }
        chart
            .draw_series(LineSeries::new(stairs, BLUE.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        for p in &self.marked {
            let label = p.label.clone().unwrap_or_default();
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((p.cost, p.fitness))
                        + TriangleMarker::new((0, 0), 7, RED.filled())
                        + Text::new(label, (8, -14), ("sans-serif", 14)),
                ))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(cost: f64, fitness: f64) -> Point {
        Point {
            cost,
            fitness,
            label: None,
        }
    }

    #[test]
    fn the_front_keeps_exactly_the_non_dominated_points() {
        let pts = vec![
            p(3.0, 1.0),
            p(1.0, 5.0),
            p(2.0, 3.0),
            p(2.5, 3.5),
            p(1.0, 6.0),
            p(4.0, 1.0),
            p(f64::NAN, 0.0),
        ];
        let f = pareto_front(&pts);
        assert_eq!(f, vec![p(1.0, 5.0), p(2.0, 3.0), p(3.0, 1.0)]);
        // No front point is dominated by any point.
        for a in &f {
            assert!(!pts.iter().any(|b| b.cost <= a.cost
                && b.fitness <= a.fitness
                && (b.cost < a.cost || b.fitness < a.fitness)));
        }
    }

    #[test]
    fn plot_data_and_drawing() {
        let mut pts = vec![p(10.0, 2.0), p(20.0, 1.0), p(15.0, 1.8)];
        pts.push(Point {
            cost: 15.0,
            fitness: 2.5,
            label: Some("uniform".into()),
        });
        let plot = FrontPlot::new("front", "non-zero weights", "KL", pts).unwrap();
        assert_eq!(plot.front.len(), 3);
        assert_eq!(plot.marked.len(), 1);
        assert!(plot.x_range.0 < 10.0 && plot.x_range.1 > 20.0);
        assert!(plot.y_range.0 < 1.0 && plot.y_range.1 > 2.5);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("front.svg");
        plot.draw_svg(&out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("<svg") && svg.contains("uniform") && svg.contains("Pareto front"));
        assert!(FrontPlot::new("x", "a", "b", vec![]).is_err());
    }
}

#[cfg(test)]
mod report_tests;
