//! Splitting a grid of work over processes (`--shard i/n`) and finding the
//! parts they leave for `modeconn merge`.
//!
//! Every sharded step numbers its units of work 0..N in a fixed order (the
//! points of a landscape grid row by row, the t of a sweep on the curve and
//! then on the line, the two endpoints and then the members of an
//! ensemble, the networks of `train-endpoints`). Shard `i` of `n` does the
//! units `u` with `u mod n == i`: round robin, so every shard gets the same
//! mix of work whatever its cost along the grid, and any `n` is valid.
//!
//! A shard writes only its own part file, `<exp>/shards/<target>/<i>-of-<n>.<ext>`
//! (atomically, after each group of units), and holds the lock file beside
//! it, `<i>-of-<n>.lock`, so that two processes never run the same shard.
//! `merge` checks the parts and writes the file a single run writes.

use std::path::{Path, PathBuf};

use crate::vocab::Shard;
use anyhow::{bail, Context, Result};
use serde::Serialize;

crate::choice! {
    /// The results that can be computed in shards and merged.
    pub enum Target {
        /// landscape/plane.json: the plane through the curve.
        Plane = "plane",
        /// landscape/random.json: a plane of two random directions.
        Random = "random",
        /// landscape/random-1d.json: a line along one random direction.
        Random1d = "random-1d",
        /// eval/along.json and along.csv: the sweep along t.
        Along = "along",
        /// eval/ensemble.json: the curve ensemble.
        Ensemble = "ensemble",
        /// The networks of train-endpoints and their config.json sections.
        Endpoints = "endpoints",
    }
}

impl Target {
    /// The file a single run writes (relative to the experiment).
    pub fn output(self) -> &'static str {
        match self {
            Target::Plane => "landscape/plane.json",
            Target::Random => "landscape/random.json",
            Target::Random1d => "landscape/random-1d.json",
            Target::Along => "eval/along.json",
            Target::Ensemble => "eval/ensemble.json",
            Target::Endpoints => "config.json",
        }
    }

    /// The extension of its part files.
    fn ext(self) -> &'static str {
        match self {
            Target::Ensemble => "safetensors",
            _ => "json",
        }
    }

    /// The folder of its parts: `<exp>/shards/<name>/`.
    pub fn dir(self, exp: &Path) -> PathBuf {
        exp.join(SHARDS_DIR).join(self.name())
    }

    /// The part file of `shard`.
    pub fn part(self, exp: &Path, shard: Shard) -> PathBuf {
        self.dir(exp)
            .join(format!("{}.{}", shard.tag(), self.ext()))
    }

    /// The lock file of `shard` (held by the process that runs it).
    pub fn lock(self, exp: &Path, shard: Shard) -> PathBuf {
        self.dir(exp).join(format!("{}.lock", shard.tag()))
    }
}

/// The folder of every part file in an experiment.
pub const SHARDS_DIR: &str = "shards";

/// The part files of `target` found in `exp`, as (shard, path), sorted.
pub fn find_parts(exp: &Path, target: Target) -> Result<Vec<(Shard, PathBuf)>> {
    let dir = target.dir(exp);
    let entries = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r.with_context(|| format!("cannot list {}", dir.display()))?,
    };
    let mut parts = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(&format!(".{}", target.ext())) else {
            continue;
        };
        let Some((i, n)) = stem.split_once("-of-") else {
            continue;
        };
        if let (Ok(index), Ok(count)) = (i.parse(), n.parse()) {
            let shard = Shard { index, count };
            if shard.validate().is_ok() {
                parts.push((shard, e.path()));
            }
        }
    }
    parts.sort_by_key(|(s, _)| (s.count, s.index));
    Ok(parts)
}

/// The complete set of parts of one target: all of one count, none missing.
/// Parts of two counts, or a missing shard, are refused by name.
pub fn complete_parts(exp: &Path, target: Target) -> Result<Vec<PathBuf>> {
    let parts = find_parts(exp, target)?;
    let Some(&(first, _)) = parts.first() else {
        bail!(
            "{} holds no parts of {}",
            target.dir(exp).display(),
            target.output()
        );
    };
    if let Some((other, p)) = parts.iter().find(|(s, _)| s.count != first.count) {
        bail!(
            "{} holds parts of two different splits: {} (of {}) and {} (of {}). Remove the stale set, then rerun the missing shards and merge.",
            target.dir(exp).display(),
            parts[0].1.display(),
            first.count,
            p.display(),
            other.count
        );
    }
    let have: Vec<usize> = parts.iter().map(|(s, _)| s.index).collect();
    let missing: Vec<String> = (0..first.count)
        .filter(|i| !have.contains(i))
        .map(|i| format!("{i}/{}", first.count))
        .collect();
    if !missing.is_empty() {
        bail!(
            "cannot merge {}: shard {} missing ({} not found). Run the same command with --shard {} first.",
            target.output(),
            missing.join(", "),
            target
                .part(
                    exp,
                    Shard::parse(&missing[0]).unwrap_or(Shard::WHOLE)
                )
                .display(),
            missing[0]
        );
    }
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

/// Refuses two parts made with different settings or from a different
/// curve or model: `va` and `vb` are what must agree in the parts `a` and
/// `b` (everything but their own values and timings). The error names both
/// files and each difference.
pub fn ensure_same_setup<T: Serialize>(a: &Path, va: &T, b: &Path, vb: &T) -> Result<()> {
    let (ja, jb) = (serde_json::to_value(va)?, serde_json::to_value(vb)?);
    if ja == jb {
        return Ok(());
    }
    let mut diffs = Vec::new();
    let labels = (
        a.file_name().and_then(|n| n.to_str()).unwrap_or("first"),
        b.file_name().and_then(|n| n.to_str()).unwrap_or("second"),
    );
    crate::schema::json_diffs("", Some(&ja), Some(&jb), labels, &mut diffs);
    bail!(
        "{} and {} come from different settings or a different curve or model ({}); they cannot be merged. Delete the stale parts and rerun those shards with the settings of the others.",
        a.display(),
        b.display(),
        diffs.join("; ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_every_unit_exactly_once() {
        for n in 1..6 {
            let mut seen = vec![0; 23];
            for i in 0..n {
                let s = Shard { index: i, count: n };
                for u in s.units(23) {
                    assert!(s.owns(u));
                    seen[u] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "n = {n}: {seen:?}");
        }
        assert_eq!(Shard::parse("3/8").unwrap(), Shard { index: 3, count: 8 });
        for bad in ["8/8", "1", "a/2", "0/0", "-1/4"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--shard") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_missing_shard_and_two_splits_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let exp = dir.path();
        let d = Target::Along.dir(exp);
        std::fs::create_dir_all(&d).unwrap();
        for i in [0, 2] {
            std::fs::write(d.join(format!("{i}-of-3.json")), "{}").unwrap();
        }
        std::fs::write(d.join("0-of-3.lock"), "").unwrap();
        let e = complete_parts(exp, Target::Along).unwrap_err().to_string();
        assert!(
            e.contains("shard 1/3 missing") && e.contains("1-of-3.json"),
            "{e}"
        );
        std::fs::write(d.join("1-of-3.json"), "{}").unwrap();
        assert_eq!(complete_parts(exp, Target::Along).unwrap().len(), 3);
        std::fs::write(d.join("0-of-2.json"), "{}").unwrap();
        let e = complete_parts(exp, Target::Along).unwrap_err().to_string();
        assert!(
            e.contains("two different splits") && e.contains("0-of-2.json"),
            "{e}"
        );
        let e = complete_parts(exp, Target::Plane).unwrap_err().to_string();
        assert!(e.contains("no parts"), "{e}");
    }
}
