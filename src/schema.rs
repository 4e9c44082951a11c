//! The files an experiment holds, as types: the same types write and read
//! them, so a writer and a reader cannot drift apart (formats in
//! docs/FORMATS.md).
//!
//! `eval/along.json`, `eval/ensemble.json` and `landscape/plane.json` carry
//! a `format` number.
//! Reading a file of another format, or a corrupt one, is an error that
//! names the file and the command that remakes it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::checkpoint::{read_text, JSON_MAX};
use crate::curve::CurveKind;
use crate::data::DatasetKind;
use crate::eval::along::Path as AlongPath;
use crate::eval::ensemble::{Average, EnsembleReport, Sampling};
use crate::model::ArchKind;

/// The format of the eval files this build writes and reads.
pub const FORMAT: u32 = 1;

/// One line of `log.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    /// For curves: the t at which the test metrics were taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_t: Option<f64>,
    pub seconds: f64,
}

/// Reads a `log.jsonl`; a line that does not parse is an error naming it.
pub fn read_log(path: &Path) -> Result<Vec<EpochLog>> {
    let text = read_text(path, JSON_MAX)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!("{} line {} is not an epoch record", path.display(), i + 1)
            })
        })
        .collect()
}

/// Appends an epoch line to `log.jsonl`, dropping any lines at or beyond
/// this epoch left by an interrupted run; written atomically.
pub fn append_log(path: &Path, entry: &EpochLog) -> Result<()> {
    let mut lines: Vec<String> = match read_text(path, JSON_MAX) {
        Ok(s) => s
            .lines()
            .filter(|l| {
                serde_json::from_str::<EpochLog>(l)
                    .map(|e| e.epoch < entry.epoch)
                    .unwrap_or(false)
            })
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    };
    lines.push(serde_json::to_string(entry)?);
    crate::checkpoint::write_atomic(path, (lines.join("\n") + "\n").as_bytes())
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
    /// The curve the sweep was computed from (see `eval::session::curve_id`).
    pub curve_id: String,
}

/// `eval/along.json`: the sweep along the curve and along the line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlongFile {
    pub format: u32,
    pub meta: AlongMeta,
    pub curve: AlongPath,
    pub line: AlongPath,
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

/// A shard's part of `eval/along.json`: the rows of its points of the
/// curve and of the line (null where another shard's, or not done yet).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlongPart {
    pub format: u32,
    pub shard: crate::shard::Shard,
    /// As in along.json; `seconds` is this shard's compute time.
    pub meta: AlongMeta,
    pub curve: Vec<Option<crate::eval::along::Row>>,
    pub line: Vec<Option<crate::eval::along::Row>>,
}

/// The header of a shard's part of `eval/ensemble.json` (a safetensors
/// file whose tensors are `labels` and `logits.<u>`, the test-set logits
/// of unit u: 0 the start, 1 the end, 2 + m member m).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnsemblePart {
    pub format: u32,
    pub shard: crate::shard::Shard,
    /// As in ensemble.json; `seconds` is this shard's compute time.
    pub meta: EnsembleMeta,
    /// The units whose logits the file holds.
    pub done: Vec<usize>,
}

/// A shard's part of `train-endpoints --models N`: the config.json
/// sections the run would write, and the networks it finished.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointsPart {
    pub format: u32,
    pub shard: crate::shard::Shard,
    pub data: crate::loader::DataConfig,
    pub arch: crate::model::ArchConfig,
    pub runtime: serde_json::Value,
    pub train: crate::config::TrainConfig,
    /// The indices of the networks trained to the last epoch.
    pub done: Vec<usize>,
}

/// `landscape/plane.json`, `landscape/random.json` and
/// `landscape/random-1d.json`, and the part files of their shards (see
/// docs/FORMATS.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlaneFile {
    pub format: u32,
    /// In a part file: the shard whose points it holds (others are null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::Shard>,
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
    pub coords: Option<crate::landscape::Coords>,
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
    pub bn: crate::eval::members::MemberBn,
}

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
    pub raw: Option<AlongPath>,
    pub aligned: Option<AlongPath>,
    pub repaired: Option<AlongPath>,
    pub seconds: LineSeconds,
}

/// Files that carry a format number.
pub trait Versioned {
    fn format(&self) -> u32;
}
impl Versioned for AlongFile {
    fn format(&self) -> u32 {
        self.format
    }
}
impl Versioned for EnsembleFile {
    fn format(&self) -> u32 {
        self.format
    }
}
impl Versioned for AlongPart {
    fn format(&self) -> u32 {
        self.format
    }
}
impl Versioned for EndpointsPart {
    fn format(&self) -> u32 {
        self.format
    }
}
impl Versioned for AlignFile {
    fn format(&self) -> u32 {
        self.format
    }
}
impl Versioned for PlaneFile {
    fn format(&self) -> u32 {
        self.format
    }
}

/// Reads a versioned JSON file; `remake` is the command that writes it anew.
pub fn read_versioned<T: DeserializeOwned + Versioned>(path: &Path, remake: &str) -> Result<T> {
    let text = read_text(path, JSON_MAX)?;
    #[derive(Deserialize)]
    struct Head {
        format: Option<u32>,
    }
    let head: Head = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not valid JSON; remake it with `{remake}`",
            path.display()
        )
    })?;
    match head.format {
        Some(FORMAT) => {}
        Some(f) => bail!(
            "{} has format {f}, this modeconn reads format {FORMAT}; remake it with `{remake}`",
            path.display()
        ),
        None => bail!(
            "{} has no format number (written by an older modeconn); remake it with `{remake}`",
            path.display()
        ),
    }
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged or incomplete; remake it with `{remake}`",
            path.display()
        )
    })
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    crate::checkpoint::write_atomic(path, text.as_bytes())
}

/// Serde for numbers that may be NaN: JSON has no NaN, so it is written as
/// `null` and read back as NaN.
pub mod nan {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_another_format_or_a_damaged_one_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("along.json");
        for (text, needle) in [
            ("{\"format\": 99}", "has format 99"),
            ("{\"meta\": {}}", "no format number"),
            ("{\"format\": 1, \"meta\": 3}", "damaged or incomplete"),
            ("{\"format\": 1", "not valid JSON"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read_versioned::<AlongFile>(&p, "modeconn eval --exp E").unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains(needle) && msg.contains("along.json"), "{msg}");
            assert!(msg.contains("modeconn eval --exp E"), "{msg}");
        }
    }

    #[test]
    fn nan_round_trips_through_null() {
        #[derive(Serialize, Deserialize)]
        struct X {
            #[serde(with = "nan")]
            v: f64,
        }
        let s = serde_json::to_string(&X { v: f64::NAN }).unwrap();
        assert_eq!(s, "{\"v\":null}");
        assert!(serde_json::from_str::<X>(&s).unwrap().v.is_nan());
        assert_eq!(serde_json::from_str::<X>("{\"v\":2.5}").unwrap().v, 2.5);
    }
}
