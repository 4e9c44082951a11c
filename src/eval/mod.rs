//! Evaluation of many parameter sets on the same data.
//!
//! Every path that evaluates several models — the sweep along t, the
//! straight line, ensembles, the landscape grid — goes through
//! [`Evaluator::evaluate`]: each batch is read and converted once and fed to
//! every model of the group, under no-grad, with metrics accumulated on the
//! device (one host sync per model at the end, none per batch).
//!
//! BatchNorm statistics are re-estimated by [`Evaluator::update_bn`] before a
//! model that is not an endpoint is evaluated (the reference
//! implementation's `update_bn`: one pass over the training data in train
//! mode, cumulative average with momentum b/(n+b)).

pub mod along;
pub mod ensemble;
pub mod metrics;

use tch::{Kind, Tensor};

use crate::loader::{Data, Split};
use crate::model::{BnMode, Model, Params};
use crate::runtime::Runtime;
use crate::schema::ensemble::Bin;
use metrics::{bin_index, bins_from_sums, ece_from_bins, ECE_BINS};

/// Loss, accuracy and calibration of one model on one split.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Mean cross-entropy (NLL).
    pub nll: f64,
    /// Accuracy in percent.
    pub acc: f64,
    pub ece: f64,
    pub bins: Vec<Bin>,
    pub n: i64,
}

/// Running sums on the device for one model.
struct Acc {
    nll: Tensor,
    correct: Tensor,
    count: Tensor,
    conf: Tensor,
    hits: Tensor,
}

impl Acc {
    fn new(device: tch::Device) -> Acc {
        let z = |n: i64| Tensor::zeros([n], (Kind::Double, device));
        Acc {
            nll: z(1),
            correct: z(1),
            count: z(ECE_BINS),
            conf: z(ECE_BINS),
            hits: z(ECE_BINS),
        }
    }

    fn add(&mut self, logits: &Tensor, labels: &Tensor) {
        let logp = logits.log_softmax(1, Kind::Float);
        let nll = -logp
            .gather(1, &labels.unsqueeze(1), false)
            .sum(Kind::Double);
        let (maxlogp, pred) = logp.max_dim(1, false);
        let conf = maxlogp.exp().to_kind(Kind::Double);
        let correct = pred.eq_tensor(labels).to_kind(Kind::Double);
        let idx = bin_index(&conf);
        self.nll += nll.view([1]);
        self.correct += correct.sum(Kind::Double).view([1]);
        self.count += idx.bincount::<Tensor>(None, ECE_BINS).to_kind(Kind::Double);
        self.conf += idx.bincount(Some(&conf), ECE_BINS).to_kind(Kind::Double);
        self.hits += idx.bincount(Some(&correct), ECE_BINS).to_kind(Kind::Double);
    }

    fn finish(self, n: i64) -> anyhow::Result<Stats> {
        let v = |t: &Tensor| Vec::<f64>::try_from(t.to_device(tch::Device::Cpu));
        let bins = bins_from_sums(&v(&self.count)?, &v(&self.conf)?, &v(&self.hits)?);
        let n_f = n.max(1) as f64;
        let one = |t: &Tensor| -> anyhow::Result<f64> {
            Ok(t.to_device(tch::Device::Cpu).f_double_value(&[0])?)
        };
        let nll = one(&self.nll)? / n_f;
        if !nll.is_finite() {
            anyhow::bail!(
                "a network's loss on {n} images is {nll} (not a number a network can have): its logits overflow or are NaN, so its weights or its input normalisation cannot be right; check the checkpoints it was made from"
            );
        }
        Ok(Stats {
            nll,
            acc: 100.0 * one(&self.correct)? / n_f,
            ece: ece_from_bins(&bins),
            bins,
            n,
        })
    }
}

/// Evaluates parameter sets of one architecture on one dataset.
pub struct Evaluator<'a> {
    pub model: &'a Model,
    pub data: &'a Data,
    pub rt: &'a Runtime,
}

impl Evaluator<'_> {
    /// Inputs for images `[start, start+len)` of a split.
    fn batch(&self, split: &Split, start: i64, len: i64) -> anyhow::Result<(Tensor, Tensor)> {
        self.data
            .batch_range(split, start, len, self.rt.channels_last)
    }

    /// Batches of `eval_batch / k` images for stacks of k models, so the
    /// activations of a stacked pass stay the size of one plain batch (and
    /// in cache).
    fn batches(&self, split: &Split, models: usize) -> impl Iterator<Item = (i64, i64)> {
        self.batches_of_at_least(split, models, 1)
    }

    /// Batches of at least `min` examples (the last may be shorter).
    fn batches_of_at_least(
        &self,
        split: &Split,
        models: usize,
        min: i64,
    ) -> impl Iterator<Item = (i64, i64)> {
        let n = split.len();
        let k = self.stack_size().min(models.max(1)) as i64;
        let b = (self.rt.eval_batch / k)
            .max(32.min(self.rt.eval_batch))
            .max(min);
        (0..n).step_by(b as usize).map(move |s| (s, b.min(n - s)))
    }

    /// Batches of the BatchNorm re-estimate: the evaluation batches, but
    /// never fewer than 32 examples (batch statistics of one example are
    /// meaningless, whatever `--eval-batch-size` says).
    fn bn_batches(&self, models: usize) -> impl Iterator<Item = (i64, i64)> {
        self.batches_of_at_least(&self.data.train, models, 32)
    }

    /// Models per stacked pass: `rt.stack`, or 1 for a TorchScript network
    /// (which runs one parameter set at a time).
    fn stack_size(&self) -> usize {
        if self.model.is_script() {
            1
        } else {
            self.rt.stack.max(1) as usize
        }
    }

    /// The parameter sets in stacks of at most `rt.stack` models each.
    fn stacks(&self, params: &[Params]) -> Vec<(usize, i64, Params)> {
        let s = self.stack_size();
        params
            .chunks(s)
            .enumerate()
            .map(|(c, ch)| {
                (
                    c * s,
                    ch.len() as i64,
                    if ch.len() == 1 {
                        ch[0].shallow_clone()
                    } else {
                        Params::stack(ch)
                    },
                )
            })
            .collect()
    }

    /// Logits `[B, k, classes]` of a stack for one input batch.
    fn stack_logits(
        &self,
        stacked: &Params,
        k: i64,
        x: &Tensor,
        mode: BnMode,
    ) -> anyhow::Result<Tensor> {
        self.model
            .forward_stacked(stacked, k, x, mode, self.rt.precision)
    }

    /// Model-batches (one model on one batch) that [`Evaluator::evaluate`]
    /// of `models` parameter sets on `split` runs: the unit of progress.
    pub fn work(&self, split: &Split, models: usize) -> u64 {
        (self.batches(split, models).count() * models) as u64
    }

    /// Model-batches of [`Evaluator::update_bn`] (0 without BatchNorm).
    pub fn bn_work(&self, models: usize) -> u64 {
        if self.model.has_bn {
            (self.bn_batches(models).filter(|(_, len)| *len >= 2).count() * models) as u64
        } else {
            0
        }
    }

    /// Re-estimates BatchNorm running statistics of every parameter set with
    /// one shared pass over the training split (no-op without BatchNorm).
    pub fn update_bn(&self, params: &[Params]) -> anyhow::Result<()> {
        self.update_bn_ticking(params, &mut |_| {})
    }

    /// [`Evaluator::update_bn`], calling `tick(models)` after each batch.
    pub fn update_bn_ticking(
        &self,
        params: &[Params],
        tick: &mut dyn FnMut(u64),
    ) -> anyhow::Result<()> {
        if !self.model.has_bn || params.is_empty() {
            return Ok(());
        }
        let _g = tch::no_grad_guard();
        let stacks = self.stacks(params);
        for (_, _, p) in &stacks {
            for (name, t) in p.iter() {
                if name.ends_with("running_mean") || name.ends_with("num_batches_tracked") {
                    drop(t.shallow_clone().f_zero_()?);
                } else if name.ends_with("running_var") {
                    drop(t.shallow_clone().f_fill_(1.0)?);
                }
            }
        }
        let mut seen = 0i64;
        for (s, len) in self.bn_batches(params.len()) {
            if len < 2 {
                continue; // batch statistics need two examples
            }
            let (x, _) = self.batch(&self.data.train, s, len)?;
            let momentum = len as f64 / (seen + len) as f64;
            for (_, k, p) in &stacks {
                let _ = self.stack_logits(p, *k, &x, BnMode::Train(Some(momentum)))?;
            }
            seen += len;
            tick(params.len() as u64);
        }
        if seen == 0 {
            anyhow::bail!(
                "cannot re-estimate BatchNorm statistics on {} training image(s): at least 2 are needed (raise --train-subset)",
                self.data.train.len()
            );
        }
        // Write the statistics back into each model's own tensors.
        for (first, k, p) in &stacks {
            if *k == 1 {
                continue;
            }
            for (i, one) in p.unstack(*k).iter().enumerate() {
                for (name, t) in one.iter() {
                    if !self.model.is_weight(name) {
                        let mut dst = params[first + i].get(name).shallow_clone();
                        dst.f_copy_(t)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Loss/accuracy/calibration of every parameter set on `split`; with
    /// `keep_logits`, also each model's logits `[N, C]` (on the CPU).
    pub fn evaluate(
        &self,
        params: &[Params],
        split: &Split,
        keep_logits: bool,
    ) -> anyhow::Result<(Vec<Stats>, Vec<Tensor>)> {
        self.evaluate_ticking(params, split, keep_logits, &mut |_| {})
    }

    /// [`Evaluator::evaluate`], calling `tick(models)` after each batch.
    pub fn evaluate_ticking(
        &self,
        params: &[Params],
        split: &Split,
        keep_logits: bool,
        tick: &mut dyn FnMut(u64),
    ) -> anyhow::Result<(Vec<Stats>, Vec<Tensor>)> {
        let _g = tch::no_grad_guard();
        let mut accs: Vec<Acc> = params.iter().map(|_| Acc::new(self.rt.device)).collect();
        let mut kept: Vec<Vec<Tensor>> = params.iter().map(|_| Vec::new()).collect();
        let stacks = self.stacks(params);
        for (s, len) in self.batches(split, params.len()) {
            let (x, y) = self.batch(split, s, len)?;
            // Cast once for every model of the group, not in each forward.
            let x = x.to_kind(self.rt.precision.compute_kind());
            for (first, k, p) in &stacks {
                let all = self.stack_logits(p, *k, &x, BnMode::Eval)?;
                for i in 0..*k as usize {
                    let logits = all.select(1, i as i64);
                    accs[first + i].add(&logits, &y);
                    if keep_logits {
                        kept[first + i].push(logits.to_device(tch::Device::Cpu));
                    }
                }
            }
            tick(params.len() as u64);
        }
        let n = split.len();
        let stats = accs
            .into_iter()
            .map(|a| a.finish(n))
            .collect::<anyhow::Result<_>>()?;
        let logits = if keep_logits {
            kept.into_iter().map(|l| Tensor::cat(&l, 0)).collect()
        } else {
            Vec::new()
        };
        Ok((stats, logits))
    }

    /// How many parameter sets to hold at once so that their copies stay
    /// under `budget_bytes`.
    pub fn group_size(&self, budget_bytes: i64) -> usize {
        let per = self
            .model
            .spec
            .iter()
            .map(|s| s.shape.iter().product::<i64>() * 4)
            .sum::<i64>()
            .max(1);
        ((budget_bytes / per).max(1)) as usize
    }
}

/// Bytes of parameter copies a sweep may hold at once.
pub const GROUP_BUDGET: i64 = 768 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArchConfig, ArchKind};

    fn running_mean(model: &Model, p: &Params) -> Tensor {
        let name = model
            .spec
            .iter()
            .find(|s| s.name.ends_with("running_mean"))
            .map(|s| s.name.clone())
            .unwrap();
        p.get(&name).copy()
    }

    #[test]
    fn batchnorm_is_re_estimated_whatever_the_evaluation_batch() {
        let data = crate::loader::toy_data(40, 32, 32, 3, vec![0.5; 3], vec![0.25; 3]);
        let mut cfg = ArchConfig::new(ArchKind::Vgg16Bn, 3, 3, 32, 32);
        cfg.widen = 25;
        let model = Model::new(cfg).unwrap();
        tch::manual_seed(5);
        let p0 = model.init(tch::Device::Cpu);
        let mut means = Vec::new();
        for eval_batch in [1, 64] {
            let rt = Runtime {
                eval_batch,
                ..Runtime::cpu()
            };
            let ev = Evaluator {
                model: &model,
                data: &data,
                rt: &rt,
            };
            let p = p0.map(|_, t| t.copy());
            ev.update_bn(std::slice::from_ref(&p)).unwrap();
            means.push(running_mean(&model, &p));
        }
        // Reset statistics are zeros; estimated ones are not.
        assert!(means[0].abs().max().double_value(&[]) > 1e-3);
        // The running mean is the mean over all images, however they are batched.
        let diff = (&means[0] - &means[1]).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "eval batch 1 vs 64: {diff}");
    }

    #[test]
    fn batchnorm_on_a_single_training_image_is_an_error_not_garbage() {
        let data = crate::loader::toy_data(1, 32, 32, 3, vec![0.5; 3], vec![0.25; 3]);
        let mut cfg = ArchConfig::new(ArchKind::Vgg16Bn, 3, 3, 32, 32);
        cfg.widen = 25;
        let model = Model::new(cfg).unwrap();
        let rt = Runtime::cpu();
        let ev = Evaluator {
            model: &model,
            data: &data,
            rt: &rt,
        };
        let p = model.init(tch::Device::Cpu);
        let e = ev
            .update_bn(std::slice::from_ref(&p))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at least 2") && e.contains("--train-subset"),
            "{e}"
        );
    }
}
