//! Alignment: permutations keep the function of every architecture, weight
//! matching finds a planted permutation, the assignment is optimal, and
//! REPAIR gives the statistics it promises.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::matching::assign;
use super::*;
use crate::model::{ArchConfig, ArchKind, BnMode, Precision};

/// Small instances of every architecture (both PreResNet block kinds).
fn tiny_models() -> Vec<(Model, i64, i64)> {
    let mut out = Vec::new();
    let mut add = |arch, c, hw, depth: Option<i64>, widen| {
        let mut cfg = ArchConfig::new(arch, c, 10, hw, hw);
        if let Some(d) = depth {
            cfg.depth = d;
        }
        cfg.widen = widen;
        out.push((Model::new(cfg).unwrap(), c, hw));
    };
    add(ArchKind::Mlp, 1, 28, None, 10);
    add(ArchKind::SeedConvnet, 3, 32, None, 50);
    add(ArchKind::Convfc, 1, 28, None, 25);
    add(ArchKind::Vgg16, 3, 32, None, 12);
    add(ArchKind::Vgg16Bn, 3, 32, None, 12);
    add(ArchKind::Preresnet, 3, 32, Some(8), 50);
    add(ArchKind::Preresnet, 3, 32, Some(47), 25);
    add(ArchKind::Wrn, 3, 32, Some(10), 1);
    out
}

/// Fresh parameters with BatchNorm statistics and affine terms that are
/// not their trivial initial values (so a wrongly permuted buffer shows).
fn random_params(model: &Model) -> Params {
    let p = model.init(Device::Cpu);
    p.map(|name, t| {
        if name.ends_with("running_var") {
            t.rand_like() + 0.5
        } else if name.ends_with("running_mean") || name.ends_with("bn1.bias") {
            t.randn_like() * 0.3
        } else if name.contains("bn") && name.ends_with(".weight") {
            t.rand_like() + 0.5
        } else {
            t.shallow_clone()
        }
    })
}

fn random_perm(model: &Model) -> Permutation {
    Permutation {
        groups: model
            .perms
            .groups
            .iter()
            .map(|g| {
                Vec::<i64>::try_from(Tensor::randperm(g.size, (Kind::Int64, Device::Cpu))).unwrap()
            })
            .collect(),
    }
}

fn logits(model: &Model, p: &Params, x: &Tensor) -> Tensor {
    model.forward(p, x, BnMode::Eval, Precision::Fp32).unwrap()
}

#[test]
fn a_permuted_network_computes_the_same_logits_for_every_architecture() {
    tch::manual_seed(11);
    for (model, c, hw) in tiny_models() {
        let arch = model.cfg.arch;
        assert!(
            !model.perms.groups.is_empty(),
            "{arch:?} has no permutation spec"
        );
        let p = random_params(&model);
        let perm = random_perm(&model);
        assert!(!perm.is_identity());
        let q = permute(&model, &p, &perm);
        let x = Tensor::rand([6, c, hw, hw], (Kind::Float, Device::Cpu));
        let (y, z) = (logits(&model, &p, &x), logits(&model, &q, &x));
        let diff = (&y - &z).abs().max().double_value(&[]);
        // 1e-4 for logits of order 1: random BN statistics make a deep
        // PreResNet's logits large, and fp32 sums taken in another order
        // differ in proportion.
        let scale = y.abs().max().double_value(&[]).max(1.0);
        assert!(
            diff < 1e-4 * scale,
            "{arch:?} depth {}: max |Δlogit| = {diff} for logits up to {scale}",
            model.cfg.depth
        );
        // A tensor on an axis whose permutation is not the identity (a
        // group of 4 channels draws the identity one time in 24).
        let axis = model
            .perms
            .axes
            .iter()
            .find(|a| {
                let g = &perm.groups[a.group];
                g.iter().enumerate().any(|(i, &j)| j != i as i64)
            })
            .unwrap();
        let moved = (p.get(&axis.param) - q.get(&axis.param))
            .abs()
            .max()
            .double_value(&[]);
        assert!(moved > 0.0, "{arch:?}: the permutation changed nothing");
    }
}

#[test]
fn every_hidden_axis_is_covered_and_only_the_input_and_classes_are_not() {
    for (model, _, _) in tiny_models() {
        let arch = model.cfg.arch;
        let covered = |name: &str, axis: usize| {
            model
                .perms
                .axes
                .iter()
                .any(|a| a.param == name && a.axis == axis)
        };
        for s in &model.spec {
            if s.shape.is_empty() {
                continue; // num_batches_tracked
            }
            let is_input_layer = s.shape.len() >= 2
                && s.shape[1]
                    == model.cfg.in_channels * {
                        if arch == ArchKind::Mlp {
                            model.cfg.height * model.cfg.width
                        } else {
                            1
                        }
                    };
            let is_classifier = s.shape[0] == model.cfg.num_classes;
            assert_eq!(
                covered(&s.name, 0),
                !is_classifier,
                "{arch:?} {} axis 0",
                s.name
            );
            if s.shape.len() >= 2 {
                assert_eq!(
                    covered(&s.name, 1),
                    !is_input_layer,
                    "{arch:?} {} axis 1",
                    s.name
                );
            }
        }
        for a in &model.perms.axes {
            let s = model.spec.iter().find(|s| s.name == a.param).unwrap();
            let g = &model.perms.groups[a.group];
            assert_eq!(s.shape[a.axis], g.size * a.inner, "{arch:?} {}", a.param);
        }
    }
}

#[test]
fn weight_matching_recovers_a_planted_permutation() {
    tch::manual_seed(5);
    for (model, _, _) in tiny_models().into_iter().filter(|(m, _, _)| {
        matches!(
            m.cfg.arch,
            ArchKind::Mlp | ArchKind::SeedConvnet | ArchKind::Preresnet | ArchKind::Vgg16Bn
        )
    }) {
        let arch = model.cfg.arch;
        let a = random_params(&model);
        let b = permute(&model, &a, &random_perm(&model));
        let m = weight_matching(&model, &a, &b, &MatchSettings::default(), &mut |_, _| {}).unwrap();
        let back = permute(&model, &b, &m.perm);
        for (n, t) in a.iter() {
            let d = (t - back.get(n)).abs().max().double_value(&[]);
            assert_eq!(d, 0.0, "{arch:?} {n} not recovered");
        }
        assert!(
            m.objective.windows(2).all(|w| w[1] >= w[0] - 1e-9),
            "{arch:?}: {:?}",
            m.objective
        );
        assert!(m.objective.last().unwrap() > &m.objective[0], "{arch:?}");
    }
}

#[test]
fn matching_two_independent_networks_raises_the_objective_and_keeps_the_function() {
    tch::manual_seed(6);
    let (model, c, hw) = tiny_models().remove(1); // seed-convnet
    let (a, b) = (random_params(&model), random_params(&model));
    let mut seen = Vec::new();
    let m = weight_matching(&model, &a, &b, &MatchSettings::default(), &mut |i, o| {
        seen.push((i, o))
    })
    .unwrap();
    assert_eq!(seen.len(), m.objective.len() - 1);
    assert!(m.objective.last().unwrap() > &m.objective[0]);
    let x = Tensor::rand([4, c, hw, hw], (Kind::Float, Device::Cpu));
    let q = permute(&model, &b, &m.perm);
    let diff = (logits(&model, &b, &x) - logits(&model, &q, &x))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "{diff}");
}

/// Every permutation of 0..n.
fn all_perms(n: usize) -> Vec<Vec<i64>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in all_perms(n - 1) {
        for i in 0..n {
            let mut q = p.clone();
            q.insert(i, (n - 1) as i64);
            out.push(q);
        }
    }
    out
}

#[test]
fn the_assignment_is_the_best_of_all_permutations() {
    tch::manual_seed(7);
    for n in 1..=6 {
        for _ in 0..5 {
            let c = Tensor::randn([n, n], (Kind::Double, Device::Cpu));
            let value = |p: &[i64]| -> f64 {
                p.iter()
                    .enumerate()
                    .map(|(i, &j)| c.double_value(&[i as i64, j]))
                    .sum()
            };
            let best = all_perms(n as usize)
                .iter()
                .map(|p| value(p))
                .fold(f64::MIN, f64::max);
            let got = assign(&c).unwrap();
            assert!(
                (value(&got) - best).abs() < 1e-9,
                "n={n}: {} vs {best}",
                value(&got)
            );
        }
    }
    let bad = Tensor::from_slice(&[1.0f64, f64::NAN, 0.0, 1.0]).view([2, 2]);
    assert!(assign(&bad).is_err());
}

#[test]
fn repair_gives_each_layer_the_interpolated_statistics() {
    tch::manual_seed(8);
    let (model, c, hw) = tiny_models().remove(1); // seed-convnet, no BatchNorm
    let (a, b) = (random_params(&model), random_params(&model));
    let batches: Vec<Tensor> = (0..4)
        .map(|_| Tensor::rand([64, c, hw, hw], (Kind::Float, Device::Cpu)))
        .collect();
    let (sa, sb) = (
        repair::stats(&model, &a, &batches).unwrap(),
        repair::stats(&model, &b, &batches).unwrap(),
    );
    assert_eq!(sa.len(), repair::layers(&model).len());
    assert_eq!(
        repair::layers(&model),
        ["features.0", "features.3", "features.6", "classifier.2"]
    );
    let fixed = repair::repair(&model, &a, &b, (&sa, &sb), 0.5, &batches).unwrap();
    let now = repair::stats(&model, &fixed, &batches).unwrap();
    let mut worst: HashMap<String, f64> = HashMap::new();
    for l in repair::layers(&model) {
        let target = sa[&l].lerp(&sb[&l], 0.5);
        // Errors in units of the target std of each channel.
        let rel = |x: &Tensor, y: &Tensor| {
            ((x - y).abs() / (&target.std + 1e-6))
                .max()
                .double_value(&[])
        };
        let e = rel(&now[&l].std, &target.std).max(rel(&now[&l].mean, &target.mean));
        worst.insert(l, e);
    }
    // The first layer is corrected exactly; later ones within the batch-wise
    // renormalisation's error.
    assert!(worst["features.0"] < 1e-3, "{worst:?}");
    assert!(worst.values().all(|&e| e < 0.05), "{worst:?}");
    // At α = 0 the targets are the start network's own statistics: nothing changes.
    let same = repair::repair(&model, &a, &b, (&sa, &sb), 0.0, &batches).unwrap();
    let diff = (logits(&model, &a, &batches[0]) - logits(&model, &same, &batches[0]))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-2, "{diff}");
}

#[test]
fn repair_refuses_batchnorm_networks_and_matching_refuses_a_missing_spec() {
    let (model, _, _) = tiny_models().remove(4); // vgg16-bn
    let p = random_params(&model);
    let s = HashMap::new();
    let Err(err) = repair::repair(&model, &p, &p, (&s, &s), 0.5, &[]) else {
        panic!("REPAIR of a BatchNorm network was accepted");
    };
    assert!(err.to_string().contains("BatchNorm"), "{err}");
    let mut cfg = ArchConfig::new(ArchKind::Mlp, 1, 10, 28, 28);
    cfg.widen = 5;
    let mlp = Model::new(cfg).unwrap();
    let no_spec = Model {
        perms: Default::default(),
        ..mlp
    };
    let q = no_spec.init(Device::Cpu);
    let Err(err) = weight_matching(&no_spec, &q, &q, &MatchSettings::default(), &mut |_, _| {})
    else {
        panic!("matching without a permutation spec was accepted");
    };
    assert!(err.to_string().contains("no permutation spec"), "{err}");
}
