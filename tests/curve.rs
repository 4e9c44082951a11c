//! `modeconn fit-curve` and `modeconn export`: the curve passes through its
//! endpoints, lowers the loss between them, imports PyTorch checkpoints, and
//! refuses mismatched inputs with messages that name the culprit.

use std::fs;

use modeconn::experiment::{load_curve, load_params};
use modeconn::runtime::Runtime;

use crate::common::*;

#[test]
fn curve_ends_reproduce_the_endpoints_logits() {
    let exp = fixture_exp();
    let rt = Runtime::cpu();
    let lc = load_curve(&exp, &rt).unwrap();
    assert_eq!(lc.curve.num_bends(), 3);
    let x = test_batch(&exp, 500);
    let w1 = load_params(&exp.join("start_model/model.safetensors"), &lc.model, &rt).unwrap();
    let w2 = load_params(&exp.join("end_model/model.safetensors"), &lc.model, &rt).unwrap();
    let (l1, l2) = (logits(&lc.model, &w1, &x), logits(&lc.model, &w2, &x));
    assert_eq!(l1.size(), vec![x.size()[0], 10]);
    // The comparison can tell the endpoints apart.
    assert!(
        max_abs_diff(&l1, &l2) > 0.1,
        "the two endpoints give the same logits"
    );

    let p0 = logits(&lc.model, &lc.curve.point(&lc.model, 0.0), &x);
    let p1 = logits(&lc.model, &lc.curve.point(&lc.model, 1.0), &x);
    let (d0, d1) = (max_abs_diff(&p0, &l1), max_abs_diff(&p1, &l2));
    assert!(
        d0 <= 1e-5,
        "φ(0) differs from start_model: max abs logit diff {d0}"
    );
    assert!(
        d1 <= 1e-5,
        "φ(1) differs from end_model: max abs logit diff {d1}"
    );
    // The fitted middle bend is off the straight line, so φ(0.5) is not the average of the endpoints.
    let w1w = modeconn::curve::weights_only(&lc.model, &w1);
    let w2w = modeconn::curve::weights_only(&lc.model, &w2);
    let mid_line = w1w.map(|n, t| (t + w2w.get(n)) * 0.5);
    let off = lc.curve.bends[1].distance(&mid_line, |_| true).unwrap();
    assert!(
        off > 1e-3,
        "the fitted bend did not move off the line ({off})"
    );
}

#[test]
fn fitted_curve_has_lower_loss_and_barrier_than_the_line() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    env.ok(&[
        "eval",
        "--exp",
        &e,
        "--points",
        "11",
        "--train-subset",
        "1000",
        "--test-subset",
        "1000",
    ]);
    let along = read_json(&exp.join("eval/along.json"));
    let mean = |p: &str, m: &str| {
        let rows = along[p]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 11);
        rows.iter().map(|r| f(&r[m])).sum::<f64>() / rows.len() as f64
    };
    let (c, l) = (mean("curve", "train_loss"), mean("line", "train_loss"));
    assert!(
        c < l,
        "mean train loss along the curve {c} is not below the line's {l}"
    );
    let (bc, bl) = (
        f(&along["curve"]["barrier"]["test_err"]),
        f(&along["line"]["barrier"]["test_err"]),
    );
    assert!(
        bl > bc,
        "line test-error barrier {bl} is not larger than the curve's {bc}"
    );
    // On this fit the difference is large, not marginal.
    assert!(bl > bc + 5.0, "line barrier {bl} vs curve barrier {bc}");
    // Both paths start and end at the same networks.
    for i in [0, 10] {
        let (rc, rl) = (&along["curve"]["rows"][i], &along["line"]["rows"][i]);
        assert!(
            (f(&rc["test_err"]) - f(&rl["test_err"])).abs() < 1e-9,
            "row {i}: {rc} vs {rl}"
        );
    }
}

#[test]
fn imported_pytorch_curve_evaluates_as_trained() {
    let (Some(ck), Some(data)) = (
        shared("checkpoints/seed-cifar10-convnet"),
        shared("datasets/cifar10-jpg"),
    ) else {
        return;
    };
    let env = TestEnv::new();
    let e = env.p("e");
    let (start, end, theta) = (
        ck.join("start.safetensors"),
        ck.join("end.safetensors"),
        ck.join("theta.safetensors"),
    );
    let bend = format!("1={}", theta.display());
    env.ok(&[
        "fit-curve",
        "--exp",
        &e,
        "--start",
        start.to_str().unwrap(),
        "--end",
        end.to_str().unwrap(),
        "--init-bend",
        &bend,
        "--epochs",
        "0",
        "--dataset",
        "image-folder",
        "--data-dir",
        data.to_str().unwrap(),
        "--normalize",
        "none",
        "--arch",
        "seed-convnet",
        "--test-subset",
        "1000",
        "--train-subset",
        "1000",
    ]);
    let exp = env.path().join("e");
    assert!(exp.join("curve_model/curve.safetensors").is_file());
    // The stored bends are the three files, unchanged.
    let curve = tensors(&exp.join("curve_model/curve.safetensors"));
    for (k, src) in [(0, &start), (1, &theta), (2, &end)] {
        for (n, t) in tensors(src) {
            let d = max_abs_diff(&curve[&format!("bend{k}.{n}")], &t);
            assert_eq!(d, 0.0, "bend{k}.{n} differs from {}", src.display());
        }
    }

    env.ok(&["eval", "--exp", &e, "--ensemble", "3"]);
    let ens = read_json(&exp.join("eval/ensemble.json"));
    let acc = f(&ens["start"]["acc"]);
    assert!(
        acc > 70.0,
        "the imported start network scores only {acc}% on CIFAR-10"
    );
    assert!(f(&ens["end"]["acc"]) > 70.0, "{}", ens["end"]);
    assert!(f(&ens["curve"]["acc"]) > 70.0, "{}", ens["curve"]);
    assert_eq!(ens["meta"]["n_test"], 1000);

    // θ makes the curve a low-loss path: its midpoint is far better than the line's.
    env.ok(&["eval", "--exp", &e, "--points", "3"]);
    let along = read_json(&exp.join("eval/along.json"));
    let (cm, lm) = (
        f(&along["curve"]["rows"][1]["test_err"]),
        f(&along["line"]["rows"][1]["test_err"]),
    );
    assert!(
        cm + 20.0 < lm,
        "midpoint test error: curve {cm}% vs line {lm}%"
    );
}

/// Runs fit-curve from `start` to `end` into a fresh experiment and returns its (clean) error.
fn fit_error(env: &TestEnv, start: &Path, end: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "fit-curve",
        "--exp",
        "bad-exp",
        "--start",
        start.to_str().unwrap(),
        "--end",
        end.to_str().unwrap(),
        "--epochs",
        "0",
        "--train-subset",
        "500",
        "--test-subset",
        "100",
    ];
    args.extend_from_slice(extra);
    let out = env.modeconn(&args);
    let err = assert_clean_error(&out, &args.join(" "));
    assert!(
        !env.path()
            .join("bad-exp/curve_model/curve.safetensors")
            .exists(),
        "a refused fit wrote a curve"
    );
    err
}

/// Writes the fixture's start endpoint with `edit` applied to its tensors.
fn edited_endpoint(
    env: &TestEnv,
    name: &str,
    edit: impl Fn(Vec<(String, Tensor)>) -> Vec<(String, Tensor)>,
) -> PathBuf {
    let src = fixture_exp().join("start_model/model.safetensors");
    let (ts, meta) = modeconn::checkpoint::read_tensors(&src).unwrap();
    let out = env.path().join(name);
    modeconn::checkpoint::write_tensors(&out, &edit(ts), meta.as_ref()).unwrap();
    out
}

#[test]
fn endpoint_with_a_wrongly_shaped_tensor_is_refused() {
    let env = TestEnv::new();
    let bad = edited_endpoint(&env, "wrong-shape.safetensors", |ts| {
        ts.into_iter()
            .map(|(n, t)| {
                if n == "classifier.5.bias" {
                    (n, Tensor::zeros([7], (Kind::Float, Device::Cpu)))
                } else {
                    (n, t)
                }
            })
            .collect()
    });
    let end = fixture_exp().join("end_model/model.safetensors");
    let err = fit_error(&env, &bad, &end, &[]);
    assert!(
        err.contains("classifier.5.bias"),
        "the key is not named:\n{err}"
    );
    assert!(
        err.contains("wrong-shape.safetensors"),
        "the file is not named:\n{err}"
    );
    assert!(err.contains("[7]"), "the bad shape is not shown:\n{err}");
    // The same file as the end endpoint.
    let err = fit_error(&env, &fixture_exp().join("start_model"), &bad, &[]);
    assert!(
        err.contains("classifier.5.bias") && err.contains("wrong-shape.safetensors"),
        "{err}"
    );
}

#[test]
fn endpoint_with_a_missing_key_is_refused() {
    let env = TestEnv::new();
    let bad = edited_endpoint(&env, "missing-key.safetensors", |ts| {
        ts.into_iter()
            .filter(|(n, _)| n != "features.3.weight")
            .collect()
    });
    let err = fit_error(
        &env,
        &bad,
        &fixture_exp().join("end_model/model.safetensors"),
        &[],
    );
    assert!(
        err.contains("features.3.weight"),
        "the missing key is not named:\n{err}"
    );
    assert!(
        err.contains("missing-key.safetensors"),
        "the file is not named:\n{err}"
    );
}

#[test]
fn endpoints_of_different_architectures_are_refused() {
    let env = TestEnv::new();
    let a = env.p("convfc");
    env.ok(&[
        "train-endpoints",
        "--exp",
        &a,
        "--arch",
        "convfc",
        "--models",
        "1",
        "--epochs",
        "1",
        "--train-subset",
        "500",
        "--test-subset",
        "100",
    ]);
    let a = env.path().join("convfc/start_model");
    let b = fixture_exp().join("start_model");
    let err = fit_error(&env, &a, &b, &[]);
    assert!(
        err.contains("convfc") && err.contains("seed-convnet"),
        "both architectures should be named:\n{err}"
    );
    let (fa, fb) = (a.join("model.safetensors"), b.join("model.safetensors"));
    assert!(
        err.contains(fa.to_str().unwrap()) && err.contains(fb.to_str().unwrap()),
        "both files should be named:\n{err}"
    );
}

#[test]
fn init_bend_for_an_endpoint_is_refused() {
    let env = TestEnv::new();
    let (s, e) = (
        fixture_exp().join("start_model"),
        fixture_exp().join("end_model"),
    );
    let theta = fixture_exp().join("end_model/model.safetensors");
    for k in [0, 2] {
        let spec = format!("{k}={}", theta.display());
        let err = fit_error(&env, &s, &e, &["--init-bend", &spec]);
        assert!(err.contains("--init-bend"), "{err}");
        assert!(
            err.contains("endpoints are fixed") || err.contains("inner"),
            "the message should say why:\n{err}"
        );
    }
    let err = fit_error(&env, &s, &e, &["--init-bend", "theta.safetensors"]);
    assert!(err.contains("K=PATH"), "{err}");
    // A bend file that does not exist is named.
    let err = fit_error(
        &env,
        &s,
        &e,
        &["--init-bend", "1=/nonexistent/theta.safetensors"],
    );
    assert!(err.contains("/nonexistent/theta.safetensors"), "{err}");
}

#[test]
fn exported_point_round_trips_through_fit_curve() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let x_path = env.path().join("phi03.safetensors");
    let out = env.ok(&[
        "--json",
        "export",
        "--exp",
        exp.to_str().unwrap(),
        "--t",
        "0.3",
        "--out",
        x_path.to_str().unwrap(),
    ]);
    let line: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert!(f(&line["test_acc"]) > 50.0, "φ(0.3) scores poorly: {line}");

    // X holds exactly the PyTorch names of one network.
    let buf = fs::read(&x_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    assert_eq!(names, SEED_CONVNET_KEYS);

    let x = x_path.to_str().unwrap();
    env.ok(&[
        "fit-curve",
        "--exp",
        &env.p("from-x"),
        "--start",
        x,
        "--end",
        x,
        "--epochs",
        "0",
        "--train-subset",
        "500",
        "--test-subset",
        "100",
    ]);

    let rt = Runtime::cpu();
    let orig = load_curve(&exp, &rt).unwrap();
    let back = load_curve(&env.path().join("from-x"), &rt).unwrap();
    let batch = test_batch(&exp, 500);
    let want = logits(&orig.model, &orig.curve.point(&orig.model, 0.3), &batch);
    let got = logits(&back.model, &back.curve.point(&back.model, 0.0), &batch);
    let d = max_abs_diff(&want, &got);
    assert!(
        d <= 1e-5,
        "φ(0) of the re-imported point differs from φ(0.3): max abs logit diff {d}"
    );
    // ... and it is not simply an endpoint.
    let w1 = logits(&orig.model, &orig.curve.point(&orig.model, 0.0), &batch);
    assert!(max_abs_diff(&want, &w1) > 0.1);
}

#[test]
fn interrupted_curve_fit_resumes_to_the_same_curve_and_a_complete_log() {
    let env = TestEnv::new();
    let (s, e) = (
        fixture_exp().join("start_model"),
        fixture_exp().join("end_model"),
    );
    let fit = |exp: &str| -> Vec<String> {
        [
            "fit-curve",
            "--exp",
            exp,
            "--start",
            s.to_str().unwrap(),
            "--end",
            e.to_str().unwrap(),
            "--epochs",
            "2",
            "--threads",
            "1",
            "--train-subset",
            "2000",
            "--test-subset",
            "200",
            "--batch-size",
            "32",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let a = fit(&env.p("a"));
    env.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let b = fit(&env.p("b"));
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let dir = env.path().join("b/curve_model");
    let mut child = env.spawn(&b, "b1");
    // Kill as soon as the first checkpoint lands (before its log line is written).
    let hit = wait_for_every(
        std::time::Duration::from_secs(300),
        std::time::Duration::from_millis(1),
        || dir.join("state.safetensors").exists(),
    );
    child.kill().ok();
    let status = child.wait().unwrap();
    assert!(hit, "the curve fit never saved a checkpoint");
    assert!(
        !status.success(),
        "the fit finished before it could be interrupted"
    );
    assert_eq!(meta_epoch(&dir.join("state.safetensors")), 1);

    let mut resume = b.clone();
    resume.push("--resume");
    env.ok(&resume);
    // One thread and per-epoch seeds: the resumed fit is bit-identical.
    let d = max_diff_files(
        &env.path().join("a/curve_model/curve.safetensors"),
        &dir.join("curve.safetensors"),
    );
    assert_eq!(
        d, 0.0,
        "the resumed curve differs from the uninterrupted one: max abs diff {d}"
    );
    assert_eq!(
        log_epochs(&env.path().join("a/curve_model/log.jsonl")),
        vec![1, 2]
    );
    assert_eq!(
        log_epochs(&dir.join("log.jsonl")),
        vec![1, 2],
        "curve_model/log.jsonl must list every epoch once after --resume"
    );
}

#[test]
fn batchnorm_architecture_runs_the_whole_curve_pipeline() {
    // A small PreResNet (depth 8, quarter width) exercises every BatchNorm
    // path: running statistics while training endpoints, batch statistics
    // while fitting, update_bn before evaluating curve, line and ensemble
    // points, and BN statistics in the exported state dict.
    let env = TestEnv::new();
    let e = env.p("bn");
    let common = ["--train-subset", "600", "--test-subset", "200"];
    let mut a = vec![
        "train-endpoints",
        "--exp",
        &e,
        "--arch",
        "preresnet",
        "--depth",
        "8",
        "--widen",
        "25",
        "--epochs",
        "1",
        "--batch-size",
        "64",
    ];
    a.extend(common);
    env.ok(&a);
    env.ok(&[
        "fit-curve",
        "--exp",
        &e,
        "--epochs",
        "1",
        "--batch-size",
        "64",
    ]);
    env.ok(&["eval", "--exp", &e, "--points", "3"]);
    env.ok(&["eval", "--exp", &e, "--ensemble", "2"]);
    let along = read_json(&env.path().join("bn/eval/along.json"));
    for path in ["curve", "line"] {
        for row in along[path]["rows"].as_array().unwrap() {
            assert!(
                f(&row["test_nll"]).is_finite() && f(&row["test_acc"]) > 0.0,
                "{path}: {row}"
            );
        }
    }
    let x = env.p("mid.safetensors");
    env.ok(&["export", "--exp", &e, "--t", "0.5", "--out", &x]);
    let t = tensors(Path::new(&x));
    let rv = &t["layer1.0.bn1.running_var"];
    // re-estimated statistics, not the initial ones (all ones)
    assert!(max_abs_diff(rv, &Tensor::ones_like(rv)) > 1e-3);
    assert!(t.contains_key("layer1.0.bn1.num_batches_tracked"));
}

/// `fit-curve --dropout` trains the curve at its own dropout (the seed experiment's curve uses
/// 0.3 between endpoints trained at 0.5): recorded in the curve section, the endpoints'
/// architecture unchanged, the fit different from one at the endpoints' dropout.
#[test]
fn curve_dropout_is_the_fits_own_and_changes_the_fit() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let arch_before = read_json(&exp.join("config.json"))["arch"].clone();
    let fit = |extra: &[&str]| {
        fs::remove_dir_all(exp.join("curve_model")).ok();
        let mut a = vec![
            "fit-curve",
            "--exp",
            &e,
            "--epochs",
            "1",
            "--train-subset",
            "500",
            "--test-subset",
            "100",
            "--threads",
            "1",
        ];
        a.extend_from_slice(extra);
        env.ok(&a);
        tensors(&exp.join("curve_model/curve.safetensors"))
    };
    let plain = fit(&[]);
    let low = fit(&["--dropout", "0.0"]);
    let cfg = read_json(&exp.join("config.json"));
    assert_eq!(cfg["curve"]["dropout"], 0.0);
    assert_eq!(
        cfg["arch"], arch_before,
        "the endpoints' architecture is unchanged"
    );
    let moved = max_diff_all(&plain, &low);
    assert!(moved > 1e-4, "dropout 0 fitted the same bends ({moved})");
    env.ok(&[
        "eval",
        "--exp",
        &e,
        "--points",
        "3",
        "--train-subset",
        "200",
        "--test-subset",
        "100",
    ]);
    let err = assert_clean_error(
        &env.modeconn(&[
            "fit-curve",
            "--exp",
            &e,
            "--epochs",
            "1",
            "--dropout",
            "1.5",
        ]),
        "dropout out of range",
    );
    assert!(err.contains("--dropout must be in [0, 1)"), "{err}");
}
