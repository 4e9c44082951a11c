//! Evaluating a plane's grid, whatever the plane: the points come from a
//! [`Source`] (the plane through a curve, a random plane, a random line),
//! and a shard does its own points (unit `j·nx + i` for column i of row j,
//! see [`crate::vocab::Shard`]). Where the points are kept between rows is
//! the caller's [`Store`] (`crate::steps::grid` keeps them in the
//! experiment's files).

use anyhow::{bail, Result};

use super::PlaneFile;
use crate::curve::with_fresh_buffers;
use crate::eval::Evaluator;
use crate::model::Params;
use crate::observe::{Observer, Progress};
use crate::vocab::Shard;

/// Where the weights at a grid point come from.
pub struct Source<'a> {
    /// The weights (and BatchNorm buffers) at plane coordinates (x, y).
    pub point: &'a dyn Fn((f64, f64)) -> Params,
    /// Re-estimate BatchNorm statistics at each point; otherwise each point
    /// keeps the buffers `point` gives it.
    pub recompute_bn: bool,
}

/// Where a run's points are kept: the points an earlier run left, and the
/// file after each row.
pub trait Store {
    /// Fills in the points of `file` (this run's shard) that an earlier run
    /// with identical settings computed.
    fn resume(&self, file: &mut PlaneFile);
    /// Keeps `file` as it stands after a row.
    fn save(&self, file: &PlaneFile) -> Result<()>;
}

/// A store that keeps nothing: every point is computed, and the result is
/// only what [`fill`] returns (benchmarks, library callers without files).
pub struct InMemory;

impl Store for InMemory {
    fn resume(&self, _file: &mut PlaneFile) {}
    fn save(&self, _file: &PlaneFile) -> Result<()> {
        Ok(())
    }
}

/// Which points a run computes and where it keeps them.
pub struct Run<'a> {
    pub shard: Shard,
    pub store: &'a dyn Store,
    pub obs: &'a dyn Observer,
}

/// Computes the run's points of `file`'s grid that are not done yet (as
/// `run.store` resumes them), saving the file after every row.
pub fn fill(ev: &Evaluator, src: &Source, mut file: PlaneFile, run: &Run) -> Result<PlaneFile> {
    let (nx, ny) = (file.xs.len(), file.ys.len());
    if nx < 2 || ny < 1 {
        bail!("a landscape grid needs at least 2 points per axis");
    }
    file.shard = (!run.shard.is_whole()).then_some(run.shard);
    run.store.resume(&mut file);
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
        run.store.save(&file)?;
        prog.inc(cols.len() as u64);
        prog.set_message(format!("row {}/{ny}", j + 1));
    }
    prog.finish();
    Ok(file)
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
