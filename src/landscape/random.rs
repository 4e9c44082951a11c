//! Random-direction landscapes around one network (Li, Xu, Taylor, Studer,
//! Goldstein, *Visualizing the Loss Landscape of Neural Nets*, NeurIPS
//! 2018; their `loss-landscape` code): grid point (α, β) is
//! w + α·d₁ + β·d₂ (a line: w + α·d₁).
//!
//! Each direction is Gaussian, then **filter-normalised**: for every weight
//! of two or more dimensions, each output filter (convolutions) or neuron
//! (linear layers) d_i of the direction is rescaled to the norm of the same
//! filter of the weights, d_i ← d_i · ‖w_i‖ / (‖d_i‖ + 1e-10). Biases and
//! BatchNorm weights get no direction (their `--ignore biasbn`), or, with
//! `include_biasbn`, their own values (what `loss-landscape` does without
//! it). BatchNorm running statistics are recomputed at each point (as on
//! the curve's plane) or kept from the centre (what `loss-landscape` does).
//!
//! The Gaussians come from a seeded splitmix64 stream in Rust, drawn on
//! the CPU in parameter order (d₁ then d₂), so a seed gives the same plane
//! on any device and in any shard.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::grid::{self, Run, Source};
use super::{PlaneFile, PlaneMeta};
use crate::config::RandomPlaneConfig;
use crate::eval::Evaluator;
use crate::model::{Model, Params};
use crate::schema::RandomMeta;
use crate::vocab::MemberBn;

/// A seeded stream of standard normal numbers (splitmix64, Box–Muller).
struct Gaussians {
    rng: crate::rng::SplitMix64,
    spare: Option<f64>,
}

impl Gaussians {
    fn new(seed: u64) -> Gaussians {
        Gaussians {
            rng: crate::rng::SplitMix64(seed),
            spare: None,
        }
    }

    fn next(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let (u, v) = (self.rng.unit_open(), self.rng.unit_open());
        let r = (-2.0 * u.ln()).sqrt();
        let a = 2.0 * std::f64::consts::PI * v;
        self.spare = Some(r * a.sin());
        r * a.cos()
    }

    /// A tensor of `like`'s shape, kind and device, of standard normals.
    fn tensor_like(&mut self, like: &Tensor) -> Tensor {
        let vals: Vec<f64> = (0..like.numel()).map(|_| self.next()).collect();
        Tensor::from_slice(&vals)
            .view(like.size().as_slice())
            .to_kind(like.kind())
            .to_device(like.device())
    }
}

/// `d` rescaled filter by filter (slices along dimension 0) to the norms
/// of the same filters of `w`: d_i · ‖w_i‖ / (‖d_i‖ + 1e-10), in double
/// precision, returned in `w`'s kind.
pub fn filter_normalise(d: &Tensor, w: &Tensor) -> Tensor {
    let size = w.size();
    let rows = |t: &Tensor| t.to_kind(Kind::Double).reshape([size[0], -1]);
    let norm = |t: &Tensor| {
        rows(t)
            .square()
            .sum_dim_intlist([1i64].as_slice(), true, Kind::Double)
            .sqrt()
    };
    let scale = norm(w) / (norm(d) + 1e-10);
    let mut shape = vec![size[0]];
    shape.resize(size.len(), 1);
    (d.to_kind(Kind::Double) * scale.view(shape.as_slice())).to_kind(w.kind())
}

/// One filter-normalised random direction at `centre`: an entry for each
/// trainable tensor (BatchNorm running statistics have none).
fn direction(model: &Model, centre: &Params, g: &mut Gaussians, include_biasbn: bool) -> Params {
    let entries = centre
        .iter()
        .filter(|(n, _)| model.is_weight(n))
        .map(|(n, w)| {
            let d = if w.dim() >= 2 {
                filter_normalise(&g.tensor_like(w), w)
            } else if include_biasbn {
                w.copy()
            } else {
                w.zeros_like()
            };
            (n.to_string(), d)
        })
        .collect();
    Params::new(entries)
}

/// The centre and one or two directions.
pub struct RandomPlane {
    centre: Params,
    d1: Params,
    d2: Option<Params>,
}

impl RandomPlane {
    pub fn new(model: &Model, centre: Params, cfg: &RandomPlaneConfig) -> RandomPlane {
        let mut g = Gaussians::new(cfg.seed);
        let d1 = direction(model, &centre, &mut g, cfg.include_biasbn);
        let d2 = (cfg.dims == 2).then(|| direction(model, &centre, &mut g, cfg.include_biasbn));
        RandomPlane { centre, d1, d2 }
    }

    /// The weights at (α, β): the centre moved along the directions; the
    /// BatchNorm buffers are the centre's.
    pub fn point(&self, (a, b): (f64, f64)) -> Params {
        self.centre.map(|n, t| match self.d1.try_get(n) {
            None => t.shallow_clone(),
            Some(d1) => match &self.d2 {
                Some(d2) => t + d1 * a + d2.get(n) * b,
                None => t + d1 * a,
            },
        })
    }
}

/// An empty result for `cfg`: axes over [-span, span] (one row at β = 0
/// for a line), labels and caption.
pub fn layout(cfg: &RandomPlaneConfig, meta_base: PlaneMeta) -> PlaneFile {
    let axis: Vec<f64> = (0..cfg.grid)
        .map(|i| -cfg.span + 2.0 * cfg.span * i as f64 / (cfg.grid - 1) as f64)
        .collect();
    let ys = if cfg.dims == 2 {
        axis.clone()
    } else {
        vec![0.0]
    };
    let name = cfg
        .around
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let what = if cfg.dims == 2 {
        "2 random directions"
    } else {
        "1 random direction"
    };
    let biasbn = if cfg.include_biasbn {
        "biases/BN moved"
    } else {
        "biases/BN fixed"
    };
    let bn = match cfg.bn {
        MemberBn::Keep => "BN stats kept",
        MemberBn::Recompute => "BN stats recomputed",
    };
    let caption = format!(
        "{what} around {name}, filter-normalised (Li et al. 2018), seed {}; {biasbn}; {bn}",
        cfg.seed
    );
    let empty = || vec![vec![None; cfg.grid]; ys.len()];
    PlaneFile {
        format: crate::schema::FORMAT,
        shard: None,
        meta: PlaneMeta {
            grid: cfg.grid,
            caption,
            wd: 0.0,
            random: Some(RandomMeta {
                around: cfg.around.clone(),
                dims: cfg.dims,
                seed: cfg.seed,
                span: cfg.span,
                include_biasbn: cfg.include_biasbn,
                bn: cfg.bn,
            }),
            ..meta_base
        },
        x_label: "α: along direction 1".to_string(),
        y_label: if cfg.dims == 2 {
            "β: along direction 2".to_string()
        } else {
            String::new()
        },
        xs: axis,
        train_loss: empty(),
        test_err: empty(),
        test_nll: empty(),
        ys,
        endpoints: Vec::new(),
        bends: Vec::new(),
        curve: Vec::new(),
        line: Vec::new(),
        centre: Some([0.0, 0.0]),
        seconds: 0.0,
    }
}

/// Computes (or resumes) the run's points of the random plane around
/// `centre` (see [`grid::fill`]).
pub fn compute(
    ev: &Evaluator,
    centre: Params,
    cfg: &RandomPlaneConfig,
    meta_base: PlaneMeta,
    run: &Run,
) -> Result<PlaneFile> {
    cfg.validate()?;
    let plane = RandomPlane::new(ev.model, centre, cfg);
    let point = |xy: (f64, f64)| plane.point(xy);
    let src = Source {
        point: &point,
        recompute_bn: cfg.bn == MemberBn::Recompute,
    };
    grid::fill(ev, &src, layout(cfg, meta_base), run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArchConfig, ArchKind};

    #[test]
    fn filters_get_the_norms_of_the_weights_filters() {
        let w = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 1.0, 1.0, 0.0]).view([3, 2]);
        let d = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0, 0.0, 0.0]).view([3, 2]);
        let n = filter_normalise(&d, &w);
        let v: Vec<f32> = Vec::try_from(n.flatten(0, -1)).unwrap();
        // Row 0: norm 5 along d's own direction; row 1: norm 1; row 2: d is
        // zero and stays zero (no division by zero).
        let want = [5.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        for (a, b) in v.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn directions_are_seeded_filter_normalised_and_skip_biases_unless_asked() {
        let cfg = ArchConfig::new(ArchKind::SeedConvnet, 1, 10, 28, 28);
        let model = Model::new(cfg).unwrap();
        tch::manual_seed(1);
        let centre = model.init(tch::Device::Cpu);
        let mut rc = RandomPlaneConfig::defaults("start_model".into());
        let a = RandomPlane::new(&model, centre.shallow_clone(), &rc);
        let b = RandomPlane::new(&model, centre.shallow_clone(), &rc);
        for (n, w) in centre.iter().filter(|(n, _)| model.is_weight(n)) {
            let (d1, d2) = (a.d1.get(n), a.d2.as_ref().unwrap().get(n));
            assert!(
                d1.equal(b.d1.get(n)),
                "{n}: the same seed gave another direction"
            );
            if w.dim() >= 2 {
                let per = |t: &Tensor| {
                    t.flatten(1, -1)
                        .norm_scalaropt_dim(2, [1i64].as_slice(), false)
                };
                let diff = (per(d1) - per(w)).abs().max().double_value(&[]);
                assert!(diff < 1e-4, "{n}: filter norms differ by {diff}");
                assert!(!d1.equal(d2), "{n}: the two directions are equal");
            } else {
                assert_eq!(d1.abs().sum(Kind::Double).double_value(&[]), 0.0, "{n}");
            }
        }
        rc.seed = 7;
        rc.include_biasbn = true;
        let c = RandomPlane::new(&model, centre.shallow_clone(), &rc);
        let bias = "features.0.bias";
        assert!(c.d1.get(bias).equal(centre.get(bias)));
        assert!(!c
            .d1
            .get("features.0.weight")
            .equal(a.d1.get("features.0.weight")));
        // (0, 0) is the centre itself.
        let p = a.point((0.0, 0.0));
        assert!(p.distance(&centre, |_| true).unwrap() < 1e-12);
    }
}
