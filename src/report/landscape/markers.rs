//! What the landscape shows on top of the field: the line segment (dashed) and the projected curve
//! (solid), both white on a dark halo, the inner bends (red diamonds) and the endpoints (black
//! circles), each labelled, with their legend entries.

use super::{Landscape, Ring};
use crate::report::figures::{font, legend_mark, Chart};
use anyhow::Result;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

impl Landscape<'_> {
    /// The line segment and the projected curve, clipped to the plot `xr` × `yr`.
    pub(super) fn draw_paths<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut Chart<'a, DB>,
        xr: (f64, f64),
        yr: (f64, f64),
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let p = self.plane;
        let inside = within(xr, yr);
        let halo = BLACK.mix(0.85).stroke_width(5);
        let white = WHITE.stroke_width(3);
        if p.line.len() >= 2 {
            for run in runs_inside(&p.line, &inside) {
                chart.draw_series(std::iter::once(DashedPathElement::new(
                    run.clone(),
                    14,
                    9,
                    halo,
                )))?;
                chart
                    .draw_series(std::iter::once(DashedPathElement::new(run, 14, 9, white)))?
                    .label("line segment")
                    .legend(move |(x, y)| legend_mark(x, y, BLACK.stroke_width(3), true));
            }
        }
        if p.curve.len() >= 2 {
            for run in runs_inside(&p.curve, &inside) {
                chart.draw_series(std::iter::once(PathElement::new(run.clone(), halo)))?;
                chart
                    .draw_series(std::iter::once(PathElement::new(run, white)))?
                    .label("curve (projected)")
                    .legend(move |(x, y)| legend_mark(x, y, BLACK.stroke_width(3), false));
            }
        }
        Ok(())
    }

    /// The inner bends (θ, or θ1, θ2, ...) and the endpoints (w1, w2) that lie inside the
    /// plot `xr` × `yr`.
    pub(super) fn draw_markers<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut Chart<'a, DB>,
        xr: (f64, f64),
        yr: (f64, f64),
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let p = self.plane;
        if p.bends.is_empty() && p.endpoints.is_empty() {
            return Ok(()); // a random plane: only its centre (`draw_centre`)
        }
        let inside = within(xr, yr);
        // A label on a white box, centred `dy` pixels below (or above, if negative) the marker.
        let tag = |text: String, dy: i32| {
            let w = 12 * text.chars().count() as i32 + 12;
            let (top, bottom) = if dy > 0 { (dy, dy + 28) } else { (dy - 28, dy) };
            let bx = Rectangle::new([(-w / 2, top), (w / 2, bottom)], WHITE.mix(0.85).filled());
            let style = font(21.0).pos(Pos::new(HPos::Center, VPos::Center));
            EmptyElement::at((0, 0)) + bx + Text::new(text, (0, (top + bottom) / 2), style)
        };
        let bend_names: Vec<String> = match p.bends.len() {
            1 => vec!["θ".into()],
            n => (1..=n).map(|i| format!("θ{i}")).collect(),
        };
        let bends = p
            .bends
            .iter()
            .zip(bend_names)
            .filter(|(b, _)| inside(b))
            .map(|(b, name)| {
                let d = 10;
                let diamond = Polygon::new(
                    vec![(0, -d), (d, 0), (0, d), (-d, 0)],
                    RGBColor(230, 60, 60).filled(),
                );
                let edge = PathElement::new(
                    vec![(0, -d), (d, 0), (0, d), (-d, 0), (0, -d)],
                    WHITE.stroke_width(2),
                );
                EmptyElement::at((b[0], b[1])) + diamond + edge + tag(name, -14)
            });
        chart
            .draw_series(bends)?
            .label("inner bend")
            .legend(|(x, y)| {
                Polygon::new(
                    vec![(x + 14, y - 8), (x + 22, y), (x + 14, y + 8), (x + 6, y)],
                    RGBColor(230, 60, 60).filled(),
                )
            });
        let ends = p
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| inside(e))
            .map(|(i, e)| {
                EmptyElement::at((e[0], e[1]))
                    + Circle::new((0, 0), 10, BLACK.filled())
                    + Circle::new((0, 0), 10, WHITE.stroke_width(2))
                    + tag(format!("w{}", i + 1), 16)
            });
        chart
            .draw_series(ends)?
            .label("endpoints")
            .legend(|(x, y)| Circle::new((x + 14, y), 8, BLACK.filled()));
        Ok(())
    }
}

impl Landscape<'_> {
    /// A random plane's centre (the network it is drawn around), labelled
    /// with its folder's name.
    pub(super) fn draw_centre<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut Chart<'a, DB>,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let Some(c) = self.plane.centre else {
            return Ok(());
        };
        let name = self
            .plane
            .meta
            .pointer("/random/around")
            .and_then(|v| v.as_str())
            .and_then(|p| std::path::Path::new(p).file_name())
            .map_or("centre".to_string(), |n| n.to_string_lossy().into_owned());
        let style = font(21.0).pos(Pos::new(HPos::Center, VPos::Center));
        let w = 12 * name.chars().count() as i32 + 12;
        let mark = EmptyElement::at((c[0], c[1]))
            + Circle::new((0, 0), 10, BLACK.filled())
            + Circle::new((0, 0), 10, WHITE.stroke_width(2))
            + Rectangle::new([(-w / 2, 16), (w / 2, 44)], WHITE.mix(0.85).filled())
            + Text::new(name, (0, 30), style);
        chart
            .draw_series(std::iter::once(mark))?
            .label("centre")
            .legend(|(x, y)| Circle::new((x + 14, y), 8, BLACK.filled()));
        Ok(())
    }
}

/// Whether a point lies in the plot `(x0, x1)` × `(y0, y1)`.
fn within((x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> impl Fn(&[f64; 2]) -> bool {
    move |q: &[f64; 2]| q[0] >= x0 && q[0] <= x1 && q[1] >= y0 && q[1] <= y1
}

/// Splits a polyline into the runs of consecutive points that lie inside the plot.
fn runs_inside(pts: &[[f64; 2]], inside: &impl Fn(&[f64; 2]) -> bool) -> Vec<Ring> {
    let mut runs = vec![Vec::new()];
    for q in pts {
        if inside(q) {
            runs.last_mut().unwrap().push((q[0], q[1]));
        } else if !runs.last().unwrap().is_empty() {
            runs.push(Vec::new());
        }
    }
    runs.into_iter().filter(|r| r.len() >= 2).collect()
}
