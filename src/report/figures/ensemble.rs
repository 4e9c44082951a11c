//! The `ensemble` figure: accuracy and NLL of the curve ensemble against its size, next to the
//! endpoints and their two-model ensemble, and a reliability diagram.

use super::axis::Axis;
use super::panel::{draw_legend, panel, series, titled};
use super::style::{CURVE, PALETTE};
use crate::report::data::{get, Bin, Ensemble, Metrics};
use crate::report::levels::fmt_sig;
use crate::report::Figure;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

pub(crate) struct EnsembleFigure<'a> {
    pub ens: &'a Ensemble,
    pub title: &'a str,
}

/// The two panels against ensemble size: metric key, y-axis description, caption.
const SIZE_PANELS: [(&str, &str, &str); 2] = [
    ("acc", "test accuracy (%)", "Accuracy vs ensemble size"),
    ("nll", "test NLL", "NLL vs ensemble size"),
];

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
        for (spec, area) in SIZE_PANELS.into_iter().zip(&panels) {
            size_panel(area, e, spec)?;
        }
        reliability_panel(&panels[2], e)
    }
}

/// `key` of the curve ensemble against its size k, with the endpoints and their two-model
/// ensemble as dashed horizontal references.
fn size_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    e: &Ensemble,
    (key, ydesc, caption): (&str, &str, &str),
) -> Result<()>
where
    DB::ErrorType: 'static,
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
    let mut chart = panel(area, caption, &x, &y, "ensemble size k", ydesc)?;
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
    draw_legend(&mut chart, pos)
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
