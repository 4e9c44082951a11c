//! Curves in weight space (Garipov et al. 2018, section 3).
//!
//! A curve with n bends w_0 … w_{n−1} is φ(t) = Σ_k c_k(t)·w_k, t ∈ [0, 1],
//! where w_0 and w_{n−1} are the fixed endpoints and the inner bends are
//! trained. Two coefficient families:
//!
//! * Bezier: Bernstein polynomials c_k(t) = C(n−1, k)·t^k·(1−t)^(n−1−k);
//!   with n = 3 this is (1−t)²·w1 + 2t(1−t)·θ + t²·w2.
//! * PolyChain: the piecewise-linear chain through the bends at t_k = k/(n−1),
//!   c_k(t) = max(0, 1 − |t·(n−1) − k|).
//!
//! φ(t) is an ordinary tensor expression, differentiable in the inner bends,
//! and the result is a plain [`Params`] that the model's single forward uses.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::model::{Model, Params};

crate::choice! {
    pub enum CurveKind {
        /// Bezier curve with Bernstein coefficients.
        Bezier = "bezier",
        /// Polygonal chain through the bends.
        Polychain = "polychain",
    }
}

/// Binomial coefficient C(n, k) as f64 (exact for the sizes used here).
fn binom(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The coefficients c_0(t) … c_{n−1}(t).
pub fn coeffs(kind: CurveKind, n: usize, t: f64) -> Vec<f64> {
    let m = n - 1;
    match kind {
        CurveKind::Bezier => (0..n)
            .map(|k| binom(m, k) * t.powi(k as i32) * (1.0 - t).powi((m - k) as i32))
            .collect(),
        CurveKind::Polychain => (0..n)
            .map(|k| (1.0 - (t * m as f64 - k as f64).abs()).max(0.0))
            .collect(),
    }
}

/// A curve: the bends and how to combine them. Bend tensors live on the
/// compute device; the inner bends are autograd leaves.
pub struct Curve {
    pub kind: CurveKind,
    /// bends[k] holds the weights (not buffers) of bend k.
    pub bends: Vec<Params>,
}

impl Curve {
    /// Curve with inner bends on the straight line between the endpoints,
    /// bend k at (1 − k/(n−1))·w1 + (k/(n−1))·w2.
    pub fn linear_init(kind: CurveKind, n: usize, start: &Params, end: &Params) -> Result<Curve> {
        if n < 2 {
            bail!("a curve needs at least 2 bends (got {n})");
        }
        let mut bends = vec![start.shallow_clone()];
        for k in 1..n - 1 {
            let a = k as f64 / (n - 1) as f64;
            bends.push(start.map(|name, w| (w * (1.0 - a) + end.get(name) * a).detach()));
        }
        bends.push(end.shallow_clone());
        Ok(Curve { kind, bends })
    }

    pub fn num_bends(&self) -> usize {
        self.bends.len()
    }

    /// Marks the inner bends as trainable leaves and returns them (the
    /// endpoints stay fixed: no gradient ever reaches them).
    pub fn trainable(&mut self) -> Vec<Tensor> {
        let n = self.bends.len();
        let mut leaves = Vec::new();
        for b in &mut self.bends[1..n - 1] {
            *b = b.map(|_, t| t.detach().set_requires_grad(true));
            leaves.extend(b.iter().map(|(_, t)| t.shallow_clone()));
        }
        leaves
    }

    /// Names of the trainable entries, in the order [`Curve::trainable`] returns them.
    pub fn trainable_names(&self) -> Vec<String> {
        let n = self.bends.len();
        (1..n - 1)
            .flat_map(|k| {
                self.bends[k]
                    .names()
                    .map(move |p| format!("bend{k}.{p}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// φ(t): the curve's weights at t (differentiable in the inner bends).
    /// Bends with a zero coefficient are skipped.
    pub fn weights_at(&self, t: f64) -> Params {
        let c = coeffs(self.kind, self.bends.len(), t);
        self.bends[0].map(|name, _| {
            let mut acc: Option<Tensor> = None;
            for (k, b) in self.bends.iter().enumerate() {
                if c[k] == 0.0 {
                    continue;
                }
                let term = b.get(name) * c[k];
                acc = Some(match acc {
                    None => term,
                    Some(a) => a + term,
                });
            }
            acc.expect("coefficients sum to one, so at least one is non-zero")
        })
    }

    /// φ(t) with fresh buffers from `model` (BatchNorm statistics at their
    /// initial values, to be re-estimated by [`crate::eval::update_bn`]), ready for the forward.
    pub fn point(&self, model: &Model, t: f64) -> Params {
        with_fresh_buffers(model, self.weights_at(t))
    }

    /// Index of the inner bend farthest from the straight line w1–w2.
    pub fn farthest_inner_bend(&self) -> usize {
        let n = self.bends.len();
        if n <= 3 {
            return 1.min(n - 1);
        }
        let (w1, w2) = (&self.bends[0], &self.bends[n - 1]);
        let mut best = (1, f64::MIN);
        for k in 1..n - 1 {
            let a = k as f64 / (n - 1) as f64;
            let on_line = w1.map(|name, w| w * (1.0 - a) + w2.get(name) * a);
            let d = self.bends[k].distance(&on_line, |_| true).unwrap_or(0.0);
            if d > best.1 {
                best = (k, d);
            }
        }
        best.0
    }
}

/// Adds the model's buffers (BatchNorm statistics at their initial values)
/// to a set of weights.
pub fn with_fresh_buffers(model: &Model, weights: Params) -> Params {
    if !model.has_buffers() {
        return weights;
    }
    let device = weights
        .iter()
        .next()
        .map(|(_, t)| t.device())
        .unwrap_or(tch::Device::Cpu);
    let init = model.init_buffers(device);
    let mut out = weights;
    for (n, t) in init.iter() {
        out.set(n, t.shallow_clone());
    }
    out
}

/// The straight line (1−t)·w1 + t·w2 (weights only), for the barrier.
pub fn line_point(model: &Model, w1: &Params, w2: &Params, t: f64) -> Params {
    with_fresh_buffers(model, w1.map(|name, w| w * (1.0 - t) + w2.get(name) * t))
}

/// Keeps only the trainable weights of a full parameter set.
pub fn weights_only(model: &Model, p: &Params) -> Params {
    Params::new(
        model
            .weight_names()
            .map(|n| (n.to_string(), p.get(n).shallow_clone()))
            .collect(),
    )
}

/// Sum of squares of a parameter set (float), for checks and the regulariser.
pub fn sq_norm(p: &Params) -> Tensor {
    p.sq_norm(|_| true).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArchConfig, ArchKind, BnMode, Precision};
    use tch::Device;

    #[test]
    fn coefficients_sum_to_one_and_are_one_hot_at_the_ends() {
        for kind in [CurveKind::Bezier, CurveKind::Polychain] {
            for n in [2, 3, 4, 5, 7] {
                for i in 0..=20 {
                    let t = i as f64 / 20.0;
                    let c = coeffs(kind, n, t);
                    assert!(
                        (c.iter().sum::<f64>() - 1.0).abs() < 1e-12,
                        "{kind:?} n={n} t={t}"
                    );
                    assert!(c.iter().all(|&x| x >= 0.0));
                }
                let c0 = coeffs(kind, n, 0.0);
                let c1 = coeffs(kind, n, 1.0);
                assert_eq!(c0[0], 1.0);
                assert_eq!(c1[n - 1], 1.0);
                assert!(c0[1..].iter().all(|&x| x == 0.0) && c1[..n - 1].iter().all(|&x| x == 0.0));
            }
        }
    }

    #[test]
    fn bernstein_values_match_independent_computation() {
        // Reference values computed by hand from the expanded polynomials:
        // n=3 (quadratic): (1-t)^2, 2t(1-t), t^2 at t=0.3 -> 0.49, 0.42, 0.09
        let c = coeffs(CurveKind::Bezier, 3, 0.3);
        for (a, b) in c.iter().zip([0.49, 0.42, 0.09]) {
            assert!((a - b).abs() < 1e-12);
        }
        // n=4 (cubic) at t=0.25: (0.75)^3, 3*0.25*0.75^2, 3*0.25^2*0.75, 0.25^3
        //   = 0.421875, 0.421875, 0.140625, 0.015625
        let c = coeffs(CurveKind::Bezier, 4, 0.25);
        for (a, b) in c.iter().zip([0.421875, 0.421875, 0.140625, 0.015625]) {
            assert!((a - b).abs() < 1e-12);
        }
        // n=5 at t=0.5: binom(4,k)/16 = 1/16, 4/16, 6/16, 4/16, 1/16
        let c = coeffs(CurveKind::Bezier, 5, 0.5);
        for (a, b) in c.iter().zip([0.0625, 0.25, 0.375, 0.25, 0.0625]) {
            assert!((a - b).abs() < 1e-12);
        }
        // polychain with 3 bends at t=0.25: halfway between bend 0 and bend 1
        assert_eq!(coeffs(CurveKind::Polychain, 3, 0.25), vec![0.5, 0.5, 0.0]);
    }

    fn two_models() -> (Model, Params, Params) {
        let model = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 1, 10, 28, 28)).unwrap();
        tch::manual_seed(10);
        let a = weights_only(&model, &model.init(Device::Cpu));
        tch::manual_seed(11);
        let b = weights_only(&model, &model.init(Device::Cpu));
        (model, a, b)
    }

    #[test]
    fn linear_initialisation_puts_bends_on_the_line() {
        let (_, a, b) = two_models();
        let c = Curve::linear_init(CurveKind::Bezier, 5, &a, &b).unwrap();
        for k in 1..4 {
            let alpha = k as f64 / 4.0;
            let want = a.map(|n, t| t * (1.0 - alpha) + b.get(n) * alpha);
            assert!(c.bends[k].distance(&want, |_| true).unwrap() < 1e-5);
        }
        // and then every point of the curve is on the line: φ(t) = (1-t) a + t b for Bezier
        let p = c.weights_at(0.3);
        let want = a.map(|n, t| t * 0.7 + b.get(n) * 0.3);
        assert!(p.distance(&want, |_| true).unwrap() < 1e-4);
    }

    #[test]
    fn gradients_reach_only_the_inner_bends() {
        let (model, a, b) = two_models();
        let mut c = Curve::linear_init(CurveKind::Bezier, 4, &a, &b).unwrap();
        let leaves = c.trainable();
        assert_eq!(leaves.len(), 2 * a.len());
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[1i64, 2, 3, 4]);
        let loss = model
            .forward(&c.weights_at(0.4), &x, BnMode::Train(None), Precision::Fp32)
            .unwrap()
            .cross_entropy_for_logits(&y);
        loss.backward();
        for l in &leaves {
            assert!(l.grad().defined() && l.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
        for k in [0, 3] {
            for (_, t) in c.bends[k].iter() {
                assert!(!t.requires_grad());
                assert!(!t.grad().defined());
            }
        }
    }
}
