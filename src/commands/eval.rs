//! `modeconn eval`, `modeconn landscape` and `modeconn export`: everything
//! that evaluates points of a fitted curve.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use serde_json::json;

use super::endpoints::runtime;
use crate::checkpoint::{self, Meta};
use crate::cli::{DataArgs, EvalArgs, ExportArgs, LandscapeArgs};
use crate::curve::{line_point, Curve};
use crate::eval::along::{self, Path as AlongPath, METRICS};
use crate::eval::ensemble::{self, Average, EnsembleReport, Sampling};
use crate::eval::Evaluator;
use crate::experiment::{self as xp, LoadedCurve};
use crate::landscape::{self, Coords, PlaneMeta};
use crate::loader::{Data, DataConfig};
use crate::model::Params;
use crate::progress::Progress;
use crate::runtime::Runtime;

/// A curve with its data, ready to evaluate.
pub struct Session {
    pub lc: LoadedCurve,
    pub data: Data,
    pub dcfg: DataConfig,
    pub rt: Runtime,
    pub wd: f64,
}

impl Session {
    pub fn open(exp: &Path, data: &DataArgs, rt: Runtime) -> Result<Session> {
        let lc = xp::load_curve(exp, &rt)?;
        let (data, dcfg) = xp::load_data_for(&lc.meta, Some(exp), data, &rt, &lc.path)?;
        let wd = xp::section::<super::fit_curve::CurveConfig>(exp, "curve")?
            .map(|c| c.wd)
            .unwrap_or(0.0);
        Ok(Session {
            lc,
            data,
            dcfg,
            rt,
            wd,
        })
    }

    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator {
            model: &self.lc.model,
            data: &self.data,
            rt: &self.rt,
        }
    }
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if args.points < 2 {
        bail!(
            "--points must be at least 2 (t = 0 and t = 1); the reference implementation uses 61"
        );
    }
    if args.ensemble == Some(0) {
        bail!("--ensemble must be at least 1 (the number of models sampled on the curve, e.g. 30)");
    }
    let _lock = crate::lock::ExperimentLock::acquire_existing(&args.exp)?;
    let s = Session::open(&args.exp, &args.data, runtime(&args.rt)?)?;
    match args.ensemble {
        Some(k) => {
            let r = run_ensemble(&s, &args.exp, k, args.sampling, args.average, args.seed)?;
            print!("{}", ensemble_table(&r));
        }
        None => {
            let (curve, line) = run_along(&s, &args.exp, args.points)?;
            print!("{}", along_table(&curve, &line, &s));
        }
    }
    Ok(())
}

/// The sweep along the curve and the line; writes eval/along.json and .csv.
pub fn run_along(s: &Session, exp: &Path, points: usize) -> Result<(AlongPath, AlongPath)> {
    let ev = s.evaluator();
    let ts = along::grid(points);
    let model = &s.lc.model;
    let curve = &s.lc.curve;
    let n = curve.num_bends();
    let (w1, w2) = (&curve.bends[0], &curve.bends[n - 1]);
    let mut prog = Progress::new("eval", 2 * along::sweep_work(&ev, points));
    let timer = std::time::Instant::now();
    let c = along::sweep(&ev, &ts, &|t| curve.point(model, t), s.wd, &mut prog);
    let l = along::sweep(&ev, &ts, &|t| line_point(model, w1, w2, t), s.wd, &mut prog);
    prog.finish();
    let secs = timer.elapsed().as_secs_f64();
    let meta = json!({
        "dataset": s.lc.meta.dataset, "arch": s.lc.meta.arch.arch.name(), "curve": s.lc.meta.curve.as_ref().map(|c| c.kind.name()),
        "bends": n, "points": points, "wd": s.wd, "seconds": secs, "precision": s.rt.precision,
        "train_subset": s.dcfg.train_subset, "test_subset": s.dcfg.test_subset,
        "n_train": s.data.train.len(), "n_test": s.data.test.len(),
        "full_train": s.data.full_train, "full_test": s.data.full_test, "stack_models": s.rt.stack,
    });
    let out = json!({"meta": meta, "curve": c, "line": l});
    let dir = exp.join("eval");
    checkpoint::write_atomic(
        &dir.join("along.json"),
        serde_json::to_string_pretty(&out)?.as_bytes(),
    )?;
    checkpoint::write_atomic(&dir.join("along.csv"), along_csv(&c, &l).as_bytes())?;
    eprintln!("sweep of {points} points on curve and line took {secs:.1}s");
    Ok((c, l))
}

fn along_csv(c: &AlongPath, l: &AlongPath) -> String {
    let cols = [
        "t",
        "train_loss",
        "train_nll",
        "train_acc",
        "test_loss",
        "test_nll",
        "test_acc",
        "test_ece",
        "dl",
    ];
    let mut out = String::from("path,");
    out += &cols.join(",");
    out.push('\n');
    for (name, p) in [("curve", c), ("line", l)] {
        for r in &p.rows {
            let v = [
                r.t,
                r.train_loss,
                r.train_nll,
                r.train_acc,
                r.test_loss,
                r.test_nll,
                r.test_acc,
                r.test_ece,
                r.dl,
            ];
            let _ = writeln!(
                out,
                "{name},{}",
                v.iter()
                    .map(|x| format!("{x}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    }
    out
}

/// Side-by-side table of curve and line.
pub fn along_table(c: &AlongPath, l: &AlongPath, s: &Session) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n{} on {}: curve ({} bends) vs straight line, {} points",
        s.lc.meta.arch.arch.name(),
        s.lc.meta.dataset,
        s.lc.curve.num_bends(),
        c.rows.len()
    );
    if s.dcfg.train_subset.is_some() || s.dcfg.test_subset.is_some() {
        let _ = writeln!(
            o,
            "(on subsets: {} train, {} test images)",
            s.data.train.len(),
            s.data.test.len()
        );
    }
    let _ = writeln!(
        o,
        "{:<11} | {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}",
        "metric", "curve min", "max", "mean", "int", "line min", "max", "mean", "int"
    );
    let _ = writeln!(o, "{}", "-".repeat(95));
    for m in METRICS {
        let (a, b) = (&c.summary[m], &l.summary[m]);
        let _ = writeln!(
            o,
            "{m:<11} | {:>9.4} {:>9.4} {:>9.4} {:>9.4} | {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            a.min, a.max, a.mean, a.int, b.min, b.max, b.mean, b.int
        );
    }
    let mid = |p: &AlongPath| p.rows[p.rows.len() / 2].clone();
    let (cm, lm) = (mid(c), mid(l));
    let _ = writeln!(o, "{}", "-".repeat(95));
    let _ = writeln!(
        o,
        "test error at t={:.2}: curve {:.2}%  line {:.2}%",
        cm.t, cm.test_err, lm.test_err
    );
    let _ = writeln!(
        o,
        "barrier, train loss: curve {:.4} (t={:.2})  line {:.4} (t={:.2})",
        c.barrier.train_loss, c.barrier_t.train_loss, l.barrier.train_loss, l.barrier_t.train_loss
    );
    let _ = writeln!(
        o,
        "barrier, test error: curve {:.2} pts (t={:.2})  line {:.2} pts (t={:.2})",
        c.barrier.test_err, c.barrier_t.test_err, l.barrier.test_err, l.barrier_t.test_err
    );
    let _ = writeln!(o, "length: curve {:.3}  line {:.3}", c.length, l.length);
    o
}

/// Scores of the endpoints, their pair, and the curve ensemble of K; writes eval/ensemble.json.
pub fn run_ensemble(
    s: &Session,
    exp: &Path,
    k: usize,
    sampling: Sampling,
    average: Average,
    seed: u64,
) -> Result<EnsembleReport> {
    if k == 0 {
        bail!("--ensemble must be at least 1");
    }
    let ev = s.evaluator();
    let model = &s.lc.model;
    let curve = &s.lc.curve;
    let ts = ensemble::member_ts(k, sampling, seed);
    let order = match sampling {
        Sampling::Grid => ensemble::spread_order(&ts),
        Sampling::Random => (0..k).collect(),
    };
    let timer = std::time::Instant::now();
    let mut prog = Progress::new("ensemble", k as u64 + 2);
    // The endpoints as trained (with their own BN statistics) when their files exist, else φ(0), φ(1).
    let endpoint = |i: usize, t: f64| -> Result<Params> {
        Ok(match xp::load_endpoint_if_present(exp, i, model, &s.rt)? {
            Some(p) => p,
            None => {
                let p = curve.point(model, t);
                ev.update_bn(std::slice::from_ref(&p));
                p
            }
        })
    };
    let ends = [endpoint(0, 0.0)?, endpoint(1, 1.0)?];
    let (_, end_logits) = ev.evaluate(&ends, &s.data.test, true);
    prog.inc(2);
    let mut members = Vec::with_capacity(k);
    let group = ev.group_size(crate::eval::GROUP_BUDGET).max(1);
    for chunk in ts.chunks(group) {
        let ps: Vec<Params> = chunk.iter().map(|&t| curve.point(model, t)).collect();
        ev.update_bn(&ps);
        let (_, logits) = ev.evaluate(&ps, &s.data.test, true);
        prog.inc(chunk.len() as u64);
        members.extend(logits);
    }
    prog.finish();
    let report = ensemble::report(
        &end_logits[0],
        &end_logits[1],
        &members,
        ts,
        order,
        &s.data.test.labels,
        average,
    );
    let mut v = serde_json::to_value(&report)?;
    v["meta"] = json!({
        "dataset": s.lc.meta.dataset, "arch": s.lc.meta.arch.arch.name(), "k": k,
        "sampling": sampling, "average": average, "seed": seed, "n_test": s.data.test.len(),
        "test_subset": s.dcfg.test_subset, "seconds": timer.elapsed().as_secs_f64(),
    });
    checkpoint::write_atomic(
        &exp.join("eval").join("ensemble.json"),
        serde_json::to_string_pretty(&v)?.as_bytes(),
    )?;
    Ok(report)
}

pub fn ensemble_table(r: &EnsembleReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n{:<22} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "test set", "acc %", "NLL", "ECE", "Brier", "AUROC"
    );
    let _ = writeln!(o, "{}", "-".repeat(66));
    let k = r.by_size.len();
    let rows = [
        ("start (w1)", &r.start),
        ("end (w2)", &r.end),
        ("w1 + w2 ensemble", &r.endpoints),
    ];
    for (name, s) in rows {
        let _ = writeln!(
            o,
            "{name:<22} {:>8.2} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
            s.acc, s.nll, s.ece, s.brier, s.auroc
        );
    }
    let name = format!("curve ensemble of {k}");
    let s = &r.curve;
    let _ = writeln!(
        o,
        "{name:<22} {:>8.2} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
        s.acc, s.nll, s.ece, s.brier, s.auroc
    );
    o
}

pub fn landscape(args: &LandscapeArgs) -> Result<()> {
    let _lock = crate::lock::ExperimentLock::acquire_existing(&args.exp)?;
    let s = Session::open(&args.exp, &args.data, runtime(&args.rt)?)?;
    let f = run_landscape(&s, &args.exp, args.coords, args.grid, args.margin)?;
    let best = f
        .test_err
        .iter()
        .flatten()
        .flatten()
        .cloned()
        .fold(f64::INFINITY, f64::min);
    println!(
        "{}",
        json!({"plane": args.exp.join("landscape/plane.json"), "grid": args.grid, "seconds": f.seconds, "min_test_err": best})
    );
    Ok(())
}

pub fn run_landscape(
    s: &Session,
    exp: &Path,
    coords: Coords,
    grid: usize,
    margin: f64,
) -> Result<landscape::PlaneFile> {
    let ev = s.evaluator();
    let meta = PlaneMeta {
        dataset: s.lc.meta.dataset.clone(),
        arch: s.lc.meta.arch.arch.name().to_string(),
        coords,
        grid,
        margin,
        plane_bend: 0,
        caption: String::new(),
        train_subset: s.dcfg.train_subset,
        test_subset: s.dcfg.test_subset,
        curve_id: curve_id(&s.lc.path, &s.lc.meta),
        wd: s.wd,
    };
    landscape::compute(
        &ev,
        &s.lc.model,
        &s.lc.curve,
        coords,
        grid,
        margin,
        meta,
        &exp.join("landscape").join("plane.json"),
    )
}

/// Identifies a fitted curve (its epoch and file size), so outputs computed
/// from an older curve are recognised and recomputed.
pub fn curve_id(path: &Path, meta: &Meta) -> String {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    format!("epoch {} / {} bytes", meta.epoch, len)
}

pub fn export(args: &ExportArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.t) {
        bail!("--t must be in [0, 1], got {}", args.t);
    }
    let s = Session::open(&args.exp, &args.data, runtime(&args.rt)?)?;
    let p = export_point(&s, &s.lc.curve, args.t);
    let mut meta = s.lc.meta.clone();
    meta.curve = None;
    meta.note = format!("point t={} of the curve in {}", args.t, s.lc.path.display());
    checkpoint::save_model(&args.out, &p, &meta)?;
    let (test, _) = s
        .evaluator()
        .evaluate(std::slice::from_ref(&p), &s.data.test, false);
    println!(
        "{}",
        json!({"out": args.out, "t": args.t, "test_acc": test[0].acc, "test_nll": test[0].nll})
    );
    Ok(())
}

/// φ(t) with BatchNorm statistics re-estimated on the training data.
pub fn export_point(s: &Session, curve: &Curve, t: f64) -> Params {
    let p = curve.point(&s.lc.model, t);
    s.evaluator().update_bn(std::slice::from_ref(&p));
    p
}
