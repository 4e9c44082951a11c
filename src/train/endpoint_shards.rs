//! `train-endpoints --models N --shard i/n`: shard i trains the networks
//! k with k mod n = i into their usual folders (seed s + k, as a single run
//! would), and instead of config.json (which every shard would rewrite at
//! once) it keeps the sections a single run writes in its part,
//! `shards/endpoints/<i>-of-<n>.json`, with the networks it finished.
//! [`merge`] checks that every network is complete and writes those
//! sections into config.json.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::Context;
use crate::checkpoint;
use crate::config::TrainConfig;
use crate::experiment::{self as xp};
use crate::loader::DataConfig;
use crate::model::ArchConfig;
use crate::observe::{Event, Observer};
use crate::schema::{self, EndpointsPart, FORMAT};
use crate::shard::Target;
use crate::vocab::Shard;

/// Writes the shard's part before any training (keeping the networks it
/// finished earlier with these settings) and returns it.
pub fn start(
    exp: &Path,
    shard: Shard,
    cx: &Context,
    tcfg: &TrainConfig,
    obs: &dyn Observer,
) -> Result<EndpointsPart> {
    if let Some(text) = cx.rt.layout_warning(cx.model) {
        obs.event(&Event::Warning { text });
    }
    let mut part = EndpointsPart {
        format: FORMAT,
        shard,
        data: cx.dcfg.clone(),
        arch: cx.model.cfg.clone(),
        runtime: serde_json::to_value(cx.rt.record())?,
        train: tcfg.clone(),
        done: Vec::new(),
    };
    let file = Target::Endpoints.part(exp, shard);
    if let Ok(old) = schema::read_versioned::<EndpointsPart>(&file, "") {
        if setup(&old) == setup(&part) {
            part.done = old.done;
        }
    }
    schema::write_json(&file, &part)?;
    Ok(part)
}

/// Records network `i` as trained to its last epoch.
pub fn finished(exp: &Path, part: &mut EndpointsPart, i: usize) -> Result<()> {
    if !part.done.contains(&i) {
        part.done.push(i);
        part.done.sort_unstable();
    }
    schema::write_json(&Target::Endpoints.part(exp, part.shard), part)
}

/// What every part of one split must agree on: everything but the machine
/// it ran on and the networks it finished.
fn setup(p: &EndpointsPart) -> serde_json::Value {
    serde_json::json!({"shard_count": p.shard.count, "data": p.data, "arch": p.arch, "train": p.train})
}

/// Refuses `--resume` of a shard whose part was written with other settings.
pub fn ensure_resumable(
    exp: &Path,
    shard: Shard,
    data: &DataConfig,
    arch: &ArchConfig,
    train: &TrainConfig,
) -> Result<()> {
    let file = Target::Endpoints.part(exp, shard);
    let Ok(old) = schema::read_versioned::<EndpointsPart>(&file, "") else {
        return Ok(());
    };
    let now =
        serde_json::json!({"shard_count": shard.count, "data": data, "arch": arch, "train": train});
    let was = setup(&old);
    if was != now {
        let mut diffs = Vec::new();
        crate::schema::json_diffs(
            "",
            Some(&was),
            Some(&now),
            ("saved", "requested"),
            &mut diffs,
        );
        bail!(
            "{} holds a shard run with other settings ({}). --resume continues a run with its own settings: repeat them, or use a new --exp.",
            file.display(),
            diffs.join("; ")
        );
    }
    Ok(())
}

/// Checks the parts at `paths` (one per shard, in order) and every network
/// they trained, then writes the config.json sections a single run writes
/// (the runtime of shard 0). Returns config.json's path.
pub fn merge(exp: &Path, paths: &[PathBuf], remake: &str) -> Result<PathBuf> {
    let parts = paths
        .iter()
        .map(|p| schema::read_versioned::<EndpointsPart>(p, remake))
        .collect::<Result<Vec<_>>>()?;
    let n = parts.len();
    for (k, (p, part)) in paths.iter().zip(&parts).enumerate() {
        crate::shard::ensure_same_setup(&paths[0], &setup(&parts[0]), p, &setup(part))?;
        let shard = Shard { index: k, count: n };
        let models = part.train.models;
        let left: Vec<String> = shard
            .units(models)
            .into_iter()
            .filter(|i| !part.done.contains(i))
            .map(|i| xp::endpoint_dir(exp, i, models).display().to_string())
            .collect();
        if part.shard != shard || !left.is_empty() {
            bail!(
                "{} is incomplete or not shard {shard}'s: {} not trained yet. Rerun shard {shard} with --resume, then merge.",
                p.display(),
                left.join(", ")
            );
        }
    }
    let train = &parts[0].train;
    for i in 0..train.models {
        let file = checkpoint::model_file(&xp::endpoint_dir(exp, i, train.models));
        let epoch = xp::read_meta(&file)?.map(|m| m.epoch);
        if epoch != Some(train.epochs) {
            bail!(
                "{} is not a network trained for {} epochs (found {epoch:?}); rerun its shard with --resume, then merge",
                file.display(),
                train.epochs
            );
        }
    }
    let first = &parts[0];
    xp::write_section(exp, "data", &first.data)?;
    xp::write_section(exp, "arch", &first.arch)?;
    xp::write_section(exp, "runtime", &first.runtime)?;
    xp::write_section(exp, "train", &first.train)?;
    Ok(xp::config_path(exp))
}
