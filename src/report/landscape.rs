//! The loss-landscape figures (`landscape_train_loss`, `landscape_test_error`): filled contours
//! (isobands from the `contour` crate) on log-spaced levels with the top clipped, contour lines,
//! a viridis colour bar, and the endpoints, bends, projected curve and line segment on top.

use super::data::{Grid, Plane};
use super::figures::{draw_legend, font, legend_mark, panel, titled, Axis};
use super::levels::{fmt_sig, log_levels};
use super::Figure;
use anyhow::Result;
use contour::ContourBuilder;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Metric {
    TrainLoss,
    TestErr,
}

impl Metric {
    pub fn key(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train_loss",
            Metric::TestErr => "test_err",
        }
    }
    pub fn figure_name(self) -> &'static str {
        match self {
            Metric::TrainLoss => "landscape_train_loss",
            Metric::TestErr => "landscape_test_error",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train loss",
            Metric::TestErr => "test error (%)",
        }
    }
    fn grid(self, p: &Plane) -> Option<&Grid> {
        match self {
            Metric::TrainLoss => p.train_loss.as_ref(),
            Metric::TestErr => p.test_err.as_ref(),
        }
    }
}

/// Number of contour levels; there is one more colour band (values above the top level).
const LEVELS: usize = 14;
/// Values above this quantile of the grid get the top ("> value") colour.
const CLIP_QUANTILE: f64 = 0.95;
const NULL_GREY: RGBColor = RGBColor(200, 200, 200);

type Ring = Vec<(f64, f64)>;

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

pub(crate) struct Landscape<'a> {
    plane: &'a Plane,
    metric: Metric,
    title: String,
    /// Row-major values (`row j` is `ys[j]`), `None` where not computed.
    values: Vec<Option<f64>>,
    levels: Vec<f64>,
}

impl<'a> Landscape<'a> {
    /// `None` when the plane has no finite value of this metric.
    pub fn new(plane: &'a Plane, metric: Metric, title: &str) -> Option<Landscape<'a>> {
        let values: Vec<Option<f64>> = metric
            .grid(plane)?
            .iter()
            .flatten()
            .map(|v| v.filter(|v| v.is_finite()))
            .collect();
        let levels = levels_for(&values.iter().flatten().copied().collect::<Vec<_>>())?;
        let title = format!("{title} — {} on the plane", metric.label());
        Some(Landscape {
            plane,
            metric,
            title,
            values,
            levels,
        })
    }

    /// Grid coordinate of the contour crate (sample `i` sits at `i + 0.5`) to data coordinates,
    /// clamped to the half-cell border around the samples.
    fn to_data(c: f64, s: &[f64]) -> f64 {
        let n = s.len();
        let u = (c - 0.5).clamp(-0.5, n as f64 - 0.5);
        let i = (u.floor().max(0.0) as usize).min(n - 2);
        s[i] + (u - i as f64) * (s[i + 1] - s[i])
    }

    fn bounds(s: &[f64]) -> (f64, f64) {
        (Self::to_data(0.0, s), Self::to_data(s.len() as f64, s))
    }
}

/// Log-spaced levels from the smallest positive value to the `CLIP_QUANTILE` quantile.
fn levels_for(vals: &[f64]) -> Option<Vec<f64>> {
    let mut pos: Vec<f64> = vals.iter().copied().filter(|v| *v > 0.0).collect();
    if pos.is_empty() {
        return if vals.is_empty() {
            None
        } else {
            Some(log_levels(1e-3, 1e-2, LEVELS))
        };
    }
    pos.sort_by(f64::total_cmp);
    let lo = pos[0];
    let q = pos[((pos.len() - 1) as f64 * CLIP_QUANTILE).round() as usize];
    let hi = if q > lo * 1.5 {
        q
    } else {
        pos[pos.len() - 1].max(lo * 1.5)
    };
    Some(log_levels(lo, hi, LEVELS))
}

impl Figure for Landscape<'_> {
    /// Height follows the plane's aspect ratio (clamped as in `draw`), so an
    /// elongated plane does not leave bands of empty canvas.
    fn size(&self) -> (u32, u32) {
        let (x0, x1) = Self::bounds(&self.plane.xs);
        let (y0, y1) = Self::bounds(&self.plane.ys);
        let aspect = ((y1 - y0) / (x1 - x0)).clamp(0.5, 1.5);
        let w = 1200u32;
        let plot_w = (w - 190) as f64 - 124.0;
        (w, (plot_w * aspect + 90.0 + 150.0).round() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let p = self.plane;
        let caption = p.meta.get("caption").and_then(|v| v.as_str());
        let body = titled(root, &self.title, caption)?;
        let (plot_area, bar_area) = body.split_horizontally(body.dim_in_pixel().0 as i32 - 190);

        let (x0, x1) = Self::bounds(&p.xs);
        let (y0, y1) = Self::bounds(&p.ys);
        // Equal aspect ratio (within reason) by shrinking the plot area.
        let (pw, ph) = plot_area.dim_in_pixel();
        let (iw, ih) = (pw as f64 - 124.0, ph as f64 - 90.0);
        let aspect = ((y1 - y0) / (x1 - x0)).clamp(0.5, 1.5);
        let plot_area = if ih / iw > aspect {
            let extra = ((ih - iw * aspect) / 2.0) as i32;
            plot_area.margin(extra, extra, 0, 0)
        } else {
            let extra = ((iw - ih / aspect) / 2.0) as i32;
            plot_area.margin(0, 0, extra, extra)
        };
        let (xa, ya) = (Axis::linear(x0, x1), Axis::linear(y0, y1));
        let xl = p.x_label.as_deref().unwrap_or("x");
        let yl = p.y_label.as_deref().unwrap_or("y");
        let mut chart = panel(&plot_area, "", &xa, &ya, xl, yl)?;

        // Contour in log space so that smoothing interpolates log values. Cells not computed yet
        // take their neighbours' values (they are covered with grey later), and the field is padded
        // by one replicated sample on every side so that bands reach the border squarely (the
        // contour crate cuts corners at the grid edge); coordinates are clamped back to the plot.
        let (nx, ny) = (p.xs.len(), p.ys.len());
        let lt: Vec<f64> = self.levels.iter().map(|v| v.log10()).collect();
        let floor = lt[0] - 3.0;
        let logs: Vec<Option<f64>> = self
            .values
            .iter()
            .map(|v| v.map(|v| if v > 0.0 { v.log10().max(floor) } else { floor }))
            .collect();
        let filled = fill_nulls(&logs, nx, ny);
        let field: Vec<f64> = (0..(ny + 2) * (nx + 2))
            .map(|idx| {
                let (i, j) = (
                    (idx % (nx + 2)).clamp(1, nx) - 1,
                    (idx / (nx + 2)).clamp(1, ny) - 1,
                );
                filled[j * nx + i]
            })
            .collect();
        let fmax = field.iter().copied().fold(f64::MIN, f64::max);
        let mut thresholds = vec![floor - 0.5];
        thresholds.extend_from_slice(&lt[1..]);
        thresholds.push(fmax.max(lt[LEVELS - 1]) + 1.0);
        let builder = ContourBuilder::new(nx + 2, ny + 2, true);
        let to_data = |c: &contour::Pt| {
            (
                Self::to_data(c.x - 1.0, &p.xs),
                Self::to_data(c.y - 1.0, &p.ys),
            )
        };
        let bands = builder
            .isobands(&field, &thresholds)
            .map_err(|e| anyhow::anyhow!("isobands: {e:?}"))?;
        // Painter's order by decreasing area: whatever lies in a band's hole is a smaller polygon.
        let mut polys: Vec<(f64, usize, Ring)> = Vec::new();
        for band in &bands {
            let k = thresholds
                .iter()
                .position(|t| *t == band.min_v())
                .unwrap_or(0)
                .min(LEVELS - 1);
            for poly in band.geometry().0.iter() {
                let ring: Vec<(f64, f64)> = poly.exterior().0.iter().map(to_data).collect();
                polys.push((shoelace(&ring).abs(), k, ring));
            }
        }
        polys.sort_by(|a, b| b.0.total_cmp(&a.0));
        let colours: Vec<RGBColor> = (0..LEVELS)
            .map(|k| viridis(k as f64 / (LEVELS - 1) as f64))
            .collect();
        chart.draw_series(
            polys
                .into_iter()
                .map(|(_, k, ring)| Polygon::new(ring, colours[k].filled())),
        )?;

        let lines = builder
            .lines(&field, &lt[1..])
            .map_err(|e| anyhow::anyhow!("isolines: {e:?}"))?;
        let line_style = BLACK.mix(0.35).stroke_width(1);
        for l in &lines {
            chart.draw_series(l.geometry().0.iter().map(|ls| {
                PathElement::new(ls.0.iter().map(to_data).collect::<Vec<_>>(), line_style)
            }))?;
        }

        // Cells not computed yet: grey squares.
        let half =
            |s: &[f64], i: usize| (Self::to_data(i as f64, s), Self::to_data(i as f64 + 1.0, s));
        let nulls = self
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_none())
            .map(|(idx, _)| {
                let ((a, b), (c, d)) = (half(&p.xs, idx % nx), half(&p.ys, idx / nx));
                Rectangle::new([(a, c), (b, d)], NULL_GREY.filled())
            });
        let n_null = self.values.iter().filter(|v| v.is_none()).count();
        let anno = chart.draw_series(nulls)?;
        if n_null > 0 {
            anno.label(format!("not computed ({n_null} cells)"))
                .legend(|(x, y)| Rectangle::new([(x, y - 7), (x + 28, y + 7)], NULL_GREY.filled()));
        }

        self.draw_paths(&mut chart, (x0, x1), (y0, y1))?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;

        let (_, yr) = chart.plotting_area().get_pixel_range();
        let (bx, _) = bar_area.get_pixel_range();
        draw_colour_bar(
            root,
            &self.levels,
            &colours,
            (bx.start + 20, yr.start, yr.end),
            self.metric.label(),
        )
    }
}

impl Landscape<'_> {
    fn draw_paths<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut super::figures::Chart<'a, DB>,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let p = self.plane;
        let inside = |q: &[f64; 2]| q[0] >= x0 && q[0] <= x1 && q[1] >= y0 && q[1] <= y1;
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

/// Replaces missing cells by the mean of their computed 4-neighbours, sweeping until all are set.
fn fill_nulls(v: &[Option<f64>], nx: usize, ny: usize) -> Vec<f64> {
    let mut cur: Vec<Option<f64>> = v.to_vec();
    while cur.iter().any(Option::is_none) && cur.iter().any(Option::is_some) {
        let prev = cur.clone();
        for (idx, c) in cur.iter_mut().enumerate().filter(|(_, c)| c.is_none()) {
            let (i, j) = (idx % nx, idx / nx);
            let nb = [
                (i > 0).then(|| idx - 1),
                (i + 1 < nx).then(|| idx + 1),
                (j > 0).then(|| idx - nx),
                (j + 1 < ny).then(|| idx + nx),
            ];
            let vals: Vec<f64> = nb.into_iter().flatten().filter_map(|k| prev[k]).collect();
            if !vals.is_empty() {
                *c = Some(vals.iter().sum::<f64>() / vals.len() as f64);
            }
        }
    }
    cur.into_iter().map(|c| c.unwrap_or(0.0)).collect()
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

fn shoelace(ring: &[(f64, f64)]) -> f64 {
    ring.iter()
        .zip(ring.iter().cycle().skip(1))
        .map(|(a, b)| a.0 * b.1 - b.0 * a.1)
        .sum::<f64>()
        / 2.0
}

/// Vertical colour bar at pixel `x`, spanning `top..bottom`: one equal-height segment per band,
/// the top band drawn as an upward triangle and labelled "> top level".
fn draw_colour_bar<DB: DrawingBackend>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_levels() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(2.0), viridis(1.0));
        let vals: Vec<f64> = (0..100).map(|i| 0.01 * 1.05f64.powi(i)).collect();
        let l = levels_for(&vals).unwrap();
        assert_eq!(l.len(), LEVELS);
        assert_eq!(l[0], 0.01);
        assert!(l[LEVELS - 1] < vals[99] && l[LEVELS - 1] > vals[90]);
    }

    #[test]
    fn nulls_take_neighbour_values() {
        let v = [Some(1.0), None, Some(3.0), None, None, None];
        assert_eq!(fill_nulls(&v, 3, 2), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        assert_eq!(fill_nulls(&[None, None], 2, 1), vec![0.0, 0.0]);
    }

    #[test]
    fn grid_coordinates_map_samples_to_xs() {
        let xs = [10.0, 20.0, 30.0];
        assert_eq!(Landscape::to_data(0.5, &xs), 10.0);
        assert_eq!(Landscape::to_data(2.5, &xs), 30.0);
        assert_eq!(Landscape::to_data(0.0, &xs), 5.0);
        assert_eq!(Landscape::to_data(3.0, &xs), 35.0);
        assert_eq!(Landscape::to_data(-1.0, &xs), 5.0);
        // A single high sample in the middle of a 3x3 grid: its isoline circles (20, 20).
        let field = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let lines = ContourBuilder::new(3, 3, true)
            .lines(&field, &[0.5])
            .unwrap();
        let pts: Vec<(f64, f64)> = lines[0].geometry().0[0]
            .0
            .iter()
            .map(|c| (Landscape::to_data(c.x, &xs), Landscape::to_data(c.y, &xs)))
            .collect();
        let (cx, cy) = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
        let k = pts.len() as f64;
        assert!(
            (cx / k - 20.0).abs() < 1.5 && (cy / k - 20.0).abs() < 1.5,
            "{pts:?}"
        );
    }
}
