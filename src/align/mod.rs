//! Permutation alignment of two endpoints and the lines it is judged by.
//!
//! Two networks trained from different seeds compute with their hidden
//! units in different orders. [`matching`] finds the permutation of the end
//! network that brings it closest to the start network (weight matching);
//! [`repair`] restores the activation statistics that interpolation
//! collapses. [`align`] runs both and evaluates the straight line from
//! start to end raw, aligned, and aligned with REPAIR, with the same sweep
//! the curve gets ([`crate::eval::along::sweep`]): the aligned network and
//! a repaired point are just more sources of parameters.

pub mod matching;
pub mod repair;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use tch::Kind;

pub use matching::{permute, weight_matching, MatchSettings, Matching, Permutation};

use crate::checkpoint;
use crate::config::{AlignConfig, ArchRequest, CurveConfig, DataRequest};
use crate::curve::{line_point, weights_only};
use crate::eval::along;
use crate::eval::Evaluator;
use crate::experiment as xp;
use crate::loader::{Data, DataConfig};
use crate::model::{Model, Params};
use crate::observe::{note, Observer, Progress};
use crate::runtime::Runtime;
use crate::schema::along::Path as AlongPath;
use crate::schema::{self, AlignFile, AlignMeta, LineSeconds, Repair, FORMAT};

/// Where `align` writes the end model permuted onto the start model.
pub fn aligned_dir(exp: &Path) -> PathBuf {
    exp.join("end_model_aligned")
}

/// The two endpoints with their architecture and data.
pub struct Pair {
    pub model: Model,
    pub data: Data,
    pub dcfg: DataConfig,
    pub start: Params,
    pub end: Params,
    pub start_path: PathBuf,
    pub end_path: PathBuf,
    pub meta: checkpoint::Meta,
    /// Where `model.perms` came from (a `--perm-spec` file, or the built-in
    /// architecture), for the error when permuting changes the logits.
    pub perm_source: String,
}

impl Pair {
    /// Loads `start` and `end` (modeconn checkpoints or PyTorch state dicts
    /// with `--arch`), refusing endpoints of different architectures or shapes.
    pub fn load(
        exp: &Path,
        (start, end): (&Path, &Path),
        data_req: &DataRequest,
        arch_req: &ArchRequest,
        rt: &Runtime,
    ) -> Result<Pair> {
        let (start, end) = (xp::resolve_model_path(start), xp::resolve_model_path(end));
        let (model, data, dcfg) = crate::train::curve::setup(
            exp,
            &start,
            &end,
            data_req,
            arch_req,
            rt,
            xp::TRAINING_COPIES,
        )?;
        let a = xp::load_params(&start, &model, rt)?;
        let b = xp::load_params(&end, &model, rt)?;
        let meta =
            xp::read_meta(&end)?.unwrap_or_else(|| xp::meta_for(&model.cfg, &data, &dcfg, 0));
        Ok(Pair {
            perm_source: format!("the built-in spec of {}", model.cfg.arch.name()),
            model,
            data,
            dcfg,
            start: a,
            end: b,
            start_path: start,
            end_path: end,
            meta,
        })
    }

    /// Uses the permutation spec in `path` (JSON, docs/FORMATS.md) instead
    /// of the architecture's own (a TorchScript network has none).
    pub fn with_perm_spec(mut self, path: &Path) -> Result<Pair> {
        let text = crate::files::read_text(path, crate::files::JSON_MAX)?;
        let file: crate::model::PermSpecFile = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a permutation spec ({e}); the format is in docs/FORMATS.md",
                path.display()
            )
        })?;
        self.model.perms = crate::model::PermSpec::from_file(
            &file,
            &self.model.spec,
            &path.display().to_string(),
        )?;
        self.perm_source = path.display().to_string();
        Ok(self)
    }
}

/// Aligns `end` onto `start`, writes `<exp>/end_model_aligned/` and, when
/// `cfg.points` > 0, evaluates the three lines into `<exp>/eval/align.json`.
pub fn align(
    exp: &Path,
    pair: &Pair,
    cfg: &AlignConfig,
    rt: &Runtime,
    obs: &dyn Observer,
) -> Result<AlignFile> {
    cfg.validate()?;
    let model = &pair.model;
    let settings = MatchSettings {
        max_sweeps: cfg.max_sweeps,
        seed: cfg.seed,
    };
    let mut on_sweep = |i: usize, obj: f64| {
        note(
            obs,
            format!("weight matching sweep {i}: objective {obj:.6e}"),
        )
    };
    let m = weight_matching(model, &pair.start, &pair.end, &settings, &mut on_sweep)?;
    let aligned = permute(model, &pair.end, &m.perm);
    let ev = Evaluator {
        model,
        data: &pair.data,
        rt,
    };
    let diff = max_logit_diff(&ev, &pair.end, &aligned)?;
    if diff.is_nan() || diff >= 1e-3 {
        bail!(
            "permuting {} changed its logits by {diff:.3e}, so the permutation spec ({}) does not describe a symmetry of this network: a tensor it reorders is missing or wrongly listed. Nothing was written",
            pair.end_path.display(),
            pair.perm_source
        );
    }
    let mut meta = pair.meta.clone();
    meta.note = format!(
        "{} permuted onto {} by weight matching (seed {}, {} sweeps)",
        pair.end_path.display(),
        pair.start_path.display(),
        cfg.seed,
        m.objective.len() - 1
    );
    let dir = aligned_dir(exp);
    checkpoint::save_model(&checkpoint::model_file(&dir), &aligned, &meta)?;
    note(
        obs,
        format!(
            "weight matching: {} sweeps in {:.1}s; wrote {}",
            m.objective.len() - 1,
            m.seconds,
            dir.display()
        ),
    );
    // The lines' train loss carries the curve's L2 term, as eval's line does.
    let wd = xp::section::<CurveConfig>(exp, "curve")?.map_or(0.0, |c| c.wd);
    let (lines, seconds, stats_s) = if cfg.points >= 2 {
        evaluate_lines(&ev, pair, &aligned, cfg, wd, obs)?
    } else {
        ((None, None, None), LineSeconds::default(), 0.0)
    };
    let out = AlignFile {
        format: FORMAT,
        meta: align_meta(pair, cfg, &m, (diff, wd), stats_s),
        raw: lines.0,
        aligned: lines.1,
        repaired: lines.2,
        seconds,
    };
    schema::write_json(&exp.join("eval").join("align.json"), &out)?;
    Ok(out)
}

type Lines = (Option<AlongPath>, Option<AlongPath>, Option<AlongPath>);

/// The raw, aligned and aligned-and-repaired lines, each timed; and the
/// seconds REPAIR spent on the endpoints' statistics.
fn evaluate_lines(
    ev: &Evaluator,
    pair: &Pair,
    aligned: &Params,
    cfg: &AlignConfig,
    wd: f64,
    obs: &dyn Observer,
) -> Result<(Lines, LineSeconds, f64)> {
    let model = ev.model;
    let ts = along::grid(cfg.points);
    let (w1, w2) = (
        weights_only(model, &pair.start),
        weights_only(model, &pair.end),
    );
    let w2a = weights_only(model, aligned);
    // REPAIR: BatchNorm re-estimation, which every line gets; the affine
    // correction needs the layers' outputs (built-in networks only).
    let affine = !model.has_bn && !model.is_script();
    let lines = if affine { 3 } else { 2 };
    let mut prog = Progress::new(obs, "align", lines * along::sweep_work(ev, cfg.points));
    let timed = |point: &dyn Fn(f64) -> Result<Params>, prog: &mut Progress| {
        let t = Instant::now();
        along::sweep(ev, &ts, point, wd, prog).map(|p| (p, t.elapsed().as_secs_f64()))
    };
    let (raw, raw_s) = timed(&|t| Ok(line_point(model, &w1, &w2, t)), &mut prog)?;
    let (al, al_s) = timed(&|t| Ok(line_point(model, &w1, &w2a, t)), &mut prog)?;
    let (rep, rep_s, stats_s) = if !affine {
        (None, 0.0, 0.0)
    } else {
        let t0 = Instant::now();
        let rt = ev.rt;
        let batches = repair::sample(ev.data, cfg.repair_images, rt.eval_batch, rt.channels_last)?;
        let sa = repair::stats(model, &pair.start, &batches)?;
        let sb = repair::stats(model, aligned, &batches)?;
        let stats_s = t0.elapsed().as_secs_f64();
        let point = |t| repair::repair(model, &pair.start, aligned, (&sa, &sb), t, &batches);
        let (p, s) = timed(&point, &mut prog)?;
        (Some(p), s, stats_s)
    };
    prog.finish();
    let seconds = LineSeconds {
        raw: raw_s,
        aligned: al_s,
        repaired: rep_s,
    };
    Ok(((Some(raw), Some(al), rep), seconds, stats_s))
}

/// Largest |logit| difference of two parameter sets on the first test batch.
fn max_logit_diff(ev: &Evaluator, a: &Params, b: &Params) -> Result<f64> {
    let _g = tch::no_grad_guard();
    let n = ev.data.test.len().min(256);
    if n == 0 {
        bail!("the test split is empty");
    }
    let (x, _) = ev
        .data
        .batch_range(&ev.data.test, 0, n, ev.rt.channels_last)?;
    let mode = crate::model::BnMode::Eval;
    let prec = crate::model::Precision::Fp32;
    let (ya, yb) = (
        ev.model.forward(a, &x, mode, prec)?,
        ev.model.forward(b, &x, mode, prec)?,
    );
    Ok((ya - yb)
        .abs()
        .max()
        .to_kind(Kind::Double)
        .double_value(&[]))
}

fn align_meta(
    pair: &Pair,
    cfg: &AlignConfig,
    m: &Matching,
    (diff, wd): (f64, f64),
    stats_s: f64,
) -> AlignMeta {
    let moved = m
        .perm
        .groups
        .iter()
        .flat_map(|g| g.iter().enumerate().filter(|(i, &p)| p != *i as i64))
        .count() as i64;
    let id = |p: &Path| {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        format!("{} / {len} bytes", p.display())
    };
    AlignMeta {
        dataset: pair.dcfg.dataset,
        arch: pair.model.cfg.arch,
        seed: cfg.seed,
        max_sweeps: cfg.max_sweeps,
        objective: m.objective.clone(),
        moved,
        permutable: pair.model.perms.groups.iter().map(|g| g.size).sum(),
        max_logit_diff: diff,
        match_seconds: m.seconds,
        repair: if pair.model.has_bn {
            Repair::BnReset
        } else if pair.model.is_script() {
            Repair::Unavailable
        } else {
            Repair::Affine
        },
        repair_images: cfg.repair_images.min(pair.data.train.len()),
        repair_stats_seconds: stats_s,
        points: cfg.points,
        wd,
        n_train: pair.data.train.len(),
        n_test: pair.data.test.len(),
        train_subset: pair.dcfg.train_subset,
        test_subset: pair.dcfg.test_subset,
        start_id: id(&pair.start_path),
        end_id: id(&pair.end_path),
    }
}

#[cfg(test)]
mod tests;
