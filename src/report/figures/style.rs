//! Fonts and colours shared by every figure.

use plotters::prelude::*;

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
/// Dash and gap length (pixels) of dashed series.
pub(crate) const DASH: (i32, i32) = (9, 6);
