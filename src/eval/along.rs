//! Metrics along the curve and along the straight line between its
//! endpoints, at equally spaced t: the numbers behind the paper's figures.

use super::metrics::{barrier, summarize};
use super::{Evaluator, Stats, GROUP_BUDGET};
use crate::model::Params;
use crate::observe::Progress;
use crate::schema::along::{Barriers, Path, Row};

/// The metrics named in `summary`, in table order.
pub const METRICS: [&str; 9] = [
    "train_loss",
    "train_nll",
    "train_err",
    "test_loss",
    "test_nll",
    "test_err",
    "train_acc",
    "test_acc",
    "test_ece",
];

impl Row {
    pub fn get(&self, name: &str) -> f64 {
        match name {
            "train_loss" => self.train_loss,
            "train_nll" => self.train_nll,
            "train_acc" => self.train_acc,
            "train_err" => self.train_err,
            "test_loss" => self.test_loss,
            "test_nll" => self.test_nll,
            "test_acc" => self.test_acc,
            "test_err" => self.test_err,
            "test_ece" => self.test_ece,
            _ => f64::NAN,
        }
    }
}

/// Builds the summaries, length and barriers from filled rows.
pub fn finish_path(rows: Vec<Row>) -> Path {
    let dl: Vec<f64> = rows.iter().map(|r| r.dl).collect();
    let ts: Vec<f64> = rows.iter().map(|r| r.t).collect();
    let summary = METRICS
        .iter()
        .map(|m| {
            (
                m.to_string(),
                summarize(&rows.iter().map(|r| r.get(m)).collect::<Vec<_>>(), &dl),
            )
        })
        .collect();
    let col = |m: &str| rows.iter().map(|r| r.get(m)).collect::<Vec<_>>();
    let (bl, tl) = barrier(&ts, &col("train_loss"));
    let (be, te) = barrier(&ts, &col("test_err"));
    Path {
        length: dl.iter().sum(),
        summary,
        barrier: Barriers {
            train_loss: bl,
            test_err: be,
        },
        barrier_t: Barriers {
            train_loss: tl,
            test_err: te,
        },
        rows,
    }
}

/// Evaluates `points(t)` at every t on train and test splits, in groups that
/// share each data batch. `weights(t)` gives the weights alone (for the step
/// lengths and the L2 term `wd/2·‖φ(t)‖²` added to the loss).
pub fn sweep(
    ev: &Evaluator,
    ts: &[f64],
    point: &dyn Fn(f64) -> anyhow::Result<Params>,
    wd: f64,
    prog: &mut Progress,
) -> anyhow::Result<Path> {
    let ks: Vec<usize> = (0..ts.len()).collect();
    let mut rows = Vec::with_capacity(ts.len());
    sweep_points(ev, ts, &ks, point, wd, prog, &mut |done| {
        rows.extend(done.into_iter().map(|(_, r)| r));
        Ok(())
    })?;
    Ok(finish_path(rows))
}

/// Evaluates the points `ks` (indices into `ts`, ascending) in groups that
/// share each data batch, handing each group's rows to `save`. A row's step
/// length is measured from the point before it in `ts`, evaluated or not,
/// so any subset of the points (a shard's) gives the rows a whole sweep
/// gives.
pub fn sweep_points(
    ev: &Evaluator,
    ts: &[f64],
    ks: &[usize],
    point: &dyn Fn(f64) -> anyhow::Result<Params>,
    wd: f64,
    prog: &mut Progress,
    save: &mut dyn FnMut(Vec<(usize, Row)>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let group = sweep_group(ev, ks.len());
    let is_w = |n: &str| ev.model.is_weight(n);
    let mut tick = |n: u64| prog.inc(n);
    // The point evaluated last, whose weights give the next step's length
    // without making it again (a REPAIRed point costs a pass over data).
    let mut last: Option<(usize, Params)> = None;
    for chunk in ks.chunks(group) {
        let params = chunk
            .iter()
            .map(|&k| point(ts[k]))
            .collect::<anyhow::Result<Vec<Params>>>()?;
        ev.update_bn_ticking(&params, &mut tick)?;
        let (train, _) = ev.evaluate_ticking(&params, &ev.data.train, false, &mut tick)?;
        let (test, _) = ev.evaluate_ticking(&params, &ev.data.test, false, &mut tick)?;
        let mut rows = Vec::with_capacity(chunk.len());
        for (i, &k) in chunk.iter().enumerate() {
            let w = &params[i];
            let dl = match (k, &last) {
                (0, _) => 0.0,
                (_, Some((j, p))) if j + 1 == k => w.distance(p, is_w).unwrap_or(f64::NAN),
                _ => w.distance(&point(ts[k - 1])?, is_w).unwrap_or(f64::NAN),
            };
            let reg = 0.5 * wd * crate::optim::scalar(&w.sq_norm(is_w));
            if !dl.is_finite() || !reg.is_finite() {
                anyhow::bail!(
                    "at t = {} the weights are too large for float32 (the step from the previous point measures {dl}, the squared norm {}): the checkpoints they come from cannot be right",
                    ts[k],
                    crate::optim::scalar(&w.sq_norm(is_w))
                );
            }
            rows.push((k, row(ts[k], &train[i], &test[i], reg, dl)));
            last = Some((k, w.shallow_clone()));
        }
        save(rows)?;
    }
    Ok(())
}

/// How many points a sweep evaluates together (sharing each batch).
fn sweep_group(ev: &Evaluator, points: usize) -> usize {
    ev.group_size(GROUP_BUDGET).min(points).max(1)
}

/// The progress units of [`sweep`] over `points` values of t: one per model
/// and batch (BatchNorm re-estimation, train and test), so that the bar
/// moves steadily and its ETA means something from the first seconds.
pub fn sweep_work(ev: &Evaluator, points: usize) -> u64 {
    let group = sweep_group(ev, points);
    let mut total = 0;
    let mut left = points;
    while left > 0 {
        let k = group.min(left);
        total += ev.bn_work(k) + ev.work(&ev.data.train, k) + ev.work(&ev.data.test, k);
        left -= k;
    }
    total
}

fn row(t: f64, train: &Stats, test: &Stats, reg: f64, dl: f64) -> Row {
    Row {
        t,
        train_loss: train.nll + reg,
        train_nll: train.nll,
        train_acc: train.acc,
        train_err: 100.0 - train.acc,
        test_loss: test.nll + reg,
        test_nll: test.nll,
        test_acc: test.acc,
        test_err: 100.0 - test.acc,
        test_ece: test.ece,
        dl,
    }
}

/// `n` equally spaced values in [0, 1].
pub fn grid(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64 / (n - 1) as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArchConfig, ArchKind, Model};
    use crate::runtime::Runtime;

    #[test]
    fn sweep_progress_ends_exactly_at_its_announced_total() {
        // 37 images in batches of 8 (a short last batch), 5 points; with and
        // without BatchNorm (whose re-estimation pass counts too).
        for (arch, c, hw) in [(ArchKind::SeedConvnet, 1, 16), (ArchKind::Vgg16Bn, 3, 32)] {
            let data = crate::loader::toy_data(
                37,
                hw,
                hw,
                c,
                vec![0.5; c as usize],
                vec![0.25; c as usize],
            );
            let mut cfg = ArchConfig::new(arch, c, 3, hw, hw);
            cfg.widen = 25;
            let model = Model::new(cfg).unwrap();
            let rt = Runtime {
                eval_batch: 8,
                ..Runtime::cpu()
            };
            let ev = Evaluator {
                model: &model,
                data: &data,
                rt: &rt,
            };
            tch::manual_seed(3);
            let p = model.init(tch::Device::Cpu);
            let total = sweep_work(&ev, 5);
            // 37 images in batches of 8: 5 per split; the BatchNorm pass
            // uses batches of at least 32 images: 2.
            let per_point = if model.has_bn { 2 + 2 * 5 } else { 2 * 5 };
            assert_eq!(total, 5 * per_point, "{arch:?}");
            let mut prog = Progress::new(&crate::observe::Silent, "test", total);
            let path = sweep(&ev, &grid(5), &|_| Ok(p.deep_clone()), 0.0, &mut prog).unwrap();
            assert_eq!(path.rows.len(), 5);
            assert_eq!(prog.position(), total, "{arch:?}");
        }
    }
}
