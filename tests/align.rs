//! `modeconn align`: weight matching of real endpoints, the permuted end
//! model as a plain state dict, the three lines, `fit-curve --aligned`, and
//! the errors for endpoints that cannot be aligned.

use modeconn::experiment::{load_curve, load_params};
use modeconn::runtime::Runtime;
use modeconn::schema::{read_versioned, AlignFile};

use crate::common::*;

const SMALL: [&str; 6] = [
    "--train-subset",
    "600",
    "--test-subset",
    "300",
    "--threads",
    "1",
];

#[test]
fn align_permutes_the_end_model_keeps_its_function_and_compares_the_lines() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("a");
    let e = exp.display().to_string();
    let mut args = vec![
        "--json",
        "align",
        "--exp",
        &e,
        "--points",
        "3",
        "--repair-images",
        "300",
    ];
    args.extend_from_slice(&SMALL);
    let out = env.ok(&args);
    let v: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let file: AlignFile = read_versioned(&exp.join("eval/align.json"), "modeconn align").unwrap();
    assert_eq!(serde_json::to_value(&file).unwrap(), v["align"]);
    let m = &file.meta;
    assert!(m.max_logit_diff < 1e-4, "{}", m.max_logit_diff);
    assert!(
        m.moved > 0 && m.moved <= m.permutable,
        "{} of {}",
        m.moved,
        m.permutable
    );
    assert!(
        m.objective.windows(2).all(|w| w[1] >= w[0]),
        "{:?}",
        m.objective
    );
    assert!(
        m.objective.last() > m.objective.first(),
        "{:?}",
        m.objective
    );
    for (name, p) in [
        ("raw", &file.raw),
        ("aligned", &file.aligned),
        ("repaired", &file.repaired),
    ] {
        let p = p.as_ref().unwrap_or_else(|| panic!("no {name} line"));
        assert_eq!(p.rows.len(), 3, "{name}");
        assert!(p.rows.iter().all(|r| r.test_err.is_finite()), "{name}");
    }
    // Both lines start at the same network, and the aligned one ends at a
    // network with the same function as end_model.
    let (raw, al) = (file.raw.as_ref().unwrap(), file.aligned.as_ref().unwrap());
    assert_eq!(raw.rows[0].test_err, al.rows[0].test_err);
    assert!((raw.rows[2].test_err - al.rows[2].test_err).abs() < 1e-9);

    // The aligned end model: the same logits, other weights.
    let rt = Runtime::cpu();
    let lc = load_curve(&exp, &rt).unwrap();
    let x = test_batch(&exp, 300);
    let end = load_params(&exp.join("end_model/model.safetensors"), &lc.model, &rt).unwrap();
    let aligned_file = exp.join("end_model_aligned/model.safetensors");
    let aligned = load_params(&aligned_file, &lc.model, &rt).unwrap();
    let diff = max_abs_diff(
        &logits(&lc.model, &end, &x),
        &logits(&lc.model, &aligned, &x),
    );
    assert!(
        diff < 1e-4,
        "aligned end model changed the logits by {diff}"
    );
    let moved = max_abs_diff(
        end.get("features.0.weight"),
        aligned.get("features.0.weight"),
    );
    assert!(moved > 0.0, "the aligned end model is the end model");
}

#[test]
fn fit_curve_aligned_ends_at_the_aligned_end_model() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("c");
    let e = exp.display().to_string();
    env.ok(&["align", "--exp", &e, "--points", "0", "--threads", "1"]);
    let file: AlignFile = read_versioned(&exp.join("eval/align.json"), "modeconn align").unwrap();
    assert!(file.raw.is_none() && file.aligned.is_none() && file.repaired.is_none());
    // A curve to the aligned end model, in place of the fixture's.
    std::fs::remove_dir_all(exp.join("curve_model")).unwrap();
    env.ok(&["fit-curve", "--exp", &e, "--aligned", "--epochs", "0"]);
    let rt = Runtime::cpu();
    let lc = load_curve(&exp, &rt).unwrap();
    let aligned_file = exp.join("end_model_aligned/model.safetensors");
    let aligned = load_params(&aligned_file, &lc.model, &rt).unwrap();
    let last = lc.curve.bends.last().unwrap();
    let w = "features.0.weight";
    assert_eq!(max_abs_diff(last.get(w), aligned.get(w)), 0.0);
}

#[test]
fn align_refuses_missing_or_mismatched_endpoints_with_advice() {
    let env = TestEnv::new();
    let empty = env.p("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env.modeconn(&["align", "--exp", &empty]);
    let err = assert_clean_error(&out, "align without endpoints");
    assert!(err.contains("train-endpoints"), "{err}");

    let exp = env.copy_of_fixture("m");
    let e = exp.display().to_string();
    let out = env.modeconn(&["fit-curve", "--exp", &e, "--aligned", "--epochs", "0"]);
    let err = assert_clean_error(&out, "fit-curve --aligned before align");
    assert!(err.contains("modeconn align --exp"), "{err}");

    // An MLP as the end model of a seed-convnet experiment.
    let mlp = env.p("mlp");
    let mut args = vec![
        "train-endpoints",
        "--exp",
        &mlp,
        "--models",
        "1",
        "--arch",
        "mlp",
        "--widen",
        "5",
        "--epochs",
        "1",
    ];
    args.extend_from_slice(&SMALL);
    env.ok(&args);
    let other = format!("{mlp}/start_model");
    let before = experiment_files(&exp);
    let out = env.modeconn(&["align", "--exp", &e, "--end", &other, "--points", "0"]);
    let err = assert_clean_error(&out, "align across architectures");
    assert!(
        err.contains("differ in architecture") && err.contains("mlp"),
        "{err}"
    );
    assert_unchanged(&before, &exp, "a refused align");
}
