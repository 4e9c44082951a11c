//! The colour map of the landscape (viridis) and the colour bar beside the plot.

use crate::report::figures::font;
use crate::report::levels::fmt_sig;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Viridis, sampled at 9 control points and interpolated linearly in RGB.
pub(crate) fn viridis(x: f64) -> RGBColor {
    const C: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let x = if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    } * (C.len() - 1) as f64;
    let i = (x.floor() as usize).min(C.len() - 2);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (C[i], C[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Vertical colour bar at pixel `x`, spanning `top..bottom`: one equal-height segment per band,
/// the top band drawn as an upward triangle and labelled "> top level".
pub(super) fn draw_colour_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    levels: &[f64],
    colours: &[RGBColor],
    (x, top, bottom): (i32, i32, i32),
    label: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = colours.len();
    let w = 30;
    let seg = (bottom - top) as f64 / n as f64;
    let y_of = |k: usize| bottom - (k as f64 * seg).round() as i32;
    for (k, c) in colours.iter().enumerate() {
        if k + 1 == n {
            let tri = vec![(x, y_of(k)), (x + w, y_of(k)), (x + w / 2, top)];
            root.draw(&Polygon::new(tri.clone(), c.filled()))?;
            root.draw(&PathElement::new(
                vec![tri[0], tri[2], tri[1]],
                BLACK.mix(0.6),
            ))?;
        } else {
            root.draw(&Rectangle::new(
                [(x, y_of(k + 1)), (x + w, y_of(k))],
                c.filled(),
            ))?;
        }
    }
    root.draw(&PathElement::new(
        vec![
            (x, y_of(n - 1)),
            (x, bottom),
            (x + w, bottom),
            (x + w, y_of(n - 1)),
        ],
        BLACK.mix(0.6),
    ))?;
    let stride = if n > 16 { 2 } else { 1 };
    let style = font(17.0).pos(Pos::new(HPos::Left, VPos::Center));
    for (k, v) in levels.iter().enumerate() {
        let last = k + 1 == levels.len();
        if k % stride != 0 && !last {
            continue;
        }
        let y = y_of(k);
        root.draw(&PathElement::new(
            vec![(x + w, y), (x + w + 6, y)],
            BLACK.mix(0.7),
        ))?;
        let text = if last {
            format!("> {}", fmt_sig(*v, 3))
        } else {
            fmt_sig(*v, 3)
        };
        root.draw_text(&text, &style, (x + w + 10, y))?;
    }
    let title = font(18.0).pos(Pos::new(HPos::Left, VPos::Bottom));
    root.draw_text(label, &title, (x - 10, top - 12))?;
    Ok(())
}
