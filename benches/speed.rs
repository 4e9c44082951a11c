//! Throughput benchmarks, run side by side in one process (`make bench`, or
//! `cargo bench --bench speed -- [--quick]`).
//!
//! Model: `seed-convnet` on CIFAR-10 (the JPEG copy in
//! ../shared/datasets/cifar10-jpg, decoded once into the cache; set
//! MODECONN_BENCH_DATA to use another image folder).
//!
//! The baseline is the seed ConvNet in PyTorch's own op order
//! (`model::seed_convnet_pytorch_order`), fp32 NCHW, stepping over
//! preloaded fp32 tensors; evaluation baselines use batch 256.
//!
//! 1. Data pipeline: one training epoch through modeconn's loader (uint8 in
//!    memory, batch built and augmented per step) and forward, NCHW.
//! 2. Layout and precision: endpoint training, curve training (φ(t) and its
//!    L2 term each step) and evaluation for fp32/bf16 × NCHW/channels-last.
//! 3. Multi-model evaluation (sweep / landscape pattern): K models sharing
//!    each converted batch, alone or stacked, vs K separate baseline passes.
//! 4. The workloads, through modeconn's own `eval::along::sweep` and
//!    `landscape::compute`: a 61-point sweep along the seed experiment's
//!    curve and a 21×21 landscape grid, with 10,000 training images (as
//!    `--train-subset 10000`) and the 10,000 test images, counted in
//!    model-image pairs against the baseline evaluating φ(t) one model at a
//!    time (`--quick`: 2,000 + 2,000 images and a 7×7 grid).
//!
//! 5. `--memory-format auto` against contiguous and channels-last for
//!    seed-convnet, PreResNet-20 and a PreResNet-8 at quarter width (whose
//!    strided 1×1 convolutions hit oneDNN's AVX2 bug), fp32 training
//!    (`--only-layouts` runs it alone; with `ONEDNN_MAX_CPU_ISA=AVX2` it
//!    measures oneDNN's AVX2 kernels).
//!
//! Ratios are what matter (this machine is noisy): training figures are
//! medians over interleaved rounds, each ratio the median of per-round
//! ratios against that round's baseline.

use std::path::PathBuf;
use std::time::Instant;

use modeconn::checkpoint;
use modeconn::curve::{Curve, CurveKind};
use modeconn::eval::{along, Evaluator};
use modeconn::landscape;
use modeconn::loader::{self, Data, DataConfig, Normalize};
use modeconn::model::{
    channels_last, seed_convnet_pytorch_order, ArchConfig, ArchKind, BnMode, Model, Params,
    Precision,
};
use modeconn::observe::{Progress, Silent};
use modeconn::optim::{OptimConfig, OptimKind, Optimizer};
use modeconn::runtime::Runtime;
use modeconn::schema::PlaneMeta;
use modeconn::train::curve::batch_at_random_t;
use modeconn::train::network::trainable;
use modeconn::train::Loop;
use modeconn::vocab::Coords;
use tch::{Device, Kind, Tensor};

fn rt(precision: Precision, cl: bool) -> Runtime {
    Runtime {
        device: Device::Cpu,
        precision,
        channels_last: cl,
        eval_batch: 256,
        format: modeconn::runtime::MemoryFormat::Auto,
        stack: 1,
        ..Runtime::cpu()
    }
}

/// The library's trainable set-up, on a copy (repetitions start equal).
fn leaves_of(model: &Model, p: &Params) -> (Params, Vec<Tensor>) {
    let (p, _, leaves) = trainable(model, &p.map(|_, t| t.copy()));
    (p, leaves)
}

fn sgd(leaves: &[Tensor]) -> Optimizer {
    Optimizer::new(
        OptimConfig {
            kind: OptimKind::Sgd,
            lr: 0.01,
            momentum: 0.9,
            nesterov: false,
            wd: 5e-4,
        },
        leaves,
    )
}

/// modeconn's training loop: img/s over one pass of `data.train`.
fn train_modeconn(
    model: &Model,
    p0: &Params,
    data: &Data,
    r: &Runtime,
    augment: bool,
    curve: bool,
) -> f64 {
    let p0 = model.prepare(p0, Device::Cpu, r.channels_last);
    let lp = Loop {
        model,
        data,
        rt: r,
        batch_size: 128,
        augment,
        bn: BnMode::Train(None),
    };
    let mut prog = Progress::new(&Silent, "bench", lp.batches_per_epoch());
    let start = Instant::now();
    if curve {
        let w = modeconn::curve::weights_only(model, &p0);
        let mut c = Curve::linear_init(CurveKind::Bezier, 3, &w, &w.map(|_, t| t * 1.01)).unwrap();
        let leaves = c.trainable();
        let mut opt = sgd(&leaves);
        let cc = &c;
        let mut batch = || vec![batch_at_random_t(cc, 5e-4)];
        lp.epoch(&leaves, &mut opt, &|_| 0.01, &mut batch, &mut prog)
            .unwrap();
    } else {
        let (p, leaves) = leaves_of(model, &p0);
        let mut opt = sgd(&leaves);
        let mut batch = || vec![(p.shallow_clone(), None)];
        lp.epoch(&leaves, &mut opt, &|_| 0.01, &mut batch, &mut prog)
            .unwrap();
    }
    data.train.len() as f64 / start.elapsed().as_secs_f64()
}

/// The baseline: the same model in PyTorch's op order and `F.dropout`
/// (`seed_convnet_pytorch_order`, not modeconn's tuned forward)
/// and optimiser stepping over preloaded fp32 NCHW tensors (no conversion,
/// no augmentation, no shuffling), as PyTorch does over a TensorDataset.
fn train_preloaded(model: &Model, p0: &Params, x: &Tensor, y: &Tensor) -> f64 {
    let (p, leaves) = leaves_of(model, p0);
    let mut opt = sgd(&leaves);
    let n = x.size()[0];
    let start = Instant::now();
    let mut s = 0;
    while s < n {
        let b = 128.min(n - s);
        let logits = seed_convnet_pytorch_order(&p, &x.narrow(0, s, b), true);
        let loss = logits.cross_entropy_for_logits(&y.narrow(0, s, b));
        opt.zero_grad(&leaves).unwrap();
        loss.backward();
        opt.step(&leaves, 0.01).unwrap();
        s += b;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn eval_ips(model: &Model, ps: &[Params], data: &Data, r: &Runtime) -> f64 {
    let ps: Vec<Params> = ps
        .iter()
        .map(|p| model.prepare(p, Device::Cpu, r.channels_last))
        .collect();
    let ev = Evaluator { model, data, rt: r };
    let start = Instant::now();
    ev.evaluate(&ps, &data.test, false).unwrap();
    (ps.len() as i64 * data.test.len()) as f64 / start.elapsed().as_secs_f64()
}

fn eval_preloaded(p: &Params, x: &Tensor) -> f64 {
    let _g = tch::no_grad_guard();
    let n = x.size()[0];
    let start = Instant::now();
    let mut s = 0;
    while s < n {
        let b = 256.min(n - s);
        let l = seed_convnet_pytorch_order(p, &x.narrow(0, s, b), false);
        let _ = l.log_softmax(1, Kind::Float).max_dim(1, false);
        s += b;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    std::env::set_var("MODECONN_QUIET", "1");
    let dir = std::env::var_os("MODECONN_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/datasets/cifar10-jpg"));
    if std::env::args().any(|a| a == "--only-layouts") {
        layouts(quick, &dir);
        return;
    }
    if std::env::args().any(|a| a == "--only-workloads") {
        workloads(quick, &dir);
        println!("\npeak RSS {:.0} MB", rss_mb());
        return;
    }
    let n_train = if quick { 5_120 } else { 25_600 };
    let Some(data) = load_cifar(&dir, n_train, Some(if quick { 2_000 } else { 5_000 })) else {
        return;
    };
    let model = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 10, 32, 32)).unwrap();
    tch::manual_seed(0);
    let p0 = model.init(Device::Cpu);
    let x_train = data.norm.apply(&data.train.images, false);
    let x_test = data.norm.apply(&data.test.images, false);
    println!(
        "seed-convnet, CIFAR-10 JPEG copy: {} train / {} test images, {} threads",
        data.train.len(),
        data.test.len(),
        tch::get_num_threads()
    );
    // warm-up (oneDNN primitive creation)
    let _ = train_preloaded(
        &model,
        &p0,
        &x_train.narrow(0, 0, 1024),
        &data.train.labels.narrow(0, 0, 1024),
    );

    training_sections(quick, &model, &p0, &data, &x_train, &x_test);
    stacking_section(quick, &model, &p0, &data, &x_test);

    workloads(quick, &dir);
    layouts(quick, &dir);
    println!("\npeak RSS {:.0} MB", rss_mb());
}

/// Sections 1 and 2: the data pipeline, then layout and precision, in
/// interleaved rounds against the preloaded baseline.
fn training_sections(
    quick: bool,
    model: &Model,
    p0: &Params,
    data: &Data,
    x_train: &Tensor,
    x_test: &Tensor,
) {
    // Every training figure is measured in `rounds` interleaved rounds
    // (baseline, then each variant), and reported as the median img/s and
    // the median of the per-round ratios to that round's baseline, so that
    // a noisy stretch of the machine hits both sides.
    let rounds = if quick { 3 } else { 5 };
    let variants = [
        ("fp32 NCHW", Precision::Fp32, false),
        ("fp32 channels-last", Precision::Fp32, true),
        ("bf16 NCHW", Precision::Bf16, false),
        ("bf16 channels-last", Precision::Bf16, true),
    ];
    let mut base = Vec::new();
    let mut pipe = Vec::new();
    let mut plain = vec![Vec::new(); variants.len()];
    let mut curve = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        eprint!("\rround {}/{rounds} ", round + 1);
        base.push(train_preloaded(model, p0, x_train, &data.train.labels));
        pipe.push(train_modeconn(
            model,
            p0,
            data,
            &rt(Precision::Fp32, false),
            true,
            false,
        ));
        for (i, (_, prec, cl)) in variants.iter().enumerate() {
            let r = rt(*prec, *cl);
            plain[i].push(train_modeconn(model, p0, data, &r, true, false));
            curve[i].push(train_modeconn(model, p0, data, &r, true, true));
        }
    }
    eprintln!();
    let ratio = |v: &[f64]| median(v.iter().zip(&base).map(|(a, b)| a / b).collect());
    println!("\n1. data pipeline (fp32 NCHW, batch 128; median of {rounds} rounds)");
    println!(
        "   baseline: PyTorch's op order over preloaded fp32 NCHW tensors {:>7.0} img/s",
        median(base.clone())
    );
    println!(
        "   modeconn's forward through its loader (u8 + augment)         {:>7.0} img/s   ratio {:.2}",
        median(pipe.clone()),
        ratio(&pipe)
    );

    println!("\n2. layout and precision: training through the loader (batch 128, augmentation on) and evaluation (batch 256)");
    let eval_base = eval_preloaded(p0, x_test);
    for (i, (name, prec, cl)) in variants.iter().enumerate() {
        let ev = eval_ips(model, std::slice::from_ref(p0), data, &rt(*prec, *cl));
        println!(
            "   {name:<20} endpoint {:>6.0} img/s ({:.2}x)  curve {:>6.0} img/s ({:.2}x)  eval {ev:>6.0} img/s ({:.2}x)",
            median(plain[i].clone()),
            ratio(&plain[i]),
            median(curve[i].clone()),
            ratio(&curve[i]),
            ev / eval_base
        );
    }
}

/// Section 3: K models evaluated on the same images, one by one against
/// stacked into grouped convolutions.
fn stacking_section(quick: bool, model: &Model, p0: &Params, data: &Data, x_test: &Tensor) {
    println!("\n3. multi-model evaluation (the sweep / landscape pattern): K models on the same test images");
    let k = if quick { 8 } else { 16 };
    let ps: Vec<Params> = (0..k)
        .map(|i| p0.map(|_, t| t * (1.0 + 0.01 * i as f64)))
        .collect();
    let start = Instant::now();
    for p in &ps {
        let _ = eval_preloaded(p, x_test);
    }
    let separate = (k as i64 * data.test.len()) as f64 / start.elapsed().as_secs_f64();
    println!("   {k} models, one by one, fp32 NCHW (baseline)        {separate:>8.0} model-img/s");
    for (name, prec) in [("fp32", Precision::Fp32), ("bf16", Precision::Bf16)] {
        for stack in [1i64, 4, 8, 16] {
            let r = Runtime {
                stack,
                ..rt(prec, true)
            };
            let ips = eval_ips(model, &ps, data, &r);
            println!("   {k} models, {name} channels-last, stacks of {stack:>2}      {ips:>8.0} model-img/s ({:.2}x)", ips / separate);
        }
    }
    let _ = channels_last(&x_test.narrow(0, 0, 1));
}

/// Section 5: `--memory-format auto` against the two explicit layouts, per
/// architecture, in fp32 endpoint training (interleaved rounds, medians).
/// Run it under `ONEDNN_MAX_CPU_ISA=AVX2` to see oneDNN's AVX2 kernels on a
/// newer CPU.
fn layouts(quick: bool, dir: &std::path::Path) {
    let n = if quick { 1_280 } else { 5_120 };
    let Some(data) = load_cifar(dir, n, Some(500)) else {
        return;
    };
    let cap = std::env::var("ONEDNN_MAX_CPU_ISA").unwrap_or_else(|_| "(none)".into());
    println!(
        "\n5. memory format per architecture, fp32 endpoint training on {n} images, batch 128\n   CPU: {}; ONEDNN_MAX_CPU_ISA {cap}",
        modeconn::cpu::CpuFeatures::detect().describe()
    );
    let rounds = if quick { 2 } else { 3 };
    let mut archs = vec![(
        "seed-convnet",
        ArchConfig::new(ArchKind::SeedConvnet, 3, 10, 32, 32),
    )];
    for (name, depth, widen) in [("preresnet-20", 20, 100), ("preresnet-8, widen 25", 8, 25)] {
        let mut c = ArchConfig::new(ArchKind::Preresnet, 3, 10, 32, 32);
        (c.depth, c.widen) = (depth, widen);
        archs.push((name, c));
    }
    use modeconn::runtime::MemoryFormat as F;
    let formats = [F::Contiguous, F::ChannelsLast, F::Auto];
    for (name, cfg) in archs {
        let model = Model::new(cfg).unwrap();
        tch::manual_seed(0);
        let p0 = model.init(Device::Cpu);
        let mut ips = vec![Vec::new(); formats.len()];
        for round in 0..=rounds {
            for (i, &format) in formats.iter().enumerate() {
                let r = Runtime {
                    format,
                    ..rt(Precision::Fp32, format != F::Contiguous)
                };
                let v = train_modeconn(&model, &p0, &data, &r, false, false);
                if round > 0 {
                    ips[i].push(v); // round 0 warms up oneDNN's primitives
                }
            }
        }
        let m: Vec<f64> = ips.into_iter().map(median).collect();
        println!(
            "   {name:<24} contiguous {:>6.0}  channels-last {:>6.0}  auto {:>6.0} img/s; auto / best explicit {:.2}x",
            m[0],
            m[1],
            m[2],
            m[2] / m[0].max(m[1])
        );
    }
}

/// The CIFAR-10 image folder at `dir` (pixels/255), `train` training
/// images and `test` test images (None: all); None, with the loader's
/// error printed, when it cannot be read.
fn load_cifar(dir: &std::path::Path, train: usize, test: Option<usize>) -> Option<Data> {
    let cfg = DataConfig {
        dataset: modeconn::data::DatasetKind::ImageFolder,
        data_dir: Some(dir.to_path_buf()),
        normalize: Normalize::None,
        train_subset: Some(train),
        test_subset: test,
    };
    match loader::load(&cfg, Device::Cpu, None) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("bench needs the CIFAR-10 JPEG copy: {e:#}");
            None
        }
    }
}

/// The quadratic Bezier curve of the seed experiment's checkpoint
/// (start, theta, end), or None when it is not beside the checkout.
fn seed_curve(model: &Model) -> Option<Curve> {
    let dir = PathBuf::from("../shared/checkpoints/seed-cifar10-convnet");
    let names: Vec<String> = model.weight_names().map(str::to_string).collect();
    let mut bends = Vec::new();
    for f in ["start", "theta", "end"] {
        let (t, _) = checkpoint::read_tensors(&dir.join(format!("{f}.safetensors"))).ok()?;
        let p = checkpoint::in_order(t, &names);
        model.check(&p, f).ok()?;
        bends.push(modeconn::curve::weights_only(model, &p));
    }
    Some(Curve {
        kind: CurveKind::Bezier,
        bends,
    })
}

/// Section 4: the sweep and the landscape grid the issue names, run by
/// modeconn's own code in fp32 and bf16, against the baseline evaluating
/// points of the same curve one at a time (fp32 NCHW, batch 256, over
/// preloaded tensors), measured before and after.
/// The seed experiment's trained curve when its checkpoint is at hand, else
/// three independent initialisations (a bend well off the line).
fn bench_curve(model: &Model) -> (Curve, &'static str) {
    if let Some(c) = seed_curve(model) {
        return (c, "the seed experiment's trained curve");
    }
    let w = |s: i64| {
        tch::manual_seed(s);
        modeconn::curve::weights_only(model, &model.init(Device::Cpu))
    };
    let bends = vec![w(1), w(2), w(3)];
    (
        Curve {
            kind: CurveKind::Bezier,
            bends,
        },
        "a synthetic curve (seed checkpoint not found)",
    )
}

/// The library's landscape grid of `side`×`side` on `c` (kept in memory);
/// returns the lowest test error found.
fn landscape_lowest(ev: &Evaluator, c: &Curve, side: usize, name: &str) -> Option<f64> {
    let meta = PlaneMeta {
        dataset: modeconn::data::DatasetKind::ImageFolder,
        arch: ArchKind::SeedConvnet,
        coords: Some(Coords::Orthonormal),
        grid: side,
        margin: Some(0.2),
        plane_bend: None,
        caption: String::new(),
        train_subset: Some(ev.data.train.len() as usize),
        test_subset: Some(ev.data.test.len() as usize),
        curve_id: format!("bench-{name}"),
        wd: 5e-4,
        random: None,
    };
    let cfg = modeconn::config::LandscapeConfig {
        grid: side,
        margin: 0.2,
        coords: Coords::Orthonormal,
    };
    let run = landscape::grid::Run {
        shard: modeconn::vocab::Shard::WHOLE,
        store: &landscape::grid::InMemory,
        obs: &Silent,
    };
    let plane = landscape::compute(ev, c, &cfg, meta, &run).ok()?;
    Some(
        plane
            .test_err
            .iter()
            .flatten()
            .flatten()
            .fold(f64::INFINITY, |a, &b| a.min(b)),
    )
}

/// The library's 61-point sweep along `c`; returns the test-error barrier.
fn sweep_barrier(ev: &Evaluator, c: &Curve) -> f64 {
    let ts = along::grid(61);
    let mut prog = Progress::new(&Silent, "sweep", along::sweep_work(ev, ts.len()));
    let path = along::sweep(ev, &ts, &|t| Ok(c.point(ev.model, t)), 5e-4, &mut prog).unwrap();
    path.barrier.test_err
}

/// One row of section 4: precision, sweep ratio and speed, grid ratio and
/// speed, the sweep's barrier, the grid's lowest test error.
type WorkloadRow = (&'static str, f64, f64, f64, f64, f64, f64);

fn print_workloads(bases: &[f64], rows: Vec<WorkloadRow>, side: usize) {
    let b: Vec<String> = bases.iter().map(|b| format!("{b:.0}")).collect();
    println!(
        "   baseline: φ(t) one model at a time, fp32 NCHW, batch 256: {} model-img/s (measured between the runs below)",
        b.join(", ")
    );
    for (name, sweep_x, sweep, grid_x, grid, barrier, lowest) in rows {
        println!(
            "   {name} channels-last   61-point sweep {sweep:>7.0} model-img/s ({sweep_x:.2}x)   {side}x{side} grid {grid:>7.0} model-img/s ({grid_x:.2}x)"
        );
        println!(
            "        (sweep: test-error barrier {barrier:.2} points; grid: lowest test error {lowest:.2}%)"
        );
    }
}

fn workloads(quick: bool, dir: &std::path::Path) {
    let (n_train, n_test, side) = if quick {
        (2_000, Some(2_000), 7)
    } else {
        (10_000, None, 21)
    };
    let Some(data) = load_cifar(dir, n_train, n_test) else {
        return;
    };
    let model = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 10, 32, 32)).unwrap();
    let (curve, which) = bench_curve(&model);
    let images = (data.train.len() + data.test.len()) as f64;
    println!(
        "\n4. the issue's workloads on {which}: {} train + {} test images",
        data.train.len(),
        data.test.len()
    );
    let x_train = data.norm.apply(&data.train.images, false);
    let x_test = data.norm.apply(&data.test.images, false);
    let baseline = || {
        let start = Instant::now();
        let ts = [0.25, 0.5, 0.75];
        for &t in &ts {
            let p = model.prepare(&curve.point(&model, t), Device::Cpu, false);
            let _ = eval_preloaded(&p, &x_train);
            let _ = eval_preloaded(&p, &x_test);
        }
        ts.len() as f64 * images / start.elapsed().as_secs_f64()
    };
    // Each modeconn measurement sits between two baseline measurements and
    // is compared with their mean, so a slow stretch of the machine hits
    // both sides.
    let mut bases = vec![baseline()];
    let mut rows = Vec::new();
    for (name, prec) in [("fp32", Precision::Fp32), ("bf16", Precision::Bf16)] {
        let r = rt(prec, true);
        let ev = Evaluator {
            model: &model,
            data: &data,
            rt: &r,
        };
        let c = Curve {
            kind: curve.kind,
            bends: curve
                .bends
                .iter()
                .map(|b| model.prepare(b, Device::Cpu, r.channels_last))
                .collect(),
        };
        let start = Instant::now();
        let barrier = sweep_barrier(&ev, &c);
        let sweep = 61.0 * images / start.elapsed().as_secs_f64();
        bases.push(baseline());
        let sweep_base = 0.5 * (bases[bases.len() - 2] + bases[bases.len() - 1]);
        let start = Instant::now();
        let Some(lowest) = landscape_lowest(&ev, &c, side, name) else {
            eprintln!("landscape grid failed");
            return;
        };
        let grid = (side * side) as f64 * images / start.elapsed().as_secs_f64();
        bases.push(baseline());
        let grid_base = 0.5 * (bases[bases.len() - 2] + bases[bases.len() - 1]);
        rows.push((
            name,
            sweep / sweep_base,
            sweep,
            grid / grid_base,
            grid,
            barrier,
            lowest,
        ));
    }
    print_workloads(&bases, rows, side);
}
