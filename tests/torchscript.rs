//! `--arch torchscript`: networks exported by python/modeconn_export.py on
//! the real torch and torchvision that `make setup` installs (a missing
//! torch is a failure here, not a skip).

use std::sync::OnceLock;

use crate::common::*;
use modeconn::curve::{Curve, CurveKind};
use modeconn::data::DatasetKind;
use modeconn::eval::Evaluator;
use modeconn::loader::{DataConfig, Normalize};
use modeconn::model::{ArchConfig, ArchKind, BnMode, Model, Params, Precision, ScriptRef};
use modeconn::runtime::Runtime;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> PathBuf {
    let p = Path::new(ROOT).join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run `make setup`, which installs torch and torchvision there",
        p.display()
    );
    p
}

/// Runs python/modeconn_export.py with `args` (the factory first).
fn exporter(args: &[&str]) -> std::process::Output {
    let script = format!("{ROOT}/python/modeconn_export.py");
    let mut all = vec![script.as_str()];
    all.extend(args);
    py(&all)
}

/// `train-endpoints` of the archive `mf` into `exp`: one epoch on 200
/// Fashion-MNIST images, plus `extra` flags.
fn tiny_endpoints(env: &TestEnv, exp: &str, mf: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train-endpoints",
        "--exp",
        exp,
        "--model-file",
        mf,
        "--train-subset",
        "200",
        "--test-subset",
        "100",
        "--epochs",
        "1",
    ];
    args.extend(extra);
    env.modeconn(&args)
}

/// Runs python (a script or `-c` code) with a deadline.
fn py(args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(python());
    c.args(args).current_dir(ROOT);
    run_with_deadline(c, args, deadline())
}

fn export(
    dir: &Path,
    name: &str,
    factory: &str,
    kwargs: &str,
    shape: &str,
    classes: &str,
) -> PathBuf {
    let out = dir.join(name);
    let o = exporter(&[
        factory,
        "--kwargs",
        kwargs,
        "--input-shape",
        shape,
        "--classes",
        classes,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "export of {factory} failed:\n{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("logits match the module"),
        "{}",
        stdout(&o)
    );
    out
}

/// Archives shared by the tests of this file, exported once.
struct Archives {
    _dir: tempfile::TempDir,
    seed_convnet: PathBuf,
    preresnet: PathBuf,
}

fn archives() -> &'static Archives {
    static A: OnceLock<Archives> = OnceLock::new();
    A.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("modeconn-ts")
            .tempdir()
            .unwrap();
        let models = format!("{ROOT}/python/modeconn_models.py");
        let seed_convnet = export(
            dir.path(),
            "seed.pt",
            &format!("{models}:SeedConvNet"),
            r#"{"in_channels": 3, "num_classes": 10}"#,
            "3,32,32",
            "10",
        );
        let preresnet = export(
            dir.path(),
            "preresnet8.pt",
            &format!("{models}:PreResNet"),
            r#"{"in_channels": 1, "num_classes": 10, "depth": 8, "widen": 50}"#,
            "1,28,28",
            "10",
        );
        Archives {
            _dir: dir,
            seed_convnet,
            preresnet,
        }
    })
}

fn script_model(path: &Path, c: i64, hw: i64) -> Model {
    let r = ScriptRef::of(path).unwrap();
    modeconn::model::script::trust(&r.path);
    let mut cfg = ArchConfig::new(ArchKind::Torchscript, c, 10, hw, hw);
    cfg.script = Some(r);
    Model::new(cfg).unwrap()
}

fn fashion(train: usize, test: usize) -> modeconn::loader::Data {
    require_fashion();
    let cfg = DataConfig {
        dataset: DatasetKind::FashionMnist,
        data_dir: None,
        normalize: Normalize::None,
        train_subset: Some(train),
        test_subset: Some(test),
    };
    modeconn::loader::load(&cfg, Device::Cpu, None).unwrap()
}

fn max_diff_params(a: &Params, b: &Params) -> f64 {
    a.iter()
        .map(|(n, t)| max_abs_diff(t, b.get(n)))
        .fold(0.0, f64::max)
}

/// The built-in PreResNet-8 and the same network exported from
/// python/modeconn_models.py: the same logits, the same BatchNorm updates
/// and re-estimates, and the same bend gradients (the chain rule through
/// the module's tensors against autograd through the built-in forward),
/// which also match a finite difference.
#[test]
fn a_batchnorm_network_trains_and_reestimates_through_torchscript_as_built_in() {
    let a = archives();
    let script = script_model(&a.preresnet, 1, 28);
    let mut cfg = ArchConfig::new(ArchKind::Preresnet, 1, 10, 28, 28);
    (cfg.depth, cfg.widen) = (8, 50);
    let builtin = Model::new(cfg).unwrap();
    assert!(script.has_bn);
    let names = |m: &Model| m.spec.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&script),
        names(&builtin),
        "the same state-dict keys in the same order"
    );

    let data = fashion(300, 200);
    let rt = Runtime::cpu();
    tch::manual_seed(11);
    let w1 = builtin.init(Device::Cpu);
    let w2 = builtin.init(Device::Cpu);
    let (x, y) = data.batch_range(&data.train, 0, 64, false).unwrap();

    // Evaluation logits.
    let le = |m: &Model, p: &Params| {
        tch::no_grad(|| m.forward(p, &x, BnMode::Eval, Precision::Fp32).unwrap())
    };
    let d = max_abs_diff(&le(&builtin, &w1), &le(&script, &w1));
    assert!(d < 1e-4, "eval logits differ by {d}");

    // A training step's running statistics (momentum 0.1).
    let (p1, p2) = (w1.deep_clone(), w1.deep_clone());
    tch::no_grad(|| {
        let _ = builtin
            .forward(&p1, &x, BnMode::Train(Some(0.1)), Precision::Fp32)
            .unwrap();
        let _ = script
            .forward(&p2, &x, BnMode::Train(Some(0.1)), Precision::Fp32)
            .unwrap();
    });
    let d = max_diff_params(&p1, &p2);
    assert!(d < 1e-5, "running statistics after one step differ by {d}");
    assert!(max_diff_params(&p1, &w1) > 1e-3, "the step changed nothing");

    // The cumulative re-estimate over the training split, then the metrics.
    let (q1, q2) = (w2.deep_clone(), w2.deep_clone());
    let e1 = Evaluator {
        model: &builtin,
        data: &data,
        rt: &rt,
    };
    let e2 = Evaluator {
        model: &script,
        data: &data,
        rt: &rt,
    };
    e1.update_bn(std::slice::from_ref(&q1)).unwrap();
    e2.update_bn(std::slice::from_ref(&q2)).unwrap();
    let d = max_diff_params(&q1, &q2);
    assert!(d < 1e-4, "re-estimated statistics differ by {d}");
    let (s1, _) = e1
        .evaluate(std::slice::from_ref(&q1), &data.test, false)
        .unwrap();
    let (s2, _) = e2
        .evaluate(std::slice::from_ref(&q2), &data.test, false)
        .unwrap();
    assert!((s1[0].nll - s2[0].nll).abs() < 1e-5 && s1[0].acc == s2[0].acc);

    // Bend gradients of a Bezier curve at t = 0.3 (train mode, batch statistics).
    let weights = |p: &Params| modeconn::curve::weights_only(&builtin, p);
    let grads = |m: &Model| {
        let mut c = Curve::linear_init(CurveKind::Bezier, 3, &weights(&w1), &weights(&w2)).unwrap();
        let leaves = c.trainable();
        let phi = c.point(m, 0.3);
        let loss = m
            .forward(&phi, &x, BnMode::Train(None), Precision::Fp32)
            .unwrap()
            .cross_entropy_for_logits(&y);
        loss.backward();
        m.chain_grads(&phi).unwrap();
        (
            c,
            leaves.iter().map(|l| l.grad().copy()).collect::<Vec<_>>(),
        )
    };
    let (_, g1) = grads(&builtin);
    let (c2, g2) = grads(&script);
    let scale = g1
        .iter()
        .map(|g| g.abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    let d = g1
        .iter()
        .zip(&g2)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0.0, f64::max);
    assert!(
        scale > 1e-4 && d < 1e-4 * scale.max(1.0),
        "bend gradients differ by {d} (scale {scale})"
    );

    // A central finite difference along the gradient's direction of bend 1.
    let loss_at = |c: &Curve| {
        tch::no_grad(|| {
            let phi = c.point(&script, 0.3);
            script
                .forward(&phi, &x, BnMode::Train(None), Precision::Fp32)
                .unwrap()
                .cross_entropy_for_logits(&y)
                .double_value(&[])
        })
    };
    let dir: Vec<Tensor> = g2
        .iter()
        .map(|g| g / g.norm().double_value(&[]).max(1e-12))
        .collect();
    let n_dir: f64 = dir
        .iter()
        .map(|d| d.square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    let eps = 1e-2;
    let shifted = |sign: f64| {
        let mut c = Curve {
            kind: c2.kind,
            bends: c2.bends.iter().map(|b| b.deep_clone()).collect(),
        };
        let mut i = 0;
        c.bends[1] = c.bends[1].map(|_, t| {
            let s = t + &dir[i] * (sign * eps / n_dir);
            i += 1;
            s
        });
        loss_at(&c)
    };
    let fd = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
    let analytic: f64 = g2
        .iter()
        .zip(&dir)
        .map(|(g, d)| (g * d).sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        / n_dir;
    assert!(
        (fd - analytic).abs() < 0.02 * analytic.abs().max(1e-3),
        "finite difference {fd} against the chained gradient {analytic}"
    );
}

/// The seed experiment's curve imported through the exported seed ConvNet
/// sweeps and ensembles to the built-in path's numbers (1e-4), at every t.
#[test]
fn the_exported_seed_convnet_gives_the_built_in_numbers_on_the_seed_curve() {
    let a = archives();
    let ck = Path::new(ROOT).join("../shared/checkpoints/seed-cifar10-convnet");
    let data = Path::new(ROOT).join("../shared/datasets/cifar10-jpg");
    assert!(
        ck.is_dir() && data.is_dir(),
        "../shared (the seed checkpoints and CIFAR-10) is needed beside the checkout"
    );
    let env = TestEnv::new();
    let (s, e, t) = (
        ck.join("start.safetensors"),
        ck.join("end.safetensors"),
        ck.join("theta.safetensors"),
    );
    let bend = format!("1={}", t.display());
    let common = [
        "--dataset",
        "image-folder",
        "--data-dir",
        data.to_str().unwrap(),
        "--normalize",
        "none",
        "--train-subset",
        "1000",
        "--test-subset",
        "1000",
    ];
    let model_file = a.seed_convnet.to_str().unwrap();
    for (exp, arch) in [
        ("builtin", vec!["--arch", "seed-convnet"]),
        ("ts", vec!["--model-file", model_file]),
    ] {
        let p = env.p(exp);
        let mut args = vec![
            "fit-curve",
            "--exp",
            &p,
            "--epochs",
            "0",
            "--start",
            s.to_str().unwrap(),
            "--end",
            e.to_str().unwrap(),
            "--init-bend",
            &bend,
        ];
        args.extend(&common);
        args.extend(&arch);
        env.ok(&args);
        let script: Vec<&str> = if exp == "ts" {
            vec!["--model-file", model_file]
        } else {
            vec![]
        };
        let mut sweep = vec!["eval", "--exp", &p, "--points", "11"];
        sweep.extend(&script);
        env.ok(&sweep);
        let mut ens = vec!["eval", "--exp", &p, "--ensemble", "5"];
        ens.extend(&script);
        env.ok(&ens);
    }
    let cmp = |file: &str| {
        let (x, y) = (
            read_json(&env.path().join("builtin/eval").join(file)),
            read_json(&env.path().join("ts/eval").join(file)),
        );
        let mut n = 0;
        let d = max_numeric_diff(&x, &y, &mut n);
        assert!(n > 20, "{file}: only {n} numbers compared");
        assert!(
            d < 1e-4,
            "{file}: the TorchScript path differs from the built-in one by {d}"
        );
    };
    cmp("along.json");
    cmp("ensemble.json");
}

/// Largest difference between the numbers of two JSON documents of the same
/// shape (timings and paths excluded); `n` counts the numbers compared.
fn max_numeric_diff(a: &Value, b: &Value, n: &mut usize) -> f64 {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .filter(|(k, _)| {
                !k.contains("second") && !k.contains("time") && *k != "meta" && *k != "runtime"
            })
            .map(|(k, v)| y.get(k).map_or(0.0, |w| max_numeric_diff(v, w, n)))
            .fold(0.0, f64::max),
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "arrays of different lengths");
            x.iter()
                .zip(y)
                .map(|(v, w)| max_numeric_diff(v, w, n))
                .fold(0.0, f64::max)
        }
        (Value::Number(x), Value::Number(y)) => {
            *n += 1;
            (x.as_f64().unwrap() - y.as_f64().unwrap()).abs()
        }
        _ => 0.0,
    }
}

/// torchvision's ResNet-18, which nobody here wrote: endpoints, a curve, the
/// sweep and an exported midpoint that loads into torchvision's own module
/// with strict key matching and gives the logits modeconn's evaluation gives.
#[test]
fn a_torchvision_resnet18_gets_a_curve_and_its_midpoint_loads_back_into_pytorch() {
    let data = Path::new(ROOT).join("../shared/datasets/cifar10-jpg");
    assert!(
        data.is_dir(),
        "../shared/datasets/cifar10-jpg is needed beside the checkout"
    );
    let env = TestEnv::new();
    let r18 = export(
        env.path(),
        "resnet18.pt",
        "torchvision.models:resnet18",
        r#"{"num_classes": 10}"#,
        "3,32,32",
        "10",
    );
    let (exp, mf) = (env.p("e"), r18.to_str().unwrap().to_string());
    let d = data.to_str().unwrap();
    let sub = [
        "--dataset",
        "image-folder",
        "--data-dir",
        d,
        "--train-subset",
        "200",
        "--test-subset",
        "100",
        "--model-file",
        &mf,
    ];
    let mut args = vec![
        "train-endpoints",
        "--exp",
        &exp,
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.02",
        "--threads",
        "2",
    ];
    args.extend(&sub);
    env.ok(&args);
    let mut args = vec![
        "fit-curve",
        "--exp",
        &exp,
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.02",
    ];
    args.extend(&sub[..6]);
    args.extend(["--model-file", &mf]);
    env.ok(&args);
    env.ok(&["eval", "--exp", &exp, "--points", "3", "--model-file", &mf]);
    let along = read_json(&env.path().join("e/eval/along.json"));
    let rows = along["curve"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert!(
            f(&r["test_nll"]).is_finite() && f(&r["train_loss"]).is_finite(),
            "{r}"
        );
    }
    let mid = env.p("mid.safetensors");
    let out = env.ok(&[
        "export",
        "--exp",
        &exp,
        "--t",
        "0.5",
        "--out",
        &mid,
        "--model-file",
        &mf,
    ]);
    // The accuracy modeconn printed for φ(0.5), against PyTorch's own
    // ResNet-18 with the exported state dict, on the same 100 test images.
    let acc: f64 = stdout(&out)
        .split("test accuracy ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {}", stdout(&out)));
    let x = test_images(&exp, 100);
    let xs = env.path().join("x.safetensors");
    Tensor::write_safetensors(&[("x", &x.0), ("y", &x.1)], &xs).unwrap();
    let check = format!(
        "import torch, torchvision\nfrom safetensors.torch import load_file\n\
         m = torchvision.models.resnet18(num_classes=10)\n\
         m.load_state_dict(load_file({mid:?}), strict=True)\nm.eval()\n\
         d = load_file({:?})\n\
         with torch.no_grad(): p = m(d['x']).argmax(1)\n\
         print((p == d['y']).float().mean().item() * 100)\n",
        xs.display()
    );
    let o = py(&["-c", &check]);
    assert!(
        o.status.success(),
        "PyTorch could not load the midpoint strictly:\n{}",
        stderr(&o)
    );
    let torch_acc: f64 = stdout(&o).trim().parse().unwrap();
    assert!(
        (torch_acc - acc).abs() < 1e-6,
        "PyTorch scores φ(0.5) {torch_acc}%, modeconn {acc}%"
    );
    // Its permutation symmetries, derived by the exporter (residual streams
    // included), align the two endpoints without changing the logits.
    let spec = env.path().join("r18.json");
    let o = exporter(&[
        "torchvision.models:resnet18",
        "--kwargs",
        r#"{"num_classes": 10}"#,
        "--input-shape",
        "3,32,32",
        "--classes",
        "10",
        "--out",
        env.path().join("again.pt").to_str().unwrap(),
        "--perm-spec",
        spec.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("12 permutations"), "{}", stdout(&o));
    env.ok(&[
        "align",
        "--exp",
        &exp,
        "--model-file",
        &mf,
        "--perm-spec",
        spec.to_str().unwrap(),
        "--points",
        "0",
    ]);
    let al = read_json(&env.path().join("e/eval/align.json"));
    assert!(f(&al["meta"]["max_logit_diff"]) < 1e-3, "{}", al["meta"]);
    assert!(
        f(&al["meta"]["moved"]) > 0.0,
        "weight matching moved nothing: {}",
        al["meta"]
    );
}

/// The test images of an experiment as its config.json loads them
/// (normalised), with their labels.
fn test_images(exp: &str, n: i64) -> (Tensor, Tensor) {
    let cfg: DataConfig =
        serde_json::from_value(read_json(&Path::new(exp).join("config.json"))["data"].clone())
            .unwrap();
    let meta =
        modeconn::checkpoint::read_meta(&Path::new(exp).join("start_model/model.safetensors"))
            .unwrap()
            .unwrap();
    let data =
        modeconn::loader::load(&cfg, Device::Cpu, Some((meta.norm_mean, meta.norm_std))).unwrap();
    let (x, y) = data.batch_range(&data.test, 0, n, false).unwrap();
    (x.contiguous(), y)
}

/// Archives and exports that cannot work are refused with the file named
/// and the fix, before anything is written.
#[test]
fn bad_archives_and_models_are_refused_before_any_write() {
    let a = archives();
    let env = TestEnv::new();
    let fm = [
        "--train-subset",
        "100",
        "--test-subset",
        "50",
        "--epochs",
        "1",
    ];
    let refuse = |file: &Path, want: &str| {
        let exp = env
            .path()
            .join(format!("x-{}", file.file_name().unwrap().to_string_lossy()));
        let f = file.to_str().unwrap().to_string();
        let e = exp.to_str().unwrap().to_string();
        let mut args = vec!["train-endpoints", "--exp", &e, "--model-file", &f];
        args.extend(fm);
        let out = env.modeconn(&args);
        let msg = assert_clean_error(&out, want);
        assert!(msg.contains(want), "{msg}");
        let files: Vec<_> = std::fs::read_dir(&exp)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            files.iter().all(|n| n == ".lock"),
            "a refused command wrote {files:?}"
        );
        msg
    };
    // Not TorchScript at all, and a truncated archive.
    let junk = env.path().join("junk.pt");
    std::fs::write(&junk, b"this is not an archive").unwrap();
    refuse(&junk, "not a TorchScript archive");
    let bytes = std::fs::read(&a.preresnet).unwrap();
    let cut = env.path().join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refuse(&cut, "cut.pt");
    // TorchScript, but not written by the exporter.
    let plain = env.path().join("plain.pt");
    let o = py(&[
        "-c",
        &format!(
            "import torch\ntorch.jit.script(torch.nn.Linear(784, 10)).save({:?})",
            plain.display()
        ),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    refuse(&plain, "python/modeconn_export.py");
    // An archive for other images or another class count.
    let msg = refuse(&a.seed_convnet, "--input-shape 1,28,28");
    assert!(msg.contains("seed.pt"), "{msg}");

    // Models the exporter refuses, each with the reason (exit status 2).
    let user = env.path().join("user_models.py");
    std::fs::write(
        &user,
        "import torch, torch.nn as nn\n\
         class TwoInputs(nn.Module):\n    def __init__(self):\n        super().__init__(); self.l = nn.Linear(4, 2)\n    def forward(self, x, y):\n        return self.l(x)\n\
         def two_inputs(): return TwoInputs()\n\
         def doubles(): return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).double()\n\
         def nothing(): return nn.Sequential(nn.Flatten(), nn.Identity())\n\
         def wrong_classes(): return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))\n",
    )
    .unwrap();
    for (factory, want) in [
        ("two_inputs", "forward failed"),
        ("doubles", "float64"),
        ("nothing", "no trainable parameters"),
        ("wrong_classes", "expected logits [2, 10]"),
    ] {
        let out = env.path().join(format!("{factory}.pt"));
        let o = exporter(&[
            &format!("{}:{factory}", user.display()),
            "--input-shape",
            "1,28,28",
            "--classes",
            "10",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{factory}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{factory}: {}", stderr(&o));
        assert!(
            !out.exists(),
            "{factory}: a refused export wrote its archive"
        );
    }
}

/// An experiment is tied to its archive: a command that does not name it
/// is refused (an archive can run code), and so is a changed archive.
#[test]
fn an_archive_is_loaded_only_when_named_and_unchanged() {
    let a = archives();
    let env = TestEnv::new();
    let pt = env.path().join("net.pt");
    std::fs::copy(&a.preresnet, &pt).unwrap();
    let (exp, mf) = (env.p("e"), pt.to_str().unwrap().to_string());
    assert_ok(
        &tiny_endpoints(&env, &exp, &mf, &["--batch-size", "50"]),
        &["train-endpoints"],
    );
    env.ok(&[
        "fit-curve",
        "--exp",
        &exp,
        "--model-file",
        &mf,
        "--epochs",
        "1",
        "--batch-size",
        "50",
    ]);
    // The same network exported again from another seed is another archive:
    // a resume with it is refused, naming the recorded MD5.
    let other_pt = env.path().join("other.pt");
    let o = exporter(&[
        &format!("{ROOT}/python/modeconn_models.py:PreResNet"),
        "--kwargs",
        r#"{"in_channels": 1, "num_classes": 10, "depth": 8, "widen": 50}"#,
        "--input-shape",
        "1,28,28",
        "--classes",
        "10",
        "--seed",
        "1",
        "--out",
        other_pt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = experiment_files(Path::new(&exp));
    let out = tiny_endpoints(
        &env,
        &exp,
        other_pt.to_str().unwrap(),
        &["--batch-size", "50", "--resume"],
    );
    let msg = assert_clean_error(&out, "a resume with another archive");
    assert!(
        msg.contains("script.md5") && msg.contains("other.pt"),
        "{msg}"
    );
    assert_unchanged(&before, Path::new(&exp), "a refused resume");
    let msg = assert_clean_error(
        &env.modeconn(&["eval", "--exp", &exp, "--points", "3"]),
        "unnamed archive",
    );
    assert!(
        msg.contains("add --model-file") && msg.contains("net.pt"),
        "{msg}"
    );
    env.ok(&["eval", "--exp", &exp, "--points", "3", "--model-file", &mf]);
    // Another network under the same name.
    std::fs::copy(&a.seed_convnet, &pt).unwrap();
    let msg = assert_clean_error(
        &env.modeconn(&["eval", "--exp", &exp, "--points", "3", "--model-file", &mf]),
        "changed archive",
    );
    assert!(msg.contains("has changed") && msg.contains("MD5"), "{msg}");
    // A state dict whose keys are not the archive's.
    std::fs::copy(&a.preresnet, &pt).unwrap();
    let other = env.p("other");
    let out = env.modeconn(&[
        "fit-curve",
        "--exp",
        &other,
        "--model-file",
        &mf,
        "--epochs",
        "0",
        "--start",
        &format!("{exp}/start_model/model.safetensors"),
        "--end",
        &format!(
            "{}/../shared/checkpoints/seed-cifar10-convnet/end.safetensors",
            ROOT
        ),
    ]);
    let msg = assert_clean_error(&out, "state dict of another network");
    assert!(msg.contains("end.safetensors"), "{msg}");
}

/// `align` on a TorchScript network with a JSON permutation spec: the seed
/// ConvNet's spec written out from the built-in architecture aligns the
/// exported network exactly as the built-in one is aligned; a spec that
/// misses a tensor is refused (the logits check) and writes nothing.
#[test]
fn align_takes_a_permutation_spec_for_a_torchscript_network() {
    let a = archives();
    let ck = Path::new(ROOT).join("../shared/checkpoints/seed-cifar10-convnet");
    let data = Path::new(ROOT).join("../shared/datasets/cifar10-jpg");
    assert!(
        ck.is_dir() && data.is_dir(),
        "../shared is needed beside the checkout"
    );
    let env = TestEnv::new();
    let builtin = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 10, 32, 32)).unwrap();
    let spec = env.path().join("spec.json");
    std::fs::write(
        &spec,
        serde_json::to_string_pretty(&builtin.perms.to_file()).unwrap(),
    )
    .unwrap();
    let (s, e) = (ck.join("start.safetensors"), ck.join("end.safetensors"));
    let (s, e, d) = (
        s.to_str().unwrap(),
        e.to_str().unwrap(),
        data.to_str().unwrap(),
    );
    let common = [
        "--start",
        s,
        "--end",
        e,
        "--dataset",
        "image-folder",
        "--data-dir",
        d,
        "--normalize",
        "none",
        "--train-subset",
        "500",
        "--test-subset",
        "500",
        "--points",
        "3",
    ];
    let (mf, sp) = (a.seed_convnet.to_str().unwrap(), spec.to_str().unwrap());
    for (exp, extra) in [
        ("builtin", vec!["--arch", "seed-convnet"]),
        ("ts", vec!["--model-file", mf, "--perm-spec", sp]),
    ] {
        let p = env.p(exp);
        let mut args = vec!["align", "--exp", &p];
        args.extend(common);
        args.extend(&extra);
        env.ok(&args);
    }
    let aligned = |x: &str| {
        env.path()
            .join(x)
            .join("end_model_aligned/model.safetensors")
    };
    let d = max_diff_files(&aligned("builtin"), &aligned("ts"));
    assert!(d < 1e-6, "the aligned networks differ by {d}");
    let (x, y) = (
        read_json(&env.path().join("builtin/eval/align.json")),
        read_json(&env.path().join("ts/eval/align.json")),
    );
    for line in ["raw", "aligned"] {
        let mut n = 0;
        let d = max_numeric_diff(&x[line], &y[line], &mut n);
        assert!(n > 10 && d < 1e-4, "{line}: {d} over {n} numbers");
    }
    assert_eq!(y["meta"]["repair"], "unavailable");
    // The exporter derives the same symmetries with torch.fx (group names
    // aside), and says when it cannot (a vision transformer).
    let derived = env.path().join("derived.json");
    let o = exporter(&[
        &format!("{ROOT}/python/modeconn_models.py:SeedConvNet"),
        "--kwargs",
        r#"{"in_channels": 3, "num_classes": 10}"#,
        "--input-shape",
        "3,32,32",
        "--classes",
        "10",
        "--out",
        env.path().join("seed2.pt").to_str().unwrap(),
        "--perm-spec",
        derived.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let groups = |v: &Value| {
        let mut g: Vec<Vec<String>> = v["perms"]
            .as_object()
            .unwrap()
            .values()
            .map(|es| {
                let mut e: Vec<String> = es
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.to_string())
                    .collect();
                e.sort();
                e
            })
            .collect();
        g.sort();
        g
    };
    assert_eq!(
        groups(&read_json(&derived)),
        groups(&read_json(&spec)),
        "the derived spec is not the built-in one"
    );
    let vit = env.path().join("vit.pt");
    let o = exporter(&[
        "torchvision.models.vision_transformer:VisionTransformer",
        "--kwargs",
        r#"{"image_size": 32, "patch_size": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32, "num_classes": 10}"#,
        "--input-shape",
        "3,32,32",
        "--classes",
        "10",
        "--out",
        vit.to_str().unwrap(),
        "--perm-spec",
        env.path().join("vit.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot derive a permutation spec"),
        "{}",
        stderr(&o)
    );
    assert!(!vit.exists(), "a refused export wrote its archive");
    // Without a spec, and with a spec that forgets a tensor.
    let p = env.p("none");
    let mut args = vec!["align", "--exp", &p, "--model-file", mf];
    args.extend(common);
    let msg = assert_clean_error(&env.modeconn(&args), "no spec");
    assert!(msg.contains("--perm-spec"), "{msg}");
    let mut file: serde_json::Value = read_json(&spec);
    let first = file["perms"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .next()
        .unwrap();
    first.as_array_mut().unwrap().remove(0);
    let bad = env.path().join("bad.json");
    std::fs::write(&bad, file.to_string()).unwrap();
    let p = env.p("bad");
    let mut args = vec![
        "align",
        "--exp",
        &p,
        "--model-file",
        mf,
        "--perm-spec",
        bad.to_str().unwrap(),
    ];
    args.extend(common);
    let out = env.modeconn(&args);
    let msg = stderr(&out);
    assert!(
        out.status.code() == Some(1) && !msg.contains("panicked"),
        "a wrong spec: {msg}"
    );
    assert!(
        msg.contains("does not describe a symmetry") && msg.contains("bad.json"),
        "{msg}"
    );
    assert!(
        !env.path().join("bad/end_model_aligned").exists(),
        "a refused align wrote its network"
    );
}

/// A buffer that is not a BatchNorm statistic is kept at the archive's
/// value (the exporter says so), and a checkpoint that holds another value
/// there is refused, naming the buffer.
#[test]
fn buffers_other_than_batchnorm_statistics_are_kept_fixed() {
    let env = TestEnv::new();
    let user = env.path().join("scaled.py");
    std::fs::write(
        &user,
        "import torch, torch.nn as nn\n\
         class Scaled(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.l = nn.Linear(784, 10)\n        self.register_buffer('scale', torch.tensor(0.5))\n    def forward(self, x):\n        return self.l(torch.flatten(x, 1)) * self.scale\n\
         def scaled(): return Scaled()\n",
    )
    .unwrap();
    let pt = env.path().join("scaled.pt");
    let o = exporter(&[
        &format!("{}:scaled", user.display()),
        "--input-shape",
        "1,28,28",
        "--classes",
        "10",
        "--out",
        pt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("kept fixed (not trained, not re-estimated): scale"),
        "{}",
        stdout(&o)
    );
    let (exp, mf) = (env.p("e"), pt.to_str().unwrap().to_string());
    assert_ok(&tiny_endpoints(&env, &exp, &mf, &[]), &["train-endpoints"]);
    let start = env.path().join("e/start_model/model.safetensors");
    let t = tensors(&start);
    assert_eq!(
        t["scale"].double_value(&[]),
        0.5,
        "training moved the fixed buffer"
    );
    // The same network with another value in the buffer.
    let changed = env.path().join("changed.safetensors");
    let o = py(&["-c", &format!(
        "from safetensors.torch import load_file, save_file\nimport torch\nd = load_file({:?})\nd['scale'] = torch.tensor(0.25)\nsave_file(d, {:?})",
        start.display(), changed.display()
    )]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other = env.p("other");
    let end = format!("{exp}/end_model/model.safetensors");
    let out = env.modeconn(&[
        "fit-curve",
        "--exp",
        &other,
        "--model-file",
        &mf,
        "--epochs",
        "0",
        "--start",
        changed.to_str().unwrap(),
        "--end",
        &end,
    ]);
    let msg = assert_clean_error(&out, "a changed fixed buffer");
    assert!(
        msg.contains("'scale'") && msg.contains("changed.safetensors") && msg.contains("fixed"),
        "{msg}"
    );
}

/// `run --model-file F` goes from the archive to the report in one command.
#[test]
fn run_takes_a_torchscript_network_from_endpoints_to_the_report() {
    let a = archives();
    let env = TestEnv::new();
    let exp = env.p("r");
    env.ok(&[
        "run",
        "--exp",
        &exp,
        "--model-file",
        a.preresnet.to_str().unwrap(),
        "--train-subset",
        "200",
        "--test-subset",
        "100",
        "--epochs",
        "1",
        "--curve-epochs",
        "1",
        "--points",
        "3",
        "--ensemble",
        "2",
        "--grid",
        "3",
        "--batch-size",
        "50",
        "--eval-train-subset",
        "200",
        "--landscape-train-subset",
        "200",
        "--landscape-test-subset",
        "100",
    ]);
    let cfg = read_json(&env.path().join("r/config.json"));
    assert_eq!(cfg["arch"]["arch"], "torchscript");
    assert_eq!(
        cfg["runtime"]["precision"], "fp32",
        "TorchScript networks compute in fp32"
    );
    let report = std::fs::read_to_string(env.path().join("r/report.html")).unwrap();
    assert!(
        report.contains("preresnet8.pt (TorchScript)"),
        "the report does not name the archive"
    );
    for f in [
        "along_curve.png",
        "landscape_train_loss.png",
        "ensemble.png",
    ] {
        assert!(
            env.path().join("r/figures").join(f).is_file(),
            "{f} is missing"
        );
    }
}

/// An archive made by tracing (`--trace`, the fallback where scripting
/// fails) runs like the scripted one: the same logits in both modes and the
/// same BatchNorm update.
#[test]
fn a_traced_archive_runs_like_a_scripted_one() {
    let a = archives();
    let env = TestEnv::new();
    let traced = env.path().join("traced.pt");
    let o = exporter(&[
        &format!("{ROOT}/python/modeconn_models.py:PreResNet"),
        "--kwargs",
        r#"{"in_channels": 1, "num_classes": 10, "depth": 8, "widen": 50}"#,
        "--input-shape",
        "1,28,28",
        "--classes",
        "10",
        "--trace",
        "--out",
        traced.to_str().unwrap(),
    ]);
    assert!(
        o.status.success() && stdout(&o).contains(": trace,"),
        "{}",
        stderr(&o)
    );
    let (s, t) = (
        script_model(&a.preresnet, 1, 28),
        script_model(&traced, 1, 28),
    );
    let data = fashion(100, 100);
    let (x, _) = data.batch_range(&data.train, 0, 64, false).unwrap();
    tch::manual_seed(3);
    let w = s.init(Device::Cpu);
    for mode in [BnMode::Eval, BnMode::Train(Some(0.1))] {
        let (p1, p2) = (w.deep_clone(), w.deep_clone());
        let (y1, y2) = tch::no_grad(|| {
            (
                s.forward(&p1, &x, mode, Precision::Fp32).unwrap(),
                t.forward(&p2, &x, mode, Precision::Fp32).unwrap(),
            )
        });
        assert!(max_abs_diff(&y1, &y2) < 1e-5, "{mode:?}: logits differ");
        assert!(
            max_diff_params(&p1, &p2) < 1e-6,
            "{mode:?}: statistics differ"
        );
    }
}
