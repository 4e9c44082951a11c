//! A landscape grid kept in the experiment: the whole grid in the file a
//! single run writes, or a shard's points in its part (each rewritten
//! atomically after every row, so a rerun resumes), and [`merge`], which
//! joins the parts of every shard into the file one run writes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::landscape::grid::Store;
use crate::schema::{read_versioned, write_json, PlaneFile};
use crate::shard::Target;
use crate::vocab::Shard;

/// The files of one landscape run.
pub struct Files {
    shard: Shard,
    /// Rewritten after each row: the result, or a shard's part.
    out: PathBuf,
    /// A merged result whose values for this shard's points are taken
    /// instead of recomputed (a shard rerun after a merge).
    merged: Option<PathBuf>,
}

impl Files {
    /// Where a run of `target` keeps its points: the result itself, or a
    /// shard's part (resuming from a merged result too).
    pub fn of(exp: &Path, target: Target, shard: Shard) -> Files {
        let whole = exp.join(target.output());
        if shard.is_whole() {
            Files {
                shard,
                out: whole,
                merged: None,
            }
        } else {
            Files {
                shard,
                out: target.part(exp, shard),
                merged: Some(whole),
            }
        }
    }
}

impl Store for Files {
    fn resume(&self, file: &mut PlaneFile) {
        resume(file, &self.out, self.shard, true);
        if let Some(m) = &self.merged {
            resume(file, m, self.shard, false);
        }
    }

    fn save(&self, file: &PlaneFile) -> Result<()> {
        write_json(&self.out, file)
    }
}

/// Takes the values of `shard`'s points from an earlier file at `path` made
/// with identical settings (its timing too when `own`: the same shard's
/// file). A file of another shape, or a damaged one, is ignored: its points
/// are computed again.
fn resume(file: &mut PlaneFile, path: &Path, shard: Shard, own: bool) {
    let Ok(old) = read_versioned::<PlaneFile>(path, "") else {
        return;
    };
    let (nx, ny) = (file.xs.len(), file.ys.len());
    let whole = |g: &Vec<Vec<Option<f64>>>| g.len() == ny && g.iter().all(|r| r.len() == nx);
    let same = old.meta == file.meta
        && old.xs == file.xs
        && old.ys == file.ys
        && whole(&old.train_loss)
        && whole(&old.test_err)
        && whole(&old.test_nll);
    if !same {
        return;
    }
    for u in shard.units(nx * ny) {
        let (j, i) = (u / nx, u % nx);
        let v = [old.train_loss[j][i], old.test_err[j][i], old.test_nll[j][i]];
        if v.iter().all(Option::is_some) {
            file.train_loss[j][i] = v[0];
            file.test_err[j][i] = v[1];
            file.test_nll[j][i] = v[2];
        }
    }
    if own && old.shard == file.shard {
        file.seconds = old.seconds;
    }
}

/// Joins the parts of every shard (read from `paths`, one per shard, in
/// shard order) into the file a single run writes: each point from the
/// shard that owns it, the timing summed. Parts of other settings, or with
/// points not computed yet, are refused by name.
pub fn merge(paths: &[PathBuf], remake: &str) -> Result<PlaneFile> {
    let mut parts = Vec::new();
    for p in paths {
        parts.push(read_versioned::<PlaneFile>(p, remake)?);
    }
    let setup = |f: &PlaneFile| PlaneFile {
        shard: None,
        train_loss: Vec::new(),
        test_err: Vec::new(),
        test_nll: Vec::new(),
        seconds: 0.0,
        ..f.clone()
    };
    let first = setup(&parts[0]);
    for (p, f) in paths.iter().zip(&parts).skip(1) {
        crate::shard::ensure_same_setup(&paths[0], &first, p, &setup(f))?;
    }
    let n = paths.len();
    let mut out = parts[0].clone();
    out.shard = None;
    out.seconds = parts.iter().map(|f| f.seconds).sum();
    let (nx, ny) = (out.xs.len(), out.ys.len());
    let empty = vec![vec![None; nx]; ny];
    (out.train_loss, out.test_err, out.test_nll) = (empty.clone(), empty.clone(), empty);
    for (k, (p, f)) in paths.iter().zip(&parts).enumerate() {
        let shard = Shard { index: k, count: n };
        if f.shard != Some(shard) {
            bail!(
                "{} holds the points of shard {}, not {shard}; delete it and rerun shard {shard}",
                p.display(),
                f.shard.map_or("(none)".to_string(), |s| s.to_string())
            );
        }
        let mine = shard.units(nx * ny);
        let get =
            |g: &Vec<Vec<Option<f64>>>, u: usize| g.get(u / nx)?.get(u % nx).copied().flatten();
        let missing = mine
            .iter()
            .filter(|&&u| {
                [&f.train_loss, &f.test_err, &f.test_nll]
                    .iter()
                    .any(|g| get(g, u).is_none())
            })
            .count();
        if missing > 0 {
            bail!(
                "{} is incomplete: {missing} of its {} points are not computed yet. Rerun shard {shard} (it resumes), then merge.",
                p.display(),
                mine.len()
            );
        }
        for u in mine {
            let (j, i) = (u / nx, u % nx);
            out.train_loss[j][i] = get(&f.train_loss, u);
            out.test_err[j][i] = get(&f.test_err, u);
            out.test_nll[j][i] = get(&f.test_nll, u);
        }
    }
    Ok(out)
}
