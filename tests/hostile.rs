//! Guarantee: degenerate work and hostile or damaged files give a clear
//! error that names the file or flag and the fix. Never a panic, never a
//! hang, never a silent success, never a changed experiment.
//!
//! Classes covered here (the README counts them): degenerate training sets,
//! damaged curve files, damaged resume states, non-finite weights, planted
//! non-regular files, damaged result files, stale temporary files, writes
//! aimed at the experiment's own files, endpoints changed under a curve,
//! malformed config.json sections, missing data directories, and
//! experiments with more than two endpoints.

use std::fs;
use std::time::Duration;

use crate::common::*;

/// A copy of the fixture whose config.json names its own endpoint files (the
/// fixture's name the original folder, as after moving an experiment) and
/// whose curve fit asked for 3 epochs: an interrupted fit at epoch 2.
fn interrupted_fit(env: &TestEnv, name: &str) -> PathBuf {
    let exp = env.copy_of_fixture(name);
    let cfg = exp.join("config.json");
    let mut v = read_json(&cfg);
    for (key, dir) in [("start", "start_model"), ("end", "end_model")] {
        v["curve"][key] = serde_json::json!(exp.join(dir).join("model.safetensors"));
    }
    v["curve"]["epochs"] = serde_json::json!(3);
    fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    exp
}

#[test]
fn training_that_would_train_on_nothing_is_an_error() {
    let env = TestEnv::new();
    let e = env.p("e");
    let cases: [(&[&str], &str); 2] = [
        (&["--train-subset", "0"], "--train-subset"),
        (
            &[
                "--arch",
                "preresnet",
                "--depth",
                "8",
                "--widen",
                "13",
                "--batch-size",
                "1",
                "--train-subset",
                "40",
            ],
            "BatchNorm needs at least 2",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["train-endpoints", "--exp", &e, "--epochs", "1"];
        args.extend_from_slice(extra);
        let err = assert_clean_error(&env.modeconn(&args), needle);
        assert!(err.contains(needle), "{args:?}:\n{err}");
        assert!(!Path::new(&e).exists(), "{args:?} created the experiment");
    }
}

/// Fashion-MNIST-shaped IDX files with `n_train` training images.
fn idx_dir(dir: &Path, n_train: u32) {
    fs::create_dir_all(dir).unwrap();
    let idx = |dims: &[u32], data: Vec<u8>| {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend(data);
        out
    };
    for (prefix, n) in [("train", n_train), ("t10k", 20)] {
        let images = idx(&[n, 28, 28], vec![7; n as usize * 784]);
        let labels = idx(&[n], (0..n).map(|i| (i % 10) as u8).collect());
        fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

#[test]
fn empty_or_missing_data_is_named() {
    let env = TestEnv::new();
    let empty = env.path().join("empty-fm");
    idx_dir(&empty, 0);
    let e = env.p("e");
    let err = assert_clean_error(
        &env.modeconn(&[
            "train-endpoints",
            "--exp",
            &e,
            "--data-dir",
            empty.to_str().unwrap(),
            "--epochs",
            "1",
        ]),
        "an IDX file of 0 images",
    );
    assert!(err.contains("holds no images"), "{err}");
    // A --data-dir that does not exist is not silently replaced by the system copy.
    let err = assert_clean_error(
        &env.modeconn(&[
            "train-endpoints",
            "--exp",
            &e,
            "--data-dir",
            "/nonexistent/fashion",
            "--epochs",
            "1",
        ]),
        "a missing --data-dir",
    );
    assert!(
        err.contains("/nonexistent/fashion") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!Path::new(&e).exists());
}

#[test]
fn damaged_curve_files_are_errors_naming_them() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let curve = exp.join("curve_model/curve.safetensors");
    let original = fs::read(&curve).unwrap();

    // Metadata that claims 0 bends (eval and export used to panic).
    rewrite(&curve, |_, m| {
        m.as_mut().unwrap().curve.as_mut().unwrap().bends = 0
    });
    for args in [
        vec!["eval", "--exp", &e, "--points", "3"],
        vec![
            "export",
            "--exp",
            &e,
            "--t",
            "0.5",
            "--out",
            "/tmp/x.safetensors",
        ],
    ] {
        let err = assert_clean_error(&env.modeconn(&args), "a curve of 0 bends");
        assert!(
            err.contains("curve.safetensors") && err.contains("0 bends"),
            "{err}"
        );
    }

    // A bend holding NaN.
    fs::write(&curve, &original).unwrap();
    rewrite(&curve, |t, _| {
        let (_, x) = t.iter_mut().find(|(n, _)| n.starts_with("bend1.")).unwrap();
        *x = x.copy().fill_(f64::NAN);
    });
    let err = assert_clean_error(
        &env.modeconn(&["eval", "--exp", &e, "--points", "3"]),
        "a NaN bend",
    );
    assert!(
        err.contains("bend 1") && err.contains("not finite"),
        "{err}"
    );
}

#[test]
fn damaged_resume_states_are_refused_and_change_nothing() {
    let env = TestEnv::new();
    let exp = interrupted_fit(&env, "e");
    let e = exp.display().to_string();
    let state = exp.join("curve_model/state.safetensors");
    let original = fs::read(&state).unwrap();
    let resume = [
        "fit-curve",
        "--exp",
        &e,
        "--resume",
        "--epochs",
        "3",
        "--batch-size",
        "32",
    ];
    type Damage = Box<dyn Fn(&mut Vec<(String, Tensor)>)>;
    let damages: [(&str, Damage); 2] = [
        (
            "a missing bend",
            Box::new(|t| t.retain(|(n, _)| !n.starts_with("bend1."))),
        ),
        (
            "a wrong-shaped optimiser buffer",
            Box::new(|t| {
                let (_, x) = t
                    .iter_mut()
                    .find(|(n, _)| n.starts_with("optim.m."))
                    .unwrap();
                *x = Tensor::zeros([3], (tch::Kind::Float, tch::Device::Cpu));
            }),
        ),
    ];
    for (what, damage) in damages {
        fs::write(&state, &original).unwrap();
        rewrite(&state, |t, _| damage(t));
        let before = experiment_files(&exp);
        let err = assert_clean_error(&env.modeconn(&resume), what);
        assert!(err.contains("state.safetensors"), "{what}:\n{err}");
        assert_unchanged(&before, &exp, what);
    }

    // Endpoints: a truncated state is refused before config.json is touched.
    let es = exp.join("start_model/state.safetensors");
    let bytes = fs::read(&es).unwrap();
    fs::write(&es, &bytes[..bytes.len() / 2]).unwrap();
    let before = experiment_files(&exp);
    let mut args = vec!["train-endpoints", "--exp", &e, "--resume"];
    args.extend_from_slice(FIXTURE_TRAIN);
    let err = assert_clean_error(&env.modeconn(&args), "a truncated endpoint state");
    assert!(err.contains("start_model/state.safetensors"), "{err}");
    assert_unchanged(&before, &exp, "a refused endpoint resume");
}

#[test]
fn a_curve_is_not_resumed_against_retrained_endpoints() {
    let env = TestEnv::new();
    let exp = interrupted_fit(&env, "e");
    let e = exp.display().to_string();
    rewrite(&exp.join("start_model/model.safetensors"), |t, _| {
        let (_, x) = &mut t[0];
        *x = &*x * 1.01;
    });
    let before = experiment_files(&exp);
    let out = env.modeconn(&[
        "fit-curve",
        "--exp",
        &e,
        "--resume",
        "--epochs",
        "3",
        "--batch-size",
        "32",
    ]);
    let err = assert_clean_error(&out, "a curve over retrained endpoints");
    assert!(
        err.contains("start_md5") && err.contains("curve_model/"),
        "{err}"
    );
    assert_unchanged(&before, &exp, "a refused curve resume");
}

#[test]
fn a_fifo_planted_as_config_json_is_refused_not_read() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    // A FIFO planted as config.json: reading it would block forever.
    let cfg = exp.join("config.json");
    let saved = fs::read(&cfg).unwrap();
    fs::remove_file(&cfg).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(st.success());
    let out = env.modeconn_within(
        Duration::from_secs(60),
        &["eval", "--exp", &e, "--points", "3"],
    );
    let err = assert_clean_error(&out, "a FIFO as config.json");
    assert!(
        err.contains("config.json") && err.contains("not a regular file"),
        "{err}"
    );
    fs::remove_file(&cfg).unwrap();
    fs::write(&cfg, &saved).unwrap();
}

#[test]
fn a_config_section_of_the_wrong_type_is_named() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    // A section of the wrong type is named, not ignored.
    let cfg = exp.join("config.json");
    let mut v = read_json(&cfg);
    v["curve"]["wd"] = serde_json::json!("a lot");
    fs::write(&cfg, v.to_string()).unwrap();
    let err = assert_clean_error(
        &env.modeconn(&["eval", "--exp", &e, "--points", "3"]),
        "a malformed curve section",
    );
    assert!(err.contains("section 'curve'"), "{err}");
}

#[test]
fn temporary_files_of_dead_processes_are_swept() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    // A temporary file left by a dead process is swept by the next command.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let stale = exp.join(format!(
        "curve_model/.curve.safetensors.modeconn-tmp.{dead}.0"
    ));
    fs::write(&stale, b"half a checkpoint").unwrap();
    env.ok(&["plot", "--exp", &e]);
    assert!(!stale.exists(), "the stale temporary file was not swept");
}

#[test]
fn plane_json_rows_of_the_wrong_length_are_recomputed() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    // A plane.json with a short row is recomputed, not trusted.
    let ls = [
        "landscape",
        "--exp",
        &e,
        "--grid",
        "3",
        "--train-subset",
        "200",
        "--test-subset",
        "100",
    ];
    env.ok(&ls);
    let plane = exp.join("landscape/plane.json");
    let mut v = read_json(&plane);
    v["train_loss"][1] = serde_json::json!([0.5]);
    fs::write(&plane, v.to_string()).unwrap();
    env.ok(&ls);
    let v = read_json(&plane);
    for key in ["train_loss", "test_err", "test_nll"] {
        for row in v[key].as_array().unwrap() {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), 3, "{key}: {row:?}");
            assert!(row.iter().all(|x| x.is_number()), "{key}: {row:?}");
        }
    }
}

#[test]
fn export_into_the_experiment_s_own_folders_is_refused() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    // export --out aimed at the experiment's own curve.
    let curve = exp.join("curve_model/curve.safetensors");
    let bytes = fs::read(&curve).unwrap();
    let err = assert_clean_error(
        &env.modeconn(&[
            "export",
            "--exp",
            &e,
            "--t",
            "0.5",
            "--out",
            curve.to_str().unwrap(),
        ]),
        "export onto the curve",
    );
    assert!(err.contains("curve_model"), "{err}");
    assert_eq!(
        fs::read(&curve).unwrap(),
        bytes,
        "export overwrote the curve"
    );
}

#[test]
fn fit_curve_names_the_endpoints_of_a_three_model_experiment() {
    let env = TestEnv::new();
    let exp = env.path().join("three");
    let fx = fixture_exp();
    copy_dir(&fx.join("start_model"), &exp.join("start_model"));
    copy_dir(&fx.join("end_model"), &exp.join("model_1"));
    copy_dir(&fx.join("end_model"), &exp.join("model_2"));
    let err = assert_clean_error(
        &env.modeconn(&["fit-curve", "--exp", exp.to_str().unwrap(), "--epochs", "1"]),
        "fit-curve after --models 3",
    );
    assert!(
        err.contains("model_1") && err.contains("model_2") && err.contains("--start"),
        "{err}"
    );
}
