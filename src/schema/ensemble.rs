//! Ensembles: the scores of a set of predictions, the curve ensemble of
//! `eval/ensemble.json` (and its shards' parts) and the saved-network
//! ensembles of `eval/<name>.json`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::data::DatasetKind;
use crate::model::ArchKind;
use crate::vocab::{Average, MemberBn, Sampling};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Bin {
    #[serde(with = "crate::schema::nan")]
    pub lo: f64,
    #[serde(with = "crate::schema::nan")]
    pub hi: f64,
    pub count: i64,
    /// Mean confidence of the examples in the bin (0 when empty).
    #[serde(with = "crate::schema::nan")]
    pub conf: f64,
    /// Accuracy of the examples in the bin, as a fraction (0 when empty).
    #[serde(with = "crate::schema::nan")]
    pub acc: f64,
}

/// Everything reported for one set of predictions.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    /// Accuracy in percent.
    #[serde(with = "crate::schema::nan")]
    pub acc: f64,
    #[serde(with = "crate::schema::nan")]
    pub nll: f64,
    #[serde(with = "crate::schema::nan")]
    pub ece: f64,
    #[serde(with = "crate::schema::nan")]
    pub brier: f64,
    #[serde(with = "crate::schema::nan")]
    pub auroc: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SizeRow {
    pub k: usize,
    #[serde(flatten)]
    pub scores: Scores,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Reliability {
    pub curve: Vec<Bin>,
    pub start: Vec<Bin>,
}

/// Everything `eval/ensemble.json` holds (besides `meta`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EnsembleReport {
    pub members_t: Vec<f64>,
    /// Order in which members join for `by_size`.
    pub order: Vec<usize>,
    pub start: Scores,
    pub end: Scores,
    pub endpoints: Scores,
    pub curve: Scores,
    pub by_size: Vec<SizeRow>,
    pub reliability: Reliability,
}

/// What produced `eval/ensemble.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnsembleMeta {
    pub dataset: DatasetKind,
    pub arch: ArchKind,
    pub k: usize,
    pub sampling: Sampling,
    pub average: Average,
    pub seed: u64,
    pub n_test: i64,
    pub test_subset: Option<usize>,
    pub seconds: f64,
    pub curve_id: String,
}

/// `eval/ensemble.json`: the endpoints, their pair and the curve ensemble.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnsembleFile {
    pub format: u32,
    pub meta: EnsembleMeta,
    #[serde(flatten)]
    pub report: EnsembleReport,
}

/// The header of a shard's part of `eval/ensemble.json` (a safetensors
/// file whose tensors are `labels` and `logits.<u>`, the test-set logits
/// of unit u: 0 the start, 1 the end, 2 + m member m).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnsemblePart {
    pub format: u32,
    pub shard: crate::vocab::Shard,
    /// As in ensemble.json; `seconds` is this shard's compute time.
    pub meta: EnsembleMeta,
    /// The units whose logits the file holds.
    pub done: Vec<usize>,
}

/// `eval/<name>.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MembersFile {
    pub format: u32,
    pub members_dirs: Vec<PathBuf>,
    pub bn: MemberBn,
    pub n_test: i64,
    /// Each member alone.
    pub members: Vec<Scores>,
    /// The ensemble of the first k members (probabilities averaged).
    pub by_size: Vec<SizeRow>,
}
