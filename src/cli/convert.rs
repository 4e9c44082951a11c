//! The border: arguments into the library's typed configs (defaults from
//! the configs, overridden by the flags that were given).

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use super::args::{DataArgs, FgeArgs, FitCurveArgs, ModelArgs, OptimArgs, RuntimeArgs, TrainArgs};
use modeconn::config::{ArchRequest, CurveConfig, DataRequest, FgeConfig, TrainConfig};
use modeconn::model::{ArchKind, Precision};
use modeconn::optim::OptimKind;
use modeconn::runtime::{PrecisionChoice, Runtime};

impl DataArgs {
    pub fn request(&self) -> DataRequest {
        DataRequest {
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            normalize: self.normalize,
            train_subset: self.train_subset,
            test_subset: self.test_subset,
        }
    }
}

impl ModelArgs {
    pub fn request(&self) -> ArchRequest {
        ArchRequest {
            arch: self.arch,
            depth: self.depth,
            widen: self.widen,
            dropout: self.dropout,
            model_file: self.script.model_file.clone(),
        }
    }
}

impl RuntimeArgs {
    /// The runtime for these flags; `precision` when `--precision` is not given.
    pub fn runtime(&self, precision: PrecisionChoice) -> Result<Runtime> {
        Runtime::new(
            self.device,
            self.threads,
            self.precision.unwrap_or(precision),
            self.memory_format,
            self.eval_batch_size,
            self.stack_models,
        )
    }
}

/// The augmentation a command's `--augment` / `--no-augment` pair asks for, if any.
pub(super) fn augment_choice(augment: bool, no_augment: bool) -> Option<bool> {
    if no_augment {
        Some(false)
    } else {
        augment.then_some(true)
    }
}

impl OptimArgs {
    /// The augmentation asked for, if any.
    fn augment(&self) -> Option<bool> {
        augment_choice(self.augment, self.no_augment)
    }
}

impl TrainArgs {
    /// The endpoint config: the defaults for the architecture and data,
    /// overridden by the flags.
    pub fn config(&self, arch: ArchKind, channels: i64, precision: Precision) -> TrainConfig {
        let o = &self.optim;
        let mut c = TrainConfig::defaults(arch, channels);
        c.models = self.models;
        c.save_every = self.save_every;
        c.precision = precision;
        macro_rules! over {
            ($($dst:expr => $src:expr),*) => { $( if let Some(v) = $src { $dst = v; } )* };
        }
        over!(c.seed => o.seed, c.epochs => o.epochs, c.batch_size => o.batch_size,
              c.optim.kind => o.optimizer, c.optim.lr => o.lr, c.optim.momentum => o.momentum,
              c.optim.wd => o.wd, c.schedule => o.schedule, c.augment => o.augment());
        c.optim.nesterov = o.nesterov;
        c.final_dropout = self.final_dropout.config(c.epochs);
        c
    }
}

impl FitCurveArgs {
    /// The curve config: the defaults, overridden by the flags.
    pub fn config(
        &self,
        start: PathBuf,
        end: PathBuf,
        channels: i64,
        precision: Precision,
    ) -> Result<CurveConfig> {
        let o = &self.optim;
        let mut c = CurveConfig::defaults(start, end, channels, o.epochs.unwrap_or(10));
        c.kind = self.curve;
        c.bends = self.bends;
        c.t_per_batch = self.t_per_batch;
        c.optimizer = o.optimizer.unwrap_or(OptimKind::Sgd);
        c.dropout = self.model.dropout;
        c.precision = precision;
        macro_rules! over {
            ($($dst:expr => $src:expr),*) => { $( if let Some(v) = $src { $dst = v; } )* };
        }
        over!(c.batch_size => o.batch_size, c.lr => o.lr, c.momentum => o.momentum, c.wd => o.wd,
              c.schedule => o.schedule, c.seed => o.seed, c.augment => o.augment());
        for spec in &self.init_bend {
            let (k, p) = spec
                .split_once('=')
                .ok_or_else(|| anyhow!("--init-bend expects K=PATH, got '{spec}'"))?;
            let k: usize = k
                .trim()
                .parse()
                .map_err(|_| anyhow!("--init-bend: '{k}' is not a bend index"))?;
            c.init_bends.push((k, PathBuf::from(p)));
        }
        Ok(c)
    }
}

impl FgeArgs {
    /// The FGE config: the reference's defaults, overridden by the flags.
    /// Augmentation follows the flags, else `trained` (what the endpoints
    /// were trained with), else the data's default.
    pub fn config(&self, channels: i64, precision: Precision, trained: Option<bool>) -> FgeConfig {
        let from = self
            .from
            .clone()
            .unwrap_or_else(|| self.exp.join("start_model"));
        let mut c = FgeConfig::defaults(from, channels);
        c.precision = precision;
        macro_rules! over {
            ($($dst:expr => $src:expr),*) => { $( if let Some(v) = $src { $dst = v; } )* };
        }
        over!(c.epochs => self.epochs, c.cycle => self.cycle, c.lr1 => self.lr1, c.lr2 => self.lr2,
              c.wd => self.wd, c.momentum => self.momentum, c.batch_size => self.batch_size,
              c.seed => self.seed);
        c.optimizer = self.optimizer;
        c.dropout = self.dropout;
        if let Some(a) = augment_choice(self.augment, self.no_augment).or(trained) {
            c.augment = a;
        }
        c
    }
}
