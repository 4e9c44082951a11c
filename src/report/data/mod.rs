//! Loading the experiment files the report reads (formats in `docs/FORMATS.md`), tolerating
//! missing files (each becomes a note naming the command that makes it) and nulls in the data.
//!
//! - this file: what the report reads ([`Inputs`] and the views of each file) and the title
//!   found in it;
//! - [`load`]: reading each input from an experiment directory.

mod load;

pub(crate) use load::along_of;

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Named numbers that may be null (`{"acc": 90.1, "nll": null}`).
pub(crate) type Metrics = BTreeMap<String, Option<f64>>;

pub(crate) fn get(m: &Metrics, key: &str) -> Option<f64> {
    m.get(key).copied().flatten().filter(|v| v.is_finite())
}

/// One of `curve` / `line` in eval/along.json.
#[derive(Debug, Deserialize)]
pub(crate) struct PathEval {
    pub rows: Vec<Metrics>,
    #[serde(default)]
    pub summary: BTreeMap<String, Metrics>,
    #[serde(default)]
    pub length: Option<f64>,
    #[serde(default)]
    pub barrier: Metrics,
    #[serde(default)]
    pub barrier_t: Metrics,
}

impl PathEval {
    /// `(t, value)` for every row where both are numbers.
    pub fn series(&self, key: &str) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter_map(|r| Some((get(r, "t")?, get(r, key)?)))
            .collect()
    }

    /// `(t*, chord(t*), chord(t*) + barrier)` for `key`, the chord joining the first and last values.
    pub fn barrier(&self, key: &str) -> Option<(f64, f64, f64, f64)> {
        let (b, t) = (get(&self.barrier, key)?, get(&self.barrier_t, key)?);
        let s = self.series(key);
        let (v0, v1) = (s.first()?.1, s.last()?.1);
        let chord = (1.0 - t) * v0 + t * v1;
        Some((t, chord, chord + b, b))
    }
}

/// Test accuracy along a curve in brief: its ends, its worst point and how far that sits below
/// the ends' mean (the seed experiment's targets are stated in these terms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccuracyDip {
    pub start: f64,
    pub end: f64,
    pub worst: f64,
    pub worst_t: f64,
    /// The ends' mean minus the worst accuracy (points).
    pub dip: f64,
}

impl PathEval {
    /// The test-accuracy summary, when the path has at least two accuracy values.
    pub fn accuracy_dip(&self) -> Option<AccuracyDip> {
        let s = self.series("test_acc");
        let (start, end) = (s.first()?.1, s.last()?.1);
        if s.len() < 2 {
            return None;
        }
        let &(worst_t, worst) = s.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
        Some(AccuracyDip {
            start,
            end,
            worst,
            worst_t,
            dip: (start + end) / 2.0 - worst,
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Along {
    #[serde(default)]
    pub meta: Value,
    pub curve: PathEval,
    #[serde(default)]
    pub line: Option<PathEval>,
}

/// eval/align.json: the lines before and after alignment.
#[derive(Debug, Deserialize)]
pub(crate) struct Aligned {
    #[serde(default)]
    pub meta: Value,
    #[serde(default)]
    pub raw: Option<PathEval>,
    #[serde(default)]
    pub aligned: Option<PathEval>,
    #[serde(default)]
    pub repaired: Option<PathEval>,
    #[serde(default)]
    pub seconds: Metrics,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Bin {
    pub lo: f64,
    pub hi: f64,
    #[serde(default)]
    pub count: f64,
    pub conf: Option<f64>,
    pub acc: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Ensemble {
    #[serde(default)]
    pub meta: Value,
    #[serde(default)]
    pub start: Metrics,
    #[serde(default)]
    pub end: Metrics,
    #[serde(default)]
    pub endpoints: Metrics,
    #[serde(default)]
    pub curve: Metrics,
    #[serde(default)]
    pub by_size: Vec<Metrics>,
    #[serde(default)]
    pub reliability: BTreeMap<String, Vec<Bin>>,
}

pub(crate) type Grid = Vec<Vec<Option<f64>>>;

#[derive(Debug, Deserialize)]
pub(crate) struct Plane {
    #[serde(default)]
    pub meta: Value,
    #[serde(default)]
    pub x_label: Option<String>,
    #[serde(default)]
    pub y_label: Option<String>,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    #[serde(default)]
    pub train_loss: Option<Grid>,
    #[serde(default)]
    pub test_err: Option<Grid>,
    #[serde(default)]
    pub endpoints: Vec<[f64; 2]>,
    #[serde(default)]
    pub bends: Vec<[f64; 2]>,
    #[serde(default)]
    pub curve: Vec<[f64; 2]>,
    #[serde(default)]
    pub line: Vec<[f64; 2]>,
    /// A random plane's centre.
    #[serde(default)]
    pub centre: Option<[f64; 2]>,
}

impl Plane {
    /// Checks a grid of at least 2x2 points (`rows` 2), or a line of at
    /// least 2 points (`rows` 1), whose value rows match it.
    fn check(&self, rows: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.xs.len() >= 2 && (self.ys.len() >= 2) == (rows == 2) && !self.ys.is_empty(),
            "{}",
            if rows == 2 {
                "grid needs at least 2x2 points"
            } else {
                "a line needs one row of at least 2 points"
            }
        );
        for (name, g) in [
            ("train_loss", &self.train_loss),
            ("test_err", &self.test_err),
        ] {
            if let Some(g) = g {
                anyhow::ensure!(
                    g.len() == self.ys.len() && g.iter().all(|r| r.len() == self.xs.len()),
                    "{name} is not {} rows of {} values",
                    self.ys.len(),
                    self.xs.len()
                );
            }
        }
        Ok(())
    }
}

/// The per-epoch log of one model (`start_model/log.jsonl`, ...).
#[derive(Debug)]
pub(crate) struct RunLog {
    /// Directory name: `start_model`, `end_model`, `model_<i>`, `curve_model`.
    pub dir: String,
    /// Short label for legends and tables: `start`, `end`, `model 2`, `curve`.
    pub label: String,
    pub rows: Vec<BTreeMap<String, Value>>,
}

impl RunLog {
    /// `(epoch, value)` pairs; the epoch defaults to the 1-based line number.
    pub fn series(&self, key: &str) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let e = r
                    .get("epoch")
                    .and_then(Value::as_f64)
                    .unwrap_or(i as f64 + 1.0);
                let v = r
                    .get(key)
                    .and_then(Value::as_f64)
                    .filter(|v| v.is_finite())?;
                Some((e, v))
            })
            .collect()
    }

    pub fn last(&self, key: &str) -> Option<f64> {
        self.rows
            .iter()
            .rev()
            .find_map(|r| r.get(key).and_then(Value::as_f64))
    }

    pub fn is_curve(&self) -> bool {
        self.dir == "curve_model"
    }
}

/// Everything found in an experiment directory.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    pub config: Option<Value>,
    pub logs: Vec<RunLog>,
    pub along: Option<Along>,
    /// eval/align.json, when `align` ran (no note when it did not).
    pub align: Option<Aligned>,
    pub ensemble: Option<Ensemble>,
    pub plane: Option<Plane>,
    /// `landscape/random.json` and `landscape/random-1d.json`, when made.
    pub random: Option<Plane>,
    pub random_1d: Option<Plane>,
    /// Ensembles at equal training budget, when two methods have results.
    pub budget: Option<crate::report::budget::Budget>,
    /// One line per missing or unreadable input, naming the command that makes it.
    pub notes: Vec<String>,
}

impl Inputs {
    pub fn nothing_to_draw(&self) -> bool {
        self.logs.is_empty()
            && self.along.is_none()
            && self.align.is_none()
            && self.ensemble.is_none()
            && self.plane.is_none()
            && self.random.is_none()
            && self.random_1d.is_none()
    }

    /// The string at `path` in config.json, e.g. `["data", "data_dir"]`.
    fn config_str(&self, path: &[&str]) -> Option<&str> {
        let mut v = self.config.as_ref()?;
        for k in path {
            v = v.get(k)?;
        }
        v.as_str()
    }

    fn image_folder_label(&self) -> Option<String> {
        let dir = self.config_str(&["data", "data_dir"])?;
        let name = std::path::Path::new(dir.trim_end_matches('/'))
            .file_name()?
            .to_string_lossy()
            .to_string();
        Some(format!("{name} (image folder)"))
    }

    /// "resnet18.pt (TorchScript)": the archive of a `--arch torchscript`
    /// experiment, by its file name.
    fn script_label(&self) -> Option<String> {
        let path = self.config_str(&["arch", "script", "path"])?;
        let name = std::path::Path::new(path)
            .file_name()?
            .to_string_lossy()
            .to_string();
        Some(format!("{name} (TorchScript)"))
    }

    /// Looks up a string such as "dataset" in the metadata of the eval files, then anywhere in config.json.
    pub fn describe(&self, key: &str) -> Option<String> {
        let metas = [
            self.along.as_ref().map(|a| &a.meta),
            self.align.as_ref().map(|a| &a.meta),
            self.ensemble.as_ref().map(|e| &e.meta),
            self.plane.as_ref().map(|p| &p.meta),
            self.random.as_ref().map(|p| &p.meta),
            self.random_1d.as_ref().map(|p| &p.meta),
        ];
        metas
            .into_iter()
            .flatten()
            .find_map(|m| m.get(key).and_then(Value::as_str).map(str::to_string))
            .or_else(|| self.config.as_ref().and_then(|c| find_str(c, key)))
    }

    /// "dataset · arch", or whichever of the two is known. An image folder is
    /// named by its directory, e.g. "cifar10-jpg (image folder)".
    pub fn title(&self) -> String {
        let parts: Vec<String> = ["dataset", "arch"]
            .iter()
            .filter_map(|k| self.describe(k))
            .map(|v| {
                if v == "image-folder" {
                    self.image_folder_label().unwrap_or(v)
                } else if v == "torchscript" {
                    self.script_label().unwrap_or(v)
                } else {
                    v
                }
            })
            .collect();
        if parts.is_empty() {
            "modeconn experiment".into()
        } else {
            parts.join(" · ")
        }
    }
}

/// First string value under `key` anywhere in `v` (breadth first).
fn find_str(v: &Value, key: &str) -> Option<String> {
    let mut queue = std::collections::VecDeque::from([v]);
    while let Some(v) = queue.pop_front() {
        if let Value::Object(m) = v {
            if let Some(s) = m.get(key).and_then(Value::as_str) {
                return Some(s.to_string());
            }
            queue.extend(m.values());
        }
    }
    None
}
