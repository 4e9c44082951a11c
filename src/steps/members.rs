//! Ensembles of saved networks (FGE members, independent endpoints): each
//! member's scores and the ensemble's against its size, in
//! `eval/<name>.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use tch::Kind;

use crate::config::DataRequest;
use crate::eval::ensemble::combine;
use crate::eval::metrics::scores;
use crate::eval::Evaluator;
use crate::experiment::{self as xp};
use crate::model::Model;
use crate::observe::{Observer, Progress};
use crate::runtime::Runtime;
use crate::schema::ensemble::{MembersFile, SizeRow};
use crate::vocab::{Average, MemberBn};

crate::choice! {
    /// Which saved networks `eval --members` ensembles.
    pub enum MemberSet {
        /// The FGE members in <exp>/fge/member_<k>/.
        Fge = "fge",
        /// The independently trained endpoints (start_model, end_model or model_<i>).
        Endpoints = "endpoints",
    }
}

impl MemberSet {
    /// The member folders of this set in `exp`, in order; the output file
    /// is `eval/<name>.json`.
    pub fn dirs(self, exp: &Path) -> Vec<PathBuf> {
        let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(match self {
            MemberSet::Fge => exp.join("fge"),
            MemberSet::Endpoints => exp.to_path_buf(),
        })
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let k = match (self, name.as_str()) {
                (MemberSet::Fge, n) => n.strip_prefix("member_")?.parse().ok()?,
                (MemberSet::Endpoints, "start_model") => 0,
                (MemberSet::Endpoints, "end_model") => 1,
                (MemberSet::Endpoints, n) => n.strip_prefix("model_")?.parse().ok()?,
            };
            Some((k, e.path()))
        })
        .filter(|(_, p)| crate::checkpoint::model_file(p).is_file())
        .collect();
        found.sort();
        found.into_iter().map(|(_, p)| p).collect()
    }

    /// The command that makes this set's members.
    pub fn made_by(self) -> &'static str {
        match self {
            MemberSet::Fge => "modeconn fge",
            MemberSet::Endpoints => "modeconn train-endpoints --models N",
        }
    }
}

/// Scores the networks in `dirs` and their ensembles; writes
/// `<exp>/eval/<name>.json`.
pub fn evaluate_members(
    exp: &Path,
    name: &str,
    dirs: &[PathBuf],
    data: &DataRequest,
    rt: &Runtime,
    bn: MemberBn,
    obs: &dyn Observer,
) -> Result<MembersFile> {
    let Some(first) = dirs.first() else {
        bail!("no members to evaluate in {}", exp.display());
    };
    let first_file = xp::resolve_model_path(first);
    let meta = xp::read_meta(&first_file)?
        .ok_or_else(|| anyhow::anyhow!("{} has no modeconn metadata", first_file.display()))?;
    let model = Model::new(meta.arch.clone())?;
    let (data, _) = xp::load_data_for(&meta, Some(exp), data, rt, &first_file)?;
    let ev = Evaluator {
        model: &model,
        data: &data,
        rt,
    };
    let mut prog = Progress::new(obs, name, dirs.len() as u64);
    let mut logits = Vec::with_capacity(dirs.len());
    let mut members = Vec::with_capacity(dirs.len());
    for d in dirs {
        let p = xp::load_params(&xp::resolve_model_path(d), &model, rt)?;
        if bn == MemberBn::Recompute {
            ev.update_bn(std::slice::from_ref(&p))?;
        }
        let (_, mut l) = ev.evaluate(std::slice::from_ref(&p), &data.test, true)?;
        let l = l.swap_remove(0);
        members.push(scores(&l.softmax(1, Kind::Double), &data.test.labels)?.0);
        logits.push(l);
        prog.inc(1);
    }
    prog.finish();
    let mut by_size = Vec::with_capacity(dirs.len());
    for k in 1..=logits.len() {
        let refs: Vec<&tch::Tensor> = logits[..k].iter().collect();
        let (s, _) = scores(&combine(&refs, Average::Probs), &data.test.labels)?;
        by_size.push(SizeRow { k, scores: s });
    }
    let out = MembersFile {
        format: crate::schema::FORMAT,
        members_dirs: dirs.to_vec(),
        bn,
        n_test: data.test.len(),
        members,
        by_size,
    };
    crate::schema::write_json(&exp.join("eval").join(format!("{name}.json")), &out)?;
    Ok(out)
}
