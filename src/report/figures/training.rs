//! The `training` figure: loss, accuracy and learning rate per epoch of every trained model (the
//! endpoints and the curve), train solid and test dashed.

use super::axis::Axis;
use super::panel::{draw_legend, panel, series, titled};
use super::style::PALETTE;
use crate::report::data::RunLog;
use crate::report::levels::fmt_sig;
use crate::report::Figure;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

pub(crate) struct TrainingFigure<'a> {
    pub logs: &'a [RunLog],
    pub title: &'a str,
}

/// One panel: caption, y-axis description, the log keys drawn (train solid, then test dashed),
/// whether a log axis is allowed.
type PanelSpec = (&'static str, &'static str, &'static [&'static str], bool);

const PANELS: [PanelSpec; 3] = [
    ("Loss", "loss (nats)", &["train_loss", "test_loss"], true),
    (
        "Accuracy",
        "accuracy (%)",
        &["train_acc", "test_acc"],
        false,
    ),
    ("Learning rate", "learning rate", &["lr"], false),
];

impl Figure for TrainingFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1950, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let sub = "train solid, test dashed; the curve's train metrics are at random t, its test metrics at the t in its log";
        let body = titled(root, &format!("{} — training", self.title), Some(sub))?;
        let panels = body.split_evenly((1, 3));
        let x = self.epoch_axis();
        for (spec, area) in PANELS.into_iter().zip(&panels) {
            self.draw_panel(area, &x, spec)?;
        }
        Ok(())
    }
}

impl TrainingFigure<'_> {
    /// Epochs from 0 to the last epoch of any log (at least 1), plus half an epoch.
    fn epoch_axis(&self) -> Axis {
        let emax = self
            .logs
            .iter()
            .flat_map(|l| l.series("lr"))
            .map(|p| p.0)
            .fold(1.0, f64::max);
        let emax = self
            .logs
            .iter()
            .flat_map(|l| l.series("train_loss"))
            .map(|p| p.0)
            .fold(emax, f64::max);
        Axis::linear(0.0, emax + 0.5)
    }

    /// One panel: every model's series of `keys`; the loss panel carries the legend.
    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        x: &Axis,
        (caption, ydesc, keys, allow_log): PanelSpec,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let vals = self
            .logs
            .iter()
            .flat_map(|l| keys.iter().flat_map(|k| l.series(k)))
            .map(|p| p.1);
        let (pad_lo, pad_hi) = if keys[0] == "train_acc" {
            (0.45, 0.08)
        } else {
            (0.05, 0.12)
        };
        let mut y = Axis::fit(vals, allow_log, pad_lo, pad_hi);
        if keys[0] == "lr" {
            y.lo = 0.0;
        }
        if keys[0] == "train_acc" {
            y = y.within_percent();
        }
        let mut chart = panel(area, caption, x, &y, "epoch", ydesc)?;
        for (i, log) in self.logs.iter().enumerate() {
            let colour = if log.is_curve() {
                PALETTE[6]
            } else {
                PALETTE[i % 6]
            };
            for (j, key) in keys.iter().enumerate() {
                let pts = log
                    .series(key)
                    .into_iter()
                    .map(|(e, v)| (e, y.t(v)))
                    .collect();
                let label = (j == 0).then(|| match log.last("test_t") {
                    Some(t) => format!("{} (test at t = {})", log.label, fmt_sig(t, 3)),
                    None => log.label.clone(),
                });
                series(
                    &mut chart,
                    pts,
                    colour.stroke_width(3),
                    j == 1,
                    label.as_deref(),
                )?;
            }
        }
        if keys[0] == "train_loss" {
            let grey = RGBColor(110, 110, 110).stroke_width(3);
            series(&mut chart, vec![], grey, false, Some("train"))?;
            series(&mut chart, vec![], grey, true, Some("test"))?;
            draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    }
}
