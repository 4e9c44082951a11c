//! Evaluating a plane's grid, whatever the plane: the points come from a
//! [`Source`] (the plane through a curve, a random plane, a random line),
//! a shard does its own points (unit `j·nx + i` for column i of row j, see
//! [`crate::shard`]), and [`merge`] joins the parts of every shard into the
//! file one run writes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::PlaneFile;
use crate::curve::with_fresh_buffers;
use crate::eval::Evaluator;
use crate::model::Params;
use crate::observe::{Observer, Progress};
use crate::shard::Shard;

/// Where the weights at a grid point come from.
pub struct Source<'a> {
    /// The weights (and BatchNorm buffers) at plane coordinates (x, y).
    pub point: &'a dyn Fn((f64, f64)) -> Params,
    /// Re-estimate BatchNorm statistics at each point; otherwise each point
    /// keeps the buffers `point` gives it.
    pub recompute_bn: bool,
}

/// Which points a run computes and where it keeps them.
pub struct Run<'a> {
    pub shard: Shard,
    /// Rewritten (atomically) after each row: the result, or a shard's part.
    pub out: PathBuf,
    /// A merged result whose values for this shard's points are taken
    /// instead of recomputed (a shard rerun after a merge).
    pub merged: Option<PathBuf>,
    pub obs: &'a dyn Observer,
}

/// Computes the run's points of `file`'s grid that are not done yet (in
/// `run.out`, or in `run.merged`, with identical settings), writing
/// `run.out` after every row.
pub fn fill(ev: &Evaluator, src: &Source, mut file: PlaneFile, run: &Run) -> Result<PlaneFile> {
    let (nx, ny) = (file.xs.len(), file.ys.len());
    if nx < 2 || ny < 1 {
        bail!("a landscape grid needs at least 2 points per axis");
    }
    file.shard = (!run.shard.is_whole()).then_some(run.shard);
    resume(&mut file, &run.out, run.shard, true);
    if let Some(m) = &run.merged {
        resume(&mut file, m, run.shard, false);
    }
    let mine = run.shard.units(nx * ny);
    let todo = |f: &PlaneFile, j: usize| -> Vec<usize> {
        mine.iter()
            .filter(|&&u| u / nx == j && f.train_loss[j][u % nx].is_none())
            .map(|&u| u % nx)
            .collect()
    };
    let left: usize = (0..ny).map(|j| todo(&file, j).len()).sum();
    let mut prog = Progress::new(run.obs, "landscape", mine.len() as u64);
    prog.inc((mine.len() - left) as u64);
    for j in 0..ny {
        let cols = todo(&file, j);
        if cols.is_empty() {
            continue;
        }
        let timer = std::time::Instant::now();
        fill_points(ev, src, &mut file, j, &cols)?;
        file.seconds += timer.elapsed().as_secs_f64();
        crate::schema::write_json(&run.out, &file)?;
        prog.inc(cols.len() as u64);
        prog.set_message(format!("row {}/{ny}", j + 1));
    }
    prog.finish();
    Ok(file)
}

/// Takes the values of `shard`'s points from an earlier file at `path` made
/// with identical settings (its timing too when `own`: the same shard's
/// file). A file of another shape, or a damaged one, is ignored: its points
/// are computed again.
fn resume(file: &mut PlaneFile, path: &Path, shard: Shard, own: bool) {
    let Ok(old) = crate::schema::read_versioned::<PlaneFile>(path, "") else {
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

/// Evaluates the columns `cols` of grid row `j` together (each batch read
/// once for all of them); the train loss includes the L2 term `wd/2·‖w‖²`
/// of the file's `wd`.
fn fill_points(
    ev: &Evaluator,
    src: &Source,
    file: &mut PlaneFile,
    j: usize,
    cols: &[usize],
) -> Result<()> {
    let model = ev.model;
    let y = file.ys[j];
    let pts: Vec<Params> = cols
        .iter()
        .map(|&i| {
            let p = (src.point)((file.xs[i], y));
            if src.recompute_bn {
                with_fresh_buffers(model, p)
            } else {
                p
            }
        })
        .collect();
    if src.recompute_bn {
        ev.update_bn(&pts)?;
    }
    let (train, _) = ev.evaluate(&pts, &ev.data.train, false)?;
    let (test, _) = ev.evaluate(&pts, &ev.data.test, false)?;
    let is_w = |n: &str| model.is_weight(n);
    for (k, (&i, p)) in cols.iter().zip(&pts).enumerate() {
        let reg = 0.5 * file.meta.wd * crate::optim::scalar(&p.sq_norm(is_w));
        file.train_loss[j][i] = Some(train[k].nll + reg);
        file.test_err[j][i] = Some(100.0 - test[k].acc);
        file.test_nll[j][i] = Some(test[k].nll);
    }
    Ok(())
}

/// Joins the parts of every shard (read from `paths`, one per shard, in
/// shard order) into the file a single run writes: each point from the
/// shard that owns it, the timing summed. Parts of other settings, or with
/// points not computed yet, are refused by name.
pub fn merge(paths: &[PathBuf], remake: &str) -> Result<PlaneFile> {
    let mut parts = Vec::new();
    for p in paths {
        parts.push(crate::schema::read_versioned::<PlaneFile>(p, remake)?);
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
