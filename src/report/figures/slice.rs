//! The `landscape_random_1d` figure: train loss and test error along one
//! random direction around a network (`landscape --plane random-1d`), one
//! panel each, the centre (α = 0, the network itself) marked.

use super::axis::Axis;
use super::panel::{panel, series, titled};
use super::style::CURVE;
use crate::report::data::Plane;
use crate::report::Figure;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

pub(crate) struct SliceFigure<'a> {
    pub line: &'a Plane,
    pub title: &'a str,
}

impl SliceFigure<'_> {
    /// `(α, value)` for every computed point of a metric's single row.
    fn points(&self, key: &str) -> Vec<(f64, f64)> {
        let row = match key {
            "train_loss" => self.line.train_loss.as_ref(),
            _ => self.line.test_err.as_ref(),
        };
        let Some(row) = row.and_then(|g| g.first()) else {
            return Vec::new();
        };
        self.line
            .xs
            .iter()
            .zip(row)
            .filter_map(|(&x, v)| Some((x, v.filter(|v| v.is_finite())?)))
            .collect()
    }
}

impl Figure for SliceFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1500, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let caption = self.line.meta.get("caption").and_then(|v| v.as_str());
        let body = titled(
            root,
            &format!("{} — along a random direction", self.title),
            caption,
        )?;
        let panels = body.split_evenly((1, 2));
        let specs = [
            ("train_loss", "train loss", "Train loss", true),
            ("test_err", "test error (%)", "Test error", false),
        ];
        for ((key, ydesc, cap, log), area) in specs.into_iter().zip(&panels) {
            let pts = self.points(key);
            if pts.len() < 2 {
                continue;
            }
            let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0);
            let vals: Vec<f64> = pts.iter().map(|p| p.1).collect();
            let (lo, hi) = vals
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let mut y = Axis::fit(vals, log, 0.06, 0.12);
            if key == "test_err" {
                y = y.within_percent();
            }
            let mut chart = panel(area, cap, &Axis::linear(x0, x1), &y, "α", ydesc)?;
            let lo_hi = [y.t(lo), y.t(hi)];
            // The centre: the network itself, at α = 0.
            chart.draw_series(std::iter::once(DashedPathElement::new(
                vec![(0.0, lo_hi[0]), (0.0, lo_hi[1])],
                8,
                6,
                BLACK.mix(0.6).stroke_width(2),
            )))?;
            let drawn = pts.iter().map(|&(x, v)| (x, y.t(v))).collect();
            series(&mut chart, drawn, CURVE.stroke_width(3), false, None)?;
        }
        Ok(())
    }
}
