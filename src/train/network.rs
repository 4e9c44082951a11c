//! One network being trained, whatever it is for: an endpoint or a Fast
//! Geometric Ensembling run. Its own weights are the leaves; what differs is
//! which extra copies it keeps ([`Keep`]).

use std::path::{Path, PathBuf};

use anyhow::Result;
use tch::Tensor;

use super::{Context, Job};
use crate::checkpoint::{self, Meta};
use crate::eval::{Evaluator, Stats};
use crate::experiment::{self as xp};
use crate::model::{Model, Params};
use crate::optim::Optimizer;

/// Which copies of the network a run keeps besides its folder's model and
/// resume state.
pub enum Keep {
    /// A snapshot (model and resume state) every this many epochs in
    /// `<dir>/epoch-<n>/` (`--save-every`), or none.
    Snapshots(Option<usize>),
    /// The model at each learning-rate cycle's low point, as member k of an
    /// ensemble: `member(epoch)` gives the member's folder for an epoch
    /// (0-based) that ends at a low point.
    Members(Box<dyn Fn(usize) -> Option<PathBuf> + Sync + 'static>),
}

/// Where `--save-every` keeps the snapshot after `epoch` epochs.
pub fn snapshot_dir(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch}"))
}

/// A network's parameters made trainable: the weights become leaves that
/// require gradients (returned with their names, in spec order); buffers
/// stay shared, for BatchNorm to update in place.
pub fn trainable(model: &Model, params: &Params) -> (Params, Vec<String>, Vec<Tensor>) {
    let params = params.map(|n, t| {
        if model.is_weight(n) {
            t.detach().set_requires_grad(true)
        } else {
            t.shallow_clone()
        }
    });
    let names: Vec<String> = model.weight_names().map(str::to_string).collect();
    let leaves = names
        .iter()
        .map(|n| params.get(n).shallow_clone())
        .collect();
    (params, names, leaves)
}

/// One network being trained.
pub struct NetworkJob<'a> {
    pub dir: PathBuf,
    pub label: String,
    pub seed: u64,
    /// The metadata note of every file it writes.
    pub note: String,
    pub keep: Keep,
    cx: Context<'a>,
    params: Params,
    names: Vec<String>,
    leaves: Vec<Tensor>,
}

impl<'a> NetworkJob<'a> {
    /// Trains `params` (prepared for the context's runtime) in `dir`.
    pub fn new(
        dir: PathBuf,
        label: &str,
        seed: u64,
        params: &Params,
        cx: &Context<'a>,
        keep: Keep,
        note: String,
    ) -> NetworkJob<'a> {
        let (params, names, leaves) = trainable(cx.model, params);
        NetworkJob {
            dir,
            label: label.to_string(),
            seed,
            note,
            keep,
            cx: *cx,
            params,
            names,
            leaves,
        }
    }

    fn meta(&self, epoch: usize) -> Meta {
        let mut m = xp::meta_for(&self.cx.model.cfg, self.cx.data, self.cx.dcfg, epoch);
        m.note = self.note.clone();
        m
    }
}

impl Job for NetworkJob<'_> {
    fn label(&self) -> &str {
        &self.label
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn leaves(&self) -> (&[String], &[Tensor]) {
        (&self.names, &self.leaves)
    }
    fn batch(&self) -> Vec<(Params, Option<Tensor>)> {
        vec![(self.params.shallow_clone(), None)]
    }
    fn test(&self, ev: &Evaluator) -> Result<(Stats, Option<f64>)> {
        let (mut test, _) = ev.evaluate(
            std::slice::from_ref(&self.params),
            &self.cx.data.test,
            false,
        )?;
        Ok((test.swap_remove(0), None))
    }
    /// What the run keeps, each file atomically: with snapshots, the
    /// snapshot (model and resume state) when one is due, then the clean
    /// PyTorch state dict of its folder; with members, the member (as
    /// trained, with the running BatchNorm statistics) at a cycle's low
    /// point. Then the folder's resume state, the commit point.
    fn save(&self, epochs_done: usize, opt: &Optimizer) -> Result<()> {
        let meta = self.meta(epochs_done);
        let mut state = self.params.to_state_dict();
        state.extend(opt.state(&self.names));
        let model =
            |d: &Path| checkpoint::save_model(&checkpoint::model_file(d), &self.params, &meta);
        match &self.keep {
            Keep::Snapshots(every) => {
                if every.is_some_and(|k| epochs_done.is_multiple_of(k)) {
                    let d = snapshot_dir(&self.dir, epochs_done);
                    model(&d)?;
                    checkpoint::write_tensors(&checkpoint::state_file(&d), &state, Some(&meta))?;
                }
                model(&self.dir)?;
            }
            Keep::Members(member) => {
                if let Some(d) = member(epochs_done - 1) {
                    model(&d)?;
                }
            }
        }
        checkpoint::write_tensors(&checkpoint::state_file(&self.dir), &state, Some(&meta))
    }
}
