//! Weight matching (Ainsworth, Hayase, Srinivasa, *Git Re-Basin*, ICLR 2023,
//! `weight_matching.py`): permutations of B's hidden units that bring its
//! weights closest to A's, one group at a time, each a linear assignment.

use std::time::Instant;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::model::{Model, Params, PermAxis};
use crate::rng::SplitMix64;

/// One permutation per group of [`Model::perms`]: position i of the aligned
/// network takes channel `perm[i]` of the original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutation {
    pub groups: Vec<Vec<i64>>,
}

impl Permutation {
    pub fn identity(model: &Model) -> Permutation {
        Permutation {
            groups: model
                .perms
                .groups
                .iter()
                .map(|g| (0..g.size).collect())
                .collect(),
        }
    }

    /// Is every group the identity?
    pub fn is_identity(&self) -> bool {
        self.groups
            .iter()
            .all(|g| g.iter().enumerate().all(|(i, &p)| p == i as i64))
    }
}

/// Settings of a weight-matching run.
#[derive(Clone, Debug)]
pub struct MatchSettings {
    /// At most this many sweeps over all groups.
    pub max_sweeps: usize,
    /// Seeds the order in which each sweep visits the groups.
    pub seed: u64,
}

impl Default for MatchSettings {
    fn default() -> Self {
        MatchSettings {
            max_sweeps: 100,
            seed: 0,
        }
    }
}

/// The permutation found, the objective Σ⟨W_A, π(W_B)⟩ after each sweep
/// (the first entry is the identity's) and the time taken.
#[derive(Clone, Debug)]
pub struct Matching {
    pub perm: Permutation,
    pub objective: Vec<f64>,
    pub seconds: f64,
}

/// `t`'s shape with `axis` split into `[channels, inner]`.
fn split_axis(t: &Tensor, axis: usize, inner: i64) -> Vec<i64> {
    let shape = t.size();
    let mut split = shape[..axis].to_vec();
    split.extend([shape[axis] / inner, inner]);
    split.extend(&shape[axis + 1..]);
    split
}

/// `t` with `axis` (of `size · inner` entries) reordered by `perm`.
fn permute_axis(t: &Tensor, axis: usize, inner: i64, perm: &Tensor) -> Tensor {
    t.reshape(split_axis(t, axis, inner).as_slice())
        .index_select(axis as i64, perm)
        .reshape(t.size().as_slice())
}

/// `t` as a matrix `[size, rest]` whose row c holds everything channel c of
/// `axis` owns.
fn channel_rows(t: &Tensor, axis: usize, inner: i64) -> Tensor {
    let split = split_axis(t, axis, inner);
    let mut order = vec![axis as i64];
    order.extend((0..split.len() as i64).filter(|&d| d != axis as i64));
    t.reshape(split.as_slice())
        .permute(order.as_slice())
        .reshape([split[axis], -1])
}

fn index(perm: &[i64]) -> Tensor {
    Tensor::from_slice(perm)
}

/// `params` with every permuted axis reordered (buffers included), except
/// `skip` (a tensor name and axis) when given.
fn apply(
    model: &Model,
    params: &Params,
    perm: &Permutation,
    skip: Option<(&str, usize)>,
) -> Params {
    params.map(|name, t| {
        let mut t = t.shallow_clone();
        for a in model.perms.axes.iter().filter(|a| a.param == name) {
            if skip != Some((name, a.axis)) {
                let idx = index(&perm.groups[a.group]).to_device(t.device());
                t = permute_axis(&t, a.axis, a.inner, &idx);
            }
        }
        t
    })
}

/// `params` permuted by `perm`: the same function (same logits), other
/// coordinates, on the same device, in plain layout.
pub fn permute(model: &Model, params: &Params, perm: &Permutation) -> Params {
    apply(model, params, perm, None).map(|_, t| t.contiguous())
}

/// The weights (not buffers) as fp64 CPU tensors, in plain layout.
fn as_f64(model: &Model, p: &Params) -> Params {
    let kept: Vec<(String, Tensor)> = p
        .iter()
        .filter(|(n, _)| model.is_weight(n))
        .map(|(n, t)| {
            let t = t
                .detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Double)
                .contiguous();
            (n.to_string(), t)
        })
        .collect();
    Params::new(kept)
}

/// Σ over weights of ⟨A, π(B)⟩.
fn inner_product(model: &Model, a: &Params, b: &Params, perm: &Permutation) -> f64 {
    let pb = apply(model, b, perm, None);
    a.iter()
        .map(|(n, t)| (t * pb.get(n)).sum(Kind::Double).double_value(&[]))
        .sum()
}

/// The matrix `C[i, j]` = similarity of A's channel i and B's channel j in
/// group `g`, with every other permutation already applied to B.
fn similarity(model: &Model, a: &Params, b: &Params, perm: &Permutation, g: usize) -> Tensor {
    let size = model.perms.groups[g].size;
    let mut c = Tensor::zeros([size, size], (Kind::Double, Device::Cpu));
    let axes: Vec<&PermAxis> = model
        .perms
        .axes
        .iter()
        .filter(|x| x.group == g && model.is_weight(&x.param))
        .collect();
    for x in axes {
        let one = Params::new(vec![(x.param.clone(), b.get(&x.param).shallow_clone())]);
        let pb = apply(model, &one, perm, Some((&x.param, x.axis)));
        let wa = channel_rows(a.get(&x.param), x.axis, x.inner);
        let wb = channel_rows(pb.get(&x.param), x.axis, x.inner);
        c += wa.matmul(&wb.tr());
    }
    c
}

/// The assignment maximising Σ_i C[i, perm[i]] (SciPy's LAPJV via `lsap`).
pub fn assign(c: &Tensor) -> Result<Vec<i64>> {
    let n = c.size()[0] as usize;
    let cost: Vec<f64> = Vec::<f64>::try_from(c.reshape([-1]))?;
    if cost.iter().any(|v| !v.is_finite()) {
        bail!("the similarity matrix holds values that are not finite; are the weights finite?");
    }
    let (rows, cols) = lsap::solve(n, n, &cost, true)
        .map_err(|e| anyhow::anyhow!("linear assignment failed: {e}"))?;
    let mut perm = vec![0i64; n];
    for (r, c) in rows.into_iter().zip(cols) {
        perm[r] = c as i64;
    }
    Ok(perm)
}

/// 0..n in a seeded random order (Fisher–Yates).
fn shuffled(rng: &mut SplitMix64, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// Finds the permutation of `b` closest to `a` by weight matching: from the
/// identity, sweeps over the groups in a seeded random order, solving each
/// group's assignment with the others fixed and keeping it when it raises
/// the objective by more than 1e-12; stops after a sweep with no gain.
pub fn weight_matching(
    model: &Model,
    a: &Params,
    b: &Params,
    settings: &MatchSettings,
    on_sweep: &mut dyn FnMut(usize, f64),
) -> Result<Matching> {
    if let (Some(s), true) = (&model.script, model.perms.groups.is_empty()) {
        bail!(
            "align needs the network's permutation symmetries, which modeconn declares for its built-in architectures only; give those of the TorchScript network {} with --perm-spec F.json (the format is in docs/FORMATS.md)",
            s.source.path.display()
        );
    }
    if model.perms.groups.is_empty() {
        bail!(
            "{} has no permutation spec (no hidden units to align)",
            model.cfg.arch.name()
        );
    }
    let start = Instant::now();
    let _g = tch::no_grad_guard();
    let (a, b) = (as_f64(model, a), as_f64(model, b));
    let mut perm = Permutation::identity(model);
    let mut objective = vec![inner_product(model, &a, &b, &perm)];
    let mut order = SplitMix64(settings.seed);
    for sweep in 0..settings.max_sweeps {
        let mut improved = false;
        for g in shuffled(&mut order, model.perms.groups.len()) {
            let c = similarity(model, &a, &b, &perm, g);
            let gain = |p: &[i64]| -> f64 {
                let idx = index(p).unsqueeze(1);
                c.gather(1, &idx, false).sum(Kind::Double).double_value(&[])
            };
            let old = gain(&perm.groups[g]);
            let new_perm = assign(&c)?;
            if gain(&new_perm) > old + 1e-12 {
                perm.groups[g] = new_perm;
                improved = true;
            }
        }
        let now = inner_product(model, &a, &b, &perm);
        objective.push(now);
        on_sweep(sweep + 1, now);
        if !improved {
            break;
        }
    }
    Ok(Matching {
        perm,
        objective,
        seconds: start.elapsed().as_secs_f64(),
    })
}
