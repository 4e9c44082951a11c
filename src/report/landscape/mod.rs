//! The loss-landscape figures (`landscape_train_loss`, `landscape_test_error`): filled contours
//! (isobands from the `contour` crate) on log-spaced levels with the top clipped, contour lines,
//! a viridis colour bar, and the endpoints, bends, projected curve and line segment on top.
//!
//! - this file: which metric, its contour levels, the figure's layout;
//! - [`field`]: the metric itself (filled contours, contour lines, cells not computed yet);
//! - [`markers`]: the line segment, curve, bends and endpoints drawn over the field;
//! - [`colour_bar`]: the viridis colour map and the colour bar beside the plot.

mod colour_bar;
mod field;
mod markers;

use super::data::{Grid, Plane};
use super::figures::{draw_legend, panel, titled, Axis};
use super::levels::log_levels;
use super::Figure;
use anyhow::Result;
use colour_bar::draw_colour_bar;
use plotters::coord::Shift;
use plotters::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Metric {
    TrainLoss,
    TestErr,
}

impl Metric {
    pub fn key(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train_loss",
            Metric::TestErr => "test_err",
        }
    }
    pub fn figure_name(self) -> &'static str {
        match self {
            Metric::TrainLoss => "landscape_train_loss",
            Metric::TestErr => "landscape_test_error",
        }
    }
    /// The figure of this metric on a random plane.
    pub fn random_figure_name(self) -> &'static str {
        match self {
            Metric::TrainLoss => "landscape_random_train_loss",
            Metric::TestErr => "landscape_random_test_error",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train loss",
            Metric::TestErr => "test error (%)",
        }
    }
    fn grid(self, p: &Plane) -> Option<&Grid> {
        match self {
            Metric::TrainLoss => p.train_loss.as_ref(),
            Metric::TestErr => p.test_err.as_ref(),
        }
    }
}

/// Number of contour levels; there is one more colour band (values above the top level).
const LEVELS: usize = 14;
/// Values above this quantile of the grid get the top ("> value") colour.
const CLIP_QUANTILE: f64 = 0.95;

/// A closed polygon or an open polyline in data coordinates.
type Ring = Vec<(f64, f64)>;

pub(crate) struct Landscape<'a> {
    plane: &'a Plane,
    metric: Metric,
    title: String,
    /// Row-major values (`row j` is `ys[j]`), `None` where not computed.
    values: Vec<Option<f64>>,
    levels: Vec<f64>,
}

impl<'a> Landscape<'a> {
    /// `None` when the plane has no finite value of this metric.
    pub fn new(plane: &'a Plane, metric: Metric, title: &str) -> Option<Landscape<'a>> {
        let values: Vec<Option<f64>> = metric
            .grid(plane)?
            .iter()
            .flatten()
            .map(|v| v.filter(|v| v.is_finite()))
            .collect();
        let levels = levels_for(&values.iter().flatten().copied().collect::<Vec<_>>())?;
        let title = format!("{title} — {} on the plane", metric.label());
        Some(Landscape {
            plane,
            metric,
            title,
            values,
            levels,
        })
    }

    /// Grid coordinate of the contour crate (sample `i` sits at `i + 0.5`) to data coordinates,
    /// clamped to the half-cell border around the samples.
    fn to_data(c: f64, s: &[f64]) -> f64 {
        let n = s.len();
        let u = (c - 0.5).clamp(-0.5, n as f64 - 0.5);
        let i = (u.floor().max(0.0) as usize).min(n - 2);
        s[i] + (u - i as f64) * (s[i + 1] - s[i])
    }

    fn bounds(s: &[f64]) -> (f64, f64) {
        (Self::to_data(0.0, s), Self::to_data(s.len() as f64, s))
    }

    /// Height over width of the plotted plane, clamped to 0.5–1.5.
    fn aspect(&self) -> f64 {
        let (x0, x1) = Self::bounds(&self.plane.xs);
        let (y0, y1) = Self::bounds(&self.plane.ys);
        ((y1 - y0) / (x1 - x0)).clamp(0.5, 1.5)
    }
}

/// Log-spaced levels from the smallest positive value to the `CLIP_QUANTILE` quantile.
fn levels_for(vals: &[f64]) -> Option<Vec<f64>> {
    let mut pos: Vec<f64> = vals.iter().copied().filter(|v| *v > 0.0).collect();
    if pos.is_empty() {
        return if vals.is_empty() {
            None
        } else {
            Some(log_levels(1e-3, 1e-2, LEVELS))
        };
    }
    pos.sort_by(f64::total_cmp);
    let lo = pos[0];
    let q = pos[((pos.len() - 1) as f64 * CLIP_QUANTILE).round() as usize];
    let hi = if q > lo * 1.5 {
        q
    } else {
        pos[pos.len() - 1].max(lo * 1.5)
    };
    Some(log_levels(lo, hi, LEVELS))
}

impl Figure for Landscape<'_> {
    /// Height follows the plane's aspect ratio (clamped as in `draw`), so an
    /// elongated plane does not leave bands of empty canvas.
    fn size(&self) -> (u32, u32) {
        let aspect = self.aspect();
        let w = 1200u32;
        let plot_w = (w - 190) as f64 - 124.0;
        (w, (plot_w * aspect + 90.0 + 150.0).round() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let p = self.plane;
        let caption = p.meta.get("caption").and_then(|v| v.as_str());
        let body = titled(root, &self.title, caption)?;
        let (plot_area, bar_area) = body.split_horizontally(body.dim_in_pixel().0 as i32 - 190);

        let (x0, x1) = Self::bounds(&p.xs);
        let (y0, y1) = Self::bounds(&p.ys);
        let plot_area = equal_aspect(&plot_area, self.aspect());
        let (xa, ya) = (Axis::linear(x0, x1), Axis::linear(y0, y1));
        let xl = p.x_label.as_deref().unwrap_or("x");
        let yl = p.y_label.as_deref().unwrap_or("y");
        let mut chart = panel(&plot_area, "", &xa, &ya, xl, yl)?;

        let colours = self.draw_field(&mut chart)?;
        self.draw_missing_cells(&mut chart)?;
        self.draw_paths(&mut chart, (x0, x1), (y0, y1))?;
        self.draw_markers(&mut chart, (x0, x1), (y0, y1))?;
        self.draw_centre(&mut chart)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;

        let (_, yr) = chart.plotting_area().get_pixel_range();
        let (bx, _) = bar_area.get_pixel_range();
        draw_colour_bar(
            root,
            &self.levels,
            &colours,
            (bx.start + 20, yr.start, yr.end),
            self.metric.label(),
        )
    }
}

/// Equal aspect ratio (within reason): shrinks `area` so that the plot inside it (the area less
/// the room for tick labels) has height / width = `aspect`, centred.
fn equal_aspect<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    aspect: f64,
) -> DrawingArea<DB, Shift> {
    let (pw, ph) = area.dim_in_pixel();
    let (iw, ih) = (pw as f64 - 124.0, ph as f64 - 90.0);
    if ih / iw > aspect {
        let extra = ((ih - iw * aspect) / 2.0) as i32;
        area.margin(extra, extra, 0, 0)
    } else {
        let extra = ((iw - ih / aspect) / 2.0) as i32;
        area.margin(0, 0, extra, extra)
    }
}

#[cfg(test)]
mod tests {
    use super::colour_bar::viridis;
    use super::*;
    use contour::ContourBuilder;

    #[test]
    fn viridis_ends_and_levels() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(2.0), viridis(1.0));
        let vals: Vec<f64> = (0..100).map(|i| 0.01 * 1.05f64.powi(i)).collect();
        let l = levels_for(&vals).unwrap();
        assert_eq!(l.len(), LEVELS);
        assert_eq!(l[0], 0.01);
        assert!(l[LEVELS - 1] < vals[99] && l[LEVELS - 1] > vals[90]);
    }

    #[test]
    fn grid_coordinates_map_samples_to_xs() {
        let xs = [10.0, 20.0, 30.0];
        assert_eq!(Landscape::to_data(0.5, &xs), 10.0);
        assert_eq!(Landscape::to_data(2.5, &xs), 30.0);
        assert_eq!(Landscape::to_data(0.0, &xs), 5.0);
        assert_eq!(Landscape::to_data(3.0, &xs), 35.0);
        assert_eq!(Landscape::to_data(-1.0, &xs), 5.0);
        // A single high sample in the middle of a 3x3 grid: its isoline circles (20, 20).
        let field = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let lines = ContourBuilder::new(3, 3, true)
            .lines(&field, &[0.5])
            .unwrap();
        let pts: Vec<(f64, f64)> = lines[0].geometry().0[0]
            .0
            .iter()
            .map(|c| (Landscape::to_data(c.x, &xs), Landscape::to_data(c.y, &xs)))
            .collect();
        let (cx, cy) = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
        let k = pts.len() as f64;
        assert!(
            (cx / k - 20.0).abs() < 1.5 && (cy / k - 20.0).abs() < 1.5,
            "{pts:?}"
        );
    }
}
