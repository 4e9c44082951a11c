//! `train-endpoints` and `fit-curve`.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::args::{FgeArgs, FitCurveArgs, TrainArgs};
use super::output::Terminal;
use modeconn::checkpoint;
use modeconn::config::{ArchRequest, TrainConfig};
use modeconn::experiment::{self as xp};
use modeconn::loader;
use modeconn::lock::{ExperimentLock, StepLock};
use modeconn::model::{ArchKind, Model, Precision};
use modeconn::runtime::PrecisionChoice;
use modeconn::shard::Target;
use modeconn::train::{curve, endpoints, Context};
use modeconn::vocab::Shard;

pub fn endpoints(a: &TrainArgs, out: &Terminal) -> Result<()> {
    let arch_kind = a.model.arch.unwrap_or(ArchKind::SeedConvnet);
    // The flags are checked before any data is read (the rules do not
    // depend on the data or the precision).
    a.config(arch_kind, 1, Precision::Fp32).validate()?;
    let rt = super::runtime(&a.rt, PrecisionChoice::Fp32, out)?;
    let dcfg = xp::data_config(&a.data.request(), None, arch_kind)?;
    let exp = a.exp.clone().unwrap_or_else(|| {
        PathBuf::from(format!("experiments/{}_{}", dcfg.dataset, arch_kind.name()))
    });
    let shard = a.shard.unwrap_or(Shard::WHOLE);
    xp::precheck_arch(&a.model.request(), None, dcfg.dataset, xp::TRAINING_COPIES)?;
    let _lock = StepLock::acquire(&exp, Target::Endpoints, shard, true)?;
    let data = loader::load(&dcfg, rt.device, None)?;
    let model = Model::new(xp::arch_config(&a.model.request(), None, &data)?)?;
    let tcfg: TrainConfig = a.config(model.cfg.arch, data.channels, rt.precision);
    let cx = Context {
        model: &model,
        data: &data,
        dcfg: &dcfg,
        rt: &rt,
    };
    let dirs = endpoints::train_endpoints(&exp, &cx, &tcfg, a.resume, shard, out)?;
    let human: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
    let part = (!shard.is_whole()).then(|| Target::Endpoints.part(&exp, shard));
    let human = match &part {
        Some(p) => format!(
            "{human}{}: shard {shard} done; when every shard is done: modeconn merge --exp {}\n",
            p.display(),
            exp.display()
        ),
        None => human,
    };
    let value = match &part {
        Some(p) => serde_json::json!({"endpoints": dirs, "part": p}),
        None => serde_json::json!({"endpoints": dirs}),
    };
    out.result(&human, &value);
    Ok(())
}

/// The error for a missing endpoint, with the experiment's own endpoints
/// when it has others (`--models 3` makes start_model, model_1, model_2).
pub(super) fn missing_endpoint(p: &std::path::Path, exp: &std::path::Path) -> String {
    let dirs = modeconn::steps::members::MemberSet::Endpoints.dirs(exp);
    let have: Vec<String> = dirs
        .iter()
        .filter_map(|d| Some(d.file_name()?.to_string_lossy().into_owned()))
        .collect();
    match have.len() {
        0 | 1 => format!(
            "endpoint checkpoint {} does not exist. Train endpoints with `modeconn train-endpoints --exp {}`, or pass --start/--end",
            p.display(),
            exp.display()
        ),
        _ => format!(
            "endpoint checkpoint {} does not exist, but {} holds the endpoints {}: choose two, e.g. --start {} --end {}",
            p.display(),
            exp.display(),
            have.join(", "),
            exp.join(&have[0]).display(),
            exp.join(&have[1]).display()
        ),
    }
}

pub fn curve(a: &FitCurveArgs, out: &Terminal) -> Result<()> {
    let exp = match (&a.exp, &a.start) {
        (Some(e), _) => e.clone(),
        (None, Some(_)) => PathBuf::from("experiments/imported"),
        (None, None) => bail!(
            "fit-curve needs --exp DIR (with start_model/ and end_model/) or --start A --end B"
        ),
    };
    let start = a
        .start
        .clone()
        .unwrap_or_else(|| checkpoint::model_file(&xp::endpoint_dir(&exp, 0, 2)));
    let end = match (&a.end, a.aligned) {
        (Some(e), _) => e.clone(),
        (None, true) => {
            let dir = modeconn::align::aligned_dir(&exp);
            if !dir.exists() {
                bail!(
                    "--aligned: {} does not exist; make it with `modeconn align --exp {}`",
                    dir.display(),
                    exp.display()
                );
            }
            dir
        }
        (None, false) => checkpoint::model_file(&xp::endpoint_dir(&exp, 1, 2)),
    };
    let (start, end) = (xp::resolve_model_path(&start), xp::resolve_model_path(&end));
    a.config(start.clone(), end.clone(), 1, Precision::Fp32)?
        .validate("--lr")?;
    let rt = super::runtime(&a.rt, PrecisionChoice::Fp32, out)?;
    let _lock = ExperimentLock::acquire(&exp)?;
    for p in [&start, &end] {
        if !p.exists() {
            bail!(missing_endpoint(p, &exp));
        }
    }
    // --dropout is the curve's training dropout (CurveConfig::dropout), not
    // a change of the endpoints' architecture.
    let arch_req = ArchRequest {
        dropout: None,
        ..a.model.request()
    };
    let copies = xp::curve_copies(a.bends);
    let (model, data, dcfg) = curve::setup(
        &exp,
        &start,
        &end,
        &a.data.request(),
        &arch_req,
        &rt,
        copies,
    )?;
    let cfg = a.config(start, end, data.channels, rt.precision)?;
    let cx = Context {
        model: &model,
        data: &data,
        dcfg: &dcfg,
        rt: &rt,
    };
    curve::fit_curve(&exp, &cx, &cfg, a.resume, out)?;
    let file = checkpoint::curve_file(&xp::curve_dir(&exp));
    out.result(
        &format!("{}\n", file.display()),
        &serde_json::json!({"curve": file, "bends": cfg.bends, "epochs": cfg.epochs}),
    );
    Ok(())
}

pub fn fge(a: &FgeArgs, out: &Terminal) -> Result<()> {
    a.config(1, Precision::Fp32, None).validate()?;
    let rt = super::runtime(&a.rt, PrecisionChoice::Fp32, out)?;
    let _lock = ExperimentLock::acquire_existing(&a.exp)?;
    let probe = a.config(1, rt.precision, None);
    let from = xp::resolve_model_path(&probe.from);
    let meta = xp::read_meta(&from)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no modeconn metadata (architecture, data); import it first",
            from.display()
        )
    })?;
    let model = Model::new(meta.arch.clone())?;
    let (data, dcfg) = xp::load_data_for(&meta, Some(&a.exp), &a.data.request(), &rt, &from)?;
    let trained = xp::section::<TrainConfig>(&a.exp, "train")?.map(|t| t.augment);
    let cfg = a.config(data.channels, rt.precision, trained);
    let cx = Context {
        model: &model,
        data: &data,
        dcfg: &dcfg,
        rt: &rt,
    };
    let members = modeconn::train::fge::run_fge(&a.exp, &cx, &cfg, a.resume, out)?;
    let human: String = members
        .iter()
        .map(|d| format!("{}\n", d.display()))
        .collect();
    out.result(&human, &serde_json::json!({"members": members}));
    Ok(())
}
