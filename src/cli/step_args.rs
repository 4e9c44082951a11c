//! One `Args` struct per subcommand (doc comments become `--help`), made
//! of the shared flag groups in `args.rs`.

use std::path::PathBuf;

use clap::Args;

use super::args::{choice, DataArgs, ModelArgs, OptimArgs, RuntimeArgs, ScriptArgs};
use modeconn::config::FinalDropout;
use modeconn::curve::CurveKind;
use modeconn::landscape::PlaneKind;
use modeconn::optim::{OptimKind, Schedule};
use modeconn::shard::Target;
use modeconn::steps::members::MemberSet;
use modeconn::vocab::Coords;
use modeconn::vocab::MemberBn;
use modeconn::vocab::Shard;
use modeconn::vocab::{Average, Sampling};

fn shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s).map_err(|e| e.to_string())
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Experiment directory (default experiments/<dataset>_<arch>).
    #[arg(long)]
    pub exp: Option<PathBuf>,
    /// How many networks to train.
    #[arg(long, default_value_t = 2)]
    pub models: usize,
    /// Continue an interrupted run from its last complete epoch.
    #[arg(long)]
    pub resume: bool,
    /// Also keep the model and its resume state every K epochs in <model>/epoch-<n>/ (the
    /// starting points of `modeconn fge`).
    #[arg(long, value_name = "K")]
    pub save_every: Option<usize>,
    #[command(flatten)]
    pub final_dropout: FinalDropoutArgs,
    /// Do only shard I of N of the work (I counted from 0; e.g. Slurm's
    /// $SLURM_ARRAY_TASK_ID/N) into shards/, for `modeconn merge`.
    #[arg(long, value_name = "I/N", value_parser = shard)]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

/// The endpoints' final dropout, for `train-endpoints` and `run`.
#[derive(Args, Debug, Clone)]
pub struct FinalDropoutArgs {
    /// Train the endpoints' last epochs (--final-epochs) at this dropout instead of the
    /// architecture's; the saved networks keep the architecture's. seed-cifar10 trains the
    /// last 20 of its 100 epochs at 0.35, which lifted its weakest network by about half a point
    /// (docs/RESULTS.md §2).
    #[arg(long, value_name = "P")]
    pub final_dropout: Option<f64>,
    /// How many of the last epochs --final-dropout covers (default: a fifth of the epochs).
    #[arg(long, value_name = "N", requires = "final_dropout")]
    pub final_epochs: Option<usize>,
}

impl FinalDropoutArgs {
    /// What the flags ask for, for a training of `epochs` epochs.
    pub fn config(&self, epochs: usize) -> Option<FinalDropout> {
        self.final_dropout
            .map(|d| FinalDropout::last(d, self.final_epochs, epochs))
    }
}

#[derive(Args, Debug, Clone)]
pub struct FitCurveArgs {
    /// Experiment directory: endpoints from its start_model/ and end_model/, curve into curve_model/.
    #[arg(long)]
    pub exp: Option<PathBuf>,
    /// Start endpoint checkpoint (.safetensors, .pt or .pth) instead of <exp>/start_model.
    #[arg(long)]
    pub start: Option<PathBuf>,
    /// End endpoint checkpoint instead of <exp>/end_model.
    #[arg(long)]
    pub end: Option<PathBuf>,
    /// End at <exp>/end_model_aligned (the end model permuted onto the start by `modeconn align`).
    #[arg(long, conflicts_with = "end")]
    pub aligned: bool,
    /// Curve family.
    #[arg(long, value_parser = choice::<CurveKind>(), default_value = "bezier")]
    pub curve: CurveKind,
    /// Number of bends, endpoints included (3 = quadratic Bezier).
    #[arg(long, default_value_t = 3)]
    pub bends: usize,
    /// Start inner bend k from a checkpoint: --init-bend 1=theta.safetensors (repeatable).
    #[arg(long, value_name = "K=PATH")]
    pub init_bend: Vec<String>,
    /// Values of t per batch: the batch is split into K groups, group i at a t drawn from
    /// [i/K, (i+1)/K) (stratified; 1 = the paper's one t per batch).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub t_per_batch: usize,
    /// Continue an interrupted fit.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct AlignArgs {
    /// Experiment directory: aligns <exp>/end_model onto <exp>/start_model, writes
    /// <exp>/end_model_aligned/ and <exp>/eval/align.json.
    #[arg(long)]
    pub exp: PathBuf,
    /// Start endpoint instead of <exp>/start_model (a model file or folder).
    #[arg(long)]
    pub start: Option<PathBuf>,
    /// End endpoint instead of <exp>/end_model (the one that gets permuted).
    #[arg(long)]
    pub end: Option<PathBuf>,
    /// Seed of the order in which each sweep visits the permutations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// At most this many sweeps of weight matching (it stops at the first without gain).
    #[arg(long, default_value_t = 100)]
    pub max_sweeps: usize,
    /// Points in t on each line (raw, aligned, aligned + REPAIR); 0 aligns only.
    #[arg(long, default_value_t = 11)]
    pub points: usize,
    /// Training images whose channel statistics REPAIR matches.
    #[arg(long, default_value_t = 5000)]
    pub repair_images: i64,
    /// The permutation symmetries as JSON (needed for --arch torchscript; replaces a built-in
    /// architecture's own): {"format": 1, "perms": {"P": [["conv1.weight", 0], ...]}}, see
    /// docs/FORMATS.md.
    #[arg(long, value_name = "F.json")]
    pub perm_spec: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct FgeArgs {
    /// Experiment directory; members go to <exp>/fge/member_<k>/.
    #[arg(long)]
    pub exp: PathBuf,
    /// Starting network: a model file or folder (default <exp>/start_model); the momentum
    /// buffers of the resume state beside it are kept, as the reference implementation does.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Epochs of FGE (default 20).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Epochs per learning-rate cycle, even (default 4); one member per cycle.
    #[arg(long)]
    pub cycle: Option<usize>,
    /// Learning rate at the ends of each cycle (default 0.05).
    #[arg(long, allow_negative_numbers = true)]
    pub lr1: Option<f64>,
    /// Learning rate in the middle of each cycle, where members are taken (default 1e-4).
    #[arg(long, allow_negative_numbers = true)]
    pub lr2: Option<f64>,
    /// Weight decay (default 1e-4).
    #[arg(long, allow_negative_numbers = true)]
    pub wd: Option<f64>,
    /// SGD momentum (default 0.9).
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Optimiser: sgd (the reference's) or adam, for a network trained with Adam (its moments
    /// are kept, as SGD's momentum is).
    #[arg(long, value_parser = choice::<OptimKind>(), default_value = "sgd")]
    pub optimizer: OptimKind,
    /// Mini-batch size (default 128).
    #[arg(long)]
    pub batch_size: Option<i64>,
    /// Random seed of the data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Data augmentation (random crop + flip). Default: what the experiment's endpoints were
    /// trained with (config.json), else on for CIFAR-like RGB data.
    #[arg(long, conflicts_with = "no_augment")]
    pub augment: bool,
    /// Turn augmentation off.
    #[arg(long)]
    pub no_augment: bool,
    /// Dropout while training (default: the starting network's). Members are evaluated without
    /// dropout; the architecture recorded for them is unchanged.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Continue an interrupted FGE run.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub script: ScriptArgs,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Experiment directory holding curve_model/.
    #[arg(long)]
    pub exp: PathBuf,
    /// Number of equally spaced t in [0, 1].
    #[arg(long, default_value_t = 61)]
    pub points: usize,
    /// Evaluate a curve ensemble of K models instead of the sweep.
    #[arg(long, value_name = "K", conflicts_with = "points")]
    pub ensemble: Option<usize>,
    /// How ensemble members are placed on the curve.
    #[arg(long, value_parser = choice::<Sampling>(), default_value = "grid")]
    pub sampling: Sampling,
    /// How members are averaged.
    #[arg(long, value_parser = choice::<Average>(), default_value = "probs")]
    pub average: Average,
    /// Seed for --sampling random.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluate saved networks instead of the curve: each member and their ensemble by size,
    /// into eval/<set>.json.
    #[arg(long, value_parser = choice::<MemberSet>(), conflicts_with_all = ["points", "ensemble"])]
    pub members: Option<MemberSet>,
    /// BatchNorm statistics of --members: keep (as trained, the reference) or recompute.
    #[arg(long, value_parser = choice::<MemberBn>(), default_value = "keep")]
    pub bn: MemberBn,
    /// Do only shard I of N of the work (I counted from 0; e.g. Slurm's
    /// $SLURM_ARRAY_TASK_ID/N) into shards/, for `modeconn merge`.
    #[arg(long, value_name = "I/N", value_parser = shard)]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub script: ScriptArgs,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct LandscapeArgs {
    /// Experiment directory holding curve_model/.
    #[arg(long)]
    pub exp: PathBuf,
    /// Grid points per axis.
    #[arg(long, default_value_t = 21)]
    pub grid: usize,
    /// Which plane: the curve's, or random directions around --around.
    #[arg(long, value_parser = choice::<PlaneKind>(), default_value = "curve")]
    pub plane: PlaneKind,
    /// Curve plane: margin around the bends, as a fraction of the extent on each side (default 0.2).
    #[arg(long, allow_negative_numbers = true)]
    pub margin: Option<f64>,
    /// Curve plane: coordinates, orthonormal (Gram–Schmidt, as the reference; the default) or seed (θ at (0,0), w1 at (1,0), w2 at (0,1)).
    #[arg(long, value_parser = choice::<Coords>())]
    pub coords: Option<Coords>,
    /// Random plane: the network at its centre, a model file or folder (relative to --exp when
    /// there; default start_model).
    #[arg(long)]
    pub around: Option<PathBuf>,
    /// Random plane: the grid covers [-S, S] along each direction (default 1).
    #[arg(long, value_name = "S")]
    pub span: Option<f64>,
    /// Random plane: seed of the directions (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Random plane: move biases and BatchNorm weights too (by default they get no direction,
    /// loss-landscape's --ignore biasbn).
    #[arg(long)]
    pub include_biasbn: bool,
    /// Random plane: BatchNorm statistics at each point, recomputed (the default, as on the
    /// curve's plane) or kept from the centre (as loss-landscape does).
    #[arg(long, value_parser = choice::<MemberBn>())]
    pub bn: Option<MemberBn>,
    /// Do only shard I of N of the work (I counted from 0; e.g. Slurm's
    /// $SLURM_ARRAY_TASK_ID/N) into shards/, for `modeconn merge`.
    #[arg(long, value_name = "I/N", value_parser = shard)]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub script: ScriptArgs,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// Experiment directory whose shards/ holds the parts.
    #[arg(long)]
    pub exp: PathBuf,
    /// Merge only this result (repeatable; default: every result with parts).
    #[arg(long, value_parser = choice::<Target>())]
    pub only: Vec<Target>,
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Experiment directory.
    #[arg(long)]
    pub exp: PathBuf,
    /// Another experiment whose curve to draw beside this one's (figures/compare.png and a
    /// report section), as DIR or LABEL=DIR; repeat for more. Each needs eval/along.json.
    #[arg(long, value_name = "[LABEL=]DIR")]
    pub compare: Vec<String>,
    /// This experiment's name in the comparison (default: its folder's name).
    #[arg(long, requires = "compare")]
    pub label: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Experiment directory holding curve_model/.
    #[arg(long)]
    pub exp: PathBuf,
    /// Point on the curve, in [0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub t: f64,
    /// Output file (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub script: ScriptArgs,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct DownloadArgs {
    /// mnist, fashion-mnist, cifar10 or cifar100.
    pub dataset: String,
    /// Destination (default data/<dataset>).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Preset: quick, seed-cifar10, paper-vgg16 or paper-preresnet.
    #[arg(long, default_value = "quick")]
    pub preset: String,
    /// Experiment directory (default experiments/<preset>).
    #[arg(long)]
    pub exp: Option<PathBuf>,
    /// Epochs of endpoint training (overrides the preset).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Epochs of curve fitting (overrides the preset).
    #[arg(long)]
    pub curve_epochs: Option<usize>,
    /// Endpoint learning rate (overrides the preset).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Curve learning rate (overrides the preset).
    #[arg(long, allow_negative_numbers = true)]
    pub curve_lr: Option<f64>,
    /// Mini-batch size for both trainings.
    #[arg(long)]
    pub batch_size: Option<i64>,
    /// Weight decay for both trainings.
    #[arg(long, allow_negative_numbers = true)]
    pub wd: Option<f64>,
    /// Seed of the first endpoint.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Curve family.
    #[arg(long, value_parser = choice::<CurveKind>())]
    pub curve: Option<CurveKind>,
    /// Bends of the curve.
    #[arg(long)]
    pub bends: Option<usize>,
    /// Points of the sweep along t.
    #[arg(long)]
    pub points: Option<usize>,
    /// Size of the curve ensemble.
    #[arg(long)]
    pub ensemble: Option<usize>,
    /// Landscape grid points per axis.
    #[arg(long)]
    pub grid: Option<usize>,
    /// Training images used by the sweep along t (a class-balanced subset).
    #[arg(long)]
    pub eval_train_subset: Option<usize>,
    /// Training images used by the landscape grid.
    #[arg(long)]
    pub landscape_train_subset: Option<usize>,
    /// Test images used by the landscape grid.
    #[arg(long)]
    pub landscape_test_subset: Option<usize>,
    /// Add Fast Geometric Ensembling at equal budget (a snapshot at 80% of the endpoint epochs,
    /// FGE for the other 20%) and the comparison in the report; the paper presets have it.
    #[arg(long)]
    pub fge: bool,
    /// The endpoints' optimiser (overrides the preset).
    #[arg(long, value_parser = choice::<OptimKind>())]
    pub optimizer: Option<OptimKind>,
    /// Learning-rate schedule of every training (overrides the preset).
    #[arg(long, value_parser = choice::<Schedule>())]
    pub schedule: Option<Schedule>,
    /// Data augmentation (random crop + flip) for both trainings.
    #[arg(long, conflicts_with = "no_augment")]
    pub augment: bool,
    /// Turn augmentation off for both trainings.
    #[arg(long)]
    pub no_augment: bool,
    /// The curve's optimiser (overrides the preset).
    #[arg(long, value_parser = choice::<OptimKind>())]
    pub curve_optimizer: Option<OptimKind>,
    /// Values of t per curve batch (stratified: group i of K at t in [i/K, (i+1)/K)).
    #[arg(long, value_name = "K")]
    pub curve_t_per_batch: Option<usize>,
    /// Dropout while fitting the curve (default: the endpoints').
    #[arg(long, value_name = "P")]
    pub curve_dropout: Option<f64>,
    #[command(flatten)]
    pub final_dropout: FinalDropoutArgs,
    /// Dropout while training FGE's members, with --fge (default: the preset's, else the
    /// endpoints').
    #[arg(long, value_name = "P")]
    pub fge_dropout: Option<f64>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}
