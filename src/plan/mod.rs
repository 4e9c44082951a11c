//! The whole experiment in one call, from a preset: endpoints → curve →
//! sweep along t → ensemble → landscape → report. Each step resumes from
//! what it finished and is skipped when its outputs are complete for the
//! same settings, so an interrupted run continues with the same call.

use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::config::{
    default_augment, ArchRequest, CurveConfig, DataRequest, EnsembleConfig, FgeConfig,
    LandscapeConfig, SweepConfig, TrainConfig,
};
use crate::experiment::{self as xp};
use crate::loader::{self, DataConfig};
use crate::model::{Model, Precision};
use crate::observe::{note, Event, Observer};
use crate::optim::{OptimConfig, OptimKind};
use crate::runtime::Runtime;
use crate::schema::{self, AlongFile, EnsembleFile};
use crate::steps::members::{evaluate_members, MemberSet};
use crate::steps::session::{self, Session};
use crate::train::endpoints::train_endpoints;
use crate::train::fge::run_fge;
use crate::train::network::snapshot_dir;
use crate::train::{curve::fit_curve, Context};
use crate::vocab::Coords;
use crate::vocab::MemberBn;
use crate::vocab::Shard;
use crate::vocab::{Average, Sampling};

mod presets;
pub use presets::Preset;

/// What `run` may take from the command line besides the preset's fields.
#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    /// Training images of the endpoints and the curve (a class-balanced subset).
    pub train_subset: Option<usize>,
    /// Test images of every step.
    pub test_subset: Option<usize>,
    /// Architecture details beyond the preset's (`arch` itself is the preset's field).
    pub arch: ArchRequest,
}

/// What a whole run produced.
pub struct RunSummary {
    pub along: AlongFile,
    pub ensemble: EnsembleFile,
    pub seconds: f64,
    /// Inputs the report could not use (each names the command that makes it).
    pub report_notes: Vec<String>,
}

/// Runs every step of `p` in `exp`: endpoints, curve, sweep, ensemble,
/// landscape, report. Each step resumes what it finished and skips outputs
/// that are complete for the same settings; every setting is validated
/// before the first step starts. The caller holds the experiment's lock.
pub fn run(
    exp: &Path,
    p: &Preset,
    req: &RunRequest,
    rt: &Runtime,
    obs: &dyn Observer,
) -> Result<RunSummary> {
    validate(p, exp, req)?;
    let started = std::time::Instant::now();
    let done = std::cell::Cell::new(0);
    let step = |name: &str| {
        done.set(done.get() + 1);
        obs.event(&Event::Step {
            index: done.get(),
            of: 6 + usize::from(p.fge),
            name: name.to_string(),
            exp: exp.display().to_string(),
        })
    };
    let (dcfg, sizes) = train_steps(exp, p, req, rt, obs, &step)?;
    // 3-5. Evaluation subsets never reach beyond the images the networks
    // were trained on (class-balanced subsets with one seed are nested),
    // nor beyond the images the dataset has.
    let cap = |sub: Option<usize>, outer: Option<usize>, all: usize| {
        let outer = outer.unwrap_or(all).min(all);
        sub.map(|a| a.min(outer))
            .or(Some(outer).filter(|&o| o < all))
    };
    let eval_data = DataRequest {
        train_subset: cap(p.eval_train_subset, dcfg.train_subset, sizes.0),
        ..DataRequest::default()
    };
    let s = Session::open(exp, &eval_data, rt.clone())?;
    step("sweep along the curve and the line");
    let along = sweep_step(exp, p, &s, obs)?;
    step("ensembles");
    let ensemble = ensemble_step(exp, p, &s, obs)?;
    if p.fge {
        member_ensembles(exp, &eval_data, rt, obs)?;
    }
    drop(s);
    step("landscape");
    let ls_data = DataRequest {
        train_subset: cap(p.landscape_train_subset, dcfg.train_subset, sizes.0),
        test_subset: cap(p.landscape_test_subset, dcfg.test_subset, sizes.1),
        ..DataRequest::default()
    };
    let ls = Session::open(exp, &ls_data, rt.clone())?;
    session::landscape(&ls, exp, &landscape_config(p), Shard::WHOLE, obs)?;
    drop(ls);
    step("plots and report");
    let report = crate::report::plot_all(exp)?;
    Ok(RunSummary {
        along,
        ensemble,
        seconds: started.elapsed().as_secs_f64(),
        report_notes: report.missing,
    })
}

/// Steps 1 and 2: the endpoints, then the curve, each resumed and refused
/// when the experiment holds them with other settings. Returns the data
/// settings they were trained with, and the dataset's (training, test) sizes.
fn train_steps(
    exp: &Path,
    p: &Preset,
    req: &RunRequest,
    rt: &Runtime,
    obs: &dyn Observer,
    step: &dyn Fn(&str),
) -> Result<(DataConfig, (usize, usize))> {
    step("train endpoints");
    let dcfg = data_config(p, req);
    let data = loader::load(&dcfg, rt.device, None)?;
    // The images at hand (the subset's, when one is asked for).
    let full_sizes = (data.train.len() as usize, data.test.len() as usize);
    let arch_req = ArchRequest {
        arch: Some(p.arch),
        depth: req.arch.depth.or(p.depth),
        ..req.arch.clone()
    };
    let model = Model::new(xp::arch_config(&arch_req, None, &data)?)?;
    let cx = Context {
        model: &model,
        data: &data,
        dcfg: &dcfg,
        rt,
    };
    let augment = p.augment.unwrap_or_else(|| default_augment(data.channels));
    let tcfg = train_config(p, augment, rt.precision);
    let ccfg = curve_config(p, exp, augment, rt.precision);
    let fcfg = p.fge.then(|| fge_config(p, exp, augment, rt.precision));
    // Every step's saved settings are compared before anything is written,
    // so a refused run changes no byte (its preset included).
    let mut steps = vec![
        ("train", "start_model/ and end_model/"),
        ("curve", "curve_model/"),
    ];
    if p.fge {
        steps.push(("fge", "fge/"));
    }
    for (key, outputs) in &steps {
        ensure_same(exp, &xp::data_key(key), &dcfg, outputs)?;
    }
    ensure_same(exp, "train", &tcfg, "start_model/ and end_model/")?;
    ensure_same(exp, "curve", &ccfg, "curve_model/")?;
    if let Some(fcfg) = &fcfg {
        ensure_same(exp, "fge", fcfg, "fge/")?;
    }
    xp::write_section(exp, "preset", p)?;
    train_endpoints(exp, &cx, &tcfg, true, Shard::WHOLE, obs)?;

    step("fit curve");
    fit_curve(exp, &cx, &ccfg, true, obs)?;
    if let Some(fcfg) = &fcfg {
        step("fast geometric ensembling");
        run_fge(exp, &cx, fcfg, true, obs)?;
    }
    Ok((dcfg, full_sizes))
}

/// The epoch FGE starts from: 80% of the endpoint training, the reference
/// implementation's equal-budget protocol (FGE then takes the other 20%).
fn fge_start(p: &Preset) -> usize {
    ((p.epochs as f64 * 0.8).round() as usize).clamp(1, p.epochs.saturating_sub(1).max(1))
}

/// FGE from the start endpoint's snapshot at 80% of its training, for the
/// remaining 20% of the epochs in cycles of 2: as many members as a single
/// network's budget allows. It uses the endpoints' optimiser: SGD at the
/// reference's rates, or Adam from lr/4 down to lr/100 (from the seed
/// recipe's snapshot, lr/4 was the best of lr/8 … lr; SGD from an
/// Adam-trained network diverges at the reference's lr1).
fn fge_config(p: &Preset, exp: &Path, augment: bool, precision: Precision) -> FgeConfig {
    let start = fge_start(p);
    let reference = FgeConfig::defaults(snapshot_dir(&xp::endpoint_dir(exp, 0, 2), start), 3);
    let (lr1, lr2) = match p.optimizer {
        OptimKind::Sgd => (reference.lr1, reference.lr2),
        OptimKind::Adam => (p.lr / 4.0, p.lr / 100.0),
    };
    FgeConfig {
        epochs: p.epochs - start,
        cycle: 2,
        optimizer: p.optimizer,
        lr1,
        lr2,
        wd: p.wd,
        batch_size: p.batch_size,
        seed: p.seed,
        augment,
        precision,
        dropout: p.fge_dropout,
        ..reference
    }
}

/// The independent endpoints and the FGE members scored as ensembles (for
/// the equal-budget comparison of the report).
fn member_ensembles(
    exp: &Path,
    data: &DataRequest,
    rt: &Runtime,
    obs: &dyn Observer,
) -> Result<()> {
    for set in [MemberSet::Endpoints, MemberSet::Fge] {
        evaluate_members(
            exp,
            set.name(),
            &set.dirs(exp),
            data,
            rt,
            MemberBn::Keep,
            obs,
        )?;
    }
    Ok(())
}

/// Step 3, skipped when eval/along.json is complete for this curve.
fn sweep_step(exp: &Path, p: &Preset, s: &Session, obs: &dyn Observer) -> Result<AlongFile> {
    let path = exp.join("eval/along.json");
    let done = schema::read_versioned::<AlongFile>(&path, "modeconn run")
        .ok()
        .filter(|a| {
            a.meta.points == p.points
                && a.meta.curve_id == s.curve_id()
                && a.meta.train_subset == s.dcfg.train_subset
        });
    match done {
        Some(a) => {
            note(obs, "eval/along.json is up to date, skipped");
            Ok(a)
        }
        None => session::sweep(s, exp, &SweepConfig { points: p.points }, obs),
    }
}

/// Step 4, skipped when eval/ensemble.json is complete for this curve.
fn ensemble_step(exp: &Path, p: &Preset, s: &Session, obs: &dyn Observer) -> Result<EnsembleFile> {
    let path = exp.join("eval/ensemble.json");
    let done = schema::read_versioned::<EnsembleFile>(&path, "modeconn run")
        .ok()
        .filter(|e| e.meta.k == p.ensemble && e.meta.curve_id == s.curve_id());
    match done {
        Some(e) => {
            note(obs, "eval/ensemble.json is up to date, skipped");
            Ok(e)
        }
        None => session::ensemble(s, exp, &ensemble_config(p), obs),
    }
}

fn ensemble_config(p: &Preset) -> EnsembleConfig {
    EnsembleConfig {
        k: p.ensemble,
        sampling: Sampling::Grid,
        average: Average::Probs,
        seed: 0,
    }
}

/// The data every training step uses.
fn data_config(p: &Preset, req: &RunRequest) -> DataConfig {
    DataConfig {
        dataset: p.dataset,
        data_dir: p.data_dir.clone(),
        normalize: p.normalize,
        train_subset: req.train_subset,
        test_subset: req.test_subset,
    }
}

fn landscape_config(p: &Preset) -> LandscapeConfig {
    LandscapeConfig {
        grid: p.grid,
        margin: 0.2,
        coords: Coords::Orthonormal,
    }
}

/// The endpoint step's settings.
fn train_config(p: &Preset, augment: bool, precision: Precision) -> TrainConfig {
    TrainConfig {
        models: 2,
        seed: p.seed,
        epochs: p.epochs,
        batch_size: p.batch_size,
        optim: OptimConfig {
            kind: p.optimizer,
            lr: p.lr,
            momentum: 0.9,
            nesterov: false,
            wd: p.wd,
        },
        schedule: p.schedule,
        augment,
        precision,
        save_every: p.fge.then(|| fge_start(p)),
        final_dropout: p.final_dropout,
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
        optimizer: p.curve_optimizer,
        t_per_batch: p.curve_t_per_batch,
        dropout: p.curve_dropout,
    }
}

/// Every step's settings, checked before the first step starts, through the
/// validation the single-step commands use (augmentation and precision are
/// not known before the data and the runtime, and no rule looks at them).
pub fn validate(p: &Preset, exp: &Path, req: &RunRequest) -> Result<()> {
    let checked = data_config(p, req)
        .validate()
        .and_then(|_| train_config(p, false, Precision::Fp32).validate())
        .and_then(|_| curve_config(p, exp, false, Precision::Fp32).validate("--curve-lr"))
        .and_then(|_| {
            if p.epochs < 1 {
                bail!("--epochs must be at least 1, got {}", p.epochs);
            }
            if p.fge && p.epochs < 2 {
                bail!("FGE at equal budget needs at least 2 endpoint epochs (it takes the last 20%), got {}", p.epochs);
            }
            if p.fge {
                fge_config(p, exp, false, Precision::Fp32).validate()?;
            }
            if p.curve_epochs < 1 {
                bail!("--curve-epochs must be at least 1, got {}", p.curve_epochs);
            }
            for (flag, v) in [
                ("--eval-train-subset", p.eval_train_subset),
                ("--landscape-train-subset", p.landscape_train_subset),
                ("--landscape-test-subset", p.landscape_test_subset),
            ] {
                if v == Some(0) {
                    bail!("{flag} must be at least 1 (images the step evaluates on), got 0");
                }
            }
            SweepConfig { points: p.points }.validate()?;
            ensemble_config(p).validate()?;
            landscape_config(p).validate()?;
            let arch_req = ArchRequest {
                arch: Some(p.arch),
                depth: req.arch.depth.or(p.depth),
                ..req.arch.clone()
            };
            let ccfg = curve_config(p, exp, false, Precision::Fp32);
            xp::precheck_arch(
                &arch_req,
                None,
                p.dataset,
                xp::curve_copies(ccfg.bends),
            )
        });
    checked.map_err(|e| anyhow::anyhow!("{}; nothing was run", e.to_string().trim_end_matches('.')))
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
