//! `landscape` (the curve's plane, or random directions around a network)
//! and `merge`.

use anyhow::{bail, Result};
use serde_json::json;

use super::args::{LandscapeArgs, MergeArgs};
use super::output::Terminal;
use modeconn::config::{LandscapeConfig, RandomPlaneConfig};
use modeconn::landscape::PlaneKind;
use modeconn::lock::{ShardLock, StepLock};
use modeconn::runtime::PrecisionChoice;
use modeconn::schema::PlaneFile;
use modeconn::shard::Target;
use modeconn::steps::session::{self, Session};
use modeconn::vocab::Coords;
use modeconn::vocab::Shard;

pub fn landscape(a: &LandscapeArgs, out: &Terminal) -> Result<()> {
    let shard = a.shard.unwrap_or(Shard::WHOLE);
    let (target, cfg) = match a.plane {
        PlaneKind::Curve => (Target::Plane, Cfg::Curve(curve_config(a)?)),
        PlaneKind::Random => (Target::Random, Cfg::Random(random_config(a, 2)?)),
        PlaneKind::Random1d => (Target::Random1d, Cfg::Random(random_config(a, 1)?)),
    };
    let _lock = StepLock::acquire(&a.exp, target, shard, false)?;
    let rt = super::runtime(&a.rt, PrecisionChoice::Fp32, out)?;
    let f = match &cfg {
        Cfg::Curve(c) => {
            let s = Session::open(&a.exp, &a.data.request(), rt)?;
            session::landscape(&s, &a.exp, c, shard, out)?
        }
        Cfg::Random(c) => session::random_landscape(&a.exp, &a.data.request(), &rt, c, shard, out)?,
    };
    if !shard.is_whole() {
        super::shard_done(&a.exp, target, shard, f.seconds, out);
        return Ok(());
    }
    report(&a.exp.join(target.output()), &f, out);
    Ok(())
}

/// The settings of either kind of plane.
enum Cfg {
    Curve(LandscapeConfig),
    Random(RandomPlaneConfig),
}

/// The curve plane's settings; the random plane's flags are refused.
fn curve_config(a: &LandscapeArgs) -> Result<LandscapeConfig> {
    let random_only = [
        ("--around", a.around.is_some()),
        ("--span", a.span.is_some()),
        ("--seed", a.seed.is_some()),
        ("--include-biasbn", a.include_biasbn),
        ("--bn", a.bn.is_some()),
    ];
    if let Some((flag, _)) = random_only.iter().find(|(_, given)| *given) {
        bail!("{flag} applies to random planes; add --plane random (or random-1d), or drop {flag}");
    }
    let cfg = LandscapeConfig {
        grid: a.grid,
        margin: a.margin.unwrap_or(0.2),
        coords: a.coords.unwrap_or(Coords::Orthonormal),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// A random plane's (`dims` 2) or line's (1) settings; the curve plane's
/// flags are refused.
fn random_config(a: &LandscapeArgs, dims: usize) -> Result<RandomPlaneConfig> {
    for (flag, given) in [
        ("--margin", a.margin.is_some()),
        ("--coords", a.coords.is_some()),
    ] {
        if given {
            bail!("{flag} applies to the curve's plane; a random plane spans [-S, S] (--span S)");
        }
    }
    let mut cfg = RandomPlaneConfig::defaults(a.around.clone().unwrap_or("start_model".into()));
    cfg.dims = dims;
    cfg.grid = a.grid;
    cfg.include_biasbn = a.include_biasbn;
    if let Some(v) = a.span {
        cfg.span = v;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    if let Some(v) = a.bn {
        cfg.bn = v;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The result line of a whole landscape.
fn report(path: &std::path::Path, f: &PlaneFile, out: &Terminal) {
    let best = f
        .test_err
        .iter()
        .flatten()
        .flatten()
        .cloned()
        .fold(f64::INFINITY, f64::min);
    let (nx, ny) = (f.xs.len(), f.ys.len());
    out.result(
        &format!(
            "{}: {nx}x{ny} grid in {:.1}s, lowest test error {best:.2}%\n",
            path.display(),
            f.seconds
        ),
        &json!({"plane": path, "grid": nx, "seconds": f.seconds, "min_test_err": best}),
    );
}

pub fn merge(a: &MergeArgs, out: &Terminal) -> Result<()> {
    let plan = modeconn::merge::plan(&a.exp, &a.only)?;
    let _lock = ShardLock::acquire_merge(&a.exp, &plan.locks())?;
    // Listed again under the locks: a shard may have finished meanwhile.
    let plan = modeconn::merge::plan(&a.exp, &a.only)?;
    let written = modeconn::merge::merge(&a.exp, &plan)?;
    let human: String = written
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    out.result(&human, &json!({"merged": written}));
    Ok(())
}
