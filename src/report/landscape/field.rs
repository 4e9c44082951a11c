//! The metric over the plane: filled contour bands on log-spaced levels, contour lines between
//! them, and grey squares over the cells not computed yet.

use super::colour_bar::viridis;
use super::{Landscape, Ring, LEVELS};
use crate::report::figures::Chart;
use anyhow::Result;
use contour::ContourBuilder;
use plotters::prelude::*;

const NULL_GREY: RGBColor = RGBColor(200, 200, 200);

impl Landscape<'_> {
    /// Draws the filled contours and the contour lines; returns the colour of each band, bottom up.
    ///
    /// Contour in log space so that smoothing interpolates log values. Cells not computed yet
    /// take their neighbours' values (they are covered with grey later), and the field is padded
    /// by one replicated sample on every side so that bands reach the border squarely (the
    /// contour crate cuts corners at the grid edge); coordinates are clamped back to the plot.
    pub(super) fn draw_field<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut Chart<'a, DB>,
    ) -> Result<Vec<RGBColor>>
    where
        DB::ErrorType: 'static,
    {
        let (nx, ny) = (self.plane.xs.len(), self.plane.ys.len());
        let lt: Vec<f64> = self.levels.iter().map(|v| v.log10()).collect();
        let floor = lt[0] - 3.0;
        let field = self.padded_log_field(floor);
        let fmax = field.iter().copied().fold(f64::MIN, f64::max);
        let mut thresholds = vec![floor - 0.5];
        thresholds.extend_from_slice(&lt[1..]);
        thresholds.push(fmax.max(lt[LEVELS - 1]) + 1.0);
        let builder = ContourBuilder::new(nx + 2, ny + 2, true);
        let colours: Vec<RGBColor> = (0..LEVELS)
            .map(|k| viridis(k as f64 / (LEVELS - 1) as f64))
            .collect();
        self.draw_bands(chart, &builder, &field, &thresholds, &colours)?;
        self.draw_contour_lines(chart, &builder, &field, &lt[1..])?;
        Ok(colours)
    }

    /// The log10 values (at least `floor`) row by row, missing cells filled from their
    /// neighbours, with one replicated sample added on every side: `(nx + 2) * (ny + 2)` values.
    fn padded_log_field(&self, floor: f64) -> Vec<f64> {
        let (nx, ny) = (self.plane.xs.len(), self.plane.ys.len());
        let logs: Vec<Option<f64>> = self
            .values
            .iter()
            .map(|v| v.map(|v| if v > 0.0 { v.log10().max(floor) } else { floor }))
            .collect();
        let filled = fill_nulls(&logs, nx, ny);
        (0..(ny + 2) * (nx + 2))
            .map(|idx| {
                let (i, j) = (
                    (idx % (nx + 2)).clamp(1, nx) - 1,
                    (idx / (nx + 2)).clamp(1, ny) - 1,
                );
                filled[j * nx + i]
            })
            .collect()
    }

    /// Data coordinates of a point of the padded contour grid.
    fn padded_to_data(&self, c: &contour::Pt) -> (f64, f64) {
        (
            Self::to_data(c.x - 1.0, &self.plane.xs),
            Self::to_data(c.y - 1.0, &self.plane.ys),
        )
    }

    /// One filled polygon per band between consecutive `thresholds`, coloured by its level.
    fn draw_bands<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut Chart<'a, DB>,
        builder: &ContourBuilder,
        field: &[f64],
        thresholds: &[f64],
        colours: &[RGBColor],
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let bands = builder
            .isobands(field, thresholds)
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
                let ring: Ring = poly
                    .exterior()
                    .0
                    .iter()
                    .map(|c| self.padded_to_data(c))
                    .collect();
                polys.push((shoelace(&ring).abs(), k, ring));
            }
        }
        polys.sort_by(|a, b| b.0.total_cmp(&a.0));
        chart.draw_series(
            polys
                .into_iter()
                .map(|(_, k, ring)| Polygon::new(ring, colours[k].filled())),
        )?;
        Ok(())
    }

    /// Thin dark lines at the contour `levels` (log10 values).
    fn draw_contour_lines<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut Chart<'a, DB>,
        builder: &ContourBuilder,
        field: &[f64],
        levels: &[f64],
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let lines = builder
            .lines(field, levels)
            .map_err(|e| anyhow::anyhow!("isolines: {e:?}"))?;
        let line_style = BLACK.mix(0.35).stroke_width(1);
        for l in &lines {
            chart.draw_series(l.geometry().0.iter().map(|ls| {
                let pts: Ring = ls.0.iter().map(|c| self.padded_to_data(c)).collect();
                PathElement::new(pts, line_style)
            }))?;
        }
        Ok(())
    }

    /// Cells not computed yet: grey squares, with a legend entry counting them.
    pub(super) fn draw_missing_cells<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut Chart<'a, DB>,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let p = self.plane;
        let nx = p.xs.len();
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

/// Signed area of a polygon (shoelace formula).
fn shoelace(ring: &[(f64, f64)]) -> f64 {
    ring.iter()
        .zip(ring.iter().cycle().skip(1))
        .map(|(a, b)| a.0 * b.1 - b.0 * a.1)
        .sum::<f64>()
        / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_take_neighbour_values() {
        let v = [Some(1.0), None, Some(3.0), None, None, None];
        assert_eq!(fill_nulls(&v, 3, 2), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        assert_eq!(fill_nulls(&[None, None], 2, 1), vec![0.0, 0.0]);
    }
}
