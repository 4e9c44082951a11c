//! The architectures by name, and everything that fixes the shapes of
//! one: [`ArchKind`], [`ArchConfig`] and the rules a configuration obeys.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

crate::choice! {
    /// The architectures.
    pub enum ArchKind {
        /// The seed experiment's 3-conv, 2-linear ConvNet.
        SeedConvnet = "seed-convnet",
        /// The reference implementation's ConvFC (3 conv 5x5 + 3 linear).
        Convfc = "convfc",
        /// VGG16 without BatchNorm.
        Vgg16 = "vgg16",
        /// VGG16 with BatchNorm.
        Vgg16Bn = "vgg16-bn",
        /// Pre-activation ResNet (--depth 20, 110, 164).
        Preresnet = "preresnet",
        /// Wide ResNet (--depth 28 --widen 10 by default).
        Wrn = "wrn",
        /// A multilayer perceptron (--depth 3 hidden layers of 512 by default).
        Mlp = "mlp",
        /// Any PyTorch network, exported by python/modeconn_export.py (--model-file F.pt).
        Torchscript = "torchscript",
    }
}

/// Everything that fixes the shapes of an architecture's parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchConfig {
    pub arch: ArchKind,
    pub in_channels: i64,
    pub num_classes: i64,
    pub height: i64,
    pub width: i64,
    /// Depth for `preresnet` (20, 110, 164, ...) and `wrn` (28, ...); the
    /// number of hidden layers for `mlp`.
    pub depth: i64,
    /// Width factor: `wrn`'s k; a channel multiplier in percent of the
    /// standard widths for the others (100 = standard; tests use less).
    pub widen: i64,
    /// Dropout probability where the architecture has dropout.
    pub dropout: f64,
    /// The TorchScript archive of `--arch torchscript`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<super::ScriptRef>,
}

impl ArchConfig {
    pub fn new(
        arch: ArchKind,
        in_channels: i64,
        num_classes: i64,
        height: i64,
        width: i64,
    ) -> Self {
        let (depth, widen, dropout) = match arch {
            ArchKind::Preresnet => (110, 100, 0.0),
            ArchKind::Wrn => (28, 10, 0.0),
            ArchKind::SeedConvnet | ArchKind::Vgg16 | ArchKind::Vgg16Bn => (0, 100, 0.5),
            ArchKind::Convfc => (0, 100, 0.0),
            ArchKind::Mlp => (3, 100, 0.0),
            ArchKind::Torchscript => (0, 100, 0.0),
        };
        ArchConfig {
            arch,
            in_channels,
            num_classes,
            height,
            width,
            depth,
            widen,
            dropout,
            script: None,
        }
    }

    /// Scales a standard channel count by `widen` percent (not for `wrn`,
    /// whose `widen` is the WRN width factor).
    pub(crate) fn ch(&self, c: i64) -> i64 {
        ((c * self.widen + 50) / 100).max(1)
    }
}

pub(super) fn validate(cfg: &ArchConfig) -> Result<()> {
    if cfg.in_channels < 1 || cfg.num_classes < 2 {
        bail!(
            "invalid architecture config: {} input channels, {} classes",
            cfg.in_channels,
            cfg.num_classes
        );
    }
    match cfg.arch {
        ArchKind::Vgg16 | ArchKind::Vgg16Bn if cfg.height < 32 || cfg.width < 32 => {
            bail!("{} halves the image five times and needs inputs of at least 32x32 (got {}x{}); use seed-convnet or convfc for 28x28 data", cfg.arch.name(), cfg.height, cfg.width)
        }
        // Smallest inputs whose forward keeps at least one unit after every
        // pooling (measured per architecture).
        ArchKind::SeedConvnet if cfg.height < 4 || cfg.width < 4 => {
            bail!(
                "seed-convnet pools twice and needs images of at least 4x4 (got {}x{})",
                cfg.height,
                cfg.width
            )
        }
        ArchKind::Convfc if cfg.height < 15 || cfg.width < 15 => {
            bail!("convfc pools three times (3x3, stride 2) and needs images of at least 15x15 (got {}x{})", cfg.height, cfg.width)
        }
        ArchKind::Preresnet
            if cfg.depth < 8
                || (cfg.depth < 44 && (cfg.depth - 2) % 6 != 0)
                || (cfg.depth >= 44 && (cfg.depth - 2) % 9 != 0) =>
        {
            bail!("preresnet --depth must be 6n+2 below 44 (e.g. 20, 32) or 9n+2 from 44 (e.g. 110, 164); got {}", cfg.depth)
        }
        ArchKind::Wrn if cfg.depth < 10 || (cfg.depth - 4) % 6 != 0 => {
            bail!("wrn --depth must be 6n+4 (e.g. 16, 28); got {}", cfg.depth)
        }
        ArchKind::Wrn if cfg.widen < 1 => bail!("wrn --widen must be at least 1"),
        ArchKind::Mlp if !(1..=16).contains(&cfg.depth) => {
            bail!(
                "mlp --depth is its number of hidden layers, 1 to 16; got {}",
                cfg.depth
            )
        }
        ArchKind::Torchscript if cfg.depth != 0 || cfg.widen != 100 || cfg.dropout != 0.0 => {
            bail!("--depth, --widen and --dropout shape the built-in architectures; a TorchScript network's depth, width and dropout are part of its code (export it again to change them)")
        }
        ArchKind::SeedConvnet | ArchKind::Vgg16 | ArchKind::Vgg16Bn | ArchKind::Convfc
            if cfg.depth != 0 =>
        {
            bail!(
                "--depth shapes preresnet, wrn and mlp; {} has a fixed depth (got --depth {})",
                cfg.arch.name(),
                cfg.depth
            )
        }
        ArchKind::Preresnet | ArchKind::Convfc | ArchKind::Mlp if cfg.dropout != 0.0 => {
            bail!("{} has no dropout layer (seed-convnet, vgg16, vgg16bn and wrn have one); drop --dropout {}", cfg.arch.name(), cfg.dropout)
        }
        _ if cfg.widen < 1 => bail!("--widen must be at least 1 (percent of the standard widths)"),
        _ => check_dropout(cfg.dropout),
    }
}

/// The rule for a dropout probability, wherever one is given (`--dropout`).
pub fn check_dropout(p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        bail!("--dropout must be in [0, 1), got {p}");
    }
    Ok(())
}
