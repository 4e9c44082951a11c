//! Endpoints: independent networks from seeds s, s+1, ... (the curve's ends).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::Tensor;

use super::{Context, EpochPlan, Job, Loop, SavedState, Trainer};
use crate::checkpoint::{self, Meta};
use crate::config::TrainConfig;
use crate::eval::{Evaluator, Stats};
use crate::experiment::{self as xp};
use crate::loader::{Data, DataConfig};
use crate::model::{BnMode, Model, Params};
use crate::observe::{Observer, Progress};
use crate::optim::Optimizer;
use crate::vocab::Shard;

use super::endpoint_shards;

/// Trains every endpoint of an experiment, or with a `shard` other than
/// [`Shard::WHOLE`] the endpoints i with i mod n = shard (see
/// [`super::endpoint_shards`]), resuming each from its saved state when
/// `resume`; returns their directories.
pub fn train_endpoints(
    exp: &Path,
    cx: &Context,
    tcfg: &TrainConfig,
    resume: bool,
    shard: Shard,
    obs: &dyn Observer,
) -> Result<Vec<PathBuf>> {
    let Context {
        model,
        data,
        dcfg,
        rt,
    } = *cx;
    tcfg.validate()?;
    let mine = shard.units(tcfg.models);
    check_existing(exp, model, dcfg, tcfg, resume, &mine)?;
    if resume && !shard.is_whole() {
        endpoint_shards::ensure_resumable(exp, shard, dcfg, &model.cfg, tcfg)?;
    }
    // The same network at the final dropout, for the last epochs.
    let late = match tcfg.final_dropout {
        Some(f) => model
            .with_training_dropout(Some(f.dropout))?
            .map(|m| (f.from_epoch(tcfg.epochs), m)),
        None => None,
    };
    let trainer = Trainer {
        lp: Loop {
            model,
            data,
            rt,
            batch_size: tcfg.batch_size,
            augment: tcfg.augment,
            bn: BnMode::Train(Some(0.1)),
        },
        late: late.as_ref().map(|(from, m)| (*from, m)),
    };
    // Checked before the first write, like everything else.
    trainer.lp.ensure_batches("endpoints")?;
    let mut part = None;
    if shard.is_whole() {
        xp::write_section(exp, "data", dcfg)?;
        xp::write_section(exp, "arch", &model.cfg)?;
        xp::record_runtime(exp, rt, model, obs)?;
        xp::write_section(exp, "train", tcfg)?;
    } else {
        part = Some(endpoint_shards::start(exp, shard, cx, tcfg, obs)?);
    }
    let plan = EpochPlan {
        epochs: tcfg.epochs,
        optim: tcfg.optim.clone(),
        rate: super::Rate::Schedule(tcfg.schedule),
    };
    let total = mine.len() as u64 * tcfg.epochs as u64 * trainer.lp.batches_per_epoch();
    let mut prog = Progress::new(obs, "endpoints", total);
    let mut dirs = Vec::new();
    for i in mine {
        let dir = xp::endpoint_dir(exp, i, tcfg.models);
        let mut job = EndpointJob::new(dir.clone(), tcfg.seed + i as u64, cx)?;
        job.save_every = tcfg.save_every;
        let start = job.start_epoch;
        let saved_optim = job.saved_optim.take();
        trainer.run(&job, &plan, start, saved_optim, &mut prog)?;
        if let Some(p) = part.as_mut() {
            endpoint_shards::finished(exp, p, i)?;
        }
        dirs.push(dir);
    }
    prog.finish();
    Ok(dirs)
}

/// Refuses, before anything is written, an existing run without `resume`
/// and a resume with other settings (so a refused command changes nothing).
fn check_existing(
    exp: &Path,
    model: &Model,
    dcfg: &DataConfig,
    tcfg: &TrainConfig,
    resume: bool,
    mine: &[usize],
) -> Result<()> {
    let mut resuming = false;
    for &i in mine {
        let dir = xp::endpoint_dir(exp, i, tcfg.models);
        let state = checkpoint::state_file(&dir);
        if !state.exists() {
            continue;
        }
        if !resume {
            let held = checkpoint::read_meta(&state)
                .ok()
                .flatten()
                .map(|m| format!(" of {} (epoch {})", m.arch.arch.name(), m.epoch))
                .unwrap_or_default();
            bail!(
                "{} already holds a run{held}. Pass --resume to continue it, or delete {} to start over.",
                dir.display(),
                dir.display()
            );
        }
        resuming = true;
    }
    if resuming {
        xp::ensure_resumable(exp, "train", tcfg, dcfg, &model.cfg, "endpoints")?;
        // Every saved state is read and checked now, before config.json is
        // touched: a damaged one is refused with the experiment unchanged.
        for &i in mine {
            let dir = xp::endpoint_dir(exp, i, tcfg.models);
            if let Some(st) = SavedState::read(&dir)? {
                let p = saved_params(&st, model)?;
                let (_, names, leaves) = trainable(model, &p);
                super::check_saved_optim(&tcfg.optim, &names, &leaves, &st.optim, &st.path)?;
            }
        }
    }
    Ok(())
}

/// Where `--save-every` keeps the snapshot after `epoch` epochs.
pub fn snapshot_dir(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch}"))
}

/// The network a saved state holds, checked against `model` (architecture,
/// every key and shape, finite values).
pub(super) fn saved_params(st: &SavedState, model: &Model) -> Result<Params> {
    if st.meta.arch != model.cfg {
        bail!(
            "{} was trained with a different architecture ({:?}); delete it or use another --exp",
            st.path.display(),
            st.meta.arch
        );
    }
    let order: Vec<String> = model.spec.iter().map(|s| s.name.clone()).collect();
    let p = checkpoint::in_order(
        st.tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        &order,
    );
    model.check(&p, &st.path.display().to_string())?;
    model.check_finite(&p, &st.path.display().to_string())?;
    Ok(p)
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

/// One endpoint being trained: its own weights are the leaves.
struct EndpointJob<'a> {
    dir: PathBuf,
    label: String,
    seed: u64,
    model: &'a Model,
    data: &'a Data,
    dcfg: &'a DataConfig,
    params: Params,
    names: Vec<String>,
    leaves: Vec<Tensor>,
    start_epoch: usize,
    saved_optim: Option<Vec<(String, Tensor)>>,
    save_every: Option<usize>,
}

impl<'a> EndpointJob<'a> {
    /// A fresh network from `seed`, or the one saved in `dir`.
    fn new(dir: PathBuf, seed: u64, cx: &Context<'a>) -> Result<EndpointJob<'a>> {
        let Context {
            model,
            data,
            dcfg,
            rt,
        } = *cx;
        let label = dir
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        tch::manual_seed(seed as i64);
        let mut params = model.prepare(&model.init(rt.device), rt.device, rt.channels_last);
        let mut start_epoch = 0;
        let mut saved_optim = None;
        if let Some(st) = SavedState::read(&dir)? {
            let p = saved_params(&st, model)?;
            params = model.prepare(&p, rt.device, rt.channels_last);
            start_epoch = st.meta.epoch;
            saved_optim = Some(st.optim);
        }
        let (params, names, leaves) = trainable(model, &params);
        Ok(EndpointJob {
            dir,
            label,
            seed,
            model,
            data,
            dcfg,
            params,
            names,
            leaves,
            start_epoch,
            saved_optim,
            save_every: None,
        })
    }

    fn meta(&self, epoch: usize) -> Meta {
        let mut m = xp::meta_for(&self.model.cfg, self.data, self.dcfg, epoch);
        m.note = format!("endpoint trained by modeconn, seed {}", self.seed);
        m
    }
}

impl Job for EndpointJob<'_> {
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
        let (mut test, _) =
            ev.evaluate(std::slice::from_ref(&self.params), &self.data.test, false)?;
        Ok((test.swap_remove(0), None))
    }
    /// The clean PyTorch state dict, then the resume state (weights, buffers,
    /// optimiser), each atomically.
    fn save(&self, epochs_done: usize, opt: &Optimizer) -> Result<()> {
        let meta = self.meta(epochs_done);
        let mut all = self.params.to_state_dict();
        all.extend(opt.state(&self.names));
        let mut dirs = vec![];
        if self
            .save_every
            .is_some_and(|k| epochs_done.is_multiple_of(k))
        {
            dirs.push(snapshot_dir(&self.dir, epochs_done));
        }
        dirs.push(self.dir.clone()); // last: its state is the commit point
        for d in dirs {
            checkpoint::save_model(&checkpoint::model_file(&d), &self.params, &meta)?;
            checkpoint::write_tensors(&checkpoint::state_file(&d), &all, Some(&meta))?;
        }
        Ok(())
    }
}
