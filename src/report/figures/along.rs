//! The `along_curve` figure: train loss, test error and test accuracy along the curve (solid) and
//! the line segment (dashed), one panel each, with the barrier of each path marked.

use super::axis::Axis;
use super::panel::{annotate, draw_legend, panel, series, titled, Chart};
use super::style::{fontc, CURVE, LINE};
use crate::report::data::{Along, PathEval};
use crate::report::levels::fmt_sig;
use crate::report::Figure;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(crate) struct AlongFigure<'a> {
    pub along: &'a Along,
    pub title: &'a str,
}

/// The three panels: metric key, y-axis description, caption, whether a log axis is allowed.
const PANELS: [(&str, &str, &str, bool); 3] = [
    ("train_loss", "train loss", "Train loss", true),
    ("test_err", "test error (%)", "Test error", false),
    ("test_acc", "test accuracy (%)", "Test accuracy", false),
];

/// A path as drawn: legend name, its evaluation, colour, dashed or not.
type StyledPath<'a> = (&'a str, &'a PathEval, RGBColor, bool);

impl Figure for AlongFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1950, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let a = self.along;
        let sub = along_subtitle(a);
        let body = titled(
            root,
            &format!(
                "{} — metrics along the curve and the line segment",
                self.title
            ),
            Some(&sub),
        )?;
        let panels = body.split_evenly((1, 3));
        for (spec, area) in PANELS.into_iter().zip(&panels) {
            draw_panel(area, a, spec)?;
        }
        Ok(())
    }
}

/// One metric along both paths; nothing when neither path has a value of it.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    a: &Along,
    (key, ydesc, caption, allow_log): (&str, &str, &str, bool),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let paths: Vec<StyledPath> = std::iter::once(("curve", &a.curve, CURVE, false))
        .chain(a.line.as_ref().map(|l| ("line", l, LINE, true)))
        .collect();
    let vals: Vec<f64> = paths
        .iter()
        .flat_map(|(_, p, _, _)| {
            p.series(key)
                .into_iter()
                .map(|s| s.1)
                .chain(barrier_of(p, key).map(|b| b.2))
        })
        .collect();
    if vals.is_empty() {
        return Ok(());
    }
    let y = y_axis(key, vals, allow_log);
    let x = Axis::linear(0.0, 1.0);
    let mut chart = panel(area, caption, &x, &y, "t", ydesc)?;
    for (name, p, colour, dashed) in &paths {
        let pts = p
            .series(key)
            .into_iter()
            .map(|(t, v)| (t, y.t(v)))
            .collect();
        series(&mut chart, pts, colour.stroke_width(3), *dashed, Some(name))?;
    }
    for (i, path) in paths.iter().enumerate() {
        mark_barrier(&mut chart, path, i == 0, key, &y)?;
    }
    let pos = if key == "test_acc" {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    draw_legend(&mut chart, pos)
}

/// The y axis of `key`'s panel: padding for the legend (above; below for accuracy, whose legend
/// sits lower right), and a percentage stays within 0–100.
fn y_axis(key: &str, vals: Vec<f64>, allow_log: bool) -> Axis {
    let top_pad = if key == "test_acc" { 0.12 } else { 0.32 };
    let (lo_pad, hi_pad) = if key == "test_acc" {
        (0.35, top_pad)
    } else {
        (0.06, top_pad)
    };
    let mut y = Axis::fit(vals, allow_log, lo_pad, hi_pad);
    if matches!(key, "test_acc" | "test_err") {
        y = y.within_percent();
    }
    y
}

/// Marks the barrier of `key` on one path (if it has a non-zero one): a vertical segment from the
/// chord to the peak, a dot at each end and a label. `is_curve` places the label above the segment.
fn mark_barrier<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    &(name, p, colour, _): &StyledPath,
    is_curve: bool,
    key: &str,
    y: &Axis,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let Some((t, chord, top, b)) = barrier_of(p, key) else {
        return Ok(());
    };
    if b.abs() <= f64::EPSILON {
        return Ok(());
    }
    let dark = colour.mix(0.9).stroke_width(2);
    let (c, v) = ((t, y.t(chord)), (t, y.t(top)));
    chart.draw_series(std::iter::once(PathElement::new(vec![c, v], dark)))?;
    chart.draw_series([c, v].map(|p| Circle::new(p, 4, colour.filled())))?;
    // The line's label sits left of its segment's middle; the curve's (usually a
    // short segment on top of its line) above the segment's upper end.
    let text = format!("{name} barrier {}", fmt_sig(b.abs(), 3));
    let (at, dx, dy, anchor) = if is_curve {
        (
            (t, c.1.max(v.1)),
            8,
            -10,
            Pos::new(HPos::Left, VPos::Bottom),
        )
    } else {
        (
            (t, (c.1 + v.1) / 2.0),
            -10,
            0,
            Pos::new(HPos::Right, VPos::Center),
        )
    };
    annotate(chart, at, text, (dx, dy), fontc(16.0, colour).pos(anchor))
}

fn along_subtitle(a: &Along) -> String {
    let m = &a.meta;
    let mut parts = Vec::new();
    if let Some(c) = m.get("curve").and_then(|v| v.as_str()) {
        let bends = m
            .get("bends")
            .and_then(|v| v.as_u64())
            .map(|b| format!(", {b} bends"))
            .unwrap_or_default();
        parts.push(format!("{c} curve{bends}"));
    }
    if let Some(p) = m.get("points").and_then(|v| v.as_u64()) {
        parts.push(format!("{p} points in t"));
    }
    parts.push("barrier = largest excess over the chord between the end values".into());
    parts.join("; ")
}

/// Barrier of `key` on `p`: `(t, chord, chord + barrier, barrier)`. The accuracy panel uses the
/// test-error barrier mirrored (a drop in accuracy) unless the file has its own.
fn barrier_of(p: &PathEval, key: &str) -> Option<(f64, f64, f64, f64)> {
    p.barrier(key).or_else(|| {
        if key != "test_acc" {
            return None;
        }
        let (t, _, _, b) = p.barrier("test_err")?;
        let s = p.series("test_acc");
        let chord = (1.0 - t) * s.first()?.1 + t * s.last()?.1;
        Some((t, chord, chord - b, -b))
    })
}
