//! `modeconn run`: the whole pipeline, interrupted, resumed and rerun.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

#[test]
fn run_survives_an_interruption_and_then_skips_finished_work() {
    let env = TestEnv::new();
    let e = env.p("e");
    let args = [
        "run",
        "--exp",
        &e,
        "--train-subset",
        "2000",
        "--test-subset",
        "500",
        "--epochs",
        "2",
        "--curve-epochs",
        "2",
        "--points",
        "5",
        "--ensemble",
        "3",
        "--grid",
        "4",
        "--eval-train-subset",
        "500",
    ];
    let exp = env.path().join("e");
    interrupt_once_the_curve_step_has_begun(&env, &args, &exp);
    let curve_log = the_same_command_finishes_the_job(&env, &args, &exp);
    a_third_run_finds_everything_done(&env, &args, &exp, &curve_log);
}

fn interrupt_once_the_curve_step_has_begun(env: &TestEnv, args: &[&str], exp: &Path) {
    let mut child = env.spawn(args, "run1");
    let curve_dir = exp.join("curve_model");
    let reached = wait_for(Duration::from_secs(400), || curve_dir.exists());
    child.kill().ok();
    let status = child.wait().unwrap();
    let err1 = std::fs::read_to_string(env.path().join("run1.stderr")).unwrap();
    assert!(reached, "the curve step never started; stderr:\n{err1}");
    assert!(
        !status.success(),
        "the run finished before it could be interrupted"
    );
    assert!(!exp.join("report.html").exists());
}

/// Returns the curve's logged epochs.
fn the_same_command_finishes_the_job(env: &TestEnv, args: &[&str], exp: &Path) -> Vec<u64> {
    let out = env.ok(args);
    assert!(stdout(&out).contains("report:"), "{}", stdout(&out));
    assert!(exp.join("report.html").is_file());
    for d in ["start_model", "end_model"] {
        assert_eq!(
            log_epochs(&exp.join(d).join("log.jsonl")),
            vec![1, 2],
            "{d}/log.jsonl: no duplicated or missing epochs"
        );
    }
    // (A curve epoch whose log line was cut off by the kill is the subject of
    // curve::interrupted_curve_fit_resumes_to_the_same_curve_and_a_complete_log.)
    let curve_log = log_epochs(&exp.join("curve_model/log.jsonl"));
    assert!(
        curve_log.windows(2).all(|w| w[0] < w[1]) && curve_log.last() == Some(&2),
        "curve_model/log.jsonl: {curve_log:?}"
    );
    let along = read_json(&exp.join("eval/along.json"));
    assert_eq!(along["curve"]["rows"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        read_json(&exp.join("eval/ensemble.json"))["by_size"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let plane = read_json(&exp.join("landscape/plane.json"));
    assert!(plane["train_loss"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .all(|v| v.is_number()));
    for name in [
        "along_curve",
        "ensemble",
        "training",
        "landscape_train_loss",
        "landscape_test_error",
    ] {
        assert!(
            exp.join(format!("figures/{name}.png")).is_file(),
            "figures/{name}.png missing"
        );
    }
    curve_log
}

/// Nothing is rewritten (same mtimes, same curve, same logs), and the
/// skipped steps say so.
fn a_third_run_finds_everything_done(env: &TestEnv, args: &[&str], exp: &Path, curve_log: &[u64]) {
    let watched = [
        "start_model/model.safetensors",
        "end_model/model.safetensors",
        "curve_model/state.safetensors",
        "eval/along.json",
        "eval/ensemble.json",
        "landscape/plane.json",
    ];
    let before: Vec<_> = watched.iter().map(|p| mtime(&exp.join(p))).collect();
    let curve_before = tensors(&exp.join("curve_model/curve.safetensors"));
    let out = env.ok(args);
    let err = stderr(&out);
    assert!(
        err.contains("up to date") && err.contains("skipped"),
        "the rerun does not report skipped steps:\n{err}"
    );
    for (p, b) in watched.iter().zip(&before) {
        assert_eq!(mtime(&exp.join(p)), *b, "the rerun rewrote {p}");
    }
    let curve_after = tensors(&exp.join("curve_model/curve.safetensors"));
    for (k, v) in &curve_before {
        assert_eq!(
            max_abs_diff(v, &curve_after[k]),
            0.0,
            "the rerun changed {k} of the curve"
        );
    }
    for d in ["start_model", "end_model"] {
        assert_eq!(
            log_epochs(&exp.join(d).join("log.jsonl")),
            vec![1, 2],
            "{d}/log.jsonl after the rerun"
        );
    }
    assert_eq!(
        log_epochs(&exp.join("curve_model/log.jsonl")),
        curve_log.to_vec(),
        "the rerun changed curve_model/log.jsonl"
    );
}

#[test]
fn run_evaluates_train_metrics_only_on_images_it_trained_on() {
    // With --train-subset 1000 the networks see 1000 training images; the
    // sweep's and the landscape's "train" metrics must not use more (the
    // quick preset's default evaluation subsets are larger than that).
    let env = TestEnv::new();
    let e = env.p("e");
    env.ok(&[
        "run",
        "--exp",
        &e,
        "--train-subset",
        "1000",
        "--test-subset",
        "200",
        "--epochs",
        "1",
        "--curve-epochs",
        "1",
        "--points",
        "2",
        "--ensemble",
        "1",
        "--grid",
        "2",
    ]);
    let exp = env.path().join("e");
    let along = read_json(&exp.join("eval/along.json"));
    let n = along["meta"]["n_train"].as_u64().unwrap();
    assert!(
        n <= 1000,
        "the sweep's train metrics use {n} images, but the networks were trained on 1000"
    );
    let plane = read_json(&exp.join("landscape/plane.json"));
    let ls = plane["meta"]["train_subset"].as_u64();
    assert!(ls.is_some_and(|n| n <= 1000), "the landscape's train loss uses train_subset {ls:?}, but the networks were trained on 1000");
}
