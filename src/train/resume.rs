//! Resume, owned by the trainer: a job's folder holds a resume state (its
//! tensors, the optimiser's buffers and the epoch reached) as the commit
//! point of each epoch. Before anything is written, a run reads it, refuses
//! it without `--resume`, checks the step's settings against config.json,
//! and checks the saved network and optimiser against what will be trained,
//! so a refused command leaves the experiment as it was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use tch::Tensor;

use super::Context;
use crate::checkpoint::{self, Meta, NamedTensors};
use crate::experiment::{self as xp};
use crate::model::{Model, Params};
use crate::observe::Observer;
use crate::optim::{OptimConfig, Optimizer};

/// A resume state as saved by a job: its tensors (optimiser state apart)
/// and its metadata.
pub struct SavedState {
    pub path: PathBuf,
    pub tensors: Vec<(String, Tensor)>,
    pub optim: Vec<(String, Tensor)>,
    pub meta: Meta,
}

/// Where a run starts: epoch 0 with a fresh optimiser, or a saved epoch
/// with the optimiser's saved buffers.
#[derive(Default)]
pub struct Start {
    pub epoch: usize,
    pub optim: Option<NamedTensors>,
}

/// A training step as config.json records it: the section of its settings
/// and how errors name it ("an FGE run").
#[derive(Clone, Copy)]
pub struct Step<'a> {
    pub exp: &'a Path,
    pub section: &'a str,
    pub what: &'a str,
}

impl Step<'_> {
    /// The saved state in `dir`, if there is one: refused without `resume`,
    /// and with `resume` only when `settings` and the context's data and
    /// architecture are the ones config.json recorded for this step.
    pub fn saved<T: Serialize>(
        &self,
        dir: &Path,
        resume: bool,
        settings: &T,
        cx: &Context,
    ) -> Result<Option<SavedState>> {
        if !self.refuse_without_resume(dir, resume)? {
            return Ok(None);
        }
        self.check_settings(settings, cx)?;
        SavedState::read(dir)
    }

    /// Whether `dir` holds a saved state, refusing one without `resume`.
    pub fn refuse_without_resume(&self, dir: &Path, resume: bool) -> Result<bool> {
        let state = checkpoint::state_file(dir);
        if !state.exists() {
            return Ok(false);
        }
        if !resume {
            let held = checkpoint::read_meta(&state)
                .ok()
                .flatten()
                .map(|m| format!(" of {} (epoch {})", m.arch.arch.name(), m.epoch))
                .unwrap_or_default();
            bail!(
                "{} already holds {}{held}. Pass --resume to continue it, or delete {} to start over.",
                dir.display(),
                self.what,
                dir.display()
            );
        }
        Ok(true)
    }

    /// `--resume` continues a run with its own settings: refuses others.
    pub fn check_settings<T: Serialize>(&self, settings: &T, cx: &Context) -> Result<()> {
        xp::ensure_resumable(
            self.exp,
            self.section,
            settings,
            cx.dcfg,
            &cx.model.cfg,
            self.what,
        )
    }

    /// Records what the step runs with in config.json, once everything has
    /// been checked: its data (under the step's own key), its settings and
    /// the runtime (warning about the layout).
    pub fn record<T: Serialize>(
        &self,
        settings: &T,
        cx: &Context,
        obs: &dyn Observer,
    ) -> Result<()> {
        xp::write_section(self.exp, &xp::data_key(self.section), cx.dcfg)?;
        xp::write_section(self.exp, self.section, settings)?;
        xp::record_runtime(self.exp, cx.rt, cx.model, obs)
    }
}

impl SavedState {
    /// Reads `dir`'s state file, if there is one.
    pub fn read(dir: &Path) -> Result<Option<SavedState>> {
        let path = checkpoint::state_file(dir);
        if !path.exists() {
            return Ok(None);
        }
        let (tensors, meta) = checkpoint::read_tensors(&path)?;
        let meta = meta.ok_or_else(|| {
            anyhow!(
                "{} lacks metadata; delete {} to start over",
                path.display(),
                dir.display()
            )
        })?;
        let (optim, tensors) = tensors
            .into_iter()
            .partition(|(n, _)| n.starts_with("optim."));
        Ok(Some(SavedState {
            path,
            tensors,
            optim,
            meta,
        }))
    }

    /// The network the state holds, checked against `model` (architecture,
    /// every key and shape, finite values).
    pub fn network(&self, model: &Model) -> Result<Params> {
        if self.meta.arch != model.cfg {
            bail!(
                "{} was trained with a different architecture ({:?}); delete it or use another --exp",
                self.path.display(),
                self.meta.arch
            );
        }
        let order: Vec<String> = model.spec.iter().map(|s| s.name.clone()).collect();
        let p = checkpoint::in_order(
            self.tensors
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
            &order,
        );
        let origin = self.path.display().to_string();
        model.check(&p, &origin)?;
        model.check_finite(&p, &origin)?;
        Ok(p)
    }

    /// Checks the saved optimiser state against the tensors it will drive.
    pub fn check_optim(
        &self,
        optim: &OptimConfig,
        names: &[String],
        leaves: &[Tensor],
    ) -> Result<()> {
        check_saved_optim(optim, names, leaves, &self.optim, &self.path)
    }

    /// Where the run goes on: after the saved epoch, with the saved buffers.
    pub fn start(self) -> Start {
        Start {
            epoch: self.meta.epoch,
            optim: Some(self.optim),
        }
    }
}

/// Checks a saved optimiser state against the tensors it will drive
/// (every buffer present, of the right shape, finite) without changing
/// anything, so a damaged state is refused before the first write.
pub fn check_saved_optim(
    optim: &OptimConfig,
    names: &[String],
    leaves: &[Tensor],
    saved: &[(String, Tensor)],
    state: &Path,
) -> Result<()> {
    let probe: Vec<Tensor> = leaves.iter().map(|t| t.detach().zeros_like()).collect();
    let mut opt = Optimizer::new(optim.clone(), &probe);
    let map: HashMap<&str, &Tensor> = saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
    opt.load_state(names, |k| map.get(k).map(|t| t.shallow_clone()))
        .with_context(|| {
            format!(
                "{}: the resume state is damaged; delete its folder to start over",
                state.display()
            )
        })
}
