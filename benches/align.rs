//! Alignment benchmarks (`cargo bench --bench align`):
//!
//! 1. The linear assignment behind weight matching: the `lsap` crate
//!    (SciPy's LAPJV, f64 costs, what modeconn uses) against `pathfinding`'s
//!    Kuhn–Munkres (integer weights: the costs scaled by 1e9 and rounded),
//!    on random n×n similarity matrices for n = 64 … 512, with the value
//!    each finds (they must agree up to the rounding).
//! 2. `align::weight_matching` end to end on two networks of CIFAR-10
//!    shapes: the seed ConvNet (the seed experiment's own endpoints from
//!    ../shared/checkpoints/seed-cifar10-convnet when present) and VGG16
//!    (two independent initialisations, 15M weights).

use std::time::Instant;

use modeconn::align::{matching::assign, weight_matching, MatchSettings};
use modeconn::checkpoint;
use modeconn::model::{ArchConfig, ArchKind, Model, Params};
use tch::{Device, Kind, Tensor};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tch::set_num_threads(2);
    lsap_vs_kuhn_munkres();
    matching("seed-convnet", ArchKind::SeedConvnet, seed_endpoints());
    matching("vgg16", ArchKind::Vgg16, None);
}

fn lsap_vs_kuhn_munkres() {
    println!("1. linear assignment, maximising Σ C[i, p(i)] over random n×n C (median of 5)");
    println!(
        "{:>5} | {:>12} {:>16} | {:>14}",
        "n", "lsap (ms)", "Kuhn–Munkres (ms)", "value gap"
    );
    tch::manual_seed(0);
    for n in [64i64, 128, 256, 512] {
        let mut t_lsap = Vec::new();
        let mut t_km = Vec::new();
        let mut gap: f64 = 0.0;
        for _ in 0..5 {
            let c = Tensor::randn([n, n], (Kind::Double, Device::Cpu));
            let flat: Vec<f64> = Vec::try_from(c.reshape([-1])).unwrap();
            let value = |p: &[i64]| -> f64 {
                p.iter()
                    .enumerate()
                    .map(|(i, &j)| flat[i * n as usize + j as usize])
                    .sum()
            };
            let t = Instant::now();
            let a = assign(&c).unwrap();
            t_lsap.push(t.elapsed().as_secs_f64() * 1e3);
            let weights = pathfinding::matrix::Matrix::from_vec(
                n as usize,
                n as usize,
                flat.iter().map(|v| (v * 1e9).round() as i64).collect(),
            )
            .unwrap();
            let t = Instant::now();
            let (_, b) = pathfinding::kuhn_munkres::kuhn_munkres(&weights);
            t_km.push(t.elapsed().as_secs_f64() * 1e3);
            let b: Vec<i64> = b.into_iter().map(|j| j as i64).collect();
            gap = gap.max((value(&a) - value(&b)).abs());
        }
        println!(
            "{n:>5} | {:>12.2} {:>16.2} | {gap:>14.2e}",
            median(t_lsap),
            median(t_km)
        );
    }
}

fn seed_endpoints() -> Option<(Params, Params)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/checkpoints/seed-cifar10-convnet");
    let read = |f: &str| -> Option<Params> {
        let (t, _) = checkpoint::read_tensors(&dir.join(f)).ok()?;
        Some(Params::new(t))
    };
    Some((read("start.safetensors")?, read("end.safetensors")?))
}

fn matching(name: &str, arch: ArchKind, given: Option<(Params, Params)>) {
    let model = Model::new(ArchConfig::new(arch, 3, 10, 32, 32)).unwrap();
    let (source, (a, b)) = match given {
        Some(p) => ("the seed experiment's endpoints", p),
        None => {
            tch::manual_seed(1);
            let a = model.init(Device::Cpu);
            ("two random initialisations", (a, model.init(Device::Cpu)))
        }
    };
    let a = checkpoint::in_order(
        a.iter()
            .map(|(n, t)| (n.to_string(), t.shallow_clone()))
            .collect(),
        &names(&model),
    );
    let b = checkpoint::in_order(
        b.iter()
            .map(|(n, t)| (n.to_string(), t.shallow_clone()))
            .collect(),
        &names(&model),
    );
    let m = weight_matching(&model, &a, &b, &MatchSettings::default(), &mut |_, _| {}).unwrap();
    let largest = model.perms.groups.iter().map(|g| g.size).max().unwrap_or(0);
    println!(
        "\n2. weight matching, {name} ({} weights, {} permutations up to {largest} units) on {source}: \
         {} sweeps in {:.2} s; objective {:.4e} -> {:.4e}",
        model.num_weights(),
        model.perms.groups.len(),
        m.objective.len() - 1,
        m.seconds,
        m.objective[0],
        m.objective.last().unwrap()
    );
}

fn names(model: &Model) -> Vec<String> {
    model.spec.iter().map(|s| s.name.clone()).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
