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

use crate::files::{read_text, JSON_MAX};

pub mod align;
pub mod along;
pub mod ensemble;
pub mod landscape;

pub use align::{AlignFile, AlignMeta, LineSeconds, Repair};
pub use along::{AlongFile, AlongMeta, AlongPart};
pub use ensemble::{EnsembleFile, EnsembleMeta, EnsemblePart, MembersFile};
pub use landscape::{PlaneFile, PlaneMeta, RandomMeta};

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
    crate::files::write_atomic(path, (lines.join("\n") + "\n").as_bytes())
}

/// A shard's part of `train-endpoints --models N`: the config.json
/// sections the run would write, and the networks it finished.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointsPart {
    pub format: u32,
    pub shard: crate::vocab::Shard,
    pub data: crate::loader::DataConfig,
    pub arch: crate::model::ArchConfig,
    pub runtime: serde_json::Value,
    pub train: crate::config::TrainConfig,
    /// The indices of the networks trained to the last epoch.
    pub done: Vec<usize>,
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
    crate::files::write_atomic(path, text.as_bytes())
}

/// "path: saved A, requested B" for every leaf where two JSON values differ
/// (objects are compared key by key, with dotted paths); `labels` name the
/// two sides ("saved", "requested").
pub fn json_diffs(
    path: &str,
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
    labels: (&str, &str),
    out: &mut Vec<String>,
) {
    if let (Some(serde_json::Value::Object(x)), Some(serde_json::Value::Object(y))) = (a, b) {
        let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        for k in keys {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            json_diffs(&p, x.get(k), y.get(k), labels, out);
        }
    } else if a != b {
        let show = |v: Option<&serde_json::Value>| {
            v.map_or("(absent)".to_string(), serde_json::Value::to_string)
        };
        let (la, lb) = labels;
        out.push(format!("{path}: {la} {}, {lb} {}", show(a), show(b)));
    }
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
