//! Drawing the report's plots with plotters (PNG and SVG, bundled font).

use crate::data::{Heatmap, SeriesPlot, step_corners};
use crate::{ReportError, register_fonts};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// An axis tick: whole numbers without a decimal point, others with four
/// significant digits (at least one decimal), trailing zeros dropped.
pub(crate) fn tick(v: &f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
        return format!("{}", v.round() as i64);
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(1, 8) as usize;
    let t = format!("{v:.digits$}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    t.to_string()
}

/// The width of the legend panel right of a plot.
const LEGEND_WIDTH: u32 = 340;

/// A series' colour: the uniform baseline black, a companion its series'.
fn colour(series: &[crate::data::Series], i: usize) -> RGBAColor {
    let s = &series[i];
    if s.baseline {
        BLACK.to_rgba()
    } else {
        Palette99::pick(s.companion_of.unwrap_or(i)).to_rgba()
    }
}

impl SeriesPlot {
    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (w, _) = root.dim_in_pixel();
        let (plot, legend) = root.split_horizontally(w.saturating_sub(LEGEND_WIDTH));
        let mut chart = ChartBuilder::on(&plot)
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
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in self.series.iter().enumerate() {
            let color = colour(&self.series, i);
            let line = |pts: Vec<(f64, f64)>| if s.steps { step_corners(&pts) } else { pts };
            if !s.band.is_empty() {
                // The spread as a polygon: along the highs, back along the lows.
                let mut poly = line(s.band.iter().map(|b| (b.0, b.2)).collect());
                let mut lows = line(s.band.iter().map(|b| (b.0, b.1)).collect());
                lows.reverse();
                poly.extend(lows);
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        color.mix(0.18).filled(),
                    )))
                    .map_err(|e| e.to_string())?;
            }
            if s.baseline || s.companion_of.is_some() {
                chart
                    .draw_series(DashedLineSeries::new(
                        line(s.points.clone()),
                        6,
                        4,
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?;
                if s.baseline {
                    chart
                        .draw_series(
                            s.points
                                .iter()
                                .map(|&p| Cross::new(p, 6, color.stroke_width(2))),
                        )
                        .map_err(|e| e.to_string())?;
                }
            } else if s.reference {
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| TriangleMarker::new(p, 8, color.filled())),
                    )
                    .map_err(|e| e.to_string())?;
            } else {
                chart
                    .draw_series(LineSeries::new(
                        line(s.points.clone()),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        self.draw_legend(&legend)?;
        root.present().map_err(|e| e.to_string())
    }

    /// The legend in its own panel, right of the data: a sample of each
    /// series' mark and its name (long names cut with an ellipsis).
    fn draw_legend<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let font = ("sans-serif", 13).into_font();
        let top = 56;
        let row = 20;
        for (i, s) in self.series.iter().enumerate() {
            let y = top + row * i as i32;
            let color = colour(&self.series, i);
            let e = |r: Result<(), _>| {
                r.map_err(|e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string())
            };
            if s.baseline || s.companion_of.is_some() {
                for x in [4, 14] {
                    e(area.draw(&PathElement::new(
                        vec![(x, y), (x + 6, y)],
                        color.stroke_width(2),
                    )))?;
                }
            } else if s.reference {
                e(area.draw(&TriangleMarker::new((12, y), 6, color.filled())))?;
            } else {
                e(area.draw(&PathElement::new(
                    vec![(4, y), (20, y)],
                    color.stroke_width(2),
                )))?;
                e(area.draw(&Circle::new((12, y), 3, color.filled())))?;
            }
            let mut name = s.name.clone();
            if name.chars().count() > 46 {
                name = name.chars().take(45).collect::<String>() + "…";
            }
            e(area.draw(&Text::new(name, (28, y - 7), font.clone())))?;
        }
        Ok(())
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
        self.draw_on(&SVGBackend::new(&svg, (1140, 600)).into_drawing_area())
            .map_err(|m| err(&svg, m))?;
        self.draw_on(&BitMapBackend::new(&png, (1140, 600)).into_drawing_area())
            .map_err(|m| err(&png, m))?;
        Ok(())
    }
}

/// The width of the heatmap's colour bar panel.
const COLOUR_BAR_WIDTH: u32 = 150;

/// The heatmap's colour at `t` in 0..=1: white (least compressed) to dark
/// blue (most).
fn shade(t: f64) -> RGBColor {
    RGBColor(
        (245.0 - 215.0 * t) as u8,
        (245.0 - 185.0 * t) as u8,
        (250.0 - 110.0 * t) as u8,
    )
}

impl Heatmap {
    /// The colour bar: the scale from the lowest level (bottom, least
    /// compressed) to the highest (top, most compressed), its ends labelled.
    fn draw_colour_bar<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), String> {
        let (_, h) = area.dim_in_pixel();
        let (top, bottom) = (48i32, h as i32 - 56);
        if bottom <= top + 10 {
            return Ok(());
        }
        let e = |r: Result<(), DrawingAreaErrorKind<DB::ErrorType>>| r.map_err(|e| e.to_string());
        let steps = 40;
        for k in 0..steps {
            let t = k as f64 / (steps - 1) as f64;
            let y1 = bottom - ((bottom - top) as f64 * (k + 1) as f64 / steps as f64) as i32;
            let y0 = bottom - ((bottom - top) as f64 * k as f64 / steps as f64) as i32;
            e(area.draw(&Rectangle::new([(12, y1), (36, y0)], shade(t).filled())))?;
        }
        e(area.draw(&Rectangle::new(
            [(12, top), (36, bottom)],
            BLACK.stroke_width(1),
        )))?;
        let font = ("sans-serif", 12).into_font();
        let (lo, hi) = self.range;
        e(area.draw(&Text::new(
            format!("{} (more", tick(&hi)),
            (42, top - 4),
            font.clone(),
        )))?;
        e(area.draw(&Text::new("compressed)", (42, top + 10), font.clone())))?;
        e(area.draw(&Text::new(
            format!("{} (less", tick(&lo)),
            (42, bottom - 18),
            font.clone(),
        )))?;
        e(area.draw(&Text::new("compressed)", (42, bottom - 4), font.clone())))?;
        e(area.draw(&Text::new("mean level", (8, top - 30), font)))?;
        Ok(())
    }

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
        let (w, _) = root.dim_in_pixel();
        let (main, bar) = root.split_horizontally(w.saturating_sub(COLOUR_BAR_WIDTH));
        self.draw_colour_bar(&bar)?;
        let root = &main;
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
                    Some(v) => shade(((v - lo) / span).clamp(0.0, 1.0)),
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
        let w = 740 + self.label_width() + COLOUR_BAR_WIDTH;
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
