//! The evaluation pipelines over a fitted curve: the sweep along t and the
//! curve ensemble (in `sweep.rs` and `ensemble_run.rs`), the landscape
//! planes and a point taken out for export.

use std::path::Path;

use anyhow::Result;

use super::grid::Files;
use crate::checkpoint::Meta;
use crate::config::{CurveConfig, DataRequest, LandscapeConfig, RandomPlaneConfig};
use crate::eval::Evaluator;
use crate::experiment::{self as xp, LoadedCurve};
use crate::landscape;
use crate::landscape::grid::Run;
use crate::loader::{Data, DataConfig};
use crate::model::Params;
use crate::observe::Observer;
use crate::runtime::Runtime;
use crate::schema::{PlaneFile, PlaneMeta};
use crate::shard::Target;
use crate::vocab::Shard;

pub use super::ensemble::{ensemble, ensemble_shard, merge as merge_ensemble};
pub use super::sweep::{sweep, sweep_shard};

/// A curve with its data, ready to evaluate.
pub struct Session {
    pub lc: LoadedCurve,
    pub data: Data,
    pub dcfg: DataConfig,
    pub rt: Runtime,
    /// The weight decay the curve was fitted with (its loss includes it).
    pub wd: f64,
}

impl Session {
    pub fn open(exp: &Path, data: &DataRequest, rt: Runtime) -> Result<Session> {
        let lc = xp::load_curve(exp, &rt)?;
        let (data, dcfg) = xp::load_data_for(&lc.meta, Some(exp), data, &rt, &lc.path)?;
        let wd = xp::section::<CurveConfig>(exp, "curve")?
            .map(|c| c.wd)
            .unwrap_or(0.0);
        Ok(Session {
            lc,
            data,
            dcfg,
            rt,
            wd,
        })
    }

    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator {
            model: &self.lc.model,
            data: &self.data,
            rt: &self.rt,
        }
    }

    /// Identifies the curve evaluated (see [`curve_id`]).
    pub fn curve_id(&self) -> String {
        curve_id(&self.lc.path, &self.lc.meta)
    }

    /// φ(t) with BatchNorm statistics re-estimated on the training data.
    pub fn point(&self, t: f64) -> Result<Params> {
        let p = self.lc.curve.point(&self.lc.model, t);
        self.evaluator().update_bn(std::slice::from_ref(&p))?;
        Ok(p)
    }
}

/// Identifies a fitted curve (its epoch and file size), so outputs computed
/// from an older curve are recognised and recomputed.
pub fn curve_id(path: &Path, meta: &Meta) -> String {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    format!("epoch {} / {} bytes", meta.epoch, len)
}

/// The loss landscape on the plane through w1, the bend and w2: the whole
/// grid into landscape/plane.json, or one shard's points into its part
/// (each resumed).
pub fn landscape(
    s: &Session,
    exp: &Path,
    cfg: &LandscapeConfig,
    shard: Shard,
    obs: &dyn Observer,
) -> Result<PlaneFile> {
    cfg.validate()?;
    let meta = PlaneMeta {
        dataset: s.lc.meta.dataset,
        arch: s.lc.meta.arch.arch,
        coords: Some(cfg.coords),
        grid: cfg.grid,
        margin: Some(cfg.margin),
        plane_bend: None,
        caption: String::new(),
        train_subset: s.dcfg.train_subset,
        test_subset: s.dcfg.test_subset,
        curve_id: s.curve_id(),
        wd: s.wd,
        random: None,
    };
    let files = Files::of(exp, Target::Plane, shard);
    let run = Run {
        shard,
        store: &files,
        obs,
    };
    landscape::compute(&s.evaluator(), &s.lc.curve, cfg, meta, &run)
}

/// A landscape of random directions around one network (`cfg.around`, a
/// model file or folder, taken relative to `exp` when it is there): the
/// whole grid into landscape/random.json (random-1d.json for a line), or
/// one shard's points into its part.
pub fn random_landscape(
    exp: &Path,
    data: &DataRequest,
    rt: &Runtime,
    cfg: &RandomPlaneConfig,
    shard: Shard,
    obs: &dyn Observer,
) -> Result<PlaneFile> {
    cfg.validate()?;
    let inside = exp.join(&cfg.around);
    let around = if cfg.around.is_relative() && inside.exists() {
        inside
    } else {
        cfg.around.clone()
    };
    let path = xp::resolve_model_path(&around);
    let meta = xp::read_meta(&path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no modeconn metadata (architecture, data), so its data cannot be chosen; import it first (e.g. as an endpoint of fit-curve)",
            path.display()
        )
    })?;
    let model = crate::model::Model::new(meta.arch.clone())?;
    let (data, dcfg) = xp::load_data_for(&meta, Some(exp), data, rt, &path)?;
    let centre = xp::load_params(&path, &model, rt)?;
    let ev = Evaluator {
        model: &model,
        data: &data,
        rt,
    };
    let base = PlaneMeta {
        dataset: meta.dataset,
        arch: meta.arch.arch,
        coords: None,
        grid: cfg.grid,
        margin: None,
        plane_bend: None,
        caption: String::new(),
        train_subset: dcfg.train_subset,
        test_subset: dcfg.test_subset,
        curve_id: curve_id(&path, &meta),
        wd: 0.0,
        random: None,
    };
    let target = if cfg.dims == 2 {
        Target::Random
    } else {
        Target::Random1d
    };
    let files = Files::of(exp, target, shard);
    let run = Run {
        shard,
        store: &files,
        obs,
    };
    landscape::random::compute(&ev, centre, cfg, base, &run)
}

/// Refuses an export before any work: t outside [0, 1], or an output inside
/// the experiment's own folders.
pub fn check_export(exp: &Path, t: f64, out: &Path) -> Result<()> {
    if !(0.0..=1.0).contains(&t) {
        anyhow::bail!("--t must be in [0, 1], got {t}");
    }
    if let Some(place) = xp::owned_by_experiment(exp, out) {
        anyhow::bail!(
            "--out {} is inside the experiment's own {place}; writing there would overwrite its files. Choose a path outside {}/{place}",
            out.display(),
            exp.display()
        );
    }
    if out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/') {
        anyhow::bail!(
            "--out {} is a directory; name the file to write, e.g. {}",
            out.display(),
            out.join("point.safetensors").display()
        );
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        anyhow::bail!(
            "--out {}: the directory {} does not exist; create it first (export writes one file and makes no directories)",
            out.display(),
            parent.display()
        );
    }
    Ok(())
}

/// Writes φ(t) (BatchNorm statistics re-estimated) as a PyTorch state dict
/// at `out`; returns its test metrics.
pub fn export(s: &Session, t: f64, out: &Path) -> Result<crate::eval::Stats> {
    check_export(
        s.lc.path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new(".")),
        t,
        out,
    )?;
    let p = s.point(t)?;
    let mut meta = s.lc.meta.clone();
    meta.curve = None;
    meta.note = format!("point t={t} of the curve in {}", s.lc.path.display());
    crate::checkpoint::save_model(out, &p, &meta)?;
    let (mut test, _) = s
        .evaluator()
        .evaluate(std::slice::from_ref(&p), &s.data.test, false)?;
    Ok(test.swap_remove(0))
}
