//! The landscape files: `landscape/plane.json`, `random.json`,
//! `random-1d.json` and the parts of their shards (docs/FORMATS.md).

use serde::{Deserialize, Serialize};

/// `landscape/plane.json`, `landscape/random.json` and
/// `landscape/random-1d.json`, and the part files of their shards (see
/// docs/FORMATS.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlaneFile {
    pub format: u32,
    /// In a part file: the shard whose points it holds (others are null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::vocab::Shard>,
    pub meta: PlaneMeta,
    pub x_label: String,
    pub y_label: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub train_loss: Vec<Vec<Option<f64>>>,
    pub test_err: Vec<Vec<Option<f64>>>,
    pub test_nll: Vec<Vec<Option<f64>>>,
    pub endpoints: Vec<[f64; 2]>,
    pub bends: Vec<[f64; 2]>,
    pub curve: Vec<[f64; 2]>,
    pub line: Vec<[f64; 2]>,
    /// A random plane's centre (the model it is drawn around): (0, 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centre: Option<[f64; 2]>,
    /// Compute time; for a merged file, the sum over its shards.
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlaneMeta {
    pub dataset: crate::data::DatasetKind,
    pub arch: crate::model::ArchKind,
    /// Curve planes only: their coordinates, margin and the bend spanning them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coords: Option<crate::vocab::Coords>,
    pub grid: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plane_bend: Option<usize>,
    pub caption: String,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    /// Identifies the file the plane was computed from (its epoch and
    /// size): the curve, or the centre of a random plane.
    pub curve_id: String,
    pub wd: f64,
    /// Random planes only: how their directions were drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomMeta>,
}

/// How a random plane (or line) was drawn: the loss-landscape recipe (Li,
/// Xu, Taylor, Studer, Goldstein, NeurIPS 2018).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RandomMeta {
    /// The model at the centre, (0, 0).
    pub around: std::path::PathBuf,
    /// 2 for a plane, 1 for a line.
    pub dims: usize,
    /// Seed of the directions (splitmix64 Gaussians, the same on any device).
    pub seed: u64,
    /// The grid covers [-span, span] along each direction.
    pub span: f64,
    /// Whether biases and BatchNorm weights get a direction (their own
    /// values, as loss-landscape does without `--ignore biasbn`) or none.
    pub include_biasbn: bool,
    /// BatchNorm statistics at each point: kept from the centre or recomputed.
    pub bn: crate::vocab::MemberBn,
}
