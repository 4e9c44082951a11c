//! `modeconn merge`: the parts that shards left (`--shard i/n`, see
//! [`crate::shard`]) joined into the files one run writes.
//!
//! Every merge checks before it writes: a set of parts must be complete
//! (no shard missing, none of two different splits), every part must come
//! from the same settings and the same curve or model (each difference is
//! named with both files), and every unit of work must be done. Only then
//! are the results written (each atomically), and the parts, which they
//! now hold in full, removed.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::choice::Choice;
use crate::shard::{self, Target};
use crate::vocab::Shard;

/// What one merge does: each target with its parts, one per shard.
#[derive(Debug)]
pub struct Plan {
    pub targets: Vec<(Target, Vec<PathBuf>)>,
}

impl Plan {
    /// The part locks a merge holds: every shard of every target.
    pub fn locks(&self) -> Vec<(Target, usize)> {
        self.targets.iter().map(|(t, p)| (*t, p.len())).collect()
    }
}

/// The targets of `only` (every target that has parts in `exp` when
/// empty), each with its complete set of parts.
pub fn plan(exp: &Path, only: &[Target]) -> Result<Plan> {
    let mut targets = Vec::new();
    for &t in Target::ALL {
        let asked = only.contains(&t);
        if asked || (only.is_empty() && !shard::find_parts(exp, t)?.is_empty()) {
            targets.push((t, shard::complete_parts(exp, t)?));
        }
    }
    if targets.is_empty() {
        anyhow::bail!(
            "{} holds no parts to merge ({}/ is empty or absent): run a step with --shard i/n first",
            exp.display(),
            exp.join(shard::SHARDS_DIR).display()
        );
    }
    Ok(Plan { targets })
}

/// The command that makes shard `i/n` of a target (for error messages).
fn remake(exp: &Path, t: Target, n: usize) -> String {
    let e = exp.display();
    let step = match t {
        Target::Plane => "landscape".to_string(),
        Target::Random => "landscape --plane random".to_string(),
        Target::Random1d => "landscape --plane random-1d".to_string(),
        Target::Along => "eval".to_string(),
        Target::Ensemble => "eval --ensemble K".to_string(),
        Target::Endpoints => "train-endpoints --models N --resume".to_string(),
    };
    format!("modeconn {step} --exp {e} --shard I/{n} (with the other shards' flags)")
}

/// A merged result held in memory until every target has been checked.
enum Merged {
    Plane(Target, Box<crate::schema::PlaneFile>),
    Along(Box<crate::schema::AlongFile>),
    Ensemble(Box<crate::schema::EnsembleFile>),
}

/// Merges every target of `plan` (checking all before writing any), then
/// removes the merged parts; returns the files written.
pub fn merge(exp: &Path, plan: &Plan) -> Result<Vec<PathBuf>> {
    let mut merged = Vec::new();
    let mut endpoints = None;
    for (t, paths) in &plan.targets {
        let again = remake(exp, *t, paths.len());
        match t {
            Target::Plane | Target::Random | Target::Random1d => {
                let f = crate::steps::grid::merge(paths, &again)?;
                merged.push(Merged::Plane(*t, Box::new(f)));
            }
            Target::Along => {
                let f = crate::steps::sweep::merge(paths, &again)?;
                merged.push(Merged::Along(Box::new(f)));
            }
            Target::Ensemble => {
                let f = crate::steps::session::merge_ensemble(paths, &again)?;
                merged.push(Merged::Ensemble(Box::new(f)));
            }
            Target::Endpoints => endpoints = Some((paths, again)),
        }
    }
    let mut written = Vec::new();
    // Checked (and written) before the others: its checks read the networks.
    if let Some((paths, again)) = endpoints {
        written.push(crate::train::endpoint_shards::merge(exp, paths, &again)?);
    }
    for m in merged {
        match m {
            Merged::Plane(t, f) => {
                let out = exp.join(t.output());
                crate::schema::write_json(&out, &f)?;
                written.push(out);
            }
            Merged::Along(f) => {
                crate::steps::sweep::write(exp, &f)?;
                written.push(exp.join("eval/along.json"));
                written.push(exp.join("eval/along.csv"));
            }
            Merged::Ensemble(f) => {
                let out = exp.join(Target::Ensemble.output());
                crate::schema::write_json(&out, &f)?;
                written.push(out);
            }
        }
    }
    for (t, paths) in &plan.targets {
        remove_parts(exp, *t, paths);
    }
    Ok(written)
}

/// Removes merged parts and their locks, then their folders if empty
/// (best effort: what stays behind is merged again harmlessly).
fn remove_parts(exp: &Path, t: Target, paths: &[PathBuf]) {
    let n = paths.len();
    for (index, p) in paths.iter().enumerate() {
        std::fs::remove_file(p).ok();
        std::fs::remove_file(t.lock(exp, Shard { index, count: n })).ok();
    }
    std::fs::remove_dir(t.dir(exp)).ok();
    std::fs::remove_dir(exp.join(shard::SHARDS_DIR)).ok();
}
