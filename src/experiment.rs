//! The experiment directory: its layout, `config.json`, and loading the
//! endpoints and curves stored in it (or anywhere else) as parameter sets.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::checkpoint::{self, Meta};
use crate::config::{default_normalize, ArchRequest, DataRequest};
use crate::curve::Curve;
use crate::data::DatasetKind;
use crate::loader::{self, Data, DataConfig};
use crate::model::{ArchConfig, ArchKind, Model, Params};
use crate::observe::{Event, Observer};
use crate::runtime::Runtime;

pub fn config_path(exp: &Path) -> PathBuf {
    exp.join("config.json")
}

/// Reads config.json as a JSON object (empty when absent).
pub fn read_config(exp: &Path) -> Result<Map<String, Value>> {
    let p = config_path(exp);
    match std::fs::read_to_string(&p) {
        Ok(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => Ok(m),
            _ => bail!("{} is not a JSON object; fix or delete it", p.display()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// One section of config.json, if present. A section that does not parse
/// (a wrong type, a missing field) is an error naming it, never a silent
/// default.
pub fn section<T: DeserializeOwned>(exp: &Path, name: &str) -> Result<Option<T>> {
    match read_config(exp)?.remove(name) {
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
            anyhow!(
                "{}: section '{name}' is malformed ({e}); fix it, or delete the file and rerun the step that wrote it",
                config_path(exp).display()
            )
        }),
        None => Ok(None),
    }
}

/// Sets one section of config.json (read-modify-write, atomic).
pub fn write_section<T: Serialize>(exp: &Path, name: &str, value: &T) -> Result<()> {
    let mut m = read_config(exp)?;
    m.insert(name.to_string(), serde_json::to_value(value)?);
    let text = serde_json::to_string_pretty(&Value::Object(m))? + "\n";
    checkpoint::write_atomic(&config_path(exp), text.as_bytes())
}

/// Refuses when config.json's section `key` exists and differs from `now`,
/// naming each field that differs; `what` says what the saved settings made
/// and `fix` what to do.
pub fn ensure_same<T: Serialize>(
    exp: &Path,
    key: &str,
    now: &T,
    what: &str,
    fix: &str,
) -> Result<()> {
    let Some(old) = read_config(exp)?.remove(key) else {
        return Ok(());
    };
    let now = serde_json::to_value(now)?;
    if old == now {
        return Ok(());
    }
    let mut diffs = Vec::new();
    json_diffs("", Some(&old), Some(&now), &mut diffs);
    bail!(
        "{} holds {what} made with other '{key}' settings ({}). {fix}",
        exp.display(),
        diffs.join("; ")
    );
}

/// Refuses a `--resume` whose step settings (config section `key`), data or
/// architecture differ from the saved ones.
pub fn ensure_resumable<T: Serialize>(
    exp: &Path,
    key: &str,
    step: &T,
    data: &DataConfig,
    arch: &ArchConfig,
    what: &str,
) -> Result<()> {
    let fix = "--resume continues a run with its own settings: repeat them, or use a new --exp.";
    ensure_same(exp, key, step, what, fix)?;
    ensure_same(exp, "data", data, what, fix)?;
    ensure_same(exp, "arch", arch, what, fix)
}

/// "path: saved A, requested B" for every leaf where two JSON values differ
/// (objects are compared key by key, with dotted paths).
fn json_diffs(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    if let (Some(Value::Object(x)), Some(Value::Object(y))) = (a, b) {
        let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        for k in keys {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            json_diffs(&p, x.get(k), y.get(k), out);
        }
    } else if a != b {
        let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), Value::to_string);
        out.push(format!("{path}: saved {}, requested {}", show(a), show(b)));
    }
}

/// Records the machine and the resolved runtime in config.json (section
/// `runtime`, rewritten by each training step) and warns about the layout.
pub fn record_runtime(
    exp: &Path,
    rt: &crate::runtime::Runtime,
    model: &Model,
    obs: &dyn Observer,
) -> Result<()> {
    if let Some(text) = rt.layout_warning(model) {
        obs.event(&Event::Warning { text });
    }
    write_section(exp, "runtime", &rt.record())
}

/// Folder of endpoint `i` of `n`: start_model/ and end_model/ for two, model_<i>/ beyond.
pub fn endpoint_dir(exp: &Path, i: usize, n: usize) -> PathBuf {
    match (i, n) {
        (0, _) => exp.join("start_model"),
        (1, 2) => exp.join("end_model"),
        _ => exp.join(format!("model_{i}")),
    }
}

pub fn curve_dir(exp: &Path) -> PathBuf {
    exp.join("curve_model")
}

/// Data settings from flags, falling back on `base` (a checkpoint's or
/// config.json's) and then on defaults.
pub fn data_config(
    args: &DataRequest,
    base: Option<&DataConfig>,
    arch: ArchKind,
) -> Result<DataConfig> {
    let dataset = args
        .dataset
        .or_else(|| base.map(|b| b.dataset))
        .unwrap_or(DatasetKind::FashionMnist);
    let same = base.map(|b| b.dataset == dataset).unwrap_or(false);
    Ok(DataConfig {
        data_dir: args.data_dir.clone().or_else(|| {
            if same {
                base.and_then(|b| b.data_dir.clone())
            } else {
                None
            }
        }),
        normalize: args
            .normalize
            .or_else(|| base.map(|b| b.normalize))
            .unwrap_or_else(|| default_normalize(arch)),
        train_subset: args.train_subset.or_else(|| {
            if same {
                base.and_then(|b| b.train_subset)
            } else {
                None
            }
        }),
        test_subset: args.test_subset.or_else(|| {
            if same {
                base.and_then(|b| b.test_subset)
            } else {
                None
            }
        }),
        dataset,
    })
}

/// Architecture from flags (falling back on `base`) and the data's shape.
pub fn arch_config(args: &ArchRequest, base: Option<&ArchConfig>, data: &Data) -> ArchConfig {
    let arch = args
        .arch
        .or(base.map(|b| b.arch))
        .unwrap_or(ArchKind::SeedConvnet);
    let mut cfg = ArchConfig::new(
        arch,
        data.channels,
        data.classes.len() as i64,
        data.height,
        data.width,
    );
    if let Some(b) = base.filter(|b| b.arch == arch) {
        cfg.depth = b.depth;
        cfg.widen = b.widen;
        cfg.dropout = b.dropout;
    }
    if let Some(d) = args.depth {
        cfg.depth = d;
    }
    if let Some(w) = args.widen {
        cfg.widen = w;
    }
    if let Some(p) = args.dropout {
        cfg.dropout = p;
    }
    cfg
}

/// Checkpoint metadata for a model trained or evaluated on `data`.
pub fn meta_for(arch: &ArchConfig, data: &Data, cfg: &DataConfig, epoch: usize) -> Meta {
    Meta {
        arch: arch.clone(),
        dataset: cfg.dataset,
        normalize: cfg.normalize,
        norm_mean: data.norm.mean.clone(),
        norm_std: data.norm.std.clone(),
        classes: data.classes.clone(),
        epoch,
        curve: None,
        note: String::new(),
    }
}

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
    let base = match exp {
        Some(e) => section::<DataConfig>(e, "data")?,
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

pub fn load_curve(exp: &Path, rt: &Runtime) -> Result<LoadedCurve> {
    let path = checkpoint::curve_file(&curve_dir(exp));
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
    let model = Model::new(meta.arch.clone())?;
    let weights: Vec<String> = model.weight_names().map(str::to_string).collect();
    let mut bends = Vec::new();
    for (k, b) in checkpoint::split_bends(tensors, cm.bends, &path)?
        .into_iter()
        .enumerate()
    {
        let p = checkpoint::in_order(b, &weights);
        for n in &weights {
            if p.try_get(n).is_none() {
                bail!(
                    "{}: bend {k} lacks parameter '{n}' of {}",
                    path.display(),
                    meta.arch.arch.name()
                );
            }
        }
        let p = Params::new(
            weights
                .iter()
                .map(|n| (n.clone(), p.get(n).shallow_clone()))
                .collect(),
        );
        for s in model
            .spec
            .iter()
            .filter(|s| s.role == crate::model::Role::Weight)
        {
            if p.get(&s.name).size() != s.shape {
                bail!(
                    "{}: bend {k} parameter '{}' has shape {:?}, expected {:?}",
                    path.display(),
                    s.name,
                    p.get(&s.name).size(),
                    s.shape
                );
            }
        }
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
