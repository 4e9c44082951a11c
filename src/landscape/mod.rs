//! The loss landscape on the plane through w1, θ and w2.
//!
//! Default coordinates follow the reference implementation: an orthonormal
//! basis by Gram–Schmidt, u = (w2−w1)/‖w2−w1‖, v = the part of θ−w1
//! orthogonal to u, normalised; grid point (x, y) is w1 + x·u + y·v.
//! `Coords::Seed` uses the seed experiment's affine coordinates instead:
//! (a, b) ↦ θ + a·(w1−θ) + b·(w2−θ), so θ is (0,0), w1 (1,0) and w2 (0,1).
//! For curves with more than three bends, θ is the inner bend farthest
//! from the straight line.
//!
//! [`random`] draws planes of random directions around one network instead
//! (Li et al. 2018); [`grid`] evaluates any plane's grid, sharded or not.

use anyhow::{bail, Result};
use tch::Kind;

use crate::curve::Curve;
use crate::eval::Evaluator;
use crate::model::Params;

pub mod grid;
pub mod random;

crate::choice! {
    /// Which plane `landscape` evaluates.
    pub enum PlaneKind {
        /// The plane through w1, the curve's bend and w2.
        Curve = "curve",
        /// Two filter-normalised random directions around --around (Li et al. 2018).
        Random = "random",
        /// One filter-normalised random direction around --around: a 1-D slice.
        Random1d = "random-1d",
    }
}

/// Inner product of two weight sets.
pub fn dot(a: &Params, b: &Params) -> f64 {
    a.iter()
        .map(|(n, t)| (t * b.get(n)).sum(Kind::Double).double_value(&[]))
        .sum()
}

fn axpy(a: f64, x: &Params, y: &Params) -> Params {
    y.map(|n, t| t + x.get(n) * a)
}

fn sub(a: &Params, b: &Params) -> Params {
    a.map(|n, t| t - b.get(n))
}

fn scale(a: &Params, s: f64) -> Params {
    a.map(|_, t| t * s)
}

/// The plane: origin w1, orthonormal directions u and v, and the three
/// defining points in orthonormal coordinates.
pub struct Plane {
    pub w1: Params,
    pub u: Params,
    pub v: Params,
    pub coords: Coords,
    /// θ, w1, w2 in orthonormal coordinates.
    pub theta_xy: (f64, f64),
    pub w2_xy: (f64, f64),
    pub bend: usize,
}

impl Plane {
    pub fn new(
        w1: &Params,
        theta: &Params,
        w2: &Params,
        coords: Coords,
        bend: usize,
    ) -> Result<Plane> {
        let d = sub(w2, w1);
        let dn = dot(&d, &d).sqrt();
        if dn == 0.0 {
            bail!("the endpoints are identical, so there is no plane to draw");
        }
        let u = scale(&d, 1.0 / dn);
        let r = sub(theta, w1);
        let ru = dot(&r, &u);
        let vr = axpy(-ru, &u, &r);
        let vn = dot(&vr, &vr).sqrt();
        if vn <= 1e-12 * dn {
            bail!("the bend lies on the straight line between the endpoints (a curve that was never trained?), so it spans no plane");
        }
        let v = scale(&vr, 1.0 / vn);
        Ok(Plane {
            w1: w1.deep_clone(),
            u,
            v,
            coords,
            theta_xy: (ru, vn),
            w2_xy: (dn, 0.0),
            bend,
        })
    }

    /// Orthonormal coordinates of a point's projection.
    pub fn project_xy(&self, p: &Params) -> (f64, f64) {
        let r = sub(p, &self.w1);
        (dot(&r, &self.u), dot(&r, &self.v))
    }

    /// Orthonormal → the chosen coordinates.
    pub fn to_coords(&self, (x, y): (f64, f64)) -> (f64, f64) {
        match self.coords {
            Coords::Orthonormal => (x, y),
            Coords::Seed => {
                // p − θ = a·(w1 − θ) + b·(w2 − θ), solved in the plane's 2-d coordinates.
                let (tx, ty) = self.theta_xy;
                let (ax, ay) = (0.0 - tx, 0.0 - ty);
                let (bx, by) = (self.w2_xy.0 - tx, self.w2_xy.1 - ty);
                let (px, py) = (x - tx, y - ty);
                let det = ax * by - ay * bx;
                ((px * by - py * bx) / det, (ax * py - ay * px) / det)
            }
        }
    }

    /// The chosen coordinates → orthonormal.
    pub fn from_coords(&self, (a, b): (f64, f64)) -> (f64, f64) {
        match self.coords {
            Coords::Orthonormal => (a, b),
            Coords::Seed => {
                let (tx, ty) = self.theta_xy;
                (
                    tx + a * (0.0 - tx) + b * (self.w2_xy.0 - tx),
                    ty + a * (0.0 - ty) + b * (self.w2_xy.1 - ty),
                )
            }
        }
    }

    /// Weights at plane coordinates (a, b) in the chosen system.
    pub fn point(&self, ab: (f64, f64)) -> Params {
        let (x, y) = self.from_coords(ab);
        self.w1
            .map(|n, t| t + self.u.get(n) * x + self.v.get(n) * y)
    }
}

use crate::schema::{PlaneFile, PlaneMeta};
use crate::vocab::Coords;

/// Grid axes: the bounding box of the bends and the projected curve, widened
/// by `margin` of its extent on each side.
pub fn axes(points: &[(f64, f64)], grid: usize, margin: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (dx, dy) = ((x1 - x0).max(1e-9), (y1 - y0).max(1e-9));
    let lin = |a: f64, b: f64| {
        (0..grid)
            .map(|i| a + (b - a) * i as f64 / (grid - 1) as f64)
            .collect::<Vec<_>>()
    };
    (
        lin(x0 - margin * dx, x1 + margin * dx),
        lin(y0 - margin * dy, y1 + margin * dy),
    )
}

/// Computes (or resumes) the run's points of the landscape grid on the
/// plane through the curve (see [`grid::fill`]).
pub fn compute(
    ev: &Evaluator,
    curve: &Curve,
    cfg: &crate::config::LandscapeConfig,
    meta_base: PlaneMeta,
    run: &grid::Run,
) -> Result<PlaneFile> {
    let (plane, file) = layout(curve, cfg, meta_base)?;
    let point = |xy: (f64, f64)| plane.point(xy);
    let src = grid::Source {
        point: &point,
        recompute_bn: true,
    };
    grid::fill(ev, &src, file, run)
}

/// The plane through w1, the inner bend farthest from the line and w2, and
/// an empty plane.json for it: axes around the projected bends and curve,
/// labels, caption.
fn layout(
    curve: &Curve,
    cfg: &crate::config::LandscapeConfig,
    meta_base: PlaneMeta,
) -> Result<(Plane, PlaneFile)> {
    let n = curve.num_bends();
    if n < 3 {
        bail!("a curve with {n} bends is a straight line: there is no plane to draw");
    }
    if cfg.grid < 2 {
        bail!("--grid must be at least 2");
    }
    let bend = curve.farthest_inner_bend();
    let (w1, w2, theta) = (&curve.bends[0], &curve.bends[n - 1], &curve.bends[bend]);
    let plane = Plane::new(w1, theta, w2, cfg.coords, bend)?;
    let c = |p: &Params| {
        let (a, b) = plane.to_coords(plane.project_xy(p));
        [a, b]
    };
    let endpoints = vec![c(w1), c(w2)];
    let bends: Vec<[f64; 2]> = (1..n - 1).map(|k| c(&curve.bends[k])).collect();
    let curve_pts: Vec<[f64; 2]> = crate::eval::along::grid(61)
        .iter()
        .map(|&t| c(&curve.weights_at(t)))
        .collect();
    let all: Vec<(f64, f64)> = endpoints
        .iter()
        .chain(&bends)
        .chain(&curve_pts)
        .map(|p| (p[0], p[1]))
        .collect();
    let (xs, ys) = axes(&all, cfg.grid, cfg.margin);
    let caption = if n == 3 {
        "plane through w1, θ (the middle bend) and w2".to_string()
    } else {
        format!("plane through w1, bend {bend} (the inner bend farthest from the line) and w2; other bends are projected")
    };
    let (x_label, y_label) = match cfg.coords {
        Coords::Orthonormal => ("u: along w2 − w1", "v: towards θ, orthogonal to u"),
        Coords::Seed => ("weight of w1 − θ", "weight of w2 − θ"),
    };
    let empty = || vec![vec![None; cfg.grid]; cfg.grid];
    let file = PlaneFile {
        format: crate::schema::FORMAT,
        shard: None,
        meta: PlaneMeta {
            coords: Some(cfg.coords),
            grid: cfg.grid,
            margin: Some(cfg.margin),
            plane_bend: Some(bend),
            caption,
            random: None,
            ..meta_base
        },
        x_label: x_label.to_string(),
        y_label: y_label.to_string(),
        xs,
        ys,
        train_loss: empty(),
        test_err: empty(),
        test_nll: empty(),
        line: endpoints.clone(),
        endpoints,
        bends,
        curve: curve_pts,
        centre: None,
        seconds: 0.0,
    };
    Ok((plane, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Tensor};

    fn p(vals: &[f32]) -> Params {
        Params::new(vec![
            (
                "a.weight".to_string(),
                Tensor::from_slice(&vals[..2]).to_kind(Kind::Double),
            ),
            (
                "b.weight".to_string(),
                Tensor::from_slice(&vals[2..])
                    .to_kind(Kind::Double)
                    .to_device(Device::Cpu),
            ),
        ])
    }

    #[test]
    fn basis_is_orthonormal_and_maps_the_three_points() {
        let w1 = p(&[1.0, 2.0, 0.5, -1.0]);
        let w2 = p(&[3.0, -1.0, 2.0, 0.0]);
        let th = p(&[0.0, 4.0, 3.0, 1.0]);
        let pl = Plane::new(&w1, &th, &w2, Coords::Orthonormal, 1).unwrap();
        assert!((dot(&pl.u, &pl.u) - 1.0).abs() < 1e-9);
        assert!((dot(&pl.v, &pl.v) - 1.0).abs() < 1e-9);
        assert!(dot(&pl.u, &pl.v).abs() < 1e-9);
        let (x, y) = pl.project_xy(&w1);
        assert!(x.abs() < 1e-9 && y.abs() < 1e-9);
        let (x, y) = pl.project_xy(&w2);
        let d = sub(&w2, &w1);
        assert!((x - dot(&d, &d).sqrt()).abs() < 1e-9 && y.abs() < 1e-9);
        // θ is reproduced exactly from its coordinates (it lies in the plane)
        let back = pl.point(pl.project_xy(&th));
        assert!(back.distance(&th, |_| true).unwrap() < 1e-5);
        let (_, ty) = pl.project_xy(&th);
        assert!(ty > 0.0, "v points towards θ");
    }

    #[test]
    fn seed_coordinates_put_theta_w1_w2_at_the_unit_points() {
        let w1 = p(&[1.0, 2.0, 0.5, -1.0]);
        let w2 = p(&[3.0, -1.0, 2.0, 0.0]);
        let th = p(&[0.0, 4.0, 3.0, 1.0]);
        let pl = Plane::new(&w1, &th, &w2, Coords::Seed, 1).unwrap();
        let c = |q: &Params| pl.to_coords(pl.project_xy(q));
        let close =
            |(a, b): (f64, f64), (x, y): (f64, f64)| (a - x).abs() < 1e-5 && (b - y).abs() < 1e-5;
        assert!(close(c(&th), (0.0, 0.0)));
        assert!(close(c(&w1), (1.0, 0.0)));
        assert!(close(c(&w2), (0.0, 1.0)));
        // and the map back reproduces the weights
        assert!(pl.point((1.0, 0.0)).distance(&w1, |_| true).unwrap() < 1e-5);
        assert!(pl.point((0.0, 1.0)).distance(&w2, |_| true).unwrap() < 1e-5);
        assert!(pl.point((0.0, 0.0)).distance(&th, |_| true).unwrap() < 1e-5);
        // a midpoint of w1 and w2 in weight space is (0.5, 0.5)
        let mid = w1.map(|n, t| (t + w2.get(n)) * 0.5);
        assert!(close(c(&mid), (0.5, 0.5)));
    }

    #[test]
    fn axes_include_margin() {
        let (xs, ys) = axes(&[(0.0, 0.0), (10.0, 0.0), (5.0, 4.0)], 11, 0.2);
        assert_eq!(xs.len(), 11);
        assert!((xs[0] + 2.0).abs() < 1e-12 && (xs[10] - 12.0).abs() < 1e-12);
        assert!((ys[0] + 0.8).abs() < 1e-12 && (ys[10] - 4.8).abs() < 1e-12);
    }

    #[test]
    fn a_bend_on_the_line_is_rejected() {
        let w1 = p(&[0.0, 0.0, 0.0, 0.0]);
        let w2 = p(&[2.0, 2.0, 2.0, 2.0]);
        let th = p(&[1.0, 1.0, 1.0, 1.0]);
        assert!(Plane::new(&w1, &th, &w2, Coords::Orthonormal, 1).is_err());
    }
}
