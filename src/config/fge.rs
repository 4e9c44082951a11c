//! The settings of Fast Geometric Ensembling.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{default_augment, is_sgd, sgd, DropoutSchedule};
use crate::model::Precision;
use crate::optim::OptimKind;

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
    /// FGE's dropout while training (`--dropout`, else the network's).
    pub fn dropout_schedule(&self) -> DropoutSchedule {
        DropoutSchedule {
            dropout: self.dropout,
            last: None,
        }
    }

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
