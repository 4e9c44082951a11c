//! Endpoints: independent networks from seeds s, s+1, ... (the curve's ends).

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::network::{trainable, Keep, NetworkJob};
use super::{Batches, Context, EpochPlan, SavedState, Start, Step, Trainer};
use crate::config::TrainConfig;
use crate::experiment::{self as xp};
use crate::model::{BnMode, Params};
use crate::observe::{Observer, Progress};
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
    tcfg.validate()?;
    let mine = shard.units(tcfg.models);
    check_existing(exp, cx, tcfg, resume, &mine)?;
    if resume && !shard.is_whole() {
        endpoint_shards::ensure_resumable(exp, shard, cx.dcfg, &cx.model.cfg, tcfg)?;
    }
    let batches = Batches {
        batch_size: tcfg.batch_size,
        augment: tcfg.augment,
        bn: BnMode::Train(Some(0.1)),
    };
    let trainer = Trainer::new(cx, batches, &tcfg.dropout_schedule(), tcfg.epochs)?;
    // Checked before the first write, like everything else.
    trainer.ensure_batches("endpoints")?;
    let mut part = None;
    if shard.is_whole() {
        xp::write_section(exp, "arch", &cx.model.cfg)?;
        step(exp).record(tcfg, cx, obs)?;
    } else {
        part = Some(endpoint_shards::start(exp, shard, cx, tcfg, obs)?);
    }
    let plan = EpochPlan {
        epochs: tcfg.epochs,
        optim: tcfg.optim.clone(),
        rate: super::Rate::Schedule(tcfg.schedule),
    };
    let total = mine.len() as u64 * tcfg.epochs as u64 * trainer.batches_per_epoch();
    let mut prog = Progress::new(obs, "endpoints", total);
    let mut dirs = Vec::new();
    for i in mine {
        let dir = xp::endpoint_dir(exp, i, tcfg.models);
        let seed = tcfg.seed + i as u64;
        let (params, start) = starting_point(&dir, seed, cx)?;
        let label = dir
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let note = format!("endpoint trained by modeconn, seed {seed}");
        let keep = Keep::Snapshots(tcfg.save_every);
        let job = NetworkJob::new(dir.clone(), &label, seed, &params, cx, keep, note);
        trainer.run(&job, &plan, start, &mut prog)?;
        if let Some(p) = part.as_mut() {
            endpoint_shards::finished(exp, p, i)?;
        }
        dirs.push(dir);
    }
    prog.finish();
    Ok(dirs)
}

/// The endpoints as config.json records them (section `train`).
fn step(exp: &Path) -> Step<'_> {
    Step {
        exp,
        section: "train",
        what: "a run",
    }
}

/// A fresh network from `seed`, or the one saved in `dir` (checked before
/// the first write by [`check_existing`]) with where it stopped.
fn starting_point(dir: &Path, seed: u64, cx: &Context) -> Result<(Params, Start)> {
    let (model, rt) = (cx.model, cx.rt);
    if let Some(st) = SavedState::read(dir)? {
        let p = st.network(model)?;
        return Ok((model.prepare(&p, rt.device, rt.channels_last), st.start()));
    }
    tch::manual_seed(seed as i64);
    let params = model.prepare(&model.init(rt.device), rt.device, rt.channels_last);
    Ok((params, Start::default()))
}

/// Refuses, before anything is written, an existing run without `resume`
/// and a resume with other settings or a damaged state (so a refused
/// command changes nothing).
fn check_existing(
    exp: &Path,
    cx: &Context,
    tcfg: &TrainConfig,
    resume: bool,
    mine: &[usize],
) -> Result<()> {
    let step = step(exp);
    let mut saved = Vec::new();
    for &i in mine {
        let dir = xp::endpoint_dir(exp, i, tcfg.models);
        if step.refuse_without_resume(&dir, resume)? {
            saved.push(dir);
        }
    }
    if !saved.is_empty() {
        step.check_settings(tcfg, cx)?;
        for dir in saved {
            if let Some(st) = SavedState::read(&dir)? {
                let (_, names, leaves) = trainable(cx.model, &st.network(cx.model)?);
                st.check_optim(&tcfg.optim, &names, &leaves)?;
            }
        }
    }
    Ok(())
}
