//! The TorchScript path against the built-in one and against eager PyTorch,
//! side by side in one run: one seed-convnet curve epoch (quadratic Bezier,
//! one t per batch, the L2 term) and one sweep of the seed experiment's
//! curve, on the CIFAR-10 JPEG copy.
//!
//!     cargo bench --bench torchscript              # 10,240 train images, 11-point sweep on 2,000 + 2,000
//!     cargo bench --bench torchscript -- --quick   # 2,560 train images, 5 points on 1,000 + 1,000
//!
//! * built-in: `--arch seed-convnet` (channels-last, fp32);
//! * TorchScript: the same network exported by python/modeconn_export.py
//!   from python/modeconn_models.py (fp32; the module's tensors get the
//!   input's layout);
//! * PyTorch: benches/pytorch_baseline.py, `torch.func.functional_call`
//!   over an `ImageFolder` `DataLoader` (2 workers), in the project's venv.
//!
//! Each round runs all three; the table gives medians over the rounds and
//! the medians of the per-round ratios, so a slow stretch of a shared
//! machine hits every side.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use modeconn::curve::{Curve, CurveKind};
use modeconn::eval::{along, Evaluator};
use modeconn::loader::{self, Data, DataConfig, Normalize};
use modeconn::model::{ArchConfig, ArchKind, BnMode, Model, Params, ScriptRef};
use modeconn::observe::{Progress, Silent};
use modeconn::optim::{OptimConfig, OptimKind, Optimizer};
use modeconn::runtime::Runtime;
use modeconn::train::curve::batch_at_random_t;
use modeconn::train::Loop;
use tch::Device;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn rt() -> Runtime {
    Runtime {
        channels_last: true,
        eval_batch: 256,
        format: modeconn::runtime::MemoryFormat::Auto,
        ..Runtime::cpu()
    }
}

fn load(dir: &Path, train: usize, test: usize) -> Data {
    let cfg = DataConfig {
        dataset: modeconn::data::DatasetKind::ImageFolder,
        data_dir: Some(dir.to_path_buf()),
        normalize: Normalize::None,
        train_subset: Some(train),
        test_subset: Some(test),
    };
    loader::load(&cfg, Device::Cpu, None).expect("the CIFAR-10 JPEG copy")
}

/// The seed experiment's curve for `model`.
fn seed_curve(model: &Model, ck: &Path, r: &Runtime) -> Curve {
    let bend = |f: &str| {
        let p = modeconn::experiment::load_params(&ck.join(f), model, r).unwrap();
        modeconn::curve::weights_only(model, &p)
    };
    Curve {
        kind: CurveKind::Bezier,
        bends: vec![
            bend("start.safetensors"),
            bend("theta.safetensors"),
            bend("end.safetensors"),
        ],
    }
}

/// One curve epoch through modeconn's batch loop: images per second.
fn curve_epoch(model: &Model, c: &Curve, data: &Data, r: &Runtime) -> f64 {
    let mut c = Curve {
        kind: c.kind,
        bends: c.bends.iter().map(Params::deep_clone).collect(),
    };
    let leaves = c.trainable();
    let mut opt = Optimizer::new(
        OptimConfig {
            kind: OptimKind::Sgd,
            lr: 0.01,
            momentum: 0.9,
            nesterov: false,
            wd: 5e-4,
        },
        &leaves,
    );
    let lp = Loop {
        model,
        data,
        rt: r,
        batch_size: 128,
        augment: true,
        bn: BnMode::Train(None),
    };
    let mut prog = Progress::new(&Silent, "bench", lp.batches_per_epoch());
    let cc = &c;
    let mut batch = || vec![batch_at_random_t(cc, 5e-4)];
    let start = Instant::now();
    lp.epoch(&leaves, &mut opt, &|_| 0.01, &mut batch, &mut prog)
        .unwrap();
    data.train.len() as f64 / start.elapsed().as_secs_f64()
}

/// A sweep of `points` values of t (train and test splits): images per second.
fn sweep(model: &Model, c: &Curve, data: &Data, r: &Runtime, points: usize) -> f64 {
    let ev = Evaluator { model, data, rt: r };
    let ts = along::grid(points);
    let mut prog = Progress::new(&Silent, "bench", along::sweep_work(&ev, points));
    let start = Instant::now();
    let point = |t: f64| Ok(c.point(model, t));
    along::sweep(&ev, &ts, &point, 5e-4, &mut prog).unwrap();
    let images = points * (data.train.len() + data.test.len()) as usize;
    images as f64 / start.elapsed().as_secs_f64()
}

fn python() -> PathBuf {
    Path::new(ROOT).join(".venv/bin/python")
}

/// benches/pytorch_baseline.py's curve epoch and sweep, in images per second.
fn pytorch(dir: &Path, ck: &Path, train: usize, sweep_n: usize, points: usize) -> (f64, f64) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let st = Command::new(python())
        .arg(Path::new(ROOT).join("benches/pytorch_baseline.py"))
        .args([
            "--data",
            dir.to_str().unwrap(),
            "--checkpoints",
            ck.to_str().unwrap(),
        ])
        .args([
            "--train-images",
            &train.to_string(),
            "--skip",
            "train,preloaded",
        ])
        .args(["--sweep-points", &points.to_string()])
        .args([
            "--sweep-train-images",
            &sweep_n.to_string(),
            "--sweep-test-images",
            &sweep_n.to_string(),
        ])
        .args(["--json-out", out.path().to_str().unwrap()])
        .output()
        .expect("benches/pytorch_baseline.py");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    let num = |path: &[&str]| {
        let mut v = &j;
        for p in path {
            v = &v[*p];
        }
        v.as_f64()
            .unwrap_or_else(|| panic!("no {path:?} in the baseline's JSON: {j}"))
    };
    (
        num(&["curve_epoch", "images_per_s"]),
        num(&["sweep", "images_per_s"]),
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (train, sweep_n, points, rounds) = if quick {
        (2560, 1000, 5, 3)
    } else {
        (10_240, 2000, 11, 3)
    };
    let dir = Path::new(ROOT).join("../shared/datasets/cifar10-jpg");
    let ck = Path::new(ROOT).join("../shared/checkpoints/seed-cifar10-convnet");
    assert!(
        dir.is_dir() && ck.is_dir(),
        "../shared (CIFAR-10 and the seed checkpoints) is needed"
    );
    tch::set_num_threads(2);
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("seed.pt");
    let t = Instant::now();
    let st = Command::new(python())
        .arg(Path::new(ROOT).join("python/modeconn_export.py"))
        .arg(format!("{ROOT}/python/modeconn_models.py:SeedConvNet"))
        .args(["--kwargs", r#"{"in_channels": 3, "num_classes": 10}"#])
        .args(["--input-shape", "3,32,32", "--classes", "10", "--out"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let export_s = t.elapsed().as_secs_f64();
    let r = ScriptRef::of(&archive).unwrap();
    modeconn::model::script::trust(&r.path);
    let mut cfg = ArchConfig::new(ArchKind::Torchscript, 3, 10, 32, 32);
    cfg.script = Some(r);
    let script = Model::new(cfg).unwrap();
    let builtin = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 10, 32, 32)).unwrap();
    let r = rt();
    let train_data = load(&dir, train, 1000);
    let sweep_data = load(&dir, sweep_n, sweep_n);
    let (cb, cs) = (seed_curve(&builtin, &ck, &r), seed_curve(&script, &ck, &r));
    println!(
        "TorchScript bench: seed-convnet, {train} training images (augmented, batch 128), {points}-point sweep on {sweep_n} + {sweep_n} images, 2 threads, {rounds} rounds; export took {export_s:.1} s"
    );
    let mut rows: Vec<[f64; 6]> = Vec::new();
    for round in 0..rounds {
        let b_epoch = curve_epoch(&builtin, &cb, &train_data, &r);
        let s_epoch = curve_epoch(&script, &cs, &train_data, &r);
        let b_sweep = sweep(&builtin, &cb, &sweep_data, &r, points);
        let s_sweep = sweep(&script, &cs, &sweep_data, &r, points);
        let (p_epoch, p_sweep) = pytorch(&dir, &ck, train, sweep_n, points);
        println!(
            "round {}: curve epoch img/s built-in {b_epoch:.0}, TorchScript {s_epoch:.0}, PyTorch {p_epoch:.0}; sweep img/s built-in {b_sweep:.0}, TorchScript {s_sweep:.0}, PyTorch {p_sweep:.0}",
            round + 1
        );
        rows.push([b_epoch, s_epoch, p_epoch, b_sweep, s_sweep, p_sweep]);
    }
    let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    let ratio = |a: usize, b: usize| median(rows.iter().map(|r| r[a] / r[b]).collect());
    println!("\n| median img/s | built-in | TorchScript | PyTorch (functional_call, DataLoader) | built-in / TorchScript | TorchScript / PyTorch |");
    println!("|---|---|---|---|---|---|");
    for (name, o) in [("curve epoch", 0), ("sweep", 3)] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
            col(o),
            col(o + 1),
            col(o + 2),
            ratio(o, o + 1),
            ratio(o + 1, o + 2)
        );
    }
}
