//! The batch loop: one pass over the training split, for any source of
//! parameters. Data order, augmentation, dropout and a curve's t are drawn
//! from tch's RNG, which the trainer re-seeds from (seed, epoch) before each
//! epoch, so a resumed run reproduces an uninterrupted one exactly on CPU.

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::loader::Data;
use crate::model::{BnMode, Model, Params};
use crate::observe::Progress;
use crate::optim::Optimizer;
use crate::runtime::Runtime;

/// Parameters for one batch plus an extra loss term (the curve's L2). With
/// several sets, the batch is split into that many equal groups, group i
/// going through set i, and the loss is their mean.
pub type BatchParams<'a> = dyn FnMut() -> Vec<(Params, Option<Tensor>)> + 'a;

#[derive(Clone, Copy)]
pub struct Loop<'a> {
    pub model: &'a Model,
    pub data: &'a Data,
    pub rt: &'a Runtime,
    pub batch_size: i64,
    pub augment: bool,
    /// BatchNorm behaviour while training (batch statistics; endpoints also
    /// track running statistics with momentum 0.1).
    pub bn: BnMode,
}

/// Seed of the RNG for `epoch` of a run seeded `seed`.
pub fn epoch_seed(seed: u64, epoch: usize) -> i64 {
    (seed
        .wrapping_mul(1_000_003)
        .wrapping_add(epoch as u64 * 7919)
        & 0x7fff_ffff_ffff) as i64
}

impl Loop<'_> {
    /// One epoch over the training split, batch `i` at learning rate
    /// `lr(i)`. Returns (mean loss, accuracy %).
    pub fn epoch(
        &self,
        leaves: &[Tensor],
        opt: &mut Optimizer,
        lr: &dyn Fn(usize) -> f64,
        params_for_batch: &mut BatchParams,
        prog: &mut Progress,
    ) -> Result<(f64, f64)> {
        let train = &self.data.train;
        let n = train.len();
        let dev = self.rt.device;
        let perm = Tensor::randperm(n, (Kind::Int64, dev));
        let mut loss_sum = Tensor::zeros([], (Kind::Double, dev));
        let mut correct = Tensor::zeros([], (Kind::Double, dev));
        let mut seen = 0i64;
        let mut start = 0i64;
        let mut batch_no = 0usize;
        while start < n {
            let len = self.batch_size.min(n - start);
            if len < 2 && self.model.has_bn {
                break; // BatchNorm cannot train on a single example
            }
            let idx = perm.narrow(0, start, len);
            let (x, y) = self.data.batch(
                train,
                &idx,
                self.augment.then_some(4),
                self.rt.channels_last,
            )?;
            opt.zero_grad(leaves)?;
            let (logits, loss) = self.forward_groups(params_for_batch(), &x, &y, true)?;
            opt.step(leaves, lr(batch_no))?;
            {
                let _g = tch::no_grad_guard();
                loss_sum += loss.detach().to_kind(Kind::Double) * len as f64;
                correct += logits.argmax(1, false).eq_tensor(&y).sum(Kind::Double);
            }
            seen += len;
            start += len;
            batch_no += 1;
            prog.inc(1);
            // A cheap periodic check, so a diverged run stops early.
            if batch_no.is_multiple_of(50) && !loss_sum.double_value(&[]).is_finite() {
                break;
            }
        }
        let loss = loss_sum.double_value(&[]) / seen.max(1) as f64;
        let acc = 100.0 * correct.double_value(&[]) / seen.max(1) as f64;
        Ok((loss, acc))
    }

    /// Logits and loss of one batch through one parameter set, or split
    /// into equal contiguous groups through several (at most as many groups
    /// as the batch has examples, two each with BatchNorm). With `backward`,
    /// the gradients of the loss reach the sets' leaves: one backward pass
    /// for the whole batch, or one per group for a TorchScript network
    /// (whose tensors hold one group's gradient at a time, which
    /// [`Model::chain_grads`] passes on).
    fn forward_groups(
        &self,
        sets: Vec<(Params, Option<Tensor>)>,
        x: &Tensor,
        y: &Tensor,
        backward: bool,
    ) -> Result<(Tensor, Tensor)> {
        let per_group = backward && self.model.is_script();
        let len = x.size()[0];
        let per = if self.model.has_bn { 2 } else { 1 };
        let k = (sets.len() as i64).min(len / per).max(1);
        let mut logits = Vec::new();
        let mut loss: Option<Tensor> = None;
        for (i, (p, extra)) in sets.into_iter().take(k as usize).enumerate() {
            let i = i as i64;
            let (s, e) = (len * i / k, len * (i + 1) / k);
            let (xi, yi) = if k == 1 {
                (x.shallow_clone(), y.shallow_clone())
            } else {
                (x.narrow(0, s, e - s), y.narrow(0, s, e - s))
            };
            let lg = self.model.forward(&p, &xi, self.bn, self.rt.precision)?;
            let ce = lg.cross_entropy_for_logits(&yi);
            let mut term = if k == 1 {
                ce
            } else {
                ce * ((e - s) as f64 / len as f64)
            };
            if let Some(extra) = extra {
                term = if k == 1 {
                    term + extra
                } else {
                    term + extra / k as f64
                };
            }
            if per_group {
                term.f_backward()?;
                self.model.chain_grads(&p)?;
                term = term.detach();
            }
            loss = Some(match loss {
                Some(l) => l + term,
                None => term,
            });
            logits.push(lg);
        }
        let logits = if logits.len() == 1 {
            logits.remove(0)
        } else {
            Tensor::cat(&logits, 0)
        };
        let loss = loss.unwrap_or_else(|| Tensor::zeros([], (Kind::Float, x.device())));
        if backward && !per_group {
            loss.f_backward()?;
        }
        Ok((logits, loss))
    }

    /// Number of batches per epoch (for progress totals).
    pub fn batches_per_epoch(&self) -> u64 {
        if self.model.has_bn && self.batch_size < 2 {
            return 0; // BatchNorm cannot train on single examples
        }
        let n = self.data.train.len();
        let full = n / self.batch_size.max(1);
        let rest = n % self.batch_size.max(1);
        (full + i64::from(rest >= 2 || (rest == 1 && !self.model.has_bn))) as u64
    }

    /// Refuses a loop that would train on nothing (no images, or batches
    /// BatchNorm cannot use), naming `what` and the fix.
    pub fn ensure_batches(&self, what: &str) -> anyhow::Result<()> {
        if self.batches_per_epoch() > 0 {
            return Ok(());
        }
        anyhow::bail!(
            "{what}: nothing to train on: {} training image(s) make no batch of --batch-size {}{}. Use more images (--train-subset) or a batch size that fits.",
            self.data.train.len(),
            self.batch_size,
            if self.model.has_bn {
                " (BatchNorm needs at least 2 images per batch)"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Evaluator;
    use crate::model::{ArchConfig, ArchKind, Precision};
    use crate::optim::{OptimConfig, OptimKind};
    use tch::Device;

    /// Trains the seed ConvNet on a separable toy problem in `precision`
    /// (channels-last) and returns (first-epoch loss, last-epoch loss,
    /// test accuracy %, the trained parameters).
    fn train_toy(precision: Precision) -> (f64, f64, f64, Params) {
        tch::manual_seed(3);
        let data = crate::loader::separable_toy_data(96, 16);
        let model = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 3, 16, 16)).unwrap();
        let rt = Runtime {
            precision,
            channels_last: true,
            ..Runtime::cpu()
        };
        let p = model.prepare(&model.init(Device::Cpu), Device::Cpu, true);
        let p = p.map(|_, t| t.detach().copy().set_requires_grad(true));
        let leaves: Vec<Tensor> = p.iter().map(|(_, t)| t.shallow_clone()).collect();
        // lr 0.01 reaches 100% from every seed tried (0–9, in both
        // precisions); 0.05 diverges from some of them.
        let lr = 0.01;
        let cfg = OptimConfig {
            kind: OptimKind::Sgd,
            lr,
            momentum: 0.9,
            nesterov: false,
            wd: 0.0,
        };
        let mut opt = Optimizer::new(cfg, &leaves);
        let lp = Loop {
            model: &model,
            data: &data,
            rt: &rt,
            batch_size: 16,
            augment: false,
            bn: BnMode::Train(None),
        };
        let mut losses = Vec::new();
        for _ in 0..12 {
            let mut prog = Progress::new(&crate::observe::Silent, "test", lp.batches_per_epoch());
            let mut batch = || vec![(p.shallow_clone(), None)];
            let (loss, _) = lp
                .epoch(&leaves, &mut opt, &|_| lr, &mut batch, &mut prog)
                .unwrap();
            losses.push(loss);
        }
        let ev = Evaluator {
            model: &model,
            data: &data,
            rt: &rt,
        };
        let (stats, _) = ev
            .evaluate(std::slice::from_ref(&p), &data.test, false)
            .unwrap();
        (losses[0], *losses.last().unwrap(), stats[0].acc, p)
    }

    #[test]
    fn bf16_training_learns_like_fp32_and_keeps_fp32_parameters() {
        for precision in [Precision::Fp32, Precision::Bf16] {
            let (first, last, acc, p) = train_toy(precision);
            eprintln!("{precision:?}: loss {first:.4} -> {last:.4}, accuracy {acc:.1}%");
            assert!(first.is_finite() && last.is_finite(), "{precision:?}");
            assert!(
                last < 0.3 * first,
                "{precision:?}: loss went from {first:.4} to {last:.4}"
            );
            assert!(acc >= 95.0, "{precision:?}: accuracy {acc:.1}%");
            for (n, t) in p.iter() {
                assert_eq!(t.kind(), Kind::Float, "{precision:?}: {n} is not fp32");
                assert!(t.grad().defined(), "{precision:?}: no gradient reached {n}");
            }
        }
    }

    #[test]
    fn a_batch_split_into_groups_gives_the_loss_of_the_whole_batch() {
        tch::manual_seed(4);
        let data = crate::loader::separable_toy_data(96, 16);
        let model = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 3, 16, 16)).unwrap();
        let rt = Runtime::cpu();
        let p = model.init(Device::Cpu);
        let lp = Loop {
            model: &model,
            data: &data,
            rt: &rt,
            batch_size: 16,
            augment: false,
            bn: BnMode::Eval,
        };
        let idx = Tensor::arange(10, (Kind::Int64, Device::Cpu));
        let (x, y) = data.batch(&data.train, &idx, None, false).unwrap();
        let reg = Tensor::from(0.25f32);
        let one = |k: usize| {
            (0..k)
                .map(|_| (p.shallow_clone(), Some(reg.shallow_clone())))
                .collect()
        };
        let (l1, whole) = lp.forward_groups(one(1), &x, &y, false).unwrap();
        // Three groups of 3, 3 and 4 images through the same weights: the
        // same logits and, weighted by group size, the same loss.
        let (l3, split) = lp.forward_groups(one(3), &x, &y, false).unwrap();
        assert_eq!(l3.size(), l1.size());
        assert!((l1 - l3).abs().max().double_value(&[]) < 1e-6);
        let (a, b) = (whole.double_value(&[]), split.double_value(&[]));
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        // More groups than images: one image per group at most.
        let (l20, _) = lp.forward_groups(one(20), &x, &y, false).unwrap();
        assert_eq!(l20.size()[0], 10);
    }

    #[test]
    fn stratified_t_draws_one_t_per_stratum() {
        use crate::curve::{Curve, CurveKind};
        let model = Model::new(ArchConfig::new(ArchKind::Mlp, 1, 3, 4, 4)).unwrap();
        let w1 = model.init(Device::Cpu);
        let w2 = w1.map(|_, t| t + 1.0);
        let curve = Curve::linear_init(CurveKind::Polychain, 3, &w1, &w2).unwrap();
        tch::manual_seed(9);
        let sets = crate::train::curve::batch_at_stratified_t(&curve, 0.0, 4);
        assert_eq!(sets.len(), 4);
        // On this straight polychain φ(t) = w1 + t: recover each t.
        let name = "layers.0.bias";
        for (i, (p, reg)) in sets.iter().enumerate() {
            assert!(reg.is_none());
            let t = (p.get(name) - w1.get(name))
                .mean(Kind::Double)
                .double_value(&[]);
            assert!(
                t >= i as f64 / 4.0 - 1e-6 && t < (i + 1) as f64 / 4.0 + 1e-6,
                "group {i}: t = {t}"
            );
        }
    }
}
