//! The settings of each step, typed, with their defaults in one place and
//! their rules in `validate()`. The command line, presets and library users
//! all build these; config.json stores them.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::curve::CurveKind;
use crate::data::DatasetKind;
use crate::loader::Normalize;
use crate::model::{ArchKind, Precision};
use crate::optim::{OptimConfig, OptimKind, Schedule};

mod eval;
pub use eval::*;

/// What a command asks of the data; unset fields come from the experiment
/// or a checkpoint, then from defaults (see `experiment::data_config`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataRequest {
    pub dataset: Option<DatasetKind>,
    pub data_dir: Option<PathBuf>,
    pub normalize: Option<Normalize>,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
}

/// What a command asks of the architecture; unset fields come from a
/// checkpoint or the architecture's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchRequest {
    pub arch: Option<ArchKind>,
    pub depth: Option<i64>,
    pub widen: Option<i64>,
    pub dropout: Option<f64>,
    /// The TorchScript archive (`--model-file`); implies `--arch torchscript`.
    pub model_file: Option<std::path::PathBuf>,
}

/// Everything that determines an endpoint run (the `train` section of config.json).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub models: usize,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: i64,
    pub optim: OptimConfig,
    pub schedule: Schedule,
    pub augment: bool,
    pub precision: Precision,
    /// Keep a snapshot (model and resume state) every this many epochs in
    /// `<model>/epoch-<n>/`, e.g. for Fast Geometric Ensembling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_every: Option<usize>,
    /// Another dropout for the last epochs (`--final-dropout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_dropout: Option<FinalDropout>,
}

/// Dropout `dropout` for the last `epochs` epochs of an endpoint's training.
/// Measured on the seed recipe (docs/RESULTS.md §2): its networks underfit at
/// 0.5, and their last 20 of 100 epochs at 0.35 added about half a point to the
/// weakest (at 0.4, 0.35 points).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinalDropout {
    pub dropout: f64,
    pub epochs: usize,
}

impl FinalDropout {
    /// Dropout `dropout` for the last `epochs` of `total` epochs, by default
    /// the last fifth (at least one).
    pub fn last(dropout: f64, epochs: Option<usize>, total: usize) -> FinalDropout {
        FinalDropout {
            dropout,
            epochs: epochs.unwrap_or((total / 5).max(1)),
        }
    }

    /// The first epoch (0-based) at the final dropout, for `total` epochs.
    pub fn from_epoch(&self, total: usize) -> usize {
        total.saturating_sub(self.epochs)
    }
}

impl TrainConfig {
    /// The defaults for `arch` on data with `channels` channels.
    pub fn defaults(arch: ArchKind, channels: i64) -> TrainConfig {
        TrainConfig {
            models: 2,
            seed: 1,
            epochs: 10,
            batch_size: 128,
            optim: OptimConfig {
                kind: OptimKind::Sgd,
                lr: default_lr(arch),
                momentum: 0.9,
                nesterov: false,
                wd: 5e-4,
            },
            schedule: Schedule::Reference,
            augment: default_augment(channels),
            precision: Precision::Fp32,
            save_every: None,
            final_dropout: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs < 1 {
            bail!(
                "--epochs must be at least 1 for train-endpoints (0 would train and save nothing)"
            );
        }
        if self.save_every == Some(0) {
            bail!("--save-every must be at least 1 (epochs between snapshots)");
        }
        if let Some(f) = self.final_dropout {
            crate::model::check_dropout(f.dropout).map_err(|_| {
                anyhow::anyhow!("--final-dropout must be in [0, 1), got {}", f.dropout)
            })?;
            if f.epochs < 1 || f.epochs > self.epochs {
                bail!(
                    "--final-epochs must be between 1 and --epochs ({}), got {}",
                    self.epochs,
                    f.epochs
                );
            }
        }
        if self.models < 1 {
            bail!("--models must be at least 1");
        }
        if self.batch_size < 1 {
            bail!("--batch-size must be at least 1");
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            bail!("--lr must be a positive number, got {}", self.optim.lr);
        }
        let wd_ok = self.optim.wd >= 0.0 && self.optim.wd.is_finite();
        if !wd_ok || !(0.0..1.0).contains(&self.optim.momentum) {
            bail!("--wd must be >= 0 and --momentum in [0, 1)");
        }
        Ok(())
    }
}

/// Default endpoint learning rate: 0.05 for VGG (the reference
/// implementation's; plain VGG16 diverges at 0.1), 0.1 otherwise (measured:
/// seed-convnet reaches 90.75% on Fashion-MNIST in 10 epochs at 0.1, 89.2%
/// in 8 at 0.05).
pub fn default_lr(arch: ArchKind) -> f64 {
    match arch {
        ArchKind::Vgg16 | ArchKind::Vgg16Bn => 0.05,
        _ => 0.1,
    }
}

/// Augmentation default: on for RGB (CIFAR-like) data, off for the MNISTs.
pub fn default_augment(channels: i64) -> bool {
    channels == 3
}

/// Default normalisation: none for the seed's ConvNet (its checkpoints
/// expect pixels/255), per-channel standardisation otherwise.
pub fn default_normalize(arch: ArchKind) -> Normalize {
    match arch {
        ArchKind::SeedConvnet => Normalize::None,
        _ => Normalize::Standard,
    }
}

/// The `curve` section of config.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CurveConfig {
    pub kind: CurveKind,
    pub bends: usize,
    pub epochs: usize,
    pub batch_size: i64,
    pub lr: f64,
    pub momentum: f64,
    pub wd: f64,
    pub schedule: Schedule,
    pub seed: u64,
    pub augment: bool,
    pub start: PathBuf,
    pub end: PathBuf,
    pub init_bends: Vec<(usize, PathBuf)>,
    pub precision: Precision,
    /// The optimiser of the bends: SGD with momentum (the reference
    /// implementation's) or Adam.
    #[serde(default = "sgd", skip_serializing_if = "is_sgd")]
    pub optimizer: OptimKind,
    /// Values of t per batch: the batch is split into this many equal
    /// groups, group i evaluated at a t drawn from [i/K, (i+1)/K)
    /// (stratified sampling of E_t, lower variance); 1 is the paper's one t
    /// per batch.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub t_per_batch: usize,
    /// Dropout while fitting (None: the endpoints' architecture's). The seed
    /// experiment's curve trains at 0.3 between endpoints trained at 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

// The paper's defaults are left out of config.json, so experiments made
// before these options existed still match and resume.
fn sgd() -> OptimKind {
    OptimKind::Sgd
}

fn is_sgd(k: &OptimKind) -> bool {
    *k == OptimKind::Sgd
}

fn one() -> usize {
    1
}

fn is_one(k: &usize) -> bool {
    *k == 1
}

impl CurveConfig {
    /// The defaults for a curve between `start` and `end` on data with
    /// `channels` channels; `epochs` 0 imports a curve (no regulariser known,
    /// so wd 0).
    pub fn defaults(start: PathBuf, end: PathBuf, channels: i64, epochs: usize) -> CurveConfig {
        CurveConfig {
            kind: CurveKind::Bezier,
            bends: 3,
            epochs,
            batch_size: 128,
            lr: 0.015,
            momentum: 0.9,
            wd: if epochs == 0 { 0.0 } else { 5e-4 },
            schedule: Schedule::Reference,
            seed: 1,
            augment: default_augment(channels),
            start,
            end,
            init_bends: Vec::new(),
            precision: Precision::Fp32,
            optimizer: OptimKind::Sgd,
            t_per_batch: 1,
            dropout: None,
        }
    }

    /// The rules every curve fit obeys (`lr_flag` names the learning-rate
    /// flag in the user's command: `--lr` for fit-curve, `--curve-lr` for run).
    pub fn validate(&self, lr_flag: &str) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("{lr_flag} must be a positive number, got {}", self.lr);
        }
        if self.batch_size < 1 {
            bail!("--batch-size must be at least 1, got {}", self.batch_size);
        }
        if !(self.wd >= 0.0 && self.wd.is_finite()) {
            bail!("--wd must be >= 0, got {}", self.wd);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("--momentum must be in [0, 1), got {}", self.momentum);
        }
        if self.bends < 3 {
            bail!(bends_error(self.bends));
        }
        if self.t_per_batch < 1 || self.t_per_batch as i64 > self.batch_size {
            bail!(
                "--t-per-batch must be between 1 and the batch size ({}), got {}",
                self.batch_size,
                self.t_per_batch
            );
        }
        if let Some(p) = self.dropout {
            crate::model::check_dropout(p)?;
        }
        if let Some(k) = (1..self.init_bends.len())
            .find(|&i| {
                self.init_bends[..i]
                    .iter()
                    .any(|(k, _)| *k == self.init_bends[i].0)
            })
            .map(|i| self.init_bends[i].0)
        {
            bail!("--init-bend {k} is given twice; give each bend one file");
        }
        for (k, _) in &self.init_bends {
            if *k == 0 || k + 1 >= self.bends {
                bail!(
                    "--init-bend {k}: only inner bends 1..{} can be initialised (the endpoints are fixed)",
                    self.bends.saturating_sub(2)
                );
            }
        }
        Ok(())
    }
}

/// The error for fewer than 3 bends.
pub fn bends_error(bends: usize) -> String {
    format!("--bends must be at least 3 (the two endpoints and at least one free bend; 3 = quadratic Bezier), got {bends}")
}

/// The `fge` section of config.json: Fast Geometric Ensembling (Garipov et
/// al. 2018, the reference implementation's `fge.py`) from a trained network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FgeConfig {
    /// The starting network: a model file, or a folder holding one (with
    /// its resume state, whose momentum buffers FGE keeps).
    pub from: PathBuf,
    pub epochs: usize,
    /// Epochs per learning-rate cycle (even); one member per cycle.
    pub cycle: usize,
    /// The rate at the ends of each cycle.
    pub lr1: f64,
    /// The rate in the middle of each cycle, where members are taken.
    pub lr2: f64,
    /// SGD with momentum (the reference), or Adam for networks trained
    /// with Adam, whose moments it then keeps.
    #[serde(default = "sgd", skip_serializing_if = "is_sgd")]
    pub optimizer: OptimKind,
    pub momentum: f64,
    pub wd: f64,
    pub batch_size: i64,
    pub seed: u64,
    pub augment: bool,
    pub precision: Precision,
    /// Dropout while training (None: the starting network's architecture's).
    /// Members are evaluated without dropout, as every network is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

impl FgeConfig {
    /// The reference implementation's defaults: 20 epochs, cycle 4, lr1
    /// 0.05, lr2 1e-4, momentum 0.9, weight decay 1e-4, batch 128.
    pub fn defaults(from: PathBuf, channels: i64) -> FgeConfig {
        FgeConfig {
            from,
            epochs: 20,
            cycle: 4,
            lr1: 0.05,
            lr2: 1e-4,
            optimizer: OptimKind::Sgd,
            momentum: 0.9,
            wd: 1e-4,
            batch_size: 128,
            seed: 1,
            augment: default_augment(channels),
            precision: Precision::Fp32,
            dropout: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(p) = self.dropout {
            crate::model::check_dropout(p)?;
        }
        if self.cycle < 2 || !self.cycle.is_multiple_of(2) {
            bail!(
                "--cycle must be an even number of epochs (at least 2), got {}",
                self.cycle
            );
        }
        if self.epochs < self.cycle / 2 {
            bail!(
                "--epochs {} is shorter than half a cycle ({}): no member would be collected",
                self.epochs,
                self.cycle / 2
            );
        }
        for (flag, v) in [("--lr1", self.lr1), ("--lr2", self.lr2)] {
            if !(v > 0.0 && v.is_finite()) {
                bail!("{flag} must be a positive number, got {v}");
            }
        }
        let wd_ok = self.wd >= 0.0 && self.wd.is_finite();
        if !wd_ok || !(0.0..1.0).contains(&self.momentum) {
            bail!("--wd must be >= 0 and --momentum in [0, 1)");
        }
        if self.batch_size < 1 {
            bail!("--batch-size must be at least 1, got {}", self.batch_size);
        }
        Ok(())
    }

    /// Whether the epoch `epoch` (0-based) ends at a cycle's low point,
    /// where a member is taken (`epoch mod c + 1 == c / 2`).
    pub fn is_member_epoch(&self, epoch: usize) -> bool {
        epoch % self.cycle + 1 == self.cycle / 2
    }

    /// How many members `epochs` epochs collect.
    pub fn members(&self) -> usize {
        (0..self.epochs)
            .filter(|&e| self.is_member_epoch(e))
            .count()
    }
}

#[cfg(test)]
mod tests;
