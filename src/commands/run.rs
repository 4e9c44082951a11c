//! `modeconn run`: the whole experiment in one command.
//!
//! Steps: endpoints → curve → sweep along t → ensemble → landscape → plots.
//! Each step resumes from what it finished and is skipped when its outputs
//! are complete for the same settings, so an interrupted run continues with
//! the same command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::endpoints::{self, runtime, TrainConfig};
use super::eval::{self as evalcmd, Session};
use super::fit_curve::{self, CurveConfig};
use crate::cli::{DataArgs, RunArgs};
use crate::curve::CurveKind;
use crate::eval::ensemble::{Average, Sampling};
use crate::experiment::{self as xp};
use crate::landscape::Coords;
use crate::loader::{self, DataConfig, Normalize};
use crate::model::{ArchKind, Model, Precision};
use crate::optim::{OptimConfig, OptimKind, Schedule};
use crate::runtime::PrecisionChoice;

/// A named set of defaults for every step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Preset {
    pub name: String,
    pub dataset: String,
    pub data_dir: Option<PathBuf>,
    pub arch: ArchKind,
    pub depth: Option<i64>,
    pub normalize: Normalize,
    pub epochs: usize,
    pub lr: f64,
    pub wd: f64,
    pub batch_size: i64,
    pub schedule: Schedule,
    pub curve_epochs: usize,
    pub curve_lr: f64,
    pub curve: CurveKind,
    pub bends: usize,
    pub points: usize,
    pub ensemble: usize,
    pub grid: usize,
    /// Training images used by the sweep (None: all).
    pub eval_train_subset: Option<usize>,
    /// Training images used by the landscape (None: all).
    pub landscape_train_subset: Option<usize>,
    /// Test images used by the landscape (None: all).
    pub landscape_test_subset: Option<usize>,
    pub seed: u64,
    /// Precision unless `--precision` says otherwise: `auto` (bf16 where it
    /// is native) for every preset, which all want speed.
    pub precision: PrecisionChoice,
}

pub fn preset(name: &str) -> Result<Preset> {
    let quick = Preset {
        name: "quick".into(),
        dataset: "fashion-mnist".into(),
        data_dir: None,
        arch: ArchKind::SeedConvnet,
        depth: None,
        normalize: Normalize::None,
        epochs: 8,
        lr: 0.1,
        wd: 5e-4,
        batch_size: 128,
        schedule: Schedule::Reference,
        curve_epochs: 6,
        curve_lr: 0.05,
        curve: CurveKind::Bezier,
        bends: 3,
        points: 41,
        ensemble: 20,
        grid: 21,
        eval_train_subset: Some(5_000),
        landscape_train_subset: Some(3_000),
        landscape_test_subset: Some(2_000),
        seed: 1,
        precision: PrecisionChoice::Auto,
    };
    Ok(match name {
        "quick" => quick,
        "seed-cifar10" => Preset {
            name: name.into(),
            dataset: "image-folder".into(),
            data_dir: Some(PathBuf::from("../shared/datasets/cifar10-jpg")),
            epochs: 40,
            lr: 0.05,
            curve_epochs: 30,
            curve_lr: 0.03,
            points: 61,
            ensemble: 30,
            eval_train_subset: Some(10_000),
            landscape_train_subset: Some(5_000),
            landscape_test_subset: Some(5_000),
            ..quick
        },
        "paper-vgg16" => Preset {
            name: name.into(),
            dataset: "cifar10".into(),
            arch: ArchKind::Vgg16,
            normalize: Normalize::Standard,
            epochs: 200,
            lr: 0.05,
            schedule: Schedule::Reference,
            curve_epochs: 600,
            curve_lr: 0.015,
            points: 61,
            ensemble: 30,
            eval_train_subset: None,
            landscape_train_subset: Some(10_000),
            landscape_test_subset: None,
            ..quick
        },
        "paper-preresnet" => Preset {
            name: name.into(),
            dataset: "cifar10".into(),
            arch: ArchKind::Preresnet,
            depth: Some(164),
            normalize: Normalize::Standard,
            epochs: 150,
            lr: 0.1,
            wd: 3e-4,
            schedule: Schedule::Reference,
            curve_epochs: 200,
            curve_lr: 0.03,
            points: 61,
            ensemble: 30,
            eval_train_subset: None,
            landscape_train_subset: Some(10_000),
            landscape_test_subset: None,
            ..quick
        },
        other => bail!(
            "unknown preset '{other}'; choose quick, seed-cifar10, paper-vgg16 or paper-preresnet"
        ),
    })
}

pub fn run(args: &RunArgs) -> Result<()> {
    let mut p = preset(&args.preset)?;
    // Command-line flags override the preset.
    if let Some(d) = &args.data.dataset {
        p.dataset = d.clone();
        if args.data.data_dir.is_none() {
            p.data_dir = None;
        }
    }
    if let Some(d) = &args.data.data_dir {
        p.data_dir = Some(d.clone());
    }
    if let Some(a) = args.model.arch {
        p.arch = a;
    }
    if let Some(n) = args.data.normalize {
        p.normalize = n;
    }
    macro_rules! over {
        ($($f:ident <- $a:expr),*) => { $( if let Some(v) = $a { p.$f = v; } )* };
    }
    over!(epochs <- args.epochs, curve_epochs <- args.curve_epochs, lr <- args.lr, curve_lr <- args.curve_lr,
          batch_size <- args.batch_size, wd <- args.wd, seed <- args.seed, curve <- args.curve, bends <- args.bends,
          points <- args.points, ensemble <- args.ensemble, grid <- args.grid);
    for (dst, src) in [
        (&mut p.eval_train_subset, args.eval_train_subset),
        (&mut p.landscape_train_subset, args.landscape_train_subset),
        (&mut p.landscape_test_subset, args.landscape_test_subset),
    ] {
        if src.is_some() {
            *dst = src;
        }
    }
    let exp = args
        .exp
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("experiments/{}", p.name)));
    validate(&p, &exp)?;
    let _lock = crate::lock::ExperimentLock::acquire(&exp)?;
    xp::write_section(&exp, "preset", &p)?;
    let rt_args = crate::cli::RuntimeArgs {
        precision: Some(args.rt.precision.unwrap_or(p.precision)),
        ..args.rt.clone()
    };
    let rt = runtime(&rt_args)?;
    let started = std::time::Instant::now();
    let step = |i: usize, name: &str| eprintln!("\n== step {i}/6: {name} ({}) ==", exp.display());

    // 1. Endpoints.
    step(1, "train endpoints");
    let dcfg = DataConfig {
        dataset: p.dataset.clone(),
        data_dir: p.data_dir.clone(),
        normalize: p.normalize,
        train_subset: args.data.train_subset,
        test_subset: args.data.test_subset,
    };
    let data = loader::load(&dcfg, rt.device, None)?;
    let mut arch = xp::arch_config(&args.model, None, &data);
    arch.arch = p.arch;
    if let Some(d) = args.model.depth.or(p.depth) {
        arch.depth = d;
    }
    let model = Model::new(arch)?;
    let augment = endpoints::default_augment(&data);
    let tcfg = train_config(&p, augment, rt.precision);
    ensure_same(&exp, "train", &tcfg, "start_model/ and end_model/")?;
    ensure_same(&exp, "data", &dcfg, "every step's outputs")?;
    endpoints::train_all(&exp, &model, &data, &dcfg, &tcfg, &rt, true)?;

    // 2. Curve.
    step(2, "fit curve");
    let ccfg = curve_config(&p, &exp, augment, rt.precision);
    ensure_same(&exp, "curve", &ccfg, "curve_model/")?;
    fit_curve::fit(&exp, &model, &data, &dcfg, &ccfg, &rt, true)?;
    drop(data);

    // 3-5. Evaluation on (optionally) a training subset.
    // Evaluation subsets never reach beyond the images the networks were
    // trained on (class-balanced subsets with one seed are nested).
    let cap = |sub: Option<usize>, outer: Option<usize>| match (sub, outer) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let eval_data = DataArgs {
        train_subset: cap(p.eval_train_subset, dcfg.train_subset),
        ..DataArgs::default()
    };
    let s = Session::open(&exp, &eval_data, runtime(&rt_args)?)?;
    let id = evalcmd::curve_id(&s.lc.path, &s.lc.meta);
    step(3, "sweep along the curve and the line");
    let along_done = output_meta(&exp.join("eval/along.json"))
        .map(|m| {
            m["points"] == p.points
                && m["curve_id"] == id
                && m["train_subset"] == serde_json::json!(s.dcfg.train_subset)
        })
        .unwrap_or(false);
    if along_done {
        eprintln!("eval/along.json is up to date, skipped");
    } else {
        evalcmd::run_along(&s, &exp, p.points)?;
        stamp(&exp.join("eval/along.json"), &id)?;
    }
    step(4, "curve ensemble");
    let ens_done = output_meta(&exp.join("eval/ensemble.json"))
        .map(|m| m["k"] == p.ensemble && m["curve_id"] == id)
        .unwrap_or(false);
    if ens_done {
        eprintln!("eval/ensemble.json is up to date, skipped");
    } else {
        evalcmd::run_ensemble(&s, &exp, p.ensemble, Sampling::Grid, Average::Probs, 0)?;
        stamp(&exp.join("eval/ensemble.json"), &id)?;
    }
    step(5, "landscape");
    let ls_data = DataArgs {
        train_subset: cap(p.landscape_train_subset, dcfg.train_subset),
        test_subset: cap(p.landscape_test_subset, dcfg.test_subset),
        ..DataArgs::default()
    };
    let ls = Session::open(&exp, &ls_data, runtime(&rt_args)?)?;
    evalcmd::run_landscape(&ls, &exp, Coords::Orthonormal, p.grid, 0.2)?;
    drop(ls);

    step(6, "plots and report");
    let summary = crate::report::plot_all(&exp)?;
    for m in &summary.missing {
        eprintln!("note: {m}");
    }
    print_summary(&exp, started.elapsed().as_secs_f64())?;
    Ok(())
}

/// Refuses to reuse outputs made with other settings (instead of silently
/// overwriting finished work).
/// The endpoint step's settings.
fn train_config(p: &Preset, augment: bool, precision: Precision) -> TrainConfig {
    TrainConfig {
        models: 2,
        seed: p.seed,
        epochs: p.epochs,
        batch_size: p.batch_size,
        optim: OptimConfig {
            kind: OptimKind::Sgd,
            lr: p.lr,
            momentum: 0.9,
            nesterov: false,
            wd: p.wd,
        },
        schedule: p.schedule,
        augment,
        precision,
    }
}

/// The curve step's settings: a curve between the two endpoints of `exp`.
fn curve_config(p: &Preset, exp: &Path, augment: bool, precision: Precision) -> CurveConfig {
    CurveConfig {
        kind: p.curve,
        bends: p.bends,
        epochs: p.curve_epochs,
        batch_size: p.batch_size,
        lr: p.curve_lr,
        momentum: 0.9,
        wd: p.wd,
        schedule: p.schedule,
        seed: p.seed,
        augment,
        start: crate::checkpoint::model_file(&xp::endpoint_dir(exp, 0, 2)),
        end: crate::checkpoint::model_file(&xp::endpoint_dir(exp, 1, 2)),
        init_bends: vec![],
        precision,
    }
}

/// Every step's settings, checked before the first step starts, through the
/// validation the single-step commands use (augmentation and precision are
/// not known before the data and the runtime, and no rule looks at them).
fn validate(p: &Preset, exp: &Path) -> Result<()> {
    let checked = endpoints::validate(&train_config(p, false, Precision::Fp32))
        .and_then(|_| {
            fit_curve::validate(&curve_config(p, exp, false, Precision::Fp32), "--curve-lr")
        })
        .and_then(|_| {
            let checks = [
                (
                    p.epochs >= 1,
                    format!("--epochs must be at least 1, got {}", p.epochs),
                ),
                (
                    p.curve_epochs >= 1,
                    format!("--curve-epochs must be at least 1, got {}", p.curve_epochs),
                ),
                (
                    p.points >= 2,
                    format!(
                        "--points must be at least 2 (t = 0 and t = 1), got {}",
                        p.points
                    ),
                ),
                (
                    p.ensemble >= 1,
                    format!("--ensemble must be at least 1, got {}", p.ensemble),
                ),
                (
                    p.grid >= 2,
                    format!("--grid must be at least 2, got {}", p.grid),
                ),
            ];
            match checks.into_iter().find(|(ok, _)| !ok) {
                Some((_, msg)) => bail!(msg),
                None => Ok(()),
            }
        });
    checked.map_err(|e| anyhow::anyhow!("{e}; nothing was run"))
}

fn ensure_same<T: Serialize>(exp: &Path, key: &str, now: &T, outputs: &str) -> Result<()> {
    xp::ensure_same(
        exp,
        key,
        now,
        outputs,
        "Use a new --exp, or delete those outputs to recompute them.",
    )
}

/// The "meta" object of an eval output file, if it exists and parses.
fn output_meta(path: &Path) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    Some(v["meta"].clone())
}

/// Records which curve an output was computed from.
fn stamp(path: &Path, id: &str) -> Result<()> {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    v["meta"]["curve_id"] = serde_json::Value::String(id.to_string());
    crate::checkpoint::write_atomic(path, serde_json::to_string_pretty(&v)?.as_bytes())
}

fn print_summary(exp: &Path, secs: f64) -> Result<()> {
    let along: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exp.join("eval/along.json"))?)?;
    let ens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exp.join("eval/ensemble.json"))?)?;
    let mid = |p: &str| {
        let rows = along[p]["rows"].as_array().cloned().unwrap_or_default();
        rows.get(rows.len() / 2)
            .map(|r| r["test_err"].as_f64().unwrap_or(f64::NAN))
            .unwrap_or(f64::NAN)
    };
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "\n== {} done in {} ==",
        exp.display(),
        crate::progress::fmt_secs(secs)
    );
    println!(
        "endpoints test acc: {:.2}% / {:.2}%",
        f(&ens["start"]["acc"]),
        f(&ens["end"]["acc"])
    );
    println!(
        "test error at t=0.5: curve {:.2}%  line {:.2}%",
        mid("curve"),
        mid("line")
    );
    println!(
        "test-error barrier: curve {:.2} pts  line {:.2} pts | train-loss barrier: curve {:.4}  line {:.4}",
        f(&along["curve"]["barrier"]["test_err"]),
        f(&along["line"]["barrier"]["test_err"]),
        f(&along["curve"]["barrier"]["train_loss"]),
        f(&along["line"]["barrier"]["train_loss"])
    );
    println!(
        "ensembles (acc / NLL / ECE): w1+w2 {:.2}% / {:.4} / {:.4}   curve of {} {:.2}% / {:.4} / {:.4}",
        f(&ens["endpoints"]["acc"]),
        f(&ens["endpoints"]["nll"]),
        f(&ens["endpoints"]["ece"]),
        ens["meta"]["k"],
        f(&ens["curve"]["acc"]),
        f(&ens["curve"]["nll"]),
        f(&ens["curve"]["ece"])
    );
    println!("report: {}", exp.join("report.html").display());
    Ok(())
}
