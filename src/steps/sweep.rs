//! The sweep along the curve and the line (`eval --points P`): whole, or one
//! shard of it, and the merge of the shards' parts.
//!
//! The units of work are the curve's points 0..P and then the line's
//! P..2P; a shard's part keeps its rows (`shards/along/<i>-of-<n>.json`,
//! rewritten after each group of points, so a rerun resumes), and the merge
//! builds from all rows exactly what a whole sweep writes: eval/along.json
//! and eval/along.csv.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};

use super::session::Session;
use crate::config::SweepConfig;
use crate::curve::line_point;
use crate::eval::along::{self, finish_path};
use crate::model::Params;
use crate::observe::{note, Observer, Progress};
use crate::schema::along::{Path as AlongPath, Row};
use crate::schema::{self, AlongFile, AlongMeta, AlongPart, FORMAT};
use crate::shard::Target;
use crate::vocab::Shard;

/// The whole sweep; writes eval/along.json and .csv.
pub fn sweep(s: &Session, exp: &Path, cfg: &SweepConfig, obs: &dyn Observer) -> Result<AlongFile> {
    let part = compute(s, cfg, Shard::WHOLE, None, obs)?;
    let out = finish(&[part], &[exp.join("eval/along.json")])?;
    write(exp, &out)?;
    note(
        obs,
        format!(
            "sweep of {} points on curve and line took {:.1}s",
            cfg.points, out.meta.seconds
        ),
    );
    Ok(out)
}

/// One shard of the sweep; writes (and resumes) its part file.
pub fn sweep_shard(
    s: &Session,
    exp: &Path,
    cfg: &SweepConfig,
    shard: Shard,
    obs: &dyn Observer,
) -> Result<AlongPart> {
    compute(s, cfg, shard, Some(&Target::Along.part(exp, shard)), obs)
}

/// The weights at t on a path.
type PointAt<'a> = dyn Fn(f64) -> Result<Params> + 'a;

/// What produced the sweep (its timing left at 0).
fn meta(s: &Session, cfg: &SweepConfig) -> AlongMeta {
    AlongMeta {
        dataset: s.lc.meta.dataset,
        arch: s.lc.meta.arch.arch,
        curve: s.lc.meta.curve.as_ref().map(|c| c.kind),
        bends: s.lc.curve.num_bends(),
        points: cfg.points,
        wd: s.wd,
        seconds: 0.0,
        precision: s.rt.precision,
        train_subset: s.dcfg.train_subset,
        test_subset: s.dcfg.test_subset,
        n_train: s.data.train.len(),
        n_test: s.data.test.len(),
        full_train: s.data.full_train,
        full_test: s.data.full_test,
        stack_models: s.rt.stack,
        curve_id: s.curve_id(),
    }
}

/// Evaluates the shard's rows not done yet (in the part at `file`, when
/// given, made with the same settings), writing the part after each group.
fn compute(
    s: &Session,
    cfg: &SweepConfig,
    shard: Shard,
    file: Option<&Path>,
    obs: &dyn Observer,
) -> Result<AlongPart> {
    cfg.validate()?;
    let p = cfg.points;
    let mut part = AlongPart {
        format: FORMAT,
        shard,
        meta: meta(s, cfg),
        curve: vec![None; p],
        line: vec![None; p],
    };
    if let Some(f) = file {
        resume(&mut part, f);
    }
    let ev = s.evaluator();
    let (model, curve) = (&s.lc.model, &s.lc.curve);
    let n = curve.num_bends();
    let (w1, w2) = (&curve.bends[0], &curve.bends[n - 1]);
    let ts = along::grid(p);
    let todo = |rows: &[Option<Row>], offset: usize| -> Vec<usize> {
        (0..p)
            .filter(|&k| shard.owns(offset + k) && rows[k].is_none())
            .collect()
    };
    let (kc, kl) = (todo(&part.curve, 0), todo(&part.line, p));
    let work = along::sweep_work(&ev, kc.len()) + along::sweep_work(&ev, kl.len());
    let mut prog = Progress::new(obs, "eval", work);
    let on_curve = |t: f64| Ok(curve.point(model, t));
    let on_line = |t: f64| Ok(line_point(model, w1, w2, t));
    let paths: [(&[usize], &PointAt, bool); 2] = [(&kc, &on_curve, true), (&kl, &on_line, false)];
    for (ks, point, is_curve) in paths {
        let mut timer = std::time::Instant::now();
        along::sweep_points(&ev, &ts, ks, point, s.wd, &mut prog, &mut |rows| {
            let dst = if is_curve {
                &mut part.curve
            } else {
                &mut part.line
            };
            for (k, r) in rows {
                dst[k] = Some(r);
            }
            part.meta.seconds += timer.elapsed().as_secs_f64();
            timer = std::time::Instant::now();
            match file {
                Some(f) => schema::write_json(f, &part),
                None => Ok(()),
            }
        })?;
    }
    prog.finish();
    Ok(part)
}

/// Keeps the rows of an earlier part of this shard made with the same
/// settings; a damaged or different one is computed again.
fn resume(part: &mut AlongPart, file: &Path) {
    let Ok(old) = schema::read_versioned::<AlongPart>(file, "") else {
        return;
    };
    let fits = old.curve.len() == part.curve.len() && old.line.len() == part.line.len();
    if fits && old.shard == part.shard && setup(&old.meta) == setup(&part.meta) {
        part.curve = old.curve;
        part.line = old.line;
        part.meta.seconds = old.meta.seconds;
    }
}

/// What every part must agree on: the meta without its timing.
fn setup(m: &AlongMeta) -> AlongMeta {
    AlongMeta {
        seconds: 0.0,
        ..m.clone()
    }
}

/// The parts at `paths` (one per shard, in order) as the sweep a single run
/// writes; refuses parts of other settings and incomplete ones by name.
pub fn merge(paths: &[std::path::PathBuf], remake: &str) -> Result<AlongFile> {
    let parts = paths
        .iter()
        .map(|p| schema::read_versioned::<AlongPart>(p, remake))
        .collect::<Result<Vec<_>>>()?;
    for (p, part) in paths.iter().zip(&parts).skip(1) {
        crate::shard::ensure_same_setup(&paths[0], &setup(&parts[0].meta), p, &setup(&part.meta))?;
    }
    finish(&parts, paths)
}

/// Every row from the shard that owns it, the summaries built from all.
fn finish(parts: &[AlongPart], paths: &[std::path::PathBuf]) -> Result<AlongFile> {
    let p = parts[0].meta.points;
    let n = parts.len();
    let mut rows: [Vec<Row>; 2] = [Vec::with_capacity(p), Vec::with_capacity(p)];
    for (which, dst) in rows.iter_mut().enumerate() {
        for k in 0..p {
            let u = which * p + k;
            let (part, path) = (&parts[u % n], &paths[u % n]);
            let src = if which == 0 { &part.curve } else { &part.line };
            match src.get(k).cloned().flatten() {
                Some(r) if part.shard == (Shard { index: u % n, count: n }) => dst.push(r),
                _ => bail!(
                    "{} lacks the row of t = {} on the {} (shard {}/{n} computes it). Rerun that shard (it resumes), then merge.",
                    path.display(),
                    along::grid(p)[k],
                    if which == 0 { "curve" } else { "line" },
                    u % n
                ),
            }
        }
    }
    let [c, l] = rows;
    let meta = AlongMeta {
        seconds: parts.iter().map(|x| x.meta.seconds).sum(),
        ..parts[0].meta.clone()
    };
    Ok(AlongFile {
        format: FORMAT,
        meta,
        curve: finish_path(c),
        line: finish_path(l),
    })
}

/// Writes eval/along.json and eval/along.csv, each atomically.
pub fn write(exp: &Path, f: &AlongFile) -> Result<()> {
    let dir = exp.join("eval");
    schema::write_json(&dir.join("along.json"), f)?;
    crate::files::write_atomic(
        &dir.join("along.csv"),
        along_csv(&f.curve, &f.line).as_bytes(),
    )
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
