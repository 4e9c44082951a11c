//! The `budget` figure: test accuracy and NLL of each kind of ensemble
//! against the epochs of training it cost.

use super::axis::Axis;
use super::panel::{draw_legend, panel, series, titled};
use super::style::{CURVE, PALETTE};
use crate::report::budget::{Budget, Point};
use crate::report::Figure;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

pub(crate) struct BudgetFigure<'a> {
    pub budget: &'a Budget,
    pub title: &'a str,
}

impl Figure for BudgetFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1400, 640)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let body = titled(
            root,
            &format!("{} — ensembles at equal training budget", self.title),
            Some("independent networks, the curve ensemble and FGE, against the epochs of training each cost"),
        )?;
        let panels = body.split_evenly((1, 2));
        metric_panel(&panels[0], self.budget, true)?;
        metric_panel(&panels[1], self.budget, false)
    }
}

fn metric_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    b: &Budget,
    acc: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let v = |p: &Point| if acc { p.acc } else { p.nll };
    let (pad_lo, pad_hi) = if acc { (0.45, 0.1) } else { (0.1, 0.45) };
    let mut y = Axis::fit(b.all().map(v), false, pad_lo, pad_hi);
    if acc {
        y = y.within_percent();
    }
    let xmax = b.all().map(|p| p.epochs).fold(1.0, f64::max);
    let x = Axis::linear(0.0, xmax * 1.08);
    let (caption, ydesc) = if acc {
        ("Test accuracy vs budget", "test accuracy (%)")
    } else {
        ("Test NLL vs budget", "test NLL")
    };
    let mut chart = panel(area, caption, &x, &y, "training epochs", ydesc)?;
    let groups = [
        ("independent networks", &b.independent, PALETTE[1]),
        ("FGE", &b.fge, PALETTE[3]),
    ];
    for (name, pts, colour) in groups {
        if pts.is_empty() {
            continue;
        }
        let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.epochs, v(p))).collect();
        let label = match pts.len() {
            1 => name.to_string(),
            n => format!("{name} (1 to {n})"),
        };
        series(
            &mut chart,
            xy.clone(),
            colour.stroke_width(3),
            false,
            Some(&label),
        )?;
        chart.draw_series(xy.iter().map(|p| Circle::new(*p, 5, colour.filled())))?;
    }
    if let Some(p) = &b.curve {
        let label = format!("curve ensemble of {}", p.size);
        series(
            &mut chart,
            vec![],
            CURVE.stroke_width(3),
            false,
            Some(&label),
        )?;
        chart.draw_series(std::iter::once(TriangleMarker::new(
            (p.epochs, v(p)),
            9,
            CURVE.filled(),
        )))?;
    }
    let pos = if acc {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    draw_legend(&mut chart, pos)
}
