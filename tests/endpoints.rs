//! `modeconn train-endpoints`: real training, resume, refusal to overwrite,
//! PyTorch-compatible checkpoints and clear input errors.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

#[test]
fn short_training_run_learns_and_writes_both_endpoints() {
    // The shared experiment's endpoints come from
    // `train-endpoints --models 2 --train-subset 3000 --test-subset 1000 --epochs 3 --batch-size 32`.
    let exp = fixture_exp();
    let out = std::fs::read_to_string(fixture().join("train.stdout")).unwrap();
    // With --json, stdout is JSON lines only: one per epoch and model, then the result.
    let lines: Vec<Value> = out
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect();
    let epochs: Vec<&Value> = lines.iter().filter(|v| v["event"] == "epoch").collect();
    assert_eq!(epochs.len(), 6, "stdout:\n{out}");
    assert_eq!(epochs[5]["model"], "end_model");
    assert_eq!(epochs[5]["epoch"], 3);
    assert!(
        epochs[5]["test_acc"].as_f64().unwrap() > 0.0,
        "{}",
        epochs[5]
    );
    let last = lines.last().unwrap();
    assert_eq!(
        last["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{last}"
    );

    for dir in ["start_model", "end_model"] {
        check_endpoint_dir(&exp, dir);
    }
    let cfg = read_json(&exp.join("config.json"));
    for section in ["data", "arch", "train"] {
        assert!(
            cfg[section].is_object(),
            "config.json lacks the {section} section: {cfg}"
        );
    }
    assert_eq!(cfg["data"]["dataset"], "fashion-mnist");
    assert_eq!(cfg["data"]["train_subset"], 3000);
    assert_eq!(cfg["arch"]["arch"], "seed-convnet");
    assert_eq!(cfg["train"]["epochs"], 3);
    assert_eq!(cfg["train"]["models"], 2);

    // Seeds 1 and 2 give different networks.
    let d = max_diff_files(
        &exp.join("start_model/model.safetensors"),
        &exp.join("end_model/model.safetensors"),
    );
    assert!(
        d > 1e-3,
        "the two endpoints are (nearly) identical: max abs diff {d}"
    );
}

/// An endpoint trained for 3 epochs: its files, a complete log that shows
/// learning, and the epoch in its metadata.
fn check_endpoint_dir(exp: &Path, dir: &str) {
    let d = exp.join(dir);
    for file in ["model.safetensors", "state.safetensors", "log.jsonl"] {
        assert!(d.join(file).is_file(), "{dir}/{file} is missing");
    }
    let log = read_jsonl(&d.join("log.jsonl"));
    assert_eq!(
        log.len(),
        3,
        "{dir}/log.jsonl should have one line per epoch"
    );
    assert_eq!(log_epochs(&d.join("log.jsonl")), vec![1, 2, 3]);
    for key in [
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "seconds",
    ] {
        assert!(
            log[2][key].is_number(),
            "{dir}/log.jsonl lacks {key}: {}",
            log[2]
        );
    }
    let acc = f(&log[2]["test_acc"]);
    assert!(
        acc > 60.0,
        "{dir}: final test accuracy {acc}% is not far above chance (10%)"
    );
    assert!(
        f(&log[2]["test_loss"]) < f(&log[0]["test_loss"]),
        "{dir}: test loss did not fall"
    );
    assert_eq!(meta_epoch(&d.join("model.safetensors")), 3);
}

/// Without --json, stdout is for people: one line per epoch, no JSON.
fn check_human_stdout(so: &str) {
    assert!(
        so.contains("start_model epoch 1: train loss") && so.contains("start_model epoch 3:"),
        "stdout:\n{so}"
    );
    assert!(!so.lines().any(|l| l.starts_with('{')), "stdout:\n{so}");
}

#[test]
fn resumed_training_is_identical_to_an_uninterrupted_run() {
    let env = TestEnv::new();
    let common: &[&str] = &[
        "--models",
        "1",
        "--threads",
        "1",
        "--train-subset",
        "3000",
        "--test-subset",
        "200",
        "--epochs",
        "3",
        "--batch-size",
        "32",
    ];
    let (a, b) = (env.p("a"), env.p("b"));
    let mut args_a = vec!["train-endpoints", "--exp", &a];
    args_a.extend_from_slice(common);
    check_human_stdout(&stdout(&env.ok(&args_a)));

    let mut args_b = vec!["train-endpoints", "--exp", &b];
    args_b.extend_from_slice(common);
    let log_b = env.path().join("b/start_model/log.jsonl");
    let mut child = env.spawn(&args_b, "b1");
    // state.safetensors is written last in each epoch: once it exists, epoch 1 is committed.
    let state_b = env.path().join("b/start_model/state.safetensors");
    let started = wait_for(Duration::from_secs(300), || state_b.exists());
    child.kill().ok();
    let status = child.wait().unwrap();
    assert!(started, "the first epoch of b never finished");
    assert!(
        !status.success(),
        "b finished before it could be interrupted; the test did not interrupt anything"
    );
    let done = log_epochs(&log_b);
    assert!(done.len() < 3, "b was not interrupted: log {done:?}");
    // The state left behind is a complete epoch, at least 1.
    let (_, meta) =
        modeconn::checkpoint::read_tensors(&env.path().join("b/start_model/state.safetensors"))
            .unwrap();
    let epoch = meta.expect("state.safetensors carries metadata").epoch;
    assert!(
        (1..3).contains(&epoch),
        "interrupted state at epoch {epoch}"
    );

    let mut resume = args_b.clone();
    resume.push("--resume");
    env.ok(&resume);
    assert_eq!(
        log_epochs(&log_b),
        vec![1, 2, 3],
        "the resumed log must list every epoch once"
    );

    // With one thread and per-epoch seeds, libtorch's CPU kernels are
    // deterministic here, so the weights must agree bit for bit.
    let d = max_diff_files(
        &env.path().join("a/start_model/model.safetensors"),
        &env.path().join("b/start_model/model.safetensors"),
    );
    assert_eq!(
        d, 0.0,
        "resumed run differs from the uninterrupted one: max abs diff {d}"
    );
    let (la, lb) = (
        read_jsonl(&env.path().join("a/start_model/log.jsonl")),
        read_jsonl(&log_b),
    );
    assert_eq!(la[2]["test_acc"], lb[2]["test_acc"]);
    assert_eq!(
        la[2]["lr"], lb[2]["lr"],
        "the learning-rate schedule must continue, not restart"
    );
}

/// One endpoint, 3000 images, one thread: a few seconds per epoch.
fn one_endpoint(exp: &str, epochs: &'static str) -> Vec<String> {
    [
        "train-endpoints",
        "--exp",
        exp,
        "--models",
        "1",
        "--threads",
        "1",
        "--train-subset",
        "3000",
        "--test-subset",
        "200",
        "--batch-size",
        "32",
        "--epochs",
        epochs,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn interruption_right_after_a_checkpoint_keeps_every_epoch_in_the_log() {
    // Killed as soon as the first state.safetensors lands (before that
    // epoch's log line is appended), the resumed run must still log epochs 1, 2, 3.
    let env = TestEnv::new();
    let args = one_endpoint(&env.p("e"), "3");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = env.path().join("e/start_model");
    let mut child = env.spawn(&args, "k");
    let hit = wait_for_every(Duration::from_secs(300), Duration::from_millis(1), || {
        dir.join("state.safetensors").exists()
    });
    child.kill().ok();
    child.wait().unwrap();
    assert!(hit, "no checkpoint was ever written");
    let (logged, saved) = (
        line_count(&dir.join("log.jsonl")),
        meta_epoch(&dir.join("state.safetensors")),
    );
    if logged >= saved {
        eprintln!("note: the kill came after the log line (log {logged}, state epoch {saved}); nothing to check");
    }
    let mut resume = args.clone();
    resume.push("--resume");
    env.ok(&resume);
    assert_eq!(meta_epoch(&dir.join("model.safetensors")), 3);
    assert_eq!(
        log_epochs(&dir.join("log.jsonl")),
        vec![1, 2, 3],
        "log.jsonl must list every epoch once after --resume"
    );
}

#[test]
fn interruption_during_the_final_save_leaves_a_current_model_file() {
    // Each epoch writes log.jsonl, then model.safetensors, then
    // state.safetensors (the commit point for --resume). Kill the run as soon
    // as the last epoch's log line appears, i.e. somewhere inside that
    // sequence: whatever was written, --resume must end with the model file,
    // the state and the log all at the final epoch and agreeing.
    let env = TestEnv::new();
    let exp = env.p("e");
    let args = one_endpoint(&exp, "2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = env.path().join("e/start_model");
    let (state, model, log) = (
        dir.join("state.safetensors"),
        dir.join("model.safetensors"),
        dir.join("log.jsonl"),
    );
    let mut child = env.spawn(&args, "final");
    let hit = wait_for_every(Duration::from_secs(300), Duration::from_millis(1), || {
        line_count(&log) >= 2
    });
    child.kill().ok();
    child.wait().unwrap();
    assert!(hit, "epoch 2 never finished");
    let state_epoch = if state.exists() {
        meta_epoch(&state)
    } else {
        0
    };
    eprintln!(
        "note: killed with the state at epoch {state_epoch} (epoch 1 means inside the final save)"
    );
    let mut resume = args.clone();
    resume.push("--resume");
    env.ok(&resume);
    assert_eq!(meta_epoch(&state), 2);
    assert_eq!(
        meta_epoch(&model),
        2,
        "after --resume, model.safetensors must hold the final epoch"
    );
    let (st, md) = (tensors(&state), tensors(&model));
    for (k, t) in &md {
        assert_eq!(
            max_abs_diff(t, &st[k]),
            0.0,
            "{k}: model.safetensors differs from the final state"
        );
    }
    assert_eq!(log_epochs(&log), vec![1, 2]);
}

#[test]
fn rerunning_without_resume_is_refused_and_changes_nothing() {
    let env = TestEnv::new();
    let e = env.p("e");
    let args = [
        "train-endpoints",
        "--exp",
        &e,
        "--models",
        "1",
        "--train-subset",
        "500",
        "--test-subset",
        "100",
        "--epochs",
        "1",
    ];
    env.ok(&args);
    let dir = env.path().join("e/start_model");
    let before = snapshot(&dir);
    let t_before = mtime(&dir.join("model.safetensors"));
    std::thread::sleep(Duration::from_millis(20));

    let err = assert_clean_error(&env.modeconn(&args), "rerun without --resume");
    assert!(
        err.contains("--resume"),
        "the message should point at --resume:\n{err}"
    );
    assert!(
        err.contains("start_model"),
        "the message should name the directory:\n{err}"
    );
    // Also with more epochs (a different run): still refused.
    let mut more = args.to_vec();
    let last = more.len() - 1;
    more[last] = "2";
    let err = assert_clean_error(
        &env.modeconn(&more),
        "rerun with more epochs without --resume",
    );
    assert!(err.contains("--resume"), "{err}");

    assert_eq!(
        snapshot(&dir),
        before,
        "start_model/ was modified by a refused run"
    );
    assert_eq!(mtime(&dir.join("model.safetensors")), t_before);
}

#[test]
fn model_files_are_pytorch_state_dicts_with_metadata() {
    let path = fixture_exp().join("start_model/model.safetensors");
    let buf = fs::read(&path).unwrap();
    // Read independently with the safetensors crate.
    let st = safetensors::SafeTensors::deserialize(&buf).expect("valid safetensors");
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    assert_eq!(
        names, SEED_CONVNET_KEYS,
        "keys must be the PyTorch state-dict names"
    );

    let ours = tensors(&path);
    assert_eq!(ours.keys().cloned().collect::<Vec<_>>(), names);
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = &ours[&name];
        assert_eq!(t.size(), shape, "{name}");
        assert_eq!(t.kind(), Kind::Float, "{name}");
        let raw: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mine: Vec<f32> = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        assert_eq!(raw, mine, "{name}: values differ between the two readers");
        assert!(raw.iter().any(|&v| v != 0.0), "{name} is all zeros");
    }
    // Shapes in PyTorch layouts: conv [out, in, kh, kw], linear [out, in].
    assert_eq!(ours["features.0.weight"].size(), vec![16, 1, 3, 3]);
    assert_eq!(ours["classifier.2.weight"].size(), vec![256, 1024]);
    assert_eq!(ours["classifier.5.weight"].size(), vec![10, 256]);

    let (_, header) = safetensors::SafeTensors::read_metadata(&buf).unwrap();
    let md = header.metadata().as_ref().expect("a __metadata__ section");
    assert_eq!(md.get("format").map(String::as_str), Some("pt"));
    let meta: Value = serde_json::from_str(md.get("modeconn").expect("modeconn metadata")).unwrap();
    assert_eq!(meta["arch"]["arch"], "seed-convnet");
    assert_eq!(meta["arch"]["in_channels"], 1);
    assert_eq!(meta["arch"]["num_classes"], 10);
    assert_eq!(meta["dataset"], "fashion-mnist");
    assert_eq!(meta["epoch"], 3);
    assert_eq!(meta["classes"].as_array().map(Vec::len), Some(10));
}

#[test]
fn missing_dataset_names_the_paths_searched_and_the_download_command() {
    let env = TestEnv::new();
    // A --data-dir that exists but holds no CIFAR-10.
    let empty = env.p("nodata");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &env.p("e"),
        "--dataset",
        "cifar10",
        "--data-dir",
        &empty,
    ]);
    let err = assert_clean_error(&out, "missing cifar10");
    let under = format!("{empty}/cifar10");
    for p in [empty.as_str(), under.as_str()] {
        assert!(
            err.lines().any(|l| l.trim() == p),
            "the search path {p} is not listed:\n{err}"
        );
    }
    // An explicit --data-dir is the only place searched.
    for p in ["data/cifar10", "/usr/share/datasets/cifar10"] {
        assert!(
            !err.lines().any(|l| l.trim() == p),
            "{p} was searched:\n{err}"
        );
    }
    assert!(err.contains("modeconn download cifar10"), "{err}");
    assert!(
        !env.path().join("e").exists(),
        "a failed run should not create the experiment"
    );
}

#[test]
fn truncated_idx_file_is_named_in_the_error() {
    let env = TestEnv::new();
    let dir = env.path().join("fm");
    fs::create_dir_all(&dir).unwrap();
    for name in [
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        fs::copy(Path::new(FASHION_DIR).join(name), dir.join(name)).unwrap();
    }
    // A valid header for 60000 28x28 images, followed by only 1000 bytes.
    let bad = dir.join("train-images-idx3-ubyte");
    let mut fh = fs::File::create(&bad).unwrap();
    for w in [0x0803u32, 60000, 28, 28] {
        fh.write_all(&w.to_be_bytes()).unwrap();
    }
    fh.write_all(&[0u8; 1000]).unwrap();
    drop(fh);
    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &env.p("e"),
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        dir.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    let err = assert_clean_error(&out, "truncated IDX");
    assert!(
        err.contains(bad.to_str().unwrap()),
        "the message should name {}:\n{err}",
        bad.display()
    );
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn invalid_learning_rate_is_refused() {
    let env = TestEnv::new();
    // `--lr=-1` reaches modeconn's own validation.
    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &env.p("e"),
        "--lr=-1",
        "--train-subset",
        "200",
        "--test-subset",
        "100",
    ]);
    let err = assert_clean_error(&out, "--lr=-1");
    assert!(err.contains("--lr") && err.contains("positive"), "{err}");
    assert!(
        !env.path().join("e/start_model").exists(),
        "nothing should be trained with a negative learning rate"
    );
}

#[test]
fn negative_learning_rate_as_separate_argument_gets_a_clear_message() {
    // `--lr -1` is how people type it. Whatever rejects it (clap or the
    // validation) must say that --lr is the problem; a bare "unexpected
    // argument '-1'" does not.
    let env = TestEnv::new();
    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &env.p("e"),
        "--lr",
        "-1",
        "--train-subset",
        "200",
        "--test-subset",
        "100",
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "--lr -1 was accepted");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error:"), "{err}");
    assert!(
        err.contains("--lr"),
        "the message does not name --lr:\n{err}"
    );
}

#[test]
fn unknown_architecture_is_a_usage_error_listing_the_choices() {
    let env = TestEnv::new();
    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &env.p("e"),
        "--arch",
        "resnet9000",
    ]);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    // Argument-parsing errors exit with clap's usage-error status 2 (not 1).
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error:"), "{err}");
    assert!(
        err.contains("resnet9000") && err.contains("--arch"),
        "{err}"
    );
    for a in ["seed-convnet", "convfc", "vgg16", "preresnet", "wrn"] {
        assert!(err.contains(a), "the choice {a} is not listed:\n{err}");
    }
}

#[test]
fn diverging_loss_stops_with_the_epoch_and_a_lower_lr() {
    // lr 1e6 makes the first epoch's loss infinite or NaN.
    let env = TestEnv::new();
    let e = env.p("e");
    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &e,
        "--models",
        "1",
        "--train-subset",
        "500",
        "--test-subset",
        "100",
        "--epochs",
        "2",
        "--lr",
        "1e6",
    ]);
    let msg = assert_clean_error(&out, "a diverged run");
    assert!(
        msg.contains("epoch 1") && msg.contains("lower --lr"),
        "{msg}"
    );
    assert!(
        !env.path().join("e/start_model/model.safetensors").exists(),
        "no checkpoint of a diverged epoch may be written"
    );
}

/// `--final-dropout P --final-epochs N` trains the last N epochs at dropout P: the epochs before
/// are those of a plain run to the last digit, the last one differs; config.json records it and
/// the architecture (the saved networks') keeps its own dropout; a span longer than the run is
/// refused before anything is written.
#[test]
fn final_dropout_changes_only_the_last_epochs() {
    let env = TestEnv::new();
    let train = |exp: &str, extra: &[&str]| {
        let mut a = one_endpoint(exp, "2");
        a.extend(["--save-every", "1"].iter().map(|s| s.to_string()));
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        env.ok(&a);
        env.path().join(exp)
    };
    let plain = train("plain", &[]);
    let late = train("late", &["--final-dropout", "0.0", "--final-epochs", "1"]);
    let snap = |exp: &Path, n: usize| exp.join(format!("start_model/epoch-{n}/model.safetensors"));
    assert_eq!(
        max_diff_files(&snap(&plain, 1), &snap(&late, 1)),
        0.0,
        "the first epoch is the plain run's"
    );
    assert!(
        max_diff_files(&snap(&plain, 2), &snap(&late, 2)) > 1e-4,
        "the last epoch at dropout 0 trained the same weights"
    );
    let (cp, cl) = (
        read_json(&plain.join("config.json")),
        read_json(&late.join("config.json")),
    );
    assert_eq!(cl["train"]["final_dropout"]["dropout"], 0.0);
    assert_eq!(cl["train"]["final_dropout"]["epochs"], 1);
    assert!(cp["train"].get("final_dropout").is_none());
    assert_eq!(cl["arch"], cp["arch"], "the architecture keeps its dropout");
    // The report says why the late run's training curve steps at its last epoch.
    let says = "trained their last 1 of 2 epochs (from epoch 2) at dropout 0";
    for (exp, expected) in [(&plain, false), (&late, true)] {
        env.ok(&["plot", "--exp", &exp.display().to_string()]);
        let html = fs::read_to_string(exp.join("report.html")).unwrap();
        assert_eq!(html.contains(says), expected, "{}", exp.display());
    }
    let mut a = one_endpoint(&env.p("bad"), "2");
    a.extend(
        ["--final-dropout", "0.4", "--final-epochs", "3"]
            .iter()
            .map(|s| s.to_string()),
    );
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = assert_clean_error(&env.modeconn(&a), "final epochs beyond the run");
    assert!(
        err.contains("--final-epochs must be between 1 and --epochs (2)"),
        "{err}"
    );
    assert!(
        !env.path().join("bad").exists(),
        "a refused run writes nothing"
    );
}
