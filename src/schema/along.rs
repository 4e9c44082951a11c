//! A path evaluated point by point (the sweep along the curve and the
//! line): its rows, their summaries and barriers, and the files that hold
//! them, `eval/along.json` and the parts of its shards.

use serde::{Deserialize, Serialize};

use crate::curve::CurveKind;
use crate::data::DatasetKind;
use crate::model::ArchKind;

/// One evaluated point of a path.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    #[serde(with = "crate::schema::nan")]
    pub t: f64,
    #[serde(with = "crate::schema::nan")]
    pub train_loss: f64,
    #[serde(with = "crate::schema::nan")]
    pub train_nll: f64,
    #[serde(with = "crate::schema::nan")]
    pub train_acc: f64,
    #[serde(with = "crate::schema::nan")]
    pub train_err: f64,
    #[serde(with = "crate::schema::nan")]
    pub test_loss: f64,
    #[serde(with = "crate::schema::nan")]
    pub test_nll: f64,
    #[serde(with = "crate::schema::nan")]
    pub test_acc: f64,
    #[serde(with = "crate::schema::nan")]
    pub test_err: f64,
    #[serde(with = "crate::schema::nan")]
    pub test_ece: f64,
    /// ‖φ(t_i) − φ(t_{i−1})‖ (0 at the first point).
    #[serde(with = "crate::schema::nan")]
    pub dl: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Barriers {
    #[serde(with = "crate::schema::nan")]
    pub train_loss: f64,
    #[serde(with = "crate::schema::nan")]
    pub test_err: f64,
}

/// A whole path: rows, per-metric summaries, length and barriers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Path {
    pub rows: Vec<Row>,
    pub summary: std::collections::BTreeMap<String, Summary>,
    #[serde(with = "crate::schema::nan")]
    pub length: f64,
    pub barrier: Barriers,
    pub barrier_t: Barriers,
}

/// start, end, min, max, mean and length-weighted integral of a metric
/// along a path.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    #[serde(with = "crate::schema::nan")]
    pub start: f64,
    #[serde(with = "crate::schema::nan")]
    pub end: f64,
    #[serde(with = "crate::schema::nan")]
    pub min: f64,
    #[serde(with = "crate::schema::nan")]
    pub max: f64,
    #[serde(with = "crate::schema::nan")]
    pub mean: f64,
    #[serde(with = "crate::schema::nan")]
    pub int: f64,
}

/// What produced `eval/along.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlongMeta {
    pub dataset: DatasetKind,
    pub arch: ArchKind,
    pub curve: Option<CurveKind>,
    pub bends: usize,
    pub points: usize,
    pub wd: f64,
    pub seconds: f64,
    pub precision: crate::model::Precision,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    pub n_train: i64,
    pub n_test: i64,
    pub full_train: usize,
    pub full_test: usize,
    pub stack_models: i64,
    /// The curve the sweep was computed from (see `steps::session::curve_id`).
    pub curve_id: String,
}

/// `eval/along.json`: the sweep along the curve and along the line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlongFile {
    pub format: u32,
    pub meta: AlongMeta,
    pub curve: Path,
    pub line: Path,
}

/// A shard's part of `eval/along.json`: the rows of its points of the
/// curve and of the line (null where another shard's, or not done yet).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlongPart {
    pub format: u32,
    pub shard: crate::vocab::Shard,
    /// As in along.json; `seconds` is this shard's compute time.
    pub meta: AlongMeta,
    pub curve: Vec<Option<Row>>,
    pub line: Vec<Option<Row>>,
}
