//! Drawing the report's plots with plotters (PNG and SVG, bundled font).

use crate::data::{Heatmap, SeriesPlot, step_corners};
use crate::{ReportError, register_fonts};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

impl SeriesPlot {
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
                    .draw_series(LineSeries::new(
                        line(s.points.clone()),
                        color.stroke_width(2),
                    ))
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
