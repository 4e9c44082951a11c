//! The experiment directory: its layout and `config.json`. Loading the
//! endpoints, curves and data stored in it (or anywhere else) is in [`load`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::checkpoint::Meta;
use crate::config::{default_normalize, ArchRequest, DataRequest};
use crate::data::DatasetKind;
use crate::loader::{Data, DataConfig};
use crate::model::{ArchConfig, ArchKind, Model};
use crate::observe::{Event, Observer};
use crate::schema::json_diffs;

mod load;
mod paths;
pub use load::*;
pub use paths::{portable, resolve_in, resolved};

pub fn config_path(exp: &Path) -> PathBuf {
    exp.join("config.json")
}

/// Reads config.json as a JSON object (empty when absent).
pub fn read_config(exp: &Path) -> Result<Map<String, Value>> {
    let p = config_path(exp);
    match std::fs::symlink_metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        Ok(_) => {}
    }
    let s = crate::files::read_text(&p, crate::files::JSON_MAX)?;
    match serde_json::from_str::<Value>(&s) {
        Ok(Value::Object(m)) => Ok(m),
        _ => bail!("{} is not a JSON object; fix or delete it", p.display()),
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
    let mut v = serde_json::to_value(value)?;
    paths::make_portable(exp, name, &mut v);
    m.insert(name.to_string(), v);
    let text = serde_json::to_string_pretty(&Value::Object(m))? + "\n";
    crate::files::write_atomic(&config_path(exp), text.as_bytes())
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
    let Some(mut old) = read_config(exp)?.remove(key) else {
        return Ok(());
    };
    let mut now = serde_json::to_value(now)?;
    // Paths compare by what they point to, not by how they are spelled.
    paths::make_portable(exp, key, &mut old);
    paths::make_portable(exp, key, &mut now);
    if old == now {
        return Ok(());
    }
    let mut diffs = Vec::new();
    json_diffs(
        "",
        Some(&old),
        Some(&now),
        ("saved", "requested"),
        &mut diffs,
    );
    bail!(
        "{} records {what} made with other '{key}' settings ({}). {fix}",
        config_path(exp).display(),
        diffs.join("; ")
    );
}

/// The config.json section that holds the data settings of the step whose
/// own section is `step`: `data` for the endpoints (`train`), `<step>_data`
/// for the others, so a curve or FGE run on other subsets never rewrites
/// the endpoints' record, and each step is resumed against its own.
pub fn data_key(step: &str) -> String {
    match step {
        "train" => "data".to_string(),
        s => format!("{s}_data"),
    }
}

/// The data settings `step` recorded; for experiments written before each
/// step had its own, the shared `data` section.
pub fn step_data(exp: &Path, step: &str) -> Result<Option<DataConfig>> {
    section(exp, &recorded_data_key(exp, step)?)
}

/// `step`'s own data section when config.json has it, else the shared `data`.
fn recorded_data_key(exp: &Path, step: &str) -> Result<String> {
    let own = data_key(step);
    Ok(if read_config(exp)?.contains_key(&own) {
        own
    } else {
        "data".to_string()
    })
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
    ensure_same(exp, &recorded_data_key(exp, key)?, data, what, fix)?;
    ensure_same(exp, "arch", arch, what, fix)
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

/// When `path` lies where the experiment keeps its own files (a model
/// folder, the curve, the FGE members, eval/, landscape/, figures/,
/// config.json, the lock, the report), the name of that place; writing
/// there would destroy work.
pub fn owned_by_experiment(exp: &Path, path: &Path) -> Option<String> {
    let rel = resolved(path)?
        .strip_prefix(resolved(exp)?)
        .ok()?
        .to_path_buf();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let owned = is_own_folder(&first)
        || (rel.components().count() == 1
            && matches!(first.as_str(), "config.json" | ".lock" | "report.html"));
    owned.then_some(first)
}

/// The folders an experiment keeps its outputs in.
pub fn is_own_folder(name: &str) -> bool {
    matches!(
        name,
        "start_model"
            | "end_model"
            | "end_model_aligned"
            | "curve_model"
            | "fge"
            | "eval"
            | "landscape"
            | "figures"
            | "shards"
    ) || name.starts_with("model_")
}

/// Refuses an experiment one of whose own folders is a symbolic link (or
/// not a folder): its outputs would be written outside it.
pub fn check_own_folders(exp: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(exp) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_own_folder(&name) {
            continue;
        }
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            let to = std::fs::read_link(&p).map_or("?".into(), |t| t.display().to_string());
            bail!(
                "{} is a symbolic link (to {to}); modeconn writes an experiment's outputs only inside it. Replace the link with a folder (move what it holds into {}) and run again",
                p.display(),
                p.display()
            );
        }
        if !ft.is_dir() {
            bail!(
                "{} is not a folder; the experiment keeps its outputs there. Move it away and run again",
                p.display()
            );
        }
    }
    Ok(())
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
    let cfg = DataConfig {
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
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Architecture from flags (falling back on `base`) and the data's shape.
pub fn arch_config(
    args: &ArchRequest,
    base: Option<&ArchConfig>,
    data: &Data,
) -> Result<ArchConfig> {
    let shape = (
        data.channels,
        data.classes.len() as i64,
        data.height,
        data.width,
    );
    arch_config_for(args, base, shape)
}

/// Checks the architecture flags, and that `copies` copies of the network
/// (`why` says what they are) fit in memory, before any data is read, on
/// the shape `kind`'s images have (a typical one for an image folder, whose
/// own is checked once it is read).
pub fn precheck_arch(
    args: &ArchRequest,
    base: Option<&ArchConfig>,
    kind: DatasetKind,
    copies: (usize, &str, &str),
) -> Result<()> {
    let shape = match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => (1, 10, 28, 28),
        DatasetKind::Cifar10 => (3, 10, 32, 32),
        DatasetKind::Cifar100 => (3, 100, 32, 32),
        DatasetKind::ImageFolder => (3, 10, 64, 64),
    };
    let cfg = arch_config_for(args, base, shape)?;
    if cfg.arch == ArchKind::Torchscript {
        // Its shape is the archive's, checked when it is loaded.
        return Ok(());
    }
    Model::new(cfg)?.ensure_fits(copies)
}

/// What training holds besides the data: the parameters, their gradients,
/// the optimiser's state and a copy.
pub const TRAINING_COPIES: (usize, &str, &str) = (
    4,
    "training holds about 4 copies",
    "Use a smaller --widen or --depth.",
);

/// The copies a curve of `bends` bends holds while it is fitted.
pub fn curve_copies(bends: usize) -> (usize, &'static str, &'static str) {
    (
        bends.saturating_mul(3).saturating_add(4),
        "the curve holds each bend with its gradient and momentum",
        "Use fewer --bends (3 is the paper's quadratic Bezier curve), or a smaller --widen or --depth.",
    )
}

fn arch_config_for(
    args: &ArchRequest,
    base: Option<&ArchConfig>,
    (channels, classes, height, width): (i64, i64, i64, i64),
) -> Result<ArchConfig> {
    let arch = args
        .arch
        .or(args.model_file.as_ref().map(|_| ArchKind::Torchscript))
        .or(base.map(|b| b.arch))
        .unwrap_or(ArchKind::SeedConvnet);
    if args.model_file.is_some() && arch != ArchKind::Torchscript {
        bail!(
            "--model-file is the archive of --arch torchscript, but --arch is {}; drop one of the two",
            arch.name()
        );
    }
    let mut cfg = ArchConfig::new(arch, channels, classes, height, width);
    if let Some(b) = base.filter(|b| b.arch == arch) {
        cfg.depth = b.depth;
        cfg.widen = b.widen;
        cfg.dropout = b.dropout;
        cfg.script = b.script.clone();
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
    if let Some(f) = &args.model_file {
        let r = crate::model::ScriptRef::of(f)?;
        if let Some(old) = cfg.script.as_ref().filter(|o| **o != r) {
            bail!(
                "--model-file {} (MD5 {}) is not the archive these networks were made with ({}, MD5 {}); use that archive, or start a new experiment",
                r.path.display(),
                r.md5,
                old.path.display(),
                old.md5
            );
        }
        crate::model::script::trust(&r.path);
        cfg.script = Some(r);
    }
    Ok(cfg)
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
