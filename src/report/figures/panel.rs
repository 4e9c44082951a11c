//! The building blocks of a figure: the title above its panels, a panel with caption, grid and
//! tick labels, solid or dashed series with legend entries, the legend box and text annotations.

use super::axis::{Axis, Ticked};
use super::style::{font, fontc, DASH, GRID};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
