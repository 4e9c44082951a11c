//! Curves: φθ(t) between two fixed endpoints, trained by minimising
//! E_{t~U(0,1)}[CE(φ(t)) + (wd/2)·‖φ(t)‖²] (one t per batch), or assembled
//! from existing state dicts with 0 epochs (an import).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use tch::{Kind, Tensor};

use super::{stream, Batches, Context, EpochPlan, Job, SavedState, Start, Step, Trainer};
use crate::checkpoint::{self, CurveMeta, Meta};
use crate::config::{ArchRequest, CurveConfig, DataRequest};
use crate::curve::Curve;
use crate::eval::{Evaluator, Stats};
use crate::experiment::{self as xp};
use crate::loader::{self, Data, DataConfig};
use crate::model::{BnMode, Model, Params};
use crate::observe::{Event, Observer, Progress};
use crate::optim::{OptimConfig, Optimizer};
use crate::runtime::Runtime;

/// Works out the architecture and the data of a curve between `start` and
/// `end` from their metadata, the experiment's config.json and the request.
pub fn setup(
    exp: &Path,
    start: &Path,
    end: &Path,
    data_req: &DataRequest,
    arch_req: &ArchRequest,
    rt: &Runtime,
    copies: (usize, &str, &str),
) -> Result<(Model, Data, DataConfig)> {
    let ms = xp::read_meta(start)?;
    let me = xp::read_meta(end)?;
    if let (Some(a), Some(b)) = (&ms, &me) {
        if a.arch != b.arch {
            bail!(
                "the endpoints differ in architecture: {} is {} ({:?}), {} is {} ({:?})",
                start.display(),
                a.arch.arch.name(),
                a.arch,
                end.display(),
                b.arch.arch.name(),
                b.arch
            );
        }
        let side = |m: &Meta| (m.dataset, m.classes.clone());
        if side(a) != side(b) {
            bail!(
                "the endpoints were trained on different data: {} on {} with classes {:?}, {} on {} with classes {:?}",
                start.display(),
                a.dataset,
                a.classes,
                end.display(),
                b.dataset,
                b.classes
            );
        }
        let prep = |m: &Meta| (m.normalize, m.norm_mean.clone(), m.norm_std.clone());
        if prep(a) != prep(b) {
            bail!(
                "the endpoints see their inputs differently: {} uses normalisation {} (mean {:?}, std {:?}), {} uses {} (mean {:?}, std {:?}). A curve between them has no single input to evaluate; train both with the same --normalize",
                start.display(),
                a.normalize,
                a.norm_mean,
                a.norm_std,
                end.display(),
                b.normalize,
                b.norm_mean,
                b.norm_std
            );
        }
    }
    let meta = ms.or(me);
    let base_data: Option<DataConfig> = xp::section(exp, "data")?.or_else(|| {
        meta.as_ref().map(|m| DataConfig {
            dataset: m.dataset,
            data_dir: None,
            normalize: m.normalize,
            train_subset: None,
            test_subset: None,
        })
    });
    let arch_kind = arch_req
        .arch
        .or(meta.as_ref().map(|m| m.arch.arch))
        .unwrap_or(crate::model::ArchKind::SeedConvnet);
    let dcfg = xp::data_config(data_req, base_data.as_ref(), arch_kind)?;
    if let Some(m) = &meta {
        if m.dataset != dcfg.dataset {
            bail!(
                "the endpoints were trained on '{}' but --dataset is '{}'",
                m.dataset,
                dcfg.dataset
            );
        }
    }
    let norm = meta
        .as_ref()
        .map(|m| (m.norm_mean.clone(), m.norm_std.clone()))
        .filter(|(m, _)| !m.is_empty());
    // The architecture flags are checked before the data is read.
    if let (Some(req), Some(m)) = (arch_req.arch, &meta) {
        if m.arch.arch != req {
            bail!(
                "--arch {} does not match the endpoints' architecture {} ({})",
                req.name(),
                m.arch.arch.name(),
                start.display()
            );
        }
    }
    let base = meta.as_ref().map(|m| &m.arch);
    xp::precheck_arch(arch_req, base, dcfg.dataset, copies)?;
    let data = loader::load(&dcfg, rt.device, norm)?;
    let arch = xp::arch_config(arch_req, base, &data)?;
    Ok((Model::new(arch)?, data, dcfg))
}

/// Loads the endpoints and builds the initial curve, cross-checking every
/// key and shape of the two files (errors name the key and both files).
pub fn initial_curve(model: &Model, cfg: &CurveConfig, rt: &Runtime) -> Result<Curve> {
    let s = xp::load_params(&cfg.start, model, rt)?;
    let e = xp::load_params(&cfg.end, model, rt)?;
    for (n, t) in s.iter() {
        let u = e.get(n);
        if t.size() != u.size() {
            bail!(
                "key '{n}' has shape {:?} in {} but {:?} in {}",
                t.size(),
                cfg.start.display(),
                u.size(),
                cfg.end.display()
            );
        }
    }
    let w1 = crate::curve::weights_only(model, &s);
    let w2 = crate::curve::weights_only(model, &e);
    let mut curve = Curve::linear_init(cfg.kind, cfg.bends, &w1, &w2)?;
    for (k, path) in &cfg.init_bends {
        let p = xp::load_params(path, model, rt)
            .with_context(|| format!("--init-bend {k}={}", path.display()))?;
        curve.bends[*k] = crate::curve::weights_only(model, &p).deep_clone();
    }
    Ok(curve)
}

/// Fits the curve into `<exp>/curve_model/` (or, with 0 epochs, assembles
/// and saves it), resuming a saved fit when `resume`.
pub fn fit_curve(
    exp: &Path,
    cx: &Context,
    cfg: &CurveConfig,
    resume: bool,
    obs: &dyn Observer,
) -> Result<()> {
    cfg.validate("--lr")?;
    let (model, rt) = (cx.model, cx.rt);
    let dir = xp::curve_dir(exp);
    let step = Step {
        exp,
        section: "curve",
        what: "a curve fit",
    };
    // Everything, a saved state included, is read and checked before the
    // first write, so a refused command leaves the experiment as it was.
    let mut curve = initial_curve(model, cfg, rt)?;
    let ends = xp::EndpointFiles::of(&cfg.start, &cfg.end)?;
    let mut start = Start::default();
    if step.refuse_without_resume(&dir, resume)? {
        if let Some(st) = SavedState::read(&dir)? {
            check_same_curve(&dir, &st, cx, cfg)?;
            step.check_settings(cfg, cx)?;
            xp::ensure_same(
                exp,
                "curve_endpoints",
                &ends,
                "a curve fitted between other endpoint files",
                "The endpoints changed after the curve was started (retrained?): delete curve_model/ to fit a new curve, or use a new --exp.",
            )?;
            restore_bends(&mut curve, &st, cfg.bends, model, rt)?;
            let (names, leaves) = (curve.trainable_names(), curve.trainable());
            st.check_optim(&curve_optim(cfg), &names, &leaves)?;
            start = st.start();
        }
    }
    let batches = Batches {
        batch_size: cfg.batch_size,
        augment: cfg.augment,
        bn: BnMode::Train(None),
    };
    let trainer = Trainer::new(cx, batches, &cfg.dropout_schedule(), cfg.epochs)?;
    if cfg.epochs > 0 {
        trainer.ensure_batches("curve")?;
    }
    xp::write_section(exp, "arch", &model.cfg)?;
    xp::write_section(exp, "curve_endpoints", &ends)?;
    step.record(cfg, cx, obs)?;
    let job = CurveJob::new(dir, curve, cx, cfg);
    if cfg.epochs == 0 || start.epoch >= cfg.epochs {
        let file = checkpoint::curve_file(&job.dir);
        checkpoint::save_curve(&file, &job.curve, &job.meta(cfg.epochs.max(start.epoch)))?;
        if cfg.epochs == 0 {
            obs.event(&Event::Note {
                text: format!(
                    "imported a curve of {} bends into {}",
                    cfg.bends,
                    file.display()
                ),
            });
        }
        return Ok(());
    }
    let plan = EpochPlan {
        epochs: cfg.epochs,
        optim: curve_optim(cfg),
        rate: super::Rate::Schedule(cfg.schedule),
    };
    let total = cfg.epochs as u64 * trainer.batches_per_epoch();
    let mut prog = Progress::new(obs, "curve", total);
    trainer.run(&job, &plan, start, &mut prog)?;
    prog.finish();
    Ok(())
}

/// Refuses a saved fit of another curve or architecture: `--resume`
/// continues a fit with its own settings.
fn check_same_curve(dir: &Path, st: &SavedState, cx: &Context, cfg: &CurveConfig) -> Result<()> {
    if st.meta.curve != Some(curve_meta(cfg)) || st.meta.arch != cx.model.cfg {
        let saved = st.meta.curve.as_ref().map_or("no curve".to_string(), |c| {
            format!("a {} of {} bends", c.kind, c.bends)
        });
        bail!(
            "{} holds {saved} of {}, but a {} of {} bends of {} was asked for. --resume continues a fit with its own settings: repeat them, or delete {} to fit a new curve",
            st.path.display(),
            st.meta.arch.arch.name(),
            cfg.kind,
            cfg.bends,
            cx.model.cfg.arch.name(),
            dir.display()
        );
    }
    Ok(())
}

/// SGD with momentum on the bends; the regulariser is on φ(t) (the batch's
/// extra loss), not on the bends.
fn curve_optim(cfg: &CurveConfig) -> OptimConfig {
    OptimConfig {
        kind: cfg.optimizer,
        lr: cfg.lr,
        momentum: cfg.momentum,
        nesterov: false,
        wd: 0.0,
    }
}

fn curve_meta(cfg: &CurveConfig) -> CurveMeta {
    CurveMeta {
        kind: cfg.kind,
        bends: cfg.bends,
    }
}

/// Puts a saved state's inner bends into `curve` (the endpoints come from
/// their own files).
fn restore_bends(
    curve: &mut Curve,
    st: &SavedState,
    bends: usize,
    model: &Model,
    rt: &Runtime,
) -> Result<()> {
    let path = &st.path;
    let weights: Vec<String> = model.weight_names().map(str::to_string).collect();
    let tensors = st
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    for (k, b) in checkpoint::split_bends(tensors, bends, path)?
        .into_iter()
        .enumerate()
    {
        if k == 0 || k + 1 == bends {
            continue;
        }
        let p = checkpoint::in_order(b, &weights);
        let origin = format!("{} (bend {k})", path.display());
        model.check_weights(&p, &origin)?;
        model.check_finite(&p, &origin)?;
        curve.bends[k] = model.prepare(&p, rt.device, rt.channels_last);
    }
    Ok(())
}

/// A curve's parameters for one training batch: φ(t) at a t ~ U(0,1) drawn
/// from tch's RNG, with the L2 term (wd/2)·‖φ(t)‖².
pub fn batch_at_random_t(curve: &Curve, wd: f64) -> (Params, Option<Tensor>) {
    let t = Tensor::rand([1], (Kind::Double, tch::Device::Cpu)).double_value(&[0]);
    at_t(curve, wd, t)
}

fn at_t(curve: &Curve, wd: f64, t: f64) -> (Params, Option<Tensor>) {
    let w = curve.weights_at(t);
    let reg = (wd > 0.0).then(|| w.sq_norm(|_| true) * (0.5 * wd));
    (w, reg)
}

/// `k` parameter sets for one batch, φ(t_i) with t_i drawn uniformly from
/// [i/k, (i+1)/k): a stratified estimate of E_t (for k = 1, exactly
/// [`batch_at_random_t`], the same random stream).
pub fn batch_at_stratified_t(curve: &Curve, wd: f64, k: usize) -> Vec<(Params, Option<Tensor>)> {
    if k <= 1 {
        return vec![batch_at_random_t(curve, wd)];
    }
    let u = Vec::<f64>::try_from(Tensor::rand([k as i64], (Kind::Double, tch::Device::Cpu)))
        .unwrap_or_else(|_| vec![0.5; k]);
    u.iter()
        .enumerate()
        .map(|(i, u)| at_t(curve, wd, (i as f64 + u) / k as f64))
        .collect()
}

/// A curve being fitted: its inner bends are the leaves.
struct CurveJob<'a> {
    dir: PathBuf,
    curve: Curve,
    cx: Context<'a>,
    cfg: &'a CurveConfig,
    names: Vec<String>,
    leaves: Vec<Tensor>,
}

impl<'a> CurveJob<'a> {
    fn new(dir: PathBuf, mut curve: Curve, cx: &Context<'a>, cfg: &'a CurveConfig) -> CurveJob<'a> {
        let leaves = curve.trainable();
        let names = curve.trainable_names();
        CurveJob {
            dir,
            curve,
            cx: *cx,
            cfg,
            names,
            leaves,
        }
    }

    fn meta(&self, epoch: usize) -> Meta {
        let mut m = xp::meta_for(&self.cx.model.cfg, self.cx.data, self.cx.dcfg, epoch);
        m.curve = Some(curve_meta(self.cfg));
        m.note = format!(
            "curve between {} and {}; wd {}",
            self.cfg.start.display(),
            self.cfg.end.display(),
            self.cfg.wd
        );
        m
    }
}

impl Job for CurveJob<'_> {
    fn label(&self) -> &str {
        "curve"
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn seed(&self) -> u64 {
        self.cfg.seed + stream::CURVE
    }
    fn leaves(&self) -> (&[String], &[Tensor]) {
        (&self.names, &self.leaves)
    }
    fn batch(&self) -> Vec<(Params, Option<Tensor>)> {
        batch_at_stratified_t(&self.curve, self.cfg.wd, self.cfg.t_per_batch)
    }
    /// Test metrics at t = 0.5, with BatchNorm statistics re-estimated first.
    fn test(&self, ev: &Evaluator) -> Result<(Stats, Option<f64>)> {
        let mid = self.curve.point(self.cx.model, 0.5);
        ev.update_bn(std::slice::from_ref(&mid))?;
        let (mut test, _) = ev.evaluate(std::slice::from_ref(&mid), &self.cx.data.test, false)?;
        Ok((test.swap_remove(0), Some(0.5)))
    }
    /// The curve file, then the resume state (all bends and the optimiser).
    fn save(&self, epochs_done: usize, opt: &Optimizer) -> Result<()> {
        let meta = self.meta(epochs_done);
        let mut all = Vec::new();
        for (k, b) in self.curve.bends.iter().enumerate() {
            for (n, t) in b.to_state_dict() {
                all.push((format!("bend{k}.{n}"), t));
            }
        }
        all.extend(opt.state(&self.names));
        checkpoint::save_curve(&checkpoint::curve_file(&self.dir), &self.curve, &meta)?;
        checkpoint::write_tensors(&checkpoint::state_file(&self.dir), &all, Some(&meta))
    }
}
