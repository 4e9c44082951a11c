//! The arguments: one `Args` struct per subcommand (doc comments become
//! `--help`). They turn into the library's typed configs in `convert.rs`;
//! values are validated by the configs, not here.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

pub use super::step_args::*;

use modeconn::choice::Choice;
use modeconn::data::DatasetKind;
use modeconn::loader::Normalize;
use modeconn::model::ArchKind;
use modeconn::optim::{OptimKind, Schedule};
use modeconn::runtime::{DeviceChoice, MemoryFormat, PrecisionChoice};

/// A parser for a [`Choice`], listing its names and help lines in `--help`.
pub(super) fn choice<T: Choice + Clone>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|v| match v.help() {
        "" => PossibleValue::new(v.name()),
        h => PossibleValue::new(v.name()).help(h),
    }))
    .try_map(|s| T::from_name(&s).ok_or("not one of the possible values"))
}

fn dataset(s: &str) -> Result<DatasetKind, String> {
    DatasetKind::parse(s).map_err(|e| e.to_string())
}

#[derive(Parser, Debug)]
#[command(name = "modeconn", version, about = "Mode connectivity of neural networks (Garipov et al. 2018): train endpoints, fit low-loss curves between them, evaluate and plot.", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Write JSON lines only to stdout (one object per epoch, step, note and
    /// result; see docs/FORMATS.md) instead of human-readable lines.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole experiment: endpoints, curve, eval, ensemble, landscape, plots.
    Run(RunArgs),
    /// Train independent networks from different seeds (the curve's endpoints).
    TrainEndpoints(TrainArgs),
    /// Fit a Bezier curve or polygonal chain between two fixed endpoints (or import one).
    FitCurve(FitCurveArgs),
    /// Fast Geometric Ensembling: a cyclic learning rate from a trained network, one member per cycle.
    Fge(FgeArgs),
    /// Permutation alignment (weight matching) of the endpoints, and the line barrier raw,
    /// aligned and aligned with REPAIR.
    Align(AlignArgs),
    /// Metrics along the curve and the straight line; curve ensembles with --ensemble K.
    Eval(EvalArgs),
    /// Evaluate the loss landscape on the plane through w1, the bend and w2.
    Landscape(LandscapeArgs),
    /// Join the parts left by --shard runs into the files one run writes.
    Merge(MergeArgs),
    /// Draw every figure whose data exists and write report.html.
    Plot(PlotArgs),
    /// Write the curve's weights at t as a PyTorch-compatible state dict.
    Export(ExportArgs),
    /// Fetch a dataset's official archives and verify their checksums.
    Download(DownloadArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Dataset: fashion-mnist, mnist, cifar10, cifar100 or image-folder.
    #[arg(long, value_parser = dataset)]
    pub dataset: Option<DatasetKind>,
    /// Where the dataset lives (searched first; required for image-folder).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Input normalisation: none (pixels/255) or standard (per-channel mean/std).
    #[arg(long, value_parser = choice::<Normalize>())]
    pub normalize: Option<Normalize>,
    /// Use a deterministic class-balanced subset of N training images.
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// Use a deterministic class-balanced subset of N test images.
    #[arg(long, value_name = "N")]
    pub test_subset: Option<usize>,
}

/// A TorchScript archive named on the command line: made absolute, and the
/// only kind of archive modeconn will load (loading one can run its code).
fn archive(s: &str) -> Result<PathBuf, String> {
    let p = std::fs::canonicalize(s).map_err(|e| {
        format!("{s}: {e}; export the network with python/modeconn_export.py first")
    })?;
    if !p.is_file() {
        return Err(format!(
            "{s} is not a file (a TorchScript archive, e.g. model.pt)"
        ));
    }
    modeconn::model::script::trust(&p);
    Ok(p)
}

/// The TorchScript archive, for the commands that load networks an
/// experiment already holds.
#[derive(Args, Debug, Clone, Default)]
pub struct ScriptArgs {
    /// The TorchScript archive of a --arch torchscript experiment (python/modeconn_export.py
    /// writes it). Needed on every command that runs such a network: loading an archive can
    /// run code, so modeconn loads only one the command names.
    #[arg(long, value_name = "F.pt", value_parser = archive)]
    pub model_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Architecture (torchscript: your own PyTorch network, with --model-file).
    #[arg(long, value_parser = choice::<ArchKind>())]
    pub arch: Option<ArchKind>,
    #[command(flatten)]
    pub script: ScriptArgs,
    /// Depth for preresnet (20, 110, 164) and wrn (28).
    #[arg(long)]
    pub depth: Option<i64>,
    /// Width: wrn's widen factor; for the others a percentage of the standard channel counts.
    #[arg(long)]
    pub widen: Option<i64>,
    /// Dropout probability (seed-convnet and vgg: 0.5 by default).
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Compute device.
    #[arg(long, value_parser = choice::<DeviceChoice>(), default_value = "auto")]
    pub device: DeviceChoice,
    /// CPU threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Precision of convolutions and linear layers: fp32, bf16, or auto (bf16 only where the
    /// CPU or GPU computes it natively). Default: fp32; `run` takes its preset's (auto).
    #[arg(long, value_parser = choice::<PrecisionChoice>())]
    pub precision: Option<PrecisionChoice>,
    /// Memory layout of activations and convolution weights on CPU.
    #[arg(long, value_parser = choice::<MemoryFormat>(), default_value = "auto")]
    pub memory_format: MemoryFormat,
    /// Batch size of evaluation passes.
    #[arg(long, default_value_t = 256)]
    pub eval_batch_size: i64,
    /// Models evaluated at once, stacked into grouped convolutions, by sweeps, ensembles and the
    /// landscape (1: one model at a time, each batch still shared; the benchmark found no
    /// consistent gain from stacking on CPU).
    #[arg(long, default_value_t = 1)]
    pub stack_models: i64,
}

impl Default for RuntimeArgs {
    fn default() -> Self {
        RuntimeArgs {
            device: DeviceChoice::Auto,
            threads: None,
            precision: None,
            memory_format: MemoryFormat::Auto,
            eval_batch_size: 256,
            stack_models: 1,
        }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct OptimArgs {
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Mini-batch size.
    #[arg(long)]
    pub batch_size: Option<i64>,
    /// Initial learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Weight decay (L2).
    #[arg(long, allow_negative_numbers = true)]
    pub wd: Option<f64>,
    /// SGD momentum.
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Optimiser.
    #[arg(long, value_parser = choice::<OptimKind>())]
    pub optimizer: Option<OptimKind>,
    /// Learning-rate schedule.
    #[arg(long, value_parser = choice::<Schedule>())]
    pub schedule: Option<Schedule>,
    /// Random seed (endpoint i uses seed + i).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Data augmentation (random crop + flip); on by default for CIFAR-like RGB data.
    #[arg(long, overrides_with = "no_augment")]
    pub augment: bool,
    /// Turn augmentation off.
    #[arg(long)]
    pub no_augment: bool,
}
