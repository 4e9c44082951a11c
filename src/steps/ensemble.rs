//! The curve ensemble (`eval --ensemble K`): whole, or one shard of it, and
//! the merge of the shards' parts.
//!
//! The units of work are the two endpoints (0: start, 1: end) and the K
//! members (2 + m). Each unit's output is its test-set logits; a shard
//! keeps its units' logits in its part (`shards/ensemble/<i>-of-<n>.safetensors`,
//! rewritten after each group, so a rerun resumes), and every ensemble
//! score is computed from the logits of all units, the same way for a
//! whole run and for a merge.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tch::Tensor;

use super::session::Session;
use crate::config::EnsembleConfig;
use crate::eval::ensemble;
use crate::experiment as xp;
use crate::model::Params;
use crate::observe::{Observer, Progress};
use crate::schema::{self, EnsembleFile, EnsembleMeta, EnsemblePart, FORMAT};
use crate::shard::Target;
use crate::vocab::Sampling;
use crate::vocab::Shard;

/// The header key of a part's description.
const PART_KEY: &str = "modeconn-part";

/// A shard's units done so far: their logits, and the test labels.
struct Logits {
    part: EnsemblePart,
    by_unit: BTreeMap<usize, Tensor>,
    labels: Tensor,
}

/// The whole ensemble; writes eval/ensemble.json.
pub fn ensemble(
    s: &Session,
    exp: &Path,
    cfg: &EnsembleConfig,
    obs: &dyn Observer,
) -> Result<EnsembleFile> {
    let l = compute(s, exp, cfg, Shard::WHOLE, None, obs)?;
    let out = finish(&l.part.meta, &l.by_unit, &l.labels)?;
    schema::write_json(&exp.join("eval").join("ensemble.json"), &out)?;
    Ok(out)
}

/// One shard of the ensemble; writes (and resumes) its part file.
pub fn ensemble_shard(
    s: &Session,
    exp: &Path,
    cfg: &EnsembleConfig,
    shard: Shard,
    obs: &dyn Observer,
) -> Result<EnsemblePart> {
    let file = Target::Ensemble.part(exp, shard);
    Ok(compute(s, exp, cfg, shard, Some(&file), obs)?.part)
}

/// Evaluates the shard's units not done yet, writing the part (when
/// `file` is given) after the endpoints and after each group of members.
fn compute(
    s: &Session,
    exp: &Path,
    cfg: &EnsembleConfig,
    shard: Shard,
    file: Option<&Path>,
    obs: &dyn Observer,
) -> Result<Logits> {
    cfg.validate()?;
    let meta = EnsembleMeta {
        dataset: s.lc.meta.dataset,
        arch: s.lc.meta.arch.arch,
        k: cfg.k,
        sampling: cfg.sampling,
        average: cfg.average,
        seed: cfg.seed,
        n_test: s.data.test.len(),
        test_subset: s.dcfg.test_subset,
        seconds: 0.0,
        curve_id: s.curve_id(),
    };
    let mut l = Logits {
        part: EnsemblePart {
            format: FORMAT,
            shard,
            meta,
            done: Vec::new(),
        },
        by_unit: BTreeMap::new(),
        labels: s.data.test.labels.to_device(tch::Device::Cpu),
    };
    if let Some(f) = file {
        resume(&mut l, f);
    }
    let todo: Vec<usize> = shard
        .units(cfg.k + 2)
        .into_iter()
        .filter(|u| !l.by_unit.contains_key(u))
        .collect();
    let ev = s.evaluator();
    let (model, curve) = (&s.lc.model, &s.lc.curve);
    let ts = ensemble::member_ts(cfg.k, cfg.sampling, cfg.seed);
    let mut prog = Progress::new(obs, "ensemble", todo.len() as u64);
    // The endpoints as trained (with their own BN statistics) when their files exist, else φ(0), φ(1).
    let endpoint = |i: usize| -> Result<Params> {
        Ok(match xp::load_endpoint_if_present(exp, i, model, &s.rt)? {
            Some(p) => p,
            None => s.point(i as f64)?,
        })
    };
    let (ends, members): (Vec<usize>, Vec<usize>) = todo.iter().partition(|&&u| u < 2);
    let group = ev.group_size(crate::eval::GROUP_BUDGET).max(1);
    let chunks = std::iter::once(ends).chain(members.chunks(group).map(<[usize]>::to_vec));
    for chunk in chunks.filter(|c| !c.is_empty()) {
        let timer = std::time::Instant::now();
        let ps = chunk
            .iter()
            .map(|&u| match u {
                0 | 1 => endpoint(u),
                _ => Ok(curve.point(model, ts[u - 2])),
            })
            .collect::<Result<Vec<Params>>>()?;
        if chunk[0] >= 2 {
            ev.update_bn(&ps)?;
        }
        let (_, logits) = ev.evaluate(&ps, &s.data.test, true)?;
        for (&u, t) in chunk.iter().zip(logits) {
            l.by_unit.insert(u, t);
        }
        l.part.meta.seconds += timer.elapsed().as_secs_f64();
        prog.inc(chunk.len() as u64);
        if let Some(f) = file {
            write_part(f, &mut l)?;
        }
    }
    prog.finish();
    Ok(l)
}

/// Writes a shard's part: its description in the header, the logits of
/// each unit done and the labels as tensors.
fn write_part(file: &Path, l: &mut Logits) -> Result<()> {
    l.part.done = l.by_unit.keys().copied().collect();
    let mut tensors = vec![("labels".to_string(), l.labels.shallow_clone())];
    for (u, t) in &l.by_unit {
        tensors.push((format!("logits.{u}"), t.shallow_clone()));
    }
    let header = HashMap::from([(PART_KEY.to_string(), serde_json::to_string(&l.part)?)]);
    crate::checkpoint::write_tensors_with(file, &tensors, header)
}

/// Reads a part: its description, the logits of its units and the labels.
fn read_part(file: &Path, remake: &str) -> Result<Logits> {
    let fix = || {
        format!(
            "{} is damaged; delete it and rerun `{remake}`",
            file.display()
        )
    };
    let head = crate::checkpoint::header_entry(file, PART_KEY)
        .with_context(fix)?
        .ok_or_else(|| anyhow!("{} holds no ensemble part description", file.display()))
        .with_context(fix)?;
    let part: EnsemblePart = serde_json::from_str(&head).with_context(fix)?;
    if part.format != FORMAT {
        bail!(
            "{} has format {}, this modeconn reads {FORMAT}; rerun `{remake}`",
            file.display(),
            part.format
        );
    }
    let (tensors, _) = crate::checkpoint::read_tensors(file).with_context(fix)?;
    let mut named: HashMap<String, Tensor> = tensors.into_iter().collect();
    let labels = named
        .remove("labels")
        .ok_or_else(|| anyhow!("{} has no labels", file.display()))?;
    let mut by_unit = BTreeMap::new();
    for &u in &part.done {
        let t = named.remove(&format!("logits.{u}"));
        let t = t.ok_or_else(|| {
            anyhow!(
                "{} lists unit {u} as done but has no logits for it",
                file.display()
            )
        })?;
        by_unit.insert(u, t);
    }
    Ok(Logits {
        part,
        by_unit,
        labels,
    })
}

/// Keeps the units of an earlier part of this shard made with the same
/// settings; a damaged or different one is computed again.
fn resume(l: &mut Logits, file: &Path) {
    let Ok(old) = read_part(file, "") else {
        return;
    };
    let same = old.part.shard == l.part.shard
        && setup(&old.part.meta) == setup(&l.part.meta)
        && old.labels.equal(&l.labels);
    if same {
        l.part.meta.seconds = old.part.meta.seconds;
        l.by_unit = old.by_unit;
    }
}

/// What every part must agree on: the meta without its timing.
fn setup(m: &EnsembleMeta) -> EnsembleMeta {
    EnsembleMeta {
        seconds: 0.0,
        ..m.clone()
    }
}

/// The ensemble file from the logits of every unit.
fn finish(
    meta: &EnsembleMeta,
    by_unit: &BTreeMap<usize, Tensor>,
    labels: &Tensor,
) -> Result<EnsembleFile> {
    let unit = |u: usize| {
        by_unit
            .get(&u)
            .ok_or_else(|| anyhow!("the logits of unit {u} are missing"))
    };
    let members = (0..meta.k)
        .map(|m| unit(m + 2).map(Tensor::shallow_clone))
        .collect::<Result<Vec<_>>>()?;
    let ts = ensemble::member_ts(meta.k, meta.sampling, meta.seed);
    let order = match meta.sampling {
        Sampling::Grid => ensemble::spread_order(&ts),
        Sampling::Random => (0..meta.k).collect(),
    };
    let report = ensemble::report(
        unit(0)?,
        unit(1)?,
        &members,
        ts,
        order,
        labels,
        meta.average,
    )?;
    Ok(EnsembleFile {
        format: FORMAT,
        meta: meta.clone(),
        report,
    })
}

/// The parts at `paths` (one per shard, in order) as the ensemble a single
/// run writes; refuses parts of other settings and incomplete ones by name.
pub fn merge(paths: &[PathBuf], remake: &str) -> Result<EnsembleFile> {
    let parts = paths
        .iter()
        .map(|p| read_part(p, remake))
        .collect::<Result<Vec<_>>>()?;
    let n = parts.len();
    let first = setup(&parts[0].part.meta);
    let mut all = BTreeMap::new();
    for (k, (p, l)) in paths.iter().zip(parts.iter()).enumerate() {
        crate::shard::ensure_same_setup(&paths[0], &first, p, &setup(&l.part.meta))?;
        if !l.labels.equal(&parts[0].labels) {
            bail!("{} and {} were evaluated on different test images; rerun the shards on the same data", paths[0].display(), p.display());
        }
        let shard = Shard { index: k, count: n };
        let mine = shard.units(first.k + 2);
        let missing = mine.iter().filter(|u| !l.by_unit.contains_key(u)).count();
        if l.part.shard != shard || missing > 0 {
            bail!(
                "{} is incomplete or not shard {shard}'s: {missing} of its {} models are not evaluated yet. Rerun shard {shard} (it resumes), then merge.",
                p.display(),
                mine.len()
            );
        }
        for u in mine {
            all.insert(u, l.by_unit[&u].shallow_clone());
        }
    }
    let meta = EnsembleMeta {
        seconds: parts.iter().map(|l| l.part.meta.seconds).sum(),
        ..parts[0].part.meta.clone()
    };
    finish(&meta, &all, &parts[0].labels)
}
