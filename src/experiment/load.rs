//! Loading what an experiment (or any checkpoint) holds: parameter sets
//! checked against a model, curves, metadata and the data a checkpoint was
//! made with.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::{curve_dir, data_config, endpoint_dir, resolve_in, section, step_data};
use crate::checkpoint::{self, Meta};
use crate::config::DataRequest;
use crate::curve::Curve;
use crate::loader::{self, Data, DataConfig};
use crate::model::{Model, Params};
use crate::runtime::Runtime;

/// Loads the data a checkpoint was made with, honouring flags; refuses a
/// dataset or class list that differs from the checkpoint's.
pub fn load_data_for(
    meta: &Meta,
    exp: Option<&Path>,
    args: &DataRequest,
    rt: &Runtime,
    origin: &Path,
) -> Result<(Data, DataConfig)> {
    if let Some(d) = args.dataset {
        if d != meta.dataset {
            bail!(
                "{} was made on dataset '{}', but --dataset is '{}'; evaluate it on '{}' or fit a new curve on '{}'",
                origin.display(),
                meta.dataset,
                d,
                meta.dataset,
                d
            );
        }
    }
    if let Some(n) = args.normalize.filter(|n| *n != meta.normalize) {
        bail!(
            "--normalize {n}: {} was trained with normalisation {}, which its metadata fixes for every evaluation; drop --normalize",
            origin.display(),
            meta.normalize
        );
    }
    let base = match exp {
        Some(e) => step_data(e, "curve")?,
        None => None,
    };
    let mut base = base
        .filter(|b| b.dataset == meta.dataset)
        .unwrap_or(DataConfig {
            dataset: meta.dataset,
            data_dir: None,
            normalize: meta.normalize,
            train_subset: None,
            test_subset: None,
        });
    base.normalize = meta.normalize;
    let cfg = data_config(args, Some(&base), meta.arch.arch)?;
    let norm = Some((meta.norm_mean.clone(), meta.norm_std.clone())).filter(|(m, _)| !m.is_empty());
    let data = loader::load(&cfg, rt.device, norm)?;
    if data.classes != meta.classes {
        bail!(
            "{} was made for classes {:?}, but the dataset at hand has {:?}",
            origin.display(),
            meta.classes,
            data.classes
        );
    }
    Ok((data, cfg))
}

/// Reads one network's parameters from a checkpoint and checks them against
/// `model` (by name and shape). Returns them in spec order, on the device.
pub fn load_params(path: &Path, model: &Model, rt: &Runtime) -> Result<Params> {
    let (tensors, _) = checkpoint::read_tensors(path)?;
    let order: Vec<String> = model.spec.iter().map(|s| s.name.clone()).collect();
    let p = checkpoint::in_order(tensors, &order);
    // PyTorch state dicts of BN-free models have no buffers; older PyTorch ones may lack num_batches_tracked.
    let p = fill_missing_counters(p, model);
    model.check(&p, &path.display().to_string())?;
    model.check_finite(&p, &path.display().to_string())?;
    Ok(model.prepare(&p, rt.device, rt.channels_last))
}

fn fill_missing_counters(mut p: Params, model: &Model) -> Params {
    for s in &model.spec {
        if s.name.ends_with("num_batches_tracked") && p.try_get(&s.name).is_none() {
            p.set(
                &s.name,
                tch::Tensor::zeros([], (tch::Kind::Int64, tch::Device::Cpu)),
            );
        }
    }
    p
}

/// Reads only the metadata of a modeconn checkpoint (its header, not its tensors).
pub fn read_meta(path: &Path) -> Result<Option<Meta>> {
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    checkpoint::read_meta(path)
}

/// A checkpoint path: a file as is, or the model file inside a directory.
pub fn resolve_model_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        checkpoint::model_file(p)
    } else {
        p.to_path_buf()
    }
}

/// A curve loaded from `<exp>/curve_model/curve.safetensors`.
pub struct LoadedCurve {
    pub curve: Curve,
    pub meta: Meta,
    pub model: Model,
    pub path: PathBuf,
}

/// Fingerprints of the endpoint files a curve is fitted between (the
/// `curve_endpoints` section), so that neither a resumed fit nor any reader
/// of the curve pairs it with endpoints retrained since.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
pub struct EndpointFiles {
    pub start_md5: String,
    pub end_md5: String,
}

impl EndpointFiles {
    pub fn of(start: &Path, end: &Path) -> Result<EndpointFiles> {
        Ok(EndpointFiles {
            start_md5: crate::data::file_md5(start)?,
            end_md5: crate::data::file_md5(end)?,
        })
    }
}

/// Refuses a curve whose endpoint files changed since it was fitted (both
/// recorded in config.json and still present; an imported curve or one
/// whose endpoints were moved away holds its endpoints itself).
pub fn check_curve_endpoints(exp: &Path) -> Result<()> {
    // Only the two paths of the curve's section are needed (the report
    // reads experiments whose other curve settings may be partial).
    #[derive(serde::Deserialize)]
    struct Ends {
        start: PathBuf,
        end: PathBuf,
    }
    let Some(saved) = section::<EndpointFiles>(exp, "curve_endpoints")? else {
        return Ok(());
    };
    let Some(cfg) = section::<Ends>(exp, "curve")? else {
        return Ok(());
    };
    for (side, file, md5) in [
        ("start", resolve_in(exp, &cfg.start), &saved.start_md5),
        ("end", resolve_in(exp, &cfg.end), &saved.end_md5),
    ] {
        if !file.is_file() {
            continue;
        }
        let now = crate::data::file_md5(&file)?;
        if &now != md5 {
            bail!(
                "{} was fitted between other endpoints: the {side} endpoint {} changed since (MD5 {md5} then, {now} now; retrained?). Fit the curve again (delete {} and run `modeconn fit-curve --exp {}`), or restore the endpoint",
                curve_dir(exp).display(),
                file.display(),
                curve_dir(exp).display(),
                exp.display()
            );
        }
    }
    Ok(())
}

pub fn load_curve(exp: &Path, rt: &Runtime) -> Result<LoadedCurve> {
    let path = checkpoint::curve_file(&curve_dir(exp));
    check_curve_endpoints(exp)?;
    if !path.exists() {
        bail!(
            "{} has no curve ({} is missing). Create it with `modeconn fit-curve --exp {}` (or import one with `modeconn fit-curve --exp {} --start A --end B --init-bend 1=THETA --epochs 0`)",
            exp.display(),
            path.display(),
            exp.display(),
            exp.display()
        );
    }
    let (tensors, meta) = checkpoint::read_tensors(&path)?;
    let meta = meta.ok_or_else(|| {
        anyhow!(
            "{} has no modeconn metadata; was it written by modeconn fit-curve?",
            path.display()
        )
    })?;
    let cm = meta.curve.clone().ok_or_else(|| {
        anyhow!(
            "{} is not a curve checkpoint (no curve metadata)",
            path.display()
        )
    })?;
    if cm.bends < 3 {
        bail!(
            "{}: its metadata says {} bends; a curve has at least 3 (two endpoints and a free bend). The file is damaged: fit the curve again with `modeconn fit-curve`",
            path.display(),
            cm.bends
        );
    }
    let model = Model::new(meta.arch.clone())?;
    let weights: Vec<String> = model.weight_names().map(str::to_string).collect();
    let mut bends = Vec::new();
    for (k, b) in checkpoint::split_bends(tensors, cm.bends, &path)?
        .into_iter()
        .enumerate()
    {
        let p = checkpoint::in_order(b, &weights);
        let origin = format!("{} (bend {k})", path.display());
        model.check_weights(&p, &origin)?;
        model.check_finite(&p, &origin)?;
        let p = Params::new(
            weights
                .iter()
                .map(|n| (n.clone(), p.get(n).shallow_clone()))
                .collect(),
        );
        bends.push(model.prepare(&p, rt.device, rt.channels_last));
    }
    Ok(LoadedCurve {
        curve: Curve {
            kind: cm.kind,
            bends,
        },
        meta,
        model,
        path,
    })
}

/// Loads endpoint i's full parameters (with BN statistics) when its
/// checkpoint exists in the experiment, for evaluation as itself.
pub fn load_endpoint_if_present(
    exp: &Path,
    i: usize,
    model: &Model,
    rt: &Runtime,
) -> Result<Option<Params>> {
    let p = checkpoint::model_file(&endpoint_dir(exp, i, 2));
    if p.exists() {
        Ok(Some(load_params(&p, model, rt)?))
    } else {
        Ok(None)
    }
}
