//! The `along_curve` figure: train loss, test error and test accuracy along the curve (solid) and
//! the line segment (dashed), one panel each, with the barrier of each path marked. The `align`
//! figure draws the same panels for the lines before and after alignment (and the curve).

use super::axis::Axis;
use super::panel::{annotate, draw_legend, legend_mark, panel, series, titled, Chart};
use super::style::{font, fontc, CURVE, LINE, PALETTE};
use crate::report::data::{Aligned, Along, PathEval};
use crate::report::levels::fmt_at_scale;
use crate::report::Figure;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(crate) struct AlongFigure<'a> {
    pub along: &'a Along,
    pub title: &'a str,
}

/// The lines from start to end raw, aligned and aligned with REPAIR, and the curve when swept.
pub(crate) struct AlignFigure<'a> {
    pub align: &'a Aligned,
    pub along: Option<&'a Along>,
    pub title: &'a str,
}

/// The curves of several experiments on the same axes (`plot --compare`): the first is this
/// experiment's.
pub(crate) struct CompareFigure<'a> {
    pub runs: &'a [(String, Along)],
    pub title: &'a str,
}

/// A panel: metric key, y-axis description, caption, whether a log axis is allowed.
type PanelSpec = (&'static str, &'static str, &'static str, bool);

/// The three panels of a path figure.
const PANELS: [PanelSpec; 3] = [
    ("train_loss", "train loss", "Train loss", true),
    ("test_err", "test error (%)", "Test error", false),
    ("test_acc", "test accuracy (%)", "Test accuracy", false),
];

/// A path as drawn: legend name, its evaluation, colour, dashed or not.
type StyledPath<'a> = (&'a str, &'a PathEval, RGBColor, bool);

/// How a figure names its paths and marks their barriers.
#[derive(Clone, Copy)]
enum Labels<'a> {
    /// Each panel labels its own paths and barriers.
    InPanels,
    /// One legend strip above the panels (one text per path), for figures with more paths than
    /// labels beside the segments fit; barriers are marked without labels.
    Strip(&'a [String]),
    /// A legend strip, and no barrier marks (their texts give the numbers).
    StripOnly(&'a [String]),
}

/// Draws the panels `specs` of `paths` under a title, labelled as `labels` says.
fn draw_paths<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (heading, sub): (&str, &str),
    paths: &[StyledPath],
    specs: &[PanelSpec],
    labels: Labels,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut body = titled(root, heading, Some(sub))?;
    if let Labels::Strip(texts) | Labels::StripOnly(texts) = labels {
        let rows = legend_rows(texts) as u32;
        let (strip, rest) = body.split_vertically(34 * rows + 10);
        legend_strip(&strip, paths, texts)?;
        body = rest;
    }
    let panels = body.split_evenly((1, specs.len()));
    for (&spec, area) in specs.iter().zip(&panels) {
        draw_panel(area, paths, spec, labels)?;
    }
    Ok(())
}

/// Legend columns: two when every text fits half the width at 18 px (about 60 characters).
fn legend_columns(texts: &[String]) -> usize {
    if texts.iter().all(|t| t.chars().count() <= 60) {
        2
    } else {
        1
    }
}

fn legend_rows(texts: &[String]) -> usize {
    texts.len().div_ceil(legend_columns(texts)).max(1)
}

/// Legend entries in one or two columns: a line sample and its text.
fn legend_strip<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    paths: &[StyledPath],
    texts: &[String],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let w = area.dim_in_pixel().0 as i32;
    let cols = legend_columns(texts) as i32;
    let left = Pos::new(HPos::Left, VPos::Center);
    for (i, (path, text)) in paths.iter().zip(texts).enumerate() {
        let (_, _, colour, dashed) = *path;
        let i = i as i32;
        let (x, y) = (w / 8 + (i % cols) * (w * 7 / 16), 18 + 34 * (i / cols));
        area.draw(&legend_mark::<DB>(x, y, colour.stroke_width(3), dashed))?;
        area.draw_text(text, &font(18.0).pos(left), (x + 42, y))?;
    }
    Ok(())
}

/// The largest barrier of `key` over `paths`: the scale their barriers
/// are printed at, so that they share their decimals.
fn barrier_scale(paths: &[StyledPath], key: &str) -> f64 {
    paths
        .iter()
        .filter_map(|(_, p, _, _)| barrier_of(p, key).map(|b| b.3.abs()))
        .fold(0.0, f64::max)
}

/// "name: test-error barrier B points, train-loss barrier L" for each path.
fn barrier_legend(paths: &[StyledPath]) -> Vec<String> {
    paths
        .iter()
        .map(|&(name, p, _, _)| {
            let b = |k: &str| {
                let scale = barrier_scale(paths, k);
                barrier_of(p, k).map_or("–".into(), |b| fmt_at_scale(b.3.abs(), scale, 3))
            };
            format!(
                "{name}: test-error barrier {} points, train-loss barrier {}",
                b("test_err"),
                b("train_loss")
            )
        })
        .collect()
}

impl Figure for AlignFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1400, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let a = self.align;
        let paths: Vec<StyledPath> = [
            ("line", a.raw.as_ref(), LINE),
            ("aligned line", a.aligned.as_ref(), PALETTE[2]),
            ("aligned + REPAIR", a.repaired.as_ref(), PALETTE[3]),
        ]
        .into_iter()
        .filter_map(|(n, p, c)| Some((n, p?, c, true)))
        .chain(self.along.map(|l| ("curve", &l.curve, CURVE, false)))
        .collect();
        let sub = "lines from start to end before and after permutation alignment (weight \
                   matching); barrier = largest excess over the chord between the end values";
        let heading = format!("{} — barriers before and after alignment", self.title);
        let legend = barrier_legend(&paths);
        // The accuracy panel would mirror the test error.
        draw_paths(
            root,
            (&heading, sub),
            &paths,
            &PANELS[..2],
            Labels::Strip(&legend),
        )
    }
}

impl Figure for AlongFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1950, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let a = self.along;
        let paths: Vec<StyledPath> = std::iter::once(("curve", &a.curve, CURVE, false))
            .chain(a.line.as_ref().map(|l| ("line", l, LINE, true)))
            .collect();
        let heading = format!(
            "{} — metrics along the curve and the line segment",
            self.title
        );
        draw_paths(
            root,
            (&heading, &along_subtitle(a)),
            &paths,
            &PANELS,
            Labels::InPanels,
        )
    }
}

impl Figure for CompareFigure<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = legend_rows(&self.legend()) as u32;
        (1400, 686 + 34 * rows)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let heading = format!("{} — curves compared", self.title);
        let sub = "each experiment's curve as swept by `modeconn eval`";
        draw_paths(
            root,
            (&heading, sub),
            &self.paths(),
            &[PANELS[0], PANELS[2]],
            Labels::StripOnly(&self.legend()),
        )
    }
}

impl CompareFigure<'_> {
    fn paths(&self) -> Vec<StyledPath<'_>> {
        self.runs
            .iter()
            .enumerate()
            .map(|(i, (label, a))| (label.as_str(), &a.curve, PALETTE[i % PALETTE.len()], false))
            .collect()
    }

    /// Each curve's ends, worst point and dip below the ends' mean, in test accuracy.
    fn legend(&self) -> Vec<String> {
        self.paths()
            .iter()
            .map(|&(name, p, _, _)| match p.accuracy_dip() {
                Some(d) => format!(
                    "{name}: ends {:.2}% / {:.2}%, worst {:.2}% (t = {:.2}, {:.2} below their mean)",
                    d.start, d.end, d.worst, d.worst_t, d.dip
                ),
                None => format!("{name}: no test accuracy"),
            })
            .collect()
    }
}

/// One metric along every path; nothing when no path has a value of it.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    paths: &[StyledPath],
    (key, ydesc, caption, allow_log): PanelSpec,
    labels: Labels,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
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
    let shared_legend = !matches!(labels, Labels::InPanels);
    let y = y_axis(key, vals, allow_log, shared_legend);
    let x = Axis::linear(0.0, 1.0);
    let mut chart = panel(area, caption, &x, &y, "t", ydesc)?;
    for (name, p, colour, dashed) in paths {
        let pts = p
            .series(key)
            .into_iter()
            .map(|(t, v)| (t, y.t(v)))
            .collect();
        let label = (!shared_legend).then_some(*name);
        series(&mut chart, pts, colour.stroke_width(3), *dashed, label)?;
    }
    if !matches!(labels, Labels::StripOnly(_)) {
        let scale = barrier_scale(paths, key);
        for (i, path) in paths.iter().enumerate() {
            let label = (!shared_legend).then_some(scale);
            mark_barrier(&mut chart, path, i == 0, label, key, &y)?;
        }
    }
    if shared_legend {
        return Ok(());
    }
    let pos = if key == "test_acc" {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    draw_legend(&mut chart, pos)
}

/// The y axis of `key`'s panel: padding for the panel's own legend (above; below for accuracy,
/// whose legend sits lower right) unless the legend is shared, and a percentage stays within 0–100.
fn y_axis(key: &str, vals: Vec<f64>, allow_log: bool, shared_legend: bool) -> Axis {
    let (lo_pad, hi_pad) = match (shared_legend, key == "test_acc") {
        (true, _) => (0.06, 0.08),
        (false, true) => (0.35, 0.12),
        (false, false) => (0.06, 0.32),
    };
    let mut y = Axis::fit(vals, allow_log, lo_pad, hi_pad);
    if matches!(key, "test_acc" | "test_err") {
        y = y.within_percent();
    }
    y
}

/// Marks the barrier of `key` on one path (if it has a non-zero one): a vertical segment from the
/// chord to the peak, a dot at each end and, with `label` (the scale the panel's barriers are
/// printed at), a label. `is_curve` places the label above the segment, on the side of the panel's
/// middle so that it stays inside the plot.
fn mark_barrier<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    &(name, p, colour, _): &StyledPath,
    is_curve: bool,
    label: Option<f64>,
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
    let Some(scale) = label else {
        return Ok(());
    };
    // The line's label sits left of its segment's middle; the curve's (usually a
    // short segment on top of its line) above the segment's upper end, running
    // towards the middle of the panel.
    let text = format!("{name} barrier {}", fmt_at_scale(b.abs(), scale, 3));
    let (at, dx, dy, anchor) = if is_curve {
        let (dx, side) = if t > 0.5 {
            (-8, HPos::Right)
        } else {
            (8, HPos::Left)
        };
        ((t, c.1.max(v.1)), dx, -10, Pos::new(side, VPos::Bottom))
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
