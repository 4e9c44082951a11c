//! Ensembles compared at equal training budget (the reference
//! implementation's protocol): test accuracy and NLL against the epochs of
//! training each ensemble cost, for independent networks, the curve
//! ensemble and Fast Geometric Ensembling.

use std::path::Path;

use serde_json::Value;

use crate::schema::MembersFile;
use crate::schema::{self, EnsembleFile, Versioned};
use crate::steps::members::MemberSet;

/// One ensemble: its size, what it cost in epochs, its test accuracy and NLL.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Point {
    pub size: usize,
    pub epochs: f64,
    pub acc: f64,
    pub nll: f64,
}

/// Every method whose results exist.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Budget {
    /// 1, 2, ... independently trained networks (k × the endpoint epochs).
    pub independent: Vec<Point>,
    /// The curve ensemble: two endpoints plus the curve's epochs.
    pub curve: Option<Point>,
    /// The first k FGE members: the starting network's epochs plus the FGE
    /// epochs up to member k.
    pub fge: Vec<Point>,
}

impl Versioned for MembersFile {
    fn format(&self) -> u32 {
        self.format
    }
}

fn epochs(config: &Value, section: &str) -> Option<f64> {
    config.get(section)?.get("epochs")?.as_f64()
}

impl Budget {
    /// The comparison for `exp`, if at least two methods have results.
    pub fn load(exp: &Path, config: Option<&Value>) -> Option<Budget> {
        let config = config?;
        let e = epochs(config, "train")?;
        let mut b = Budget::default();
        let members = |name: &str| {
            schema::read_versioned::<MembersFile>(&exp.join(format!("eval/{name}.json")), "").ok()
        };
        if let Some(m) = members(MemberSet::Endpoints.name()) {
            b.independent = m
                .by_size
                .iter()
                .map(|r| Point {
                    size: r.k,
                    epochs: r.k as f64 * e,
                    acc: r.scores.acc,
                    nll: r.scores.nll,
                })
                .collect();
        }
        if let (Some(c), Ok(f)) = (
            epochs(config, "curve"),
            schema::read_versioned::<EnsembleFile>(&exp.join("eval/ensemble.json"), ""),
        ) {
            b.curve = Some(Point {
                size: f.meta.k,
                epochs: 2.0 * e + c,
                acc: f.report.curve.acc,
                nll: f.report.curve.nll,
            });
        }
        if let (Some(fge), Some(m)) = (config.get("fge"), members(MemberSet::Fge.name())) {
            let cycle = fge.get("cycle")?.as_f64()?;
            let from = fge.get("from").and_then(Value::as_str).map(Path::new);
            // The snapshot's own metadata; else its folder's name (`epoch-N`), for a path
            // recorded relative to another working directory.
            let start = from
                .map(crate::experiment::resolve_model_path)
                .and_then(|p| crate::checkpoint::read_meta(&p).ok().flatten())
                .map(|m| m.epoch as f64)
                .or_else(|| snapshot_epoch(from?))
                .unwrap_or(e);
            b.fge = m
                .by_size
                .iter()
                .map(|r| Point {
                    size: r.k,
                    epochs: start + (r.k - 1) as f64 * cycle + cycle / 2.0,
                    acc: r.scores.acc,
                    nll: r.scores.nll,
                })
                .collect();
        }
        let methods = [
            !b.independent.is_empty(),
            b.curve.is_some(),
            !b.fge.is_empty(),
        ];
        (methods.iter().filter(|&&m| m).count() >= 2).then_some(b)
    }

    pub fn all(&self) -> impl Iterator<Item = &Point> {
        self.independent.iter().chain(&self.curve).chain(&self.fge)
    }
}

/// N of a path with a component `epoch-N` (the snapshots of `train-endpoints --save-every`).
fn snapshot_epoch(p: &Path) -> Option<f64> {
    p.components().rev().find_map(|c| {
        c.as_os_str()
            .to_str()?
            .strip_prefix("epoch-")?
            .parse::<usize>()
            .ok()
            .map(|n| n as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::snapshot_epoch;
    use std::path::Path;

    #[test]
    fn the_snapshot_epoch_comes_from_the_folder_name() {
        let e = |p: &str| snapshot_epoch(Path::new(p));
        assert_eq!(e("runs/x/start_model/epoch-80"), Some(80.0));
        assert_eq!(e("x/start_model/epoch-160/model.safetensors"), Some(160.0));
        assert_eq!(e("x/start_model"), None);
        assert_eq!(e("x/epoch-last"), None);
    }
}
