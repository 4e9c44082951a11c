//! The evaluation pipelines over a fitted curve: the sweep along t, the
//! curve ensemble, the landscape plane and a point taken out for export.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::checkpoint::Meta;
use crate::config::{CurveConfig, DataRequest, EnsembleConfig, LandscapeConfig, SweepConfig};
use crate::curve::line_point;
use crate::eval::along::{self, Path as AlongPath};
use crate::eval::ensemble::{self, Sampling};
use crate::eval::Evaluator;
use crate::experiment::{self as xp, LoadedCurve};
use crate::landscape::{self, PlaneMeta};
use crate::loader::{Data, DataConfig};
use crate::model::Params;
use crate::observe::{note, Observer, Progress};
use crate::runtime::Runtime;
use crate::schema::{self, AlongFile, AlongMeta, EnsembleFile, EnsembleMeta, FORMAT};

/// A curve with its data, ready to evaluate.
pub struct Session {
    pub lc: LoadedCurve,
    pub data: Data,
    pub dcfg: DataConfig,
    pub rt: Runtime,
    /// The weight decay the curve was fitted with (its loss includes it).
    pub wd: f64,
}

impl Session {
    pub fn open(exp: &Path, data: &DataRequest, rt: Runtime) -> Result<Session> {
        let lc = xp::load_curve(exp, &rt)?;
        let (data, dcfg) = xp::load_data_for(&lc.meta, Some(exp), data, &rt, &lc.path)?;
        let wd = xp::section::<CurveConfig>(exp, "curve")?
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

    /// Identifies the curve evaluated (see [`curve_id`]).
    pub fn curve_id(&self) -> String {
        curve_id(&self.lc.path, &self.lc.meta)
    }

    /// φ(t) with BatchNorm statistics re-estimated on the training data.
    pub fn point(&self, t: f64) -> Result<Params> {
        let p = self.lc.curve.point(&self.lc.model, t);
        self.evaluator().update_bn(std::slice::from_ref(&p))?;
        Ok(p)
    }
}

/// Identifies a fitted curve (its epoch and file size), so outputs computed
/// from an older curve are recognised and recomputed.
pub fn curve_id(path: &Path, meta: &Meta) -> String {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    format!("epoch {} / {} bytes", meta.epoch, len)
}

/// The sweep along the curve and the line; writes eval/along.json and .csv.
pub fn sweep(s: &Session, exp: &Path, cfg: &SweepConfig, obs: &dyn Observer) -> Result<AlongFile> {
    cfg.validate()?;
    let ev = s.evaluator();
    let ts = along::grid(cfg.points);
    let model = &s.lc.model;
    let curve = &s.lc.curve;
    let n = curve.num_bends();
    let (w1, w2) = (&curve.bends[0], &curve.bends[n - 1]);
    let mut prog = Progress::new(obs, "eval", 2 * along::sweep_work(&ev, cfg.points));
    let timer = std::time::Instant::now();
    let c = along::sweep(&ev, &ts, &|t| Ok(curve.point(model, t)), s.wd, &mut prog)?;
    let l = along::sweep(
        &ev,
        &ts,
        &|t| Ok(line_point(model, w1, w2, t)),
        s.wd,
        &mut prog,
    )?;
    prog.finish();
    let seconds = timer.elapsed().as_secs_f64();
    let meta = AlongMeta {
        dataset: s.lc.meta.dataset,
        arch: s.lc.meta.arch.arch,
        curve: s.lc.meta.curve.as_ref().map(|c| c.kind),
        bends: n,
        points: cfg.points,
        wd: s.wd,
        seconds,
        precision: s.rt.precision,
        train_subset: s.dcfg.train_subset,
        test_subset: s.dcfg.test_subset,
        n_train: s.data.train.len(),
        n_test: s.data.test.len(),
        full_train: s.data.full_train,
        full_test: s.data.full_test,
        stack_models: s.rt.stack,
        curve_id: s.curve_id(),
    };
    let out = AlongFile {
        format: FORMAT,
        meta,
        curve: c,
        line: l,
    };
    let dir = exp.join("eval");
    schema::write_json(&dir.join("along.json"), &out)?;
    crate::checkpoint::write_atomic(
        &dir.join("along.csv"),
        along_csv(&out.curve, &out.line).as_bytes(),
    )?;
    note(
        obs,
        format!(
            "sweep of {} points on curve and line took {seconds:.1}s",
            cfg.points
        ),
    );
    Ok(out)
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
            let cells: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{name},{}", cells.join(","));
        }
    }
    out
}

/// Scores of the endpoints, their pair, and the curve ensemble of K; writes
/// eval/ensemble.json.
pub fn ensemble(
    s: &Session,
    exp: &Path,
    cfg: &EnsembleConfig,
    obs: &dyn Observer,
) -> Result<EnsembleFile> {
    cfg.validate()?;
    let k = cfg.k;
    let ev = s.evaluator();
    let model = &s.lc.model;
    let curve = &s.lc.curve;
    let ts = ensemble::member_ts(k, cfg.sampling, cfg.seed);
    let order = match cfg.sampling {
        Sampling::Grid => ensemble::spread_order(&ts),
        Sampling::Random => (0..k).collect(),
    };
    let timer = std::time::Instant::now();
    let mut prog = Progress::new(obs, "ensemble", k as u64 + 2);
    // The endpoints as trained (with their own BN statistics) when their files exist, else φ(0), φ(1).
    let endpoint = |i: usize, t: f64| -> Result<Params> {
        Ok(match xp::load_endpoint_if_present(exp, i, model, &s.rt)? {
            Some(p) => p,
            None => s.point(t)?,
        })
    };
    let ends = [endpoint(0, 0.0)?, endpoint(1, 1.0)?];
    let (_, end_logits) = ev.evaluate(&ends, &s.data.test, true)?;
    prog.inc(2);
    let mut members = Vec::with_capacity(k);
    let group = ev.group_size(crate::eval::GROUP_BUDGET).max(1);
    for chunk in ts.chunks(group) {
        let ps: Vec<Params> = chunk.iter().map(|&t| curve.point(model, t)).collect();
        ev.update_bn(&ps)?;
        let (_, logits) = ev.evaluate(&ps, &s.data.test, true)?;
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
        cfg.average,
    )?;
    let out = EnsembleFile {
        format: FORMAT,
        meta: EnsembleMeta {
            dataset: s.lc.meta.dataset,
            arch: s.lc.meta.arch.arch,
            k,
            sampling: cfg.sampling,
            average: cfg.average,
            seed: cfg.seed,
            n_test: s.data.test.len(),
            test_subset: s.dcfg.test_subset,
            seconds: timer.elapsed().as_secs_f64(),
            curve_id: s.curve_id(),
        },
        report,
    };
    schema::write_json(&exp.join("eval").join("ensemble.json"), &out)?;
    Ok(out)
}

/// The loss landscape on the plane through w1, the bend and w2; writes
/// (and resumes) landscape/plane.json.
pub fn landscape(
    s: &Session,
    exp: &Path,
    cfg: &LandscapeConfig,
    obs: &dyn Observer,
) -> Result<landscape::PlaneFile> {
    cfg.validate()?;
    let ev = s.evaluator();
    let meta = PlaneMeta {
        dataset: s.lc.meta.dataset,
        arch: s.lc.meta.arch.arch,
        coords: cfg.coords,
        grid: cfg.grid,
        margin: cfg.margin,
        plane_bend: 0,
        caption: String::new(),
        train_subset: s.dcfg.train_subset,
        test_subset: s.dcfg.test_subset,
        curve_id: s.curve_id(),
        wd: s.wd,
    };
    landscape::compute(
        &ev,
        &s.lc.model,
        &s.lc.curve,
        cfg,
        meta,
        &exp.join("landscape").join("plane.json"),
        obs,
    )
}

/// Refuses an export before any work: t outside [0, 1], or an output inside
/// the experiment's own folders.
pub fn check_export(exp: &Path, t: f64, out: &Path) -> Result<()> {
    if !(0.0..=1.0).contains(&t) {
        anyhow::bail!("--t must be in [0, 1], got {t}");
    }
    if let Some(place) = xp::owned_by_experiment(exp, out) {
        anyhow::bail!(
            "--out {} is inside the experiment's own {place}; writing there would overwrite its files. Choose a path outside {}/{place}",
            out.display(),
            exp.display()
        );
    }
    Ok(())
}

/// Writes φ(t) (BatchNorm statistics re-estimated) as a PyTorch state dict
/// at `out`; returns its test metrics.
pub fn export(s: &Session, t: f64, out: &Path) -> Result<crate::eval::Stats> {
    check_export(
        s.lc.path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new(".")),
        t,
        out,
    )?;
    let p = s.point(t)?;
    let mut meta = s.lc.meta.clone();
    meta.curve = None;
    meta.note = format!("point t={t} of the curve in {}", s.lc.path.display());
    crate::checkpoint::save_model(out, &p, &meta)?;
    let (mut test, _) = s
        .evaluator()
        .evaluate(std::slice::from_ref(&p), &s.data.test, false)?;
    Ok(test.swap_remove(0))
}
