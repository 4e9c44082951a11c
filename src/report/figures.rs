//! Line-chart figures (`along_curve`, `ensemble`, `training`) and the styling helpers shared with
//! the landscape figure: fonts, palette, axes with nice linear or log ticks, titled panels, legends.

use super::data::{get, Along, Bin, Ensemble, Metrics, PathEval, RunLog};
use super::levels::{fmt_sig, linear_ticks, log_ticks};
use super::Figure;
use anyhow::Result;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(crate) const FAMILY: &str = "sans-serif";

pub(crate) fn font(size: f64) -> TextStyle<'static> {
    fontc(size, BLACK)
}

pub(crate) fn fontc(size: f64, c: RGBColor) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&c)
}

/// Colour-blind friendly qualitative palette (Okabe–Ito, darkened yellow).
pub(crate) const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(190, 150, 0),
    RGBColor(60, 60, 60),
];
pub(crate) const CURVE: RGBColor = PALETTE[0];
pub(crate) const LINE: RGBColor = PALETTE[1];
pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);
const DASH: (i32, i32) = (9, 6);

/// One axis: data-space limits, linear or log10 (values are plotted as `log10(v)` on a log axis).
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub log: bool,
    pub lo: f64,
    pub hi: f64,
}

impl Axis {
    pub fn linear(lo: f64, hi: f64) -> Axis {
        Axis { log: false, lo, hi }
    }

    /// Clips a fitted axis to 0–100: the padding leaves room for a legend,
    /// but a percentage axis neither starts below 0 nor ends above 100.
    pub fn within_percent(mut self) -> Axis {
        self.lo = self.lo.max(0.0);
        self.hi = self.hi.min(100.0);
        self
    }

    /// Fits `values` with relative padding below/above; goes log when `allow_log`, all values are
    /// positive and max/min > 30.
    pub fn fit(
        values: impl IntoIterator<Item = f64>,
        allow_log: bool,
        pad_lo: f64,
        pad_hi: f64,
    ) -> Axis {
        let v: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if v.is_empty() {
            return Axis::linear(0.0, 1.0);
        }
        let (min, max) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if allow_log && min > 0.0 && max / min > 30.0 {
            let (a, b) = (min.log10(), max.log10());
            let span = b - a;
            return Axis {
                log: true,
                lo: 10f64.powf(a - span * pad_lo),
                hi: 10f64.powf(b + span * pad_hi),
            };
        }
        let span = if max > min {
            max - min
        } else if max != 0.0 {
            max.abs() * 0.1
        } else {
            1.0
        };
        Axis::linear(min - span * pad_lo, max + span * pad_hi)
    }

    /// Plot coordinate of a data value.
    pub fn t(&self, v: f64) -> f64 {
        if self.log {
            v.max(self.lo * 1e-3).log10()
        } else {
            v
        }
    }

    pub fn coord(&self) -> Ticked {
        let ticks: Vec<f64> = if self.log {
            log_ticks(self.lo, self.hi, 8)
                .into_iter()
                .map(f64::log10)
                .collect()
        } else {
            linear_ticks(self.lo, self.hi, 6)
        };
        Ticked {
            lo: self.t(self.lo),
            hi: self.t(self.hi),
            ticks,
        }
    }

    pub fn label(&self, tv: f64) -> String {
        fmt_sig(if self.log { 10f64.powf(tv) } else { tv }, 3)
    }
}

/// A linear f64 coordinate (in plot space) with explicit tick positions.
pub(crate) struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = if self.hi != self.lo {
            (v - self.lo) / (self.hi - self.lo)
        } else {
            0.5
        };
        let px = limit.0 as f64 + f * (limit.1 - limit.0) as f64;
        px.clamp(-1e6, 1e6).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

pub(crate) type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>;

/// Builds a panel with a caption, light grid and formatted tick labels.
pub(crate) fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x: &Axis,
    y: &Axis,
    xdesc: &str,
    ydesc: &str,
) -> Result<Chart<'a, DB>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(24.0))
        .margin_top(8)
        .margin_left(10)
        .margin_right(30)
        .margin_bottom(10)
        .x_label_area_size(62)
        .y_label_area_size(84)
        .build_cartesian_2d(x.coord(), y.coord())?;
    let (xf, yf) = (|v: &f64| x.label(*v), |v: &f64| y.label(*v));
    chart
        .configure_mesh()
        .bold_line_style(GRID.stroke_width(1))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.mix(0.7).stroke_width(1))
        .label_style(font(18.0))
        .axis_desc_style(font(20.0))
        .x_desc(xdesc)
        .y_desc(ydesc)
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .draw()?;
    Ok(chart)
}

/// Draws the figure title (and an optional subtitle) and returns the area below it.
pub(crate) fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: Option<&str>,
) -> Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let w = root.dim_in_pixel().0 as i32;
    let head = if subtitle.is_some() { 92 } else { 60 };
    let (top, body) = root.split_vertically(head);
    let centre = Pos::new(HPos::Center, VPos::Top);
    top.draw_text(title, &font(30.0).pos(centre), (w / 2, 16))?;
    if let Some(s) = subtitle {
        top.draw_text(
            s,
            &fontc(20.0, RGBColor(80, 80, 80)).pos(centre),
            (w / 2, 58),
        )?;
    }
    Ok(body)
}

/// Solid or dashed polyline in plot coordinates, with a matching legend entry.
pub(crate) fn series<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    pts: Vec<(f64, f64)>,
    style: ShapeStyle,
    dashed: bool,
    label: Option<&str>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    // An empty `pts` with a label gives a legend-only entry.
    if pts.len() < 2 && label.is_none() {
        return Ok(());
    }
    let anno = if dashed {
        chart.draw_series(std::iter::once(DashedPathElement::new(
            pts, DASH.0, DASH.1, style,
        )))?
    } else {
        chart.draw_series(std::iter::once(PathElement::new(pts, style)))?
    };
    if let Some(l) = label {
        anno.label(l)
            .legend(move |(x, y)| legend_mark(x, y, style, dashed));
    }
    Ok(())
}

pub(crate) fn legend_mark<DB: DrawingBackend>(
    x: i32,
    y: i32,
    style: ShapeStyle,
    dashed: bool,
) -> DynElement<'static, DB, (i32, i32)> {
    if dashed {
        DashedPathElement::new(vec![(x - 2, y), (x + 30, y)], 8, 4, style).into_dyn()
    } else {
        PathElement::new(vec![(x - 2, y), (x + 30, y)], style).into_dyn()
    }
}

pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    pos: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(pos)
        .margin(12)
        .legend_area_size(40)
        .background_style(WHITE.mix(0.88))
        .border_style(BLACK.mix(0.25))
        .label_font(font(17.0))
        .draw()?;
    Ok(())
}

/// Text at a data point, shifted by `(dx, dy)` pixels.
pub(crate) fn annotate<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    at: (f64, f64),
    text: String,
    (dx, dy): (i32, i32),
    style: TextStyle<'static>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart.draw_series(std::iter::once(
        EmptyElement::at(at) + Text::new(text, (dx, dy), style),
    ))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// along_curve

pub(crate) struct AlongFigure<'a> {
    pub along: &'a Along,
    pub title: &'a str,
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
        let specs = [
            ("train_loss", "train loss", "Train loss", true),
            ("test_err", "test error (%)", "Test error", false),
            ("test_acc", "test accuracy (%)", "Test accuracy", false),
        ];
        for ((key, ydesc, caption, allow_log), area) in specs.into_iter().zip(&panels) {
            let paths: Vec<(&str, &PathEval, RGBColor, bool)> =
                std::iter::once(("curve", &a.curve, CURVE, false))
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
                continue;
            }
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
            for (i, (name, p, colour, _)) in paths.iter().enumerate() {
                if let Some((t, chord, top, b)) = barrier_of(p, key) {
                    if b.abs() <= f64::EPSILON {
                        continue;
                    }
                    let dark = colour.mix(0.9).stroke_width(2);
                    let (c, v) = ((t, y.t(chord)), (t, y.t(top)));
                    chart.draw_series(std::iter::once(PathElement::new(vec![c, v], dark)))?;
                    chart.draw_series([c, v].map(|p| Circle::new(p, 4, colour.filled())))?;
                    // The line's label sits left of its segment's middle; the curve's (usually a
                    // short segment on top of its line) above the segment's upper end.
                    let text = format!("{name} barrier {}", fmt_sig(b.abs(), 3));
                    let (at, dx, dy, anchor) = if i == 0 {
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
                    annotate(
                        &mut chart,
                        at,
                        text,
                        (dx, dy),
                        fontc(16.0, *colour).pos(anchor),
                    )?;
                }
            }
            let pos = if key == "test_acc" {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            };
            draw_legend(&mut chart, pos)?;
        }
        Ok(())
    }
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

// ---------------------------------------------------------------------------------------------
// ensemble

pub(crate) struct EnsembleFigure<'a> {
    pub ens: &'a Ensemble,
    pub title: &'a str,
}

impl Figure for EnsembleFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1950, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let e = self.ens;
        let k = e.meta.get("k").and_then(|v| v.as_u64());
        let sub =
            format!(
            "curve ensemble of {} models at t on a {} ({} averaged), compared with the endpoints",
            k.map_or("k".into(), |k| k.to_string()),
            e.meta.get("sampling").and_then(|v| v.as_str()).unwrap_or("grid"),
            e.meta.get("average").and_then(|v| v.as_str()).unwrap_or("probabilities"),
        );
        let body = titled(
            root,
            &format!("{} — ensembles along the curve", self.title),
            Some(&sub),
        )?;
        let panels = body.split_evenly((1, 3));
        for (i, (key, ydesc, caption)) in [
            ("acc", "test accuracy (%)", "Accuracy vs ensemble size"),
            ("nll", "test NLL", "NLL vs ensemble size"),
        ]
        .into_iter()
        .enumerate()
        {
            let pts: Vec<(f64, f64)> = e
                .by_size
                .iter()
                .filter_map(|r| Some((get(r, "k")?, get(r, key)?)))
                .collect();
            let refs: Vec<(&str, &Metrics, RGBColor)> = vec![
                ("start endpoint", &e.start, PALETTE[1]),
                ("end endpoint", &e.end, PALETTE[2]),
                ("two-endpoint ensemble", &e.endpoints, PALETTE[3]),
            ];
            let ref_vals: Vec<(&str, f64, RGBColor)> = refs
                .iter()
                .filter_map(|(n, m, c)| Some((*n, get(m, key)?, *c)))
                .collect();
            let vals = pts.iter().map(|p| p.1).chain(ref_vals.iter().map(|r| r.1));
            let (pad_lo, pad_hi) = if key == "acc" {
                (0.45, 0.1)
            } else {
                (0.1, 0.45)
            };
            let mut y = Axis::fit(vals, false, pad_lo, pad_hi);
            if key == "acc" {
                y = y.within_percent();
            }
            let kmax = pts.iter().map(|p| p.0).fold(1.0, f64::max);
            let x = Axis::linear(0.0, kmax + 1.0);
            let mut chart = panel(&panels[i], caption, &x, &y, "ensemble size k", ydesc)?;
            for (name, v, c) in &ref_vals {
                let label = format!("{name} ({})", fmt_sig(*v, 4));
                series(
                    &mut chart,
                    vec![(x.lo, *v), (x.hi, *v)],
                    c.stroke_width(2),
                    true,
                    Some(&label),
                )?;
            }
            let curve_label = match get(&e.curve, key) {
                Some(v) => format!(
                    "curve ensemble ({} at k={})",
                    fmt_sig(v, 4),
                    fmt_sig(kmax, 3)
                ),
                None => "curve ensemble".into(),
            };
            series(
                &mut chart,
                pts.clone(),
                CURVE.stroke_width(3),
                false,
                Some(&curve_label),
            )?;
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, CURVE.filled())))?;
            let pos = if key == "acc" {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            };
            draw_legend(&mut chart, pos)?;
        }
        reliability_panel(&panels[2], e)
    }
}

fn reliability_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, e: &Ensemble) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let ax = Axis::linear(0.0, 1.0);
    let mut chart = panel(
        area,
        "Reliability diagram",
        &ax,
        &ax,
        "confidence",
        "accuracy",
    )?;
    let diag = vec![(0.0, 0.0), (1.0, 1.0)];
    series(
        &mut chart,
        diag,
        BLACK.mix(0.5).stroke_width(2),
        true,
        Some("perfect calibration"),
    )?;
    let sets = [
        ("curve", "curve ensemble", &e.curve, CURVE, 0.0),
        ("start", "start endpoint", &e.start, PALETTE[1], 0.5),
    ];
    for (key, name, m, colour, offset) in sets {
        let Some(bins) = e.reliability.get(key) else {
            continue;
        };
        let used: Vec<&Bin> = bins
            .iter()
            .filter(|b| b.count > 0.0 && b.acc.is_some())
            .collect();
        let bars = used.iter().map(|b| {
            let w = b.hi - b.lo;
            let x0 = b.lo + w * (0.04 + offset * 0.92);
            let x1 = x0 + w * 0.46;
            Rectangle::new(
                [(x0, 0.0), (x1, b.acc.unwrap_or(0.0))],
                colour.mix(0.75).filled(),
            )
        });
        let label = match get(m, "ece") {
            Some(ece) => format!("{name} (ECE {})", fmt_sig(ece, 3)),
            None => name.to_string(),
        };
        chart.draw_series(bars)?.label(label).legend(move |(x, y)| {
            Rectangle::new([(x, y - 7), (x + 28, y + 7)], colour.mix(0.75).filled())
        });
        // Mean confidence of each bin as a small tick on the bar.
        let ticks = used.iter().filter_map(|b| {
            let w = b.hi - b.lo;
            let x0 = b.lo + w * (0.04 + offset * 0.92);
            let c = b.conf?;
            Some(PathElement::new(
                vec![(x0, c), (x0 + w * 0.46, c)],
                BLACK.mix(0.6).stroke_width(2),
            ))
        });
        let anno = chart.draw_series(ticks)?;
        if offset > 0.0 {
            anno.label("mean confidence of the bin").legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 28, y)], BLACK.mix(0.6).stroke_width(2))
            });
        }
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

// ---------------------------------------------------------------------------------------------
// training

pub(crate) struct TrainingFigure<'a> {
    pub logs: &'a [RunLog],
    pub title: &'a str,
}

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
        let x = Axis::linear(0.0, emax + 0.5);
        let specs: [(&str, &str, &[&str], bool); 3] = [
            ("Loss", "loss (nats)", &["train_loss", "test_loss"], true),
            (
                "Accuracy",
                "accuracy (%)",
                &["train_acc", "test_acc"],
                false,
            ),
            ("Learning rate", "learning rate", &["lr"], false),
        ];
        for ((caption, ydesc, keys, allow_log), area) in specs.into_iter().zip(&panels) {
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
            let mut chart = panel(area, caption, &x, &y, "epoch", ydesc)?;
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
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Axis;

    #[test]
    fn percentage_axes_keep_legend_padding_inside_0_to_100() {
        // A line at 90% test error with a 32% top pad for the legend would end at ~116%.
        let fitted = Axis::fit([9.5, 90.0, 11.0], false, 0.06, 0.32);
        assert!(fitted.hi > 100.0 && fitted.lo < 9.5);
        let y = fitted.clone().within_percent();
        assert_eq!(y.hi, 100.0);
        assert_eq!(y.lo, fitted.lo.max(0.0));
        // Padding below 0 is cut, padding that stays inside is kept.
        let y = Axis::fit([2.0, 50.0], false, 0.35, 0.12).within_percent();
        assert_eq!(y.lo, 0.0);
        assert!(y.hi > 50.0 && y.hi < 100.0);
    }
}
