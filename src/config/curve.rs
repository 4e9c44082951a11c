//! The settings of a curve fit.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{default_augment, is_one, is_sgd, one, sgd, DropoutSchedule};
use crate::curve::CurveKind;
use crate::model::Precision;
use crate::optim::{OptimKind, Schedule};

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

impl CurveConfig {
    /// The curve's dropout while fitting (`--dropout`, else the endpoints').
    pub fn dropout_schedule(&self) -> DropoutSchedule {
        DropoutSchedule {
            dropout: self.dropout,
            last: None,
        }
    }

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
