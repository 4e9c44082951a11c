//! `modeconn fit-curve`: a curve between two fixed endpoints, trained by
//! minimising E_{t~U(0,1)}[CE(φ(t)) + (wd/2)·‖φ(t)‖²] (one t per batch), or
//! assembled from existing state dicts with `--epochs 0`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::endpoints::{default_augment, runtime};
use crate::checkpoint::{self, CurveMeta, Meta};
use crate::cli::FitCurveArgs;
use crate::curve::{Curve, CurveKind};
use crate::eval::Evaluator;
use crate::experiment::{self as xp};
use crate::loader::{self, Data, DataConfig};
use crate::model::{BnMode, Model};
use crate::optim::{lr_at, OptimConfig, OptimKind, Optimizer, Schedule};
use crate::progress::Progress;
use crate::runtime::Runtime;
use crate::train::{append_log, check_finite, epoch_seed, EpochLog, Loop, Timer};

/// The `curve` section of config.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CurveConfig {
    pub kind: CurveKind,
    pub bends: usize,
    pub epochs: usize,
    pub batch_size: i64,
    pub lr: f64,
    pub momentum: f64,
    pub wd: f64,
    pub schedule: Schedule,
    pub seed: u64,
    pub augment: bool,
    pub start: PathBuf,
    pub end: PathBuf,
    pub init_bends: Vec<(usize, PathBuf)>,
    pub precision: crate::model::Precision,
}

pub fn run(args: &FitCurveArgs) -> Result<()> {
    let rt = runtime(&args.rt)?;
    let exp = match (&args.exp, &args.start) {
        (Some(e), _) => e.clone(),
        (None, Some(_)) => PathBuf::from("experiments/imported"),
        (None, None) => bail!(
            "fit-curve needs --exp DIR (with start_model/ and end_model/) or --start A --end B"
        ),
    };
    let _lock = crate::lock::ExperimentLock::acquire(&exp)?;
    let start = args
        .start
        .clone()
        .unwrap_or_else(|| checkpoint::model_file(&xp::endpoint_dir(&exp, 0, 2)));
    let end = args
        .end
        .clone()
        .unwrap_or_else(|| checkpoint::model_file(&xp::endpoint_dir(&exp, 1, 2)));
    let (start, end) = (xp::resolve_model_path(&start), xp::resolve_model_path(&end));
    for p in [&start, &end] {
        if !p.exists() {
            bail!("endpoint checkpoint {} does not exist. Train endpoints with `modeconn train-endpoints --exp {}`, or pass --start/--end", p.display(), exp.display());
        }
    }
    let (model, data, dcfg) = setup(args, &exp, &start, &end, &rt)?;
    let cfg = curve_config(args, &data, &start, &end, &rt)?;
    fit(&exp, &model, &data, &dcfg, &cfg, &rt, args.resume)?;
    Ok(())
}

/// Works out architecture and data from the endpoints' metadata and the flags.
pub fn setup(
    args: &FitCurveArgs,
    exp: &Path,
    start: &Path,
    end: &Path,
    rt: &Runtime,
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
        if a.dataset != b.dataset || a.classes != b.classes {
            bail!(
                "the endpoints were trained on different data: {} on {}, {} on {}",
                start.display(),
                a.dataset,
                end.display(),
                b.dataset
            );
        }
    }
    let meta = ms.or(me);
    let base_data: Option<DataConfig> = xp::section(exp, "data")?.or_else(|| {
        meta.as_ref().map(|m| DataConfig {
            dataset: m.dataset.clone(),
            data_dir: None,
            normalize: crate::loader::Normalize::parse(&m.normalize)
                .unwrap_or(crate::loader::Normalize::None),
            train_subset: None,
            test_subset: None,
        })
    });
    let arch_kind = args
        .model
        .arch
        .or(meta.as_ref().map(|m| m.arch.arch))
        .unwrap_or(crate::model::ArchKind::SeedConvnet);
    let dcfg = xp::data_config(&args.data, base_data.as_ref(), arch_kind)?;
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
    let data = loader::load(&dcfg, rt.device, norm)?;
    let arch = xp::arch_config(&args.model, meta.as_ref().map(|m| &m.arch), &data);
    if let Some(m) = &meta {
        if m.arch.arch != arch.arch {
            bail!(
                "--arch {} does not match the endpoints' architecture {} ({})",
                arch.arch.name(),
                m.arch.arch.name(),
                start.display()
            );
        }
    }
    Ok((Model::new(arch)?, data, dcfg))
}

fn curve_config(
    args: &FitCurveArgs,
    data: &Data,
    start: &Path,
    end: &Path,
    rt: &Runtime,
) -> Result<CurveConfig> {
    let o = &args.optim;
    if args.bends < 3 {
        bail!(bends_error(args.bends));
    }
    let mut init_bends = Vec::new();
    for spec in &args.init_bend {
        let (k, p) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--init-bend expects K=PATH, got '{spec}'"))?;
        let k: usize = k
            .trim()
            .parse()
            .map_err(|_| anyhow!("--init-bend: '{k}' is not a bend index"))?;
        if k == 0 || k + 1 >= args.bends {
            bail!("--init-bend {k}: only inner bends 1..{} can be initialised (the endpoints are fixed)", args.bends.saturating_sub(2));
        }
        init_bends.push((k, PathBuf::from(p)));
    }
    if o.optimizer == Some(OptimKind::Adam) {
        bail!("fit-curve uses SGD with momentum (as the reference implementation); --optimizer adam is for train-endpoints");
    }
    let epochs = o.epochs.unwrap_or(10);
    let cfg = CurveConfig {
        kind: args.curve,
        bends: args.bends,
        epochs,
        batch_size: o.batch_size.unwrap_or(128),
        lr: o.lr.unwrap_or(0.015),
        momentum: o.momentum.unwrap_or(0.9),
        // An imported curve (--epochs 0) has no known regulariser: its "loss" is the plain NLL
        // unless --wd says otherwise.
        wd: o.wd.unwrap_or(if epochs == 0 { 0.0 } else { 5e-4 }),
        schedule: o.schedule.unwrap_or(Schedule::Reference),
        seed: o.seed.unwrap_or(1),
        augment: if o.no_augment {
            false
        } else {
            o.augment || default_augment(data)
        },
        start: start.to_path_buf(),
        end: end.to_path_buf(),
        init_bends,
        precision: rt.precision,
    };
    validate(&cfg, "--lr")?;
    Ok(cfg)
}

/// The rules every curve fit obeys (`lr_flag` names the learning-rate flag
/// in the user's command: `--lr` for fit-curve, `--curve-lr` for run).
pub fn validate(cfg: &CurveConfig, lr_flag: &str) -> Result<()> {
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        bail!("{lr_flag} must be a positive number, got {}", cfg.lr);
    }
    if cfg.batch_size < 1 {
        bail!("--batch-size must be at least 1, got {}", cfg.batch_size);
    }
    if !(cfg.wd >= 0.0 && cfg.wd.is_finite()) {
        bail!("--wd must be >= 0, got {}", cfg.wd);
    }
    if cfg.bends < 3 {
        bail!(bends_error(cfg.bends));
    }
    Ok(())
}

/// The error for fewer than 3 bends.
fn bends_error(bends: usize) -> String {
    format!("--bends must be at least 3 (the two endpoints and at least one free bend; 3 = quadratic Bezier), got {bends}")
}

/// Loads the endpoints, builds the initial curve, cross-checking every key
/// and shape of the two files (errors name the key and both files).
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

/// Fits (or, with 0 epochs, just assembles and saves) the curve.
pub fn fit(
    exp: &Path,
    model: &Model,
    data: &Data,
    dcfg: &DataConfig,
    cfg: &CurveConfig,
    rt: &Runtime,
    resume: bool,
) -> Result<()> {
    let dir = xp::curve_dir(exp);
    let state_path = checkpoint::state_file(&dir);
    // Everything, a saved state included, is read and checked before the
    // first write, so a refused command leaves the experiment as it was.
    let mut curve = initial_curve(model, cfg, rt)?;
    let mut start_epoch = 0;
    let mut saved_optim = None;
    if state_path.exists() {
        let (tensors, meta) = checkpoint::read_tensors(&state_path)?;
        let meta = meta.ok_or_else(|| {
            anyhow!(
                "{} lacks metadata; delete it to start over",
                state_path.display()
            )
        })?;
        if !resume {
            bail!(
                "{} already holds a curve fit (epoch {}). Pass --resume to continue it, or delete {} to start over.",
                dir.display(),
                meta.epoch,
                dir.display()
            );
        }
        if meta.curve
            != Some(CurveMeta {
                kind: cfg.kind,
                bends: cfg.bends,
            })
            || meta.arch != model.cfg
        {
            bail!(
                "{} holds a different curve ({:?}, {:?}); delete it to fit a new one",
                state_path.display(),
                meta.curve,
                meta.arch.arch
            );
        }
        xp::ensure_resumable(exp, "curve", cfg, dcfg, &model.cfg, "a curve fit")?;
        let (opt_t, bend_t): (Vec<_>, Vec<_>) = tensors
            .into_iter()
            .partition(|(n, _)| n.starts_with("optim."));
        let weights: Vec<String> = model.weight_names().map(str::to_string).collect();
        for (k, b) in checkpoint::split_bends(bend_t, cfg.bends, &state_path)?
            .into_iter()
            .enumerate()
        {
            if k == 0 || k + 1 == cfg.bends {
                continue; // endpoints come from their own files
            }
            let p = checkpoint::in_order(b, &weights);
            curve.bends[k] = model.prepare(&p, rt.device, rt.channels_last);
        }
        start_epoch = meta.epoch;
        saved_optim = Some(opt_t);
    }
    xp::write_section(exp, "data", dcfg)?;
    xp::write_section(exp, "arch", &model.cfg)?;
    xp::write_section(exp, "curve", cfg)?;
    xp::record_runtime(exp, rt, model)?;
    let meta_at = |epoch: usize| {
        let mut m = xp::meta_for(&model.cfg, data, dcfg, epoch);
        m.curve = Some(CurveMeta {
            kind: cfg.kind,
            bends: cfg.bends,
        });
        m.note = format!(
            "curve between {} and {}; wd {}",
            cfg.start.display(),
            cfg.end.display(),
            cfg.wd
        );
        m
    };
    if cfg.epochs == 0 || start_epoch >= cfg.epochs {
        checkpoint::save_curve(
            &checkpoint::curve_file(&dir),
            &curve,
            &meta_at(cfg.epochs.max(start_epoch)),
        )?;
        if cfg.epochs == 0 {
            println!(
                "{}",
                serde_json::json!({"curve": checkpoint::curve_file(&dir), "imported_bends": cfg.bends, "epochs": 0})
            );
        }
        return Ok(());
    }

    let leaves = curve.trainable();
    let names = curve.trainable_names();
    let ocfg = OptimConfig {
        kind: OptimKind::Sgd,
        lr: cfg.lr,
        momentum: cfg.momentum,
        nesterov: false,
        wd: 0.0,
    };
    let mut opt = Optimizer::new(ocfg, &leaves);
    if let Some(st) = saved_optim {
        let map: std::collections::HashMap<String, Tensor> = st.into_iter().collect();
        opt.load_state(&names, |k| map.get(k).map(|t| t.to_device(rt.device)))?;
    }
    let lp = Loop {
        model,
        data,
        rt,
        batch_size: cfg.batch_size,
        augment: cfg.augment,
        bn: BnMode::Train(None),
    };
    let per_epoch = lp.batches_per_epoch();
    let mut prog = Progress::new("curve", cfg.epochs as u64 * per_epoch);
    prog.inc(start_epoch as u64 * per_epoch);
    let ev = Evaluator { model, data, rt };
    let is_w = |_: &str| true;
    for epoch in start_epoch..cfg.epochs {
        let timer = Timer::start();
        tch::manual_seed(epoch_seed(cfg.seed + 7_000, epoch));
        let lr = lr_at(cfg.schedule, cfg.lr, epoch, cfg.epochs);
        prog.set_message(format!("epoch {}/{}", epoch + 1, cfg.epochs));
        let wd = cfg.wd;
        let c = &curve;
        let mut batch = || {
            let t = Tensor::rand([1], (Kind::Double, tch::Device::Cpu)).double_value(&[0]);
            let w = c.weights_at(t);
            let reg = if wd > 0.0 {
                Some(w.sq_norm(is_w) * (0.5 * wd))
            } else {
                None
            };
            (w, reg)
        };
        let (loss, acc) = lp.epoch(&leaves, &mut opt, lr, &mut batch, &mut prog)?;
        check_finite(loss, epoch + 1, "curve", lr, &dir)?;
        // Test metrics at t = 0.5; BatchNorm curves need re-estimated statistics first.
        let mid = curve.point(model, 0.5);
        ev.update_bn(std::slice::from_ref(&mid));
        let (test, _) = ev.evaluate(std::slice::from_ref(&mid), &data.test, false);
        let entry = EpochLog {
            epoch: epoch + 1,
            lr,
            train_loss: loss,
            train_acc: acc,
            test_loss: Some(test[0].nll),
            test_acc: Some(test[0].acc),
            test_t: Some(0.5),
            seconds: timer.secs(),
        };
        // Log, curve, then state (the commit point for --resume; see endpoints.rs).
        append_log(&dir.join("log.jsonl"), &entry)?;
        save_state(&dir, &curve, &opt, &names, &meta_at(epoch + 1))?;
        println!(
            "{}",
            serde_json::json!({"model": "curve", "epoch": entry.epoch, "lr": lr, "train_loss": loss, "train_acc": acc, "test_t": 0.5, "test_loss": test[0].nll, "test_acc": test[0].acc, "seconds": entry.seconds})
        );
        prog.log(&format!("curve epoch {}: train loss {loss:.4} acc {acc:.2}% (random t) | test at t=0.5: loss {:.4} acc {:.2}%", epoch + 1, test[0].nll, test[0].acc));
    }
    prog.finish();
    Ok(())
}

fn save_state(
    dir: &Path,
    curve: &Curve,
    opt: &Optimizer,
    names: &[String],
    meta: &Meta,
) -> Result<()> {
    let mut all = Vec::new();
    for (k, b) in curve.bends.iter().enumerate() {
        for (n, t) in b.to_state_dict() {
            all.push((format!("bend{k}.{n}"), t));
        }
    }
    all.extend(opt.state(names));
    checkpoint::save_curve(&checkpoint::curve_file(dir), curve, meta)?;
    checkpoint::write_tensors(&checkpoint::state_file(dir), &all, Some(meta))
}
