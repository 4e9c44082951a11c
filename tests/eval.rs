//! `modeconn eval`, `landscape` and `plot` on a small real experiment.

use std::fs;

use crate::common::*;

const ROW_KEYS: [&str; 9] = [
    "t",
    "train_loss",
    "train_nll",
    "train_acc",
    "test_loss",
    "test_nll",
    "test_acc",
    "test_ece",
    "dl",
];
const SCORE_KEYS: [&str; 5] = ["acc", "nll", "ece", "brier", "auroc"];

#[test]
fn eval_writes_the_sweep_and_the_ensemble() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let out = env.ok(&[
        "eval",
        "--exp",
        &e,
        "--points",
        "5",
        "--train-subset",
        "1000",
        "--test-subset",
        "500",
    ]);
    assert!(
        stdout(&out).contains("barrier"),
        "the summary table is missing:\n{}",
        stdout(&out)
    );

    check_along(&read_json(&exp.join("eval/along.json")));
    check_along_csv(&exp);

    env.ok(&[
        "eval",
        "--exp",
        &e,
        "--ensemble",
        "4",
        "--test-subset",
        "500",
    ]);
    check_ensemble(&read_json(&exp.join("eval/ensemble.json")));
}

/// eval/along.json of a 5-point sweep on 1000 train and 500 test images.
fn check_along(along: &serde_json::Value) {
    assert_eq!(along["meta"]["points"], 5);
    assert_eq!(along["meta"]["n_train"], 1000);
    assert_eq!(along["meta"]["n_test"], 500);
    for path in ["curve", "line"] {
        let p = &along[path];
        let rows = p["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no rows"));
        assert_eq!(rows.len(), 5, "{path}");
        for (i, r) in rows.iter().enumerate() {
            for k in ROW_KEYS {
                let v = r[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{path} row {i} lacks {k}: {r}"));
                assert!(v.is_finite(), "{path} row {i}: {k} = {v}");
            }
            assert!(
                (f(&r["t"]) - i as f64 / 4.0).abs() < 1e-12,
                "{path} row {i}: t = {}",
                r["t"]
            );
            let acc = f(&r["test_acc"]);
            assert!(
                (0.0..=100.0).contains(&acc),
                "test_acc is a percentage: {acc}"
            );
            assert!(
                (0.0..=1.0).contains(&f(&r["test_ece"])),
                "ECE is a fraction"
            );
            assert!(
                f(&r["train_loss"]) >= f(&r["train_nll"]),
                "train_loss includes the L2 term"
            );
        }
        assert_eq!(f(&rows[0]["dl"]), 0.0);
        let len: f64 = rows.iter().map(|r| f(&r["dl"])).sum();
        assert!(
            (f(&p["length"]) - len).abs() < 1e-6 * len.max(1.0),
            "{path}: length {} vs sum of dl {len}",
            p["length"]
        );
        assert!(len > 0.0);
        for m in ["train_loss", "test_err", "test_acc", "test_ece"] {
            for s in ["min", "max", "mean", "int"] {
                assert!(
                    p["summary"][m][s].is_number(),
                    "{path}: summary.{m}.{s} missing"
                );
            }
        }
        for b in ["train_loss", "test_err"] {
            assert!(f(&p["barrier"][b]) >= 0.0, "{path}: barrier.{b}");
            assert!(p["barrier_t"][b].is_number(), "{path}: barrier_t.{b}");
        }
    }
    // The line is shorter than (or as long as) any other path between the endpoints.
    assert!(f(&along["line"]["length"]) <= f(&along["curve"]["length"]) * (1.0 + 1e-6));
}

/// eval/along.csv: a header, then 5 curve rows and 5 line rows.
fn check_along_csv(exp: &std::path::Path) {
    let csv = fs::read_to_string(exp.join("eval/along.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "path");
    assert_eq!(&header[1..], ROW_KEYS);
    let body: Vec<&str> = lines.collect();
    assert_eq!(body.len(), 10, "5 curve rows and 5 line rows:\n{csv}");
    assert!(
        body[0].starts_with("curve,0,") && body[5].starts_with("line,0,"),
        "{csv}"
    );
}

/// eval/ensemble.json of a 4-member curve ensemble on 500 test images.
fn check_ensemble(ens: &serde_json::Value) {
    for part in ["start", "end", "endpoints", "curve"] {
        for k in SCORE_KEYS {
            let v = ens[part][k]
                .as_f64()
                .unwrap_or_else(|| panic!("ensemble.json {part}.{k} missing: {}", ens[part]));
            assert!(v.is_finite(), "{part}.{k} = {v}");
        }
        assert!(f(&ens[part]["acc"]) > 50.0, "{part}: {}", ens[part]);
        assert!(
            (0.5..=1.0).contains(&f(&ens[part]["auroc"])),
            "{part}: {}",
            ens[part]
        );
    }
    let by = ens["by_size"].as_array().unwrap();
    assert_eq!(by.len(), 4);
    for (i, r) in by.iter().enumerate() {
        assert_eq!(r["k"], i + 1);
        for k in SCORE_KEYS {
            assert!(r[k].is_number(), "by_size[{i}] lacks {k}: {r}");
        }
    }
    // The full-size row is the curve ensemble itself.
    assert!((f(&by[3]["acc"]) - f(&ens["curve"]["acc"])).abs() < 1e-9);
    assert_eq!(ens["members_t"].as_array().map(Vec::len), Some(4));
    assert_eq!(ens["meta"]["k"], 4);
    assert_eq!(ens["meta"]["n_test"], 500);
}

#[test]
fn eval_errors_are_clear() {
    let env = TestEnv::new();
    let exp = fixture_exp();
    let e = exp.display().to_string();

    let err = assert_clean_error(
        &env.modeconn(&["eval", "--exp", &e, "--ensemble", "0"]),
        "--ensemble 0",
    );
    assert!(
        err.contains("--ensemble") && err.contains("at least 1"),
        "{err}"
    );

    let err = assert_clean_error(
        &env.modeconn(&["eval", "--exp", &e, "--points", "1"]),
        "--points 1",
    );
    assert!(
        err.contains("--points") && err.contains("at least 2"),
        "{err}"
    );

    // An experiment with endpoints but no curve.
    let no_curve = env.path().join("no-curve");
    copy_dir(&exp.join("start_model"), &no_curve.join("start_model"));
    let err = assert_clean_error(
        &env.modeconn(&["eval", "--exp", no_curve.to_str().unwrap()]),
        "no curve",
    );
    assert!(
        err.contains("modeconn fit-curve"),
        "the message should say how to make a curve:\n{err}"
    );

    let err = assert_clean_error(
        &env.modeconn(&["eval", "--exp", &e, "--dataset", "mnist"]),
        "--dataset mnist",
    );
    assert!(
        err.contains("fashion-mnist") && err.contains("'mnist'"),
        "both datasets should be named:\n{err}"
    );

    // Nothing was written into the shared experiment.
    assert!(!exp.join("eval").exists(), "a refused eval wrote eval/");
}

#[test]
fn landscape_and_plots() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    env.ok(&[
        "landscape",
        "--exp",
        &e,
        "--grid",
        "5",
        "--train-subset",
        "500",
        "--test-subset",
        "300",
    ]);
    let plane_path = exp.join("landscape/plane.json");
    check_plane(&read_json(&plane_path));

    env.ok(&[
        "eval",
        "--exp",
        &e,
        "--points",
        "3",
        "--train-subset",
        "500",
        "--test-subset",
        "300",
    ]);
    env.ok(&[
        "eval",
        "--exp",
        &e,
        "--ensemble",
        "2",
        "--test-subset",
        "300",
    ]);
    let plane_time = mtime(&plane_path);
    env.ok(&["plot", "--exp", &e]);
    check_figures(&exp);

    // A second plot only redraws: it recomputes nothing.
    env.ok(&["plot", "--exp", &e]);
    assert_eq!(
        mtime(&plane_path),
        plane_time,
        "plot rewrote landscape/plane.json"
    );
    assert!(exp.join("report.html").is_file());

    // Another experiment's curve on the same axes; a folder without a sweep is a clean error.
    let other = env.path().join("other");
    copy_dir(&exp, &other);
    let theirs = format!("theirs={}", other.display());
    env.ok(&["plot", "--exp", &e, "--label", "ours", "--compare", &theirs]);
    assert!(exp.join("figures/compare.png").is_file());
    let html = fs::read_to_string(exp.join("report.html")).unwrap();
    assert!(html.contains("Curves compared") && html.contains("theirs") && html.contains("ours"));
    let bare = env.p("bare");
    fs::create_dir_all(&bare).unwrap();
    let err = assert_clean_error(
        &env.modeconn(&["plot", "--exp", &e, "--compare", &bare]),
        "plot --compare without a sweep",
    );
    assert!(
        err.contains("eval/along.json") && err.contains("modeconn eval --exp"),
        "{err}"
    );
}

/// landscape/plane.json of a 5×5 grid: every value finite, a good point on the plane.
fn check_plane(plane: &serde_json::Value) {
    assert_eq!(plane["xs"].as_array().map(Vec::len), Some(5));
    assert_eq!(plane["ys"].as_array().map(Vec::len), Some(5));
    for key in ["train_loss", "test_err", "test_nll"] {
        let g = plane[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(g.len(), 5, "{key}");
        for row in g {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), 5, "{key}");
            for v in row {
                assert!(
                    v.as_f64().map(f64::is_finite).unwrap_or(false),
                    "{key} has a null or non-finite value: {v}"
                );
            }
        }
    }
    let err: Vec<f64> = plane["test_err"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(f))
        .collect();
    assert!(err.iter().all(|v| (0.0..=100.0).contains(v)));
    assert!(
        err.iter().cloned().fold(f64::INFINITY, f64::min) < 40.0,
        "no good point on the plane: {err:?}"
    );
    assert_eq!(plane["meta"]["grid"], 5);
    assert_eq!(plane["endpoints"].as_array().map(Vec::len), Some(2));
}

/// Every figure as PNG and SVG, and report.html showing them.
fn check_figures(exp: &std::path::Path) {
    let figs = exp.join("figures");
    for name in [
        "landscape_train_loss",
        "landscape_test_error",
        "along_curve",
        "ensemble",
        "training",
    ] {
        let png = fs::read(figs.join(format!("{name}.png")))
            .unwrap_or_else(|_| panic!("figures/{name}.png missing"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{name}.png is not a PNG"
        );
        assert!(png.len() > 1000, "{name}.png is tiny");
        let svg = fs::read_to_string(figs.join(format!("{name}.svg")))
            .unwrap_or_else(|_| panic!("figures/{name}.svg missing"));
        assert!(svg.contains("<svg"), "{name}.svg is not an SVG");
    }
    let html = fs::read_to_string(exp.join("report.html")).expect("report.html");
    assert!(
        html.contains("figures/along_curve") || html.contains("along_curve"),
        "report.html does not show the figures"
    );
}
