//! `eval/align.json`: weight matching and the straight lines between the
//! endpoints, raw, aligned and aligned with REPAIR.

use serde::{Deserialize, Serialize};

use crate::data::DatasetKind;
use crate::model::ArchKind;
use crate::schema::along::Path;

/// How `align` made the points between the endpoints comparable.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Repair {
    /// Each hidden channel reset to the interpolated endpoint statistics,
    /// folded into its layer's weight and bias (networks without BatchNorm).
    Affine,
    /// BatchNorm statistics re-estimated at every point, which every line
    /// already gets; the repaired line is the aligned line.
    BnReset,
    /// Not done: a TorchScript network without BatchNorm does not expose
    /// its layers' outputs, which the affine REPAIR needs.
    Unavailable,
}

/// What produced `eval/align.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlignMeta {
    pub dataset: DatasetKind,
    pub arch: ArchKind,
    pub seed: u64,
    pub max_sweeps: usize,
    /// Σ⟨W_start, π(W_end)⟩ over the weights: the identity's first, then
    /// after each sweep.
    pub objective: Vec<f64>,
    /// Hidden units that weight matching moved, of all permutable ones.
    pub moved: i64,
    pub permutable: i64,
    /// Largest |logit| difference between end_model and its permuted copy
    /// on a test batch (0 up to rounding: the same function).
    pub max_logit_diff: f64,
    pub match_seconds: f64,
    pub repair: Repair,
    pub repair_images: i64,
    /// Seconds to measure the endpoints' statistics for REPAIR.
    pub repair_stats_seconds: f64,
    pub points: usize,
    /// The curve's weight decay: each line's train loss includes
    /// `wd/2·‖w‖²`, as in eval/along.json (0 without a curve).
    pub wd: f64,
    pub n_train: i64,
    pub n_test: i64,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    /// The endpoints aligned (their files' epochs and sizes).
    pub start_id: String,
    pub end_id: String,
}

/// Seconds each line's sweep took.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LineSeconds {
    pub raw: f64,
    pub aligned: f64,
    pub repaired: f64,
}

/// `eval/align.json`: weight matching and the straight lines from
/// start_model to end_model, raw, aligned and aligned with REPAIR.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlignFile {
    pub format: u32,
    pub meta: AlignMeta,
    /// Absent when `align --points 0` evaluated nothing.
    pub raw: Option<Path>,
    pub aligned: Option<Path>,
    pub repaired: Option<Path>,
    pub seconds: LineSeconds,
}
