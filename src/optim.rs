//! Optimisers and learning-rate schedules.
//!
//! SGD (momentum, Nesterov, L2 weight decay) and Adam follow PyTorch's update
//! rules exactly, and keep their state as named tensors so that `--resume`
//! restores it bit for bit. Schedules are pure functions of (epoch, epochs).

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

crate::choice! {
    pub enum OptimKind {
        Sgd = "sgd",
        Adam = "adam",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub kind: OptimKind,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    /// L2 weight decay added to the gradient (0 for curves, whose regulariser
    /// is on φ(t) instead).
    pub wd: f64,
}

/// An optimiser over a fixed list of leaf tensors.
pub struct Optimizer {
    cfg: OptimConfig,
    /// SGD momentum buffers, or Adam's first moments.
    m: Vec<Tensor>,
    /// Adam's second moments (empty for SGD).
    v: Vec<Tensor>,
    steps: i64,
}

impl Optimizer {
    pub fn new(cfg: OptimConfig, leaves: &[Tensor]) -> Optimizer {
        let zeros = |ls: &[Tensor]| {
            ls.iter()
                .map(|p| p.detach().zeros_like())
                .collect::<Vec<_>>()
        };
        let v = if cfg.kind == OptimKind::Adam {
            zeros(leaves)
        } else {
            Vec::new()
        };
        Optimizer {
            m: zeros(leaves),
            v,
            steps: 0,
            cfg,
        }
    }

    /// One update with learning rate `lr`, using the leaves' `.grad()`.
    pub fn step(&mut self, leaves: &[Tensor], lr: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        for (i, p) in leaves.iter().enumerate() {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let g = if self.cfg.wd != 0.0 {
                g + p * self.cfg.wd
            } else {
                g
            };
            match self.cfg.kind {
                OptimKind::Sgd => {
                    let d = if self.cfg.momentum != 0.0 {
                        // buf = μ·buf + g (PyTorch, dampening 0; buf starts at 0 so the first buf is g)
                        let mut buf = self.m[i].shallow_clone();
                        drop(buf.f_mul_scalar_(self.cfg.momentum)?.f_add_(&g)?);
                        if self.cfg.nesterov {
                            &g + &self.m[i] * self.cfg.momentum
                        } else {
                            self.m[i].shallow_clone()
                        }
                    } else {
                        g
                    };
                    drop(p.shallow_clone().f_sub_(&(d * lr))?);
                }
                OptimKind::Adam => {
                    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
                    let (mut m, mut v) = (self.m[i].shallow_clone(), self.v[i].shallow_clone());
                    drop(m.f_mul_scalar_(b1)?.f_add_(&(&g * (1.0 - b1)))?);
                    drop(v.f_mul_scalar_(b2)?.f_add_(&(g.square() * (1.0 - b2)))?);
                    let bc1 = 1.0 - b1.powi(self.steps as i32);
                    let bc2 = 1.0 - b2.powi(self.steps as i32);
                    let denom = (&self.v[i] / bc2).sqrt() + eps;
                    drop(
                        p.shallow_clone()
                            .f_sub_(&(&self.m[i] / denom * (lr / bc1)))?,
                    );
                }
            }
        }
        Ok(())
    }

    pub fn zero_grad(&self, leaves: &[Tensor]) -> Result<()> {
        for p in leaves {
            let mut g = p.grad();
            if g.defined() {
                drop(g.f_detach_()?.f_zero_()?);
            }
        }
        Ok(())
    }

    /// State as named tensors, for the resume checkpoint.
    pub fn state(&self, names: &[String]) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .m
            .iter()
            .zip(names)
            .map(|(t, n)| (format!("optim.m.{n}"), t.shallow_clone()))
            .collect();
        out.extend(
            self.v
                .iter()
                .zip(names)
                .map(|(t, n)| (format!("optim.v.{n}"), t.shallow_clone())),
        );
        out.push(("optim.steps".to_string(), Tensor::from_slice(&[self.steps])));
        out
    }

    /// Restores state written by [`Optimizer::state`].
    pub fn load_state(
        &mut self,
        names: &[String],
        get: impl Fn(&str) -> Option<Tensor>,
    ) -> Result<()> {
        let _guard = tch::no_grad_guard();
        // Every buffer is checked (present, right shape, finite) before use.
        let load = |slot: &mut Tensor, key: String| -> Result<()> {
            let t = get(&key).ok_or_else(|| anyhow!("optimiser state {key} is missing"))?;
            if t.size() != slot.size() {
                bail!(
                    "optimiser state {key} has shape {:?}, expected {:?}",
                    t.size(),
                    slot.size()
                );
            }
            if !bool::try_from(t.isfinite().all())? {
                bail!("optimiser state {key} holds values that are not finite");
            }
            slot.f_copy_(&t)?;
            Ok(())
        };
        for (i, n) in names.iter().enumerate() {
            load(&mut self.m[i], format!("optim.m.{n}"))?;
            if !self.v.is_empty() {
                load(&mut self.v[i], format!("optim.v.{n}"))?;
            }
        }
        self.steps = match get("optim.steps") {
            Some(t) if t.numel() == 1 => t.reshape([-1]).f_int64_value(&[0])?.max(0),
            Some(t) => bail!(
                "optimiser state optim.steps has shape {:?}, expected [1]",
                t.size()
            ),
            None => 0,
        };
        Ok(())
    }
}

crate::choice! {
    pub enum Schedule {
        /// The reference implementation's: constant for the first half, linear
        /// decay to 1% between 50% and 90% of training, then 1%.
        Reference = "reference",
        /// Cosine annealing from lr to 0.
        Cosine = "cosine",
        /// The seed experiment's shape: linear warm-up over the first 10% of
        /// epochs (from lr/10), constant, exponential decay to 1% over the last third.
        Seed = "seed",
        /// Constant.
        Constant = "constant",
    }
}

/// Learning rate for `epoch` (0-based) of `epochs`.
pub fn lr_at(schedule: Schedule, lr: f64, epoch: usize, epochs: usize) -> f64 {
    let epochs = epochs.max(1);
    let a = epoch as f64 / epochs as f64;
    match schedule {
        Schedule::Constant => lr,
        Schedule::Reference => {
            let f = if a <= 0.5 {
                1.0
            } else if a <= 0.9 {
                1.0 - (a - 0.5) / 0.4 * 0.99
            } else {
                0.01
            };
            lr * f
        }
        Schedule::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * a).cos()),
        Schedule::Seed => {
            let warm = (epochs as f64 * 0.1).ceil().max(1.0);
            let decay_start = (epochs as f64 * 2.0 / 3.0).floor();
            let e = epoch as f64;
            if e < warm && epochs > 1 {
                lr * (0.1 + 0.9 * e / warm)
            } else if e < decay_start {
                lr
            } else {
                let span = (epochs as f64 - decay_start).max(1.0);
                lr * 0.01f64.powf((e - decay_start + 1.0) / span)
            }
        }
    }
}

/// Float sum as f64, for logging.
pub fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_schedule_matches_its_definition() {
        // constant for the first half
        assert_eq!(lr_at(Schedule::Reference, 0.1, 0, 100), 0.1);
        assert_eq!(lr_at(Schedule::Reference, 0.1, 50, 100), 0.1);
        // halfway through the decay: 1 - 0.5*0.99
        assert!(
            (lr_at(Schedule::Reference, 0.1, 70, 100) - 0.1 * (1.0 - 0.5 * 0.99)).abs() < 1e-12
        );
        // at 90% and after: 1%
        assert!((lr_at(Schedule::Reference, 0.1, 90, 100) - 0.001).abs() < 1e-12);
        assert!((lr_at(Schedule::Reference, 0.1, 99, 100) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn cosine_schedule_starts_at_lr_and_is_half_at_midpoint() {
        assert_eq!(lr_at(Schedule::Cosine, 0.2, 0, 10), 0.2);
        assert!((lr_at(Schedule::Cosine, 0.2, 5, 10) - 0.1).abs() < 1e-12);
        let mut prev = f64::MAX;
        for e in 0..10 {
            let l = lr_at(Schedule::Cosine, 0.2, e, 10);
            assert!(l < prev && l > 0.0);
            prev = l;
        }
    }

    #[test]
    fn seed_schedule_warms_up_holds_then_decays_to_one_percent() {
        let lrs: Vec<f64> = (0..30).map(|e| lr_at(Schedule::Seed, 1.0, e, 30)).collect();
        assert!((lrs[0] - 0.1).abs() < 1e-12, "warm-up starts at lr/10");
        assert!(lrs[1] > lrs[0] && lrs[2] > lrs[1], "linear warm-up");
        assert_eq!(lrs[3], 1.0);
        assert_eq!(lrs[19], 1.0, "constant until two thirds");
        assert!(lrs[20] < 1.0 && lrs[21] < lrs[20], "exponential decay");
        assert!((lrs[29] - 0.01).abs() < 1e-12, "ends at 1%");
        // exponential: constant ratio between consecutive epochs of the decay
        let r1 = lrs[22] / lrs[21];
        let r2 = lrs[27] / lrs[26];
        assert!((r1 - r2).abs() < 1e-12);
    }

    #[test]
    fn sgd_momentum_matches_pytorch_rule() {
        // p=1, grads 1 then 1, lr 0.1, momentum 0.9, wd 0:
        // PyTorch: buf1 = g = 1 -> p = 0.9; buf2 = 0.9*1 + 1 = 1.9 -> p = 0.9 - 0.19 = 0.71
        let p = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let leaves = vec![p.shallow_clone()];
        let cfg = OptimConfig {
            kind: OptimKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            wd: 0.0,
        };
        let mut opt = Optimizer::new(cfg, &leaves);
        for _ in 0..2 {
            opt.zero_grad(&leaves).unwrap();
            (&leaves[0] * 1.0).sum(Kind::Float).backward();
            opt.step(&leaves, 0.1).unwrap();
        }
        assert!((p.double_value(&[0]) - 0.71).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // bias-corrected first Adam step is lr * g/|g| (up to eps)
        let p = Tensor::from_slice(&[2.0f32]).set_requires_grad(true);
        let leaves = vec![p.shallow_clone()];
        let cfg = OptimConfig {
            kind: OptimKind::Adam,
            lr: 0.01,
            momentum: 0.0,
            nesterov: false,
            wd: 0.0,
        };
        let mut opt = Optimizer::new(cfg, &leaves);
        (&leaves[0] * 3.0).sum(Kind::Float).backward();
        opt.step(&leaves, 0.01).unwrap();
        assert!((p.double_value(&[0]) - 1.99).abs() < 1e-5);
    }
}
