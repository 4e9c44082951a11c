//! Training: one trainer for every kind of training.
//!
//! [`Trainer::run`] owns the epoch loop: seeding each epoch from (seed,
//! epoch), the learning-rate schedule, the NaN guard, the test pass, the log,
//! the commit order of the files and the epoch event. What differs between
//! an endpoint ([`endpoints`]) and a curve ([`curve`]) is a [`Job`]: its
//! trainable tensors, the parameters of each batch (an endpoint's own; a
//! curve's φ(t) at a random t, plus its L2 term), the test pass and what it
//! saves. The trainer owns resume ([`resume`]): the saved state is read,
//! refused without `--resume` and checked before anything is written. One
//! network job ([`network`]) serves endpoints and FGE alike.

pub mod batch;
pub mod curve;
pub mod endpoint_shards;
pub mod endpoints;
pub mod fge;
pub mod network;
pub mod resume;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use tch::Tensor;

pub use batch::{epoch_seed, Loop};
pub use resume::{SavedState, Start, Step};

use crate::checkpoint;
use crate::config::DropoutSchedule;
use crate::eval::{Evaluator, Stats};
use crate::loader::{Data, DataConfig};
use crate::model::{BnMode, Model};
use crate::observe::{Event, Progress};
use crate::optim::{lr_at, OptimConfig, Optimizer, Schedule};
use crate::runtime::Runtime;
use crate::schema::{append_log, EpochLog};

/// What one kind of training plugs into the [`Trainer`].
pub trait Job {
    /// The name in logs and events: start_model, end_model, model_<i>, curve.
    fn label(&self) -> &str;
    /// The folder that receives log.jsonl, the model and the resume state.
    fn dir(&self) -> &Path;
    /// The seed each epoch's RNG is derived from.
    fn seed(&self) -> u64;
    /// The trainable tensors and their names (the optimiser's state keys).
    fn leaves(&self) -> (&[String], &[Tensor]);
    /// The parameters for one batch and an extra loss term.
    fn batch(&self) -> Vec<(crate::model::Params, Option<Tensor>)>;
    /// Test metrics after an epoch, and the t they were taken at (curves).
    fn test(&self, ev: &Evaluator) -> Result<(Stats, Option<f64>)>;
    /// Writes the model file, then the resume state: the state is the commit
    /// point, and `--resume` redoes (bit for bit) an epoch whose state was
    /// not written.
    fn save(&self, epochs_done: usize, opt: &Optimizer) -> Result<()>;
}

/// The model and the data a step works on, on a runtime.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub model: &'a Model,
    pub data: &'a Data,
    pub dcfg: &'a DataConfig,
    pub rt: &'a Runtime,
}

/// How long and how fast a job trains.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    pub epochs: usize,
    pub optim: OptimConfig,
    pub rate: Rate,
}

/// How the learning rate moves.
#[derive(Clone, Copy, Debug)]
pub enum Rate {
    /// Once per epoch, from `optim.lr` along a schedule.
    Schedule(Schedule),
    /// Fast Geometric Ensembling's cycle of `cycle` epochs, set at every
    /// batch: `lr1` at the ends of each cycle, `lr2` in its middle.
    Cyclic { cycle: usize, lr1: f64, lr2: f64 },
}

impl EpochPlan {
    /// The learning rate of batch `i` of `per_epoch` in `epoch` (0-based).
    pub fn lr(&self, epoch: usize, i: usize, per_epoch: u64) -> f64 {
        match self.rate {
            Rate::Schedule(s) => lr_at(s, self.optim.lr, epoch, self.epochs),
            Rate::Cyclic { cycle, lr1, lr2 } => cyclic_lr(epoch, i, per_epoch, cycle, lr1, lr2),
        }
    }
}

/// The reference implementation's `cyclic_learning_rate`: with
/// t = ((epoch mod c) + i / iters) / c, lr1·(1 − 2t) + lr2·2t for t < 0.5,
/// else lr1·(2t − 1) + lr2·(2 − 2t).
pub fn cyclic_lr(epoch: usize, i: usize, iters: u64, cycle: usize, lr1: f64, lr2: f64) -> f64 {
    let c = cycle.max(1) as f64;
    let t = ((epoch % cycle.max(1)) as f64 + i as f64 / iters.max(1) as f64) / c;
    if t < 0.5 {
        lr1 * (1.0 - 2.0 * t) + lr2 * 2.0 * t
    } else {
        lr1 * (2.0 * t - 1.0) + lr2 * (2.0 - 2.0 * t)
    }
}

/// How a trainer batches the training split.
#[derive(Clone, Copy, Debug)]
pub struct Batches {
    pub batch_size: i64,
    pub augment: bool,
    /// BatchNorm behaviour while training (batch statistics; networks also
    /// track running statistics with momentum 0.1).
    pub bn: BnMode,
}

/// The seed streams of the kinds of training: each draws its batch order
/// (and a curve its t) from the recipe's seed plus its own offset, so that a
/// curve or an FGE run with the endpoints' seed does not replay an
/// endpoint's batches (endpoint i takes seed + i).
pub mod stream {
    pub const CURVE: u64 = 7_000;
    pub const FGE: u64 = 9_000;
}

/// The epoch engine.
pub struct Trainer<'a> {
    cx: Context<'a>,
    batches: Batches,
    /// The network trained from each epoch (0-based) on: the context's own
    /// (None) or the same architecture at another dropout. Evaluation always
    /// uses the context's network.
    phases: Vec<(usize, Option<Model>)>,
}

impl<'a> Trainer<'a> {
    /// A trainer of `epochs` epochs on `cx`, its dropout following `dropout`.
    pub fn new(
        cx: &Context<'a>,
        batches: Batches,
        dropout: &DropoutSchedule,
        epochs: usize,
    ) -> Result<Trainer<'a>> {
        let phases = dropout
            .phases(epochs)
            .into_iter()
            .map(|(from, p)| Ok((from, cx.model.with_training_dropout(p)?)))
            .collect::<Result<_>>()?;
        Ok(Trainer {
            cx: *cx,
            batches,
            phases,
        })
    }

    /// The batch loop of `epoch`.
    fn lp(&self, epoch: usize) -> Loop<'_> {
        let model = self
            .phases
            .iter()
            .rev()
            .find(|(from, _)| *from <= epoch)
            .and_then(|(_, m)| m.as_ref())
            .unwrap_or(self.cx.model);
        Loop {
            model,
            data: self.cx.data,
            rt: self.cx.rt,
            batch_size: self.batches.batch_size,
            augment: self.batches.augment,
            bn: self.batches.bn,
        }
    }

    /// Refuses a training split too small for one batch (`what` names the step).
    pub fn ensure_batches(&self, what: &str) -> Result<()> {
        self.lp(0).ensure_batches(what)
    }

    pub fn batches_per_epoch(&self) -> u64 {
        self.lp(0).batches_per_epoch()
    }
}

impl Trainer<'_> {
    /// Trains `job` from `start` (epoch 0, or the epoch a saved state
    /// holds, with its optimiser buffers) to `plan.epochs`.
    pub fn run(
        &self,
        job: &dyn Job,
        plan: &EpochPlan,
        start: Start,
        prog: &mut Progress,
    ) -> Result<()> {
        self.ensure_batches(job.label())?;
        let per_epoch = self.batches_per_epoch();
        let Start {
            epoch: start_epoch,
            optim: saved_optim,
        } = start;
        if start_epoch >= plan.epochs {
            prog.inc(plan.epochs as u64 * per_epoch);
            crate::observe::note(
                prog.observer(),
                format!(
                    "{}: complete ({} epochs), skipped",
                    job.label(),
                    plan.epochs
                ),
            );
            return Ok(());
        }
        prog.inc(start_epoch as u64 * per_epoch);
        let (names, leaves) = job.leaves();
        let mut opt = Optimizer::new(plan.optim.clone(), leaves);
        if let Some(st) = saved_optim {
            let dev = self.cx.rt.device;
            let map: HashMap<String, Tensor> = st.into_iter().collect();
            opt.load_state(names, |k| map.get(k).map(|t| t.to_device(dev)))
                .with_context(|| {
                    format!(
                        "{}: the resume state is damaged; delete {} to start over",
                        checkpoint::state_file(job.dir()).display(),
                        job.dir().display()
                    )
                })?;
        }
        let ev = Evaluator {
            model: self.cx.model,
            data: self.cx.data,
            rt: self.cx.rt,
        };
        for epoch in start_epoch..plan.epochs {
            let started = Instant::now();
            tch::manual_seed(epoch_seed(job.seed(), epoch));
            let lr = plan.lr(epoch, 0, per_epoch);
            prog.set_message(format!(
                "{} epoch {}/{}",
                job.label(),
                epoch + 1,
                plan.epochs
            ));
            let mut batch = || job.batch();
            let rate = |i: usize| plan.lr(epoch, i, per_epoch);
            let (loss, acc) = self
                .lp(epoch)
                .epoch(leaves, &mut opt, &rate, &mut batch, prog)?;
            check_finite(loss, epoch + 1, job.label(), lr, job.dir())?;
            let (test, test_t) = job.test(&ev)?;
            let entry = EpochLog {
                epoch: epoch + 1,
                lr,
                train_loss: loss,
                train_acc: acc,
                test_loss: Some(test.nll),
                test_acc: Some(test.acc),
                test_t,
                seconds: started.elapsed().as_secs_f64(),
            };
            append_log(&job.dir().join("log.jsonl"), &entry)?;
            job.save(epoch + 1, &opt)?;
            prog.event(Event::Epoch {
                model: job.label().to_string(),
                log: entry,
            });
        }
        Ok(())
    }
}

/// A mean training loss above this is divergence, not learning.
pub const DIVERGED: f64 = 1e6;

/// Errors out on a non-finite or diverged loss, naming the epoch and the fix.
pub fn check_finite(loss: f64, epoch: usize, what: &str, lr: f64, kept: &Path) -> Result<()> {
    // A mean cross-entropy above 1e6 means logits of that size: the steps
    // blew the weights up (measured: FGE at lr 0.05 from an Adam-trained
    // network averaged 2e13 in its first epoch, then sat at chance).
    if !loss.is_finite() || loss > DIVERGED {
        let saved = checkpoint::state_file(kept);
        let kept = if saved.is_file() {
            format!("The last good checkpoint is kept in {}.", kept.display())
        } else {
            "No epoch had finished, so nothing was saved.".to_string()
        };
        bail!(
            "{what}: the training loss became {loss:.4e} in epoch {epoch} (lr {lr:.4}): training diverged. Try a lower --lr (e.g. {:.4}). {kept}",
            lr / 3.0,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finite_but_exploded_loss_counts_as_divergence() {
        let kept = Path::new("exp/fge");
        assert!(check_finite(10f64.ln(), 1, "fge", 0.05, kept).is_ok());
        assert!(check_finite(1e5, 1, "fge", 0.05, kept).is_ok());
        for bad in [1.9e13, f64::INFINITY, f64::NAN] {
            let err = check_finite(bad, 1, "fge", 0.05, kept)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("diverged") && err.contains("lower --lr"),
                "{err}"
            );
            // No epoch finished: no checkpoint is promised.
            assert!(
                err.contains("nothing was saved") && !err.contains("kept in"),
                "{err}"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(checkpoint::state_file(tmp.path()), b"x").unwrap();
        let err = check_finite(f64::NAN, 2, "fge", 0.05, tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("kept in {}", tmp.path().display())),
            "{err}"
        );
    }
}
