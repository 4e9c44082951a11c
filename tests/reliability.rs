//! Guarantees of the third reliability round: an explicit input is used or
//! refused, never replaced; the experiment's shared sections are not mixed;
//! results that cannot be true are errors; every flag is checked before any
//! data is read; sizes are bounded before anything is allocated.

use std::fs;
use std::os::unix::fs::symlink;

use crate::common::*;

/// `--data-dir` that cannot serve the dataset is refused, naming it, and is
/// never replaced by the system copy that the search would otherwise find.
#[test]
fn an_unusable_data_dir_is_refused_never_replaced() {
    require_fashion();
    let env = TestEnv::new();
    let root = env.path().join("dirs");
    fs::create_dir_all(&root).unwrap();
    let mk = |name: &str| {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        d
    };
    let empty = mk("empty");
    let labels = mk("labels-only");
    for f in ["train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        fs::copy(format!("{FASHION_DIR}/{f}"), labels.join(f)).unwrap();
    }
    let misnamed = mk("misnamed");
    fs::copy(
        format!("{FASHION_DIR}/train-images-idx3-ubyte.gz"),
        misnamed.join("train-images.gz"),
    )
    .unwrap();
    let fifo = mk("fifo");
    let dir_in_place = mk("dir");
    fs::create_dir_all(dir_in_place.join("train-images-idx3-ubyte.gz")).unwrap();
    let dangling = mk("dangling");
    symlink(
        "/nonexistent/x",
        dangling.join("train-images-idx3-ubyte.gz"),
    )
    .unwrap();
    let file = root.join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(fifo.join("train-images-idx3-ubyte.gz"))
        .status()
        .unwrap();
    assert!(st.success());
    for d in [
        &empty,
        &labels,
        &misnamed,
        &fifo,
        &dir_in_place,
        &dangling,
        &file,
    ] {
        let exp = env.p("e");
        let ds = d.to_str().unwrap();
        let out = env.modeconn(&[
            "train-endpoints",
            "--exp",
            &exp,
            "--data-dir",
            ds,
            "--train-subset",
            "64",
            "--test-subset",
            "64",
            "--epochs",
            "1",
        ]);
        let msg = assert_clean_error(&out, ds);
        assert!(msg.contains(ds), "the refusal names {ds}: {msg}");
        assert!(
            !Path::new(&exp).join("config.json").exists(),
            "{ds}: nothing may be written"
        );
    }
}

/// Each step records the data it trained on in its own section: a curve or
/// an FGE run on other subsets leaves the endpoints' record (and their
/// `--resume`) alone, and FGE is resumed against its own subsets only.
#[test]
fn each_step_keeps_its_own_data_settings() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    fs::remove_dir_all(exp.join("curve_model")).unwrap();
    let data_before = read_json(&exp.join("config.json"))["data"].clone();
    env.ok(&[
        "fit-curve",
        "--exp",
        &e,
        "--epochs",
        "1",
        "--train-subset",
        "300",
        "--test-subset",
        "100",
    ]);
    let cfg = read_json(&exp.join("config.json"));
    assert_eq!(
        cfg["data"], data_before,
        "the endpoints' data section was rewritten"
    );
    assert_eq!(cfg["curve_data"]["train_subset"], 300);
    // The endpoints' own resume still matches their settings.
    let mut a = vec!["train-endpoints", "--exp", &e, "--models", "2", "--resume"];
    a.extend_from_slice(FIXTURE_TRAIN);
    env.ok(&a);
    // FGE run on 300 images: resumed on the endpoints' 3,000 it is refused,
    // on its own 300 it is not.
    let fge = |subset: &'static str| -> Vec<String> {
        [
            "fge",
            "--exp",
            &e,
            "--epochs",
            "2",
            "--cycle",
            "2",
            "--threads",
            "1",
            "--train-subset",
            subset,
            "--test-subset",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    env.ok(&refs(&fge("300")));
    let cfg = read_json(&exp.join("config.json"));
    assert_eq!(
        cfg["data"], data_before,
        "fge rewrote the endpoints' data section"
    );
    assert_eq!(cfg["fge_data"]["train_subset"], 300);
    let mut again = fge("3000");
    again.push("--resume".into());
    let before = experiment_files(&exp);
    let msg = assert_clean_error(&env.modeconn(&refs(&again)), "fge --resume on other data");
    assert!(msg.contains("train_subset"), "{msg}");
    assert_unchanged(&before, &exp, "a refused fge --resume");
    let mut same = fge("300");
    same.push("--resume".into());
    env.ok(&refs(&same));
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A `run` refused because the experiment holds other settings changes no
/// byte: it adds no `preset` section to an experiment made step by step.
#[test]
fn a_refused_run_writes_no_preset() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let before = experiment_files(&exp);
    let out = env.modeconn(&[
        "run",
        "--exp",
        &e,
        "--train-subset",
        "3000",
        "--test-subset",
        "1000",
        "--epochs",
        "5",
    ]);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        !msg.contains("panicked") && msg.contains("error:") && msg.contains("epochs"),
        "{msg}"
    );
    assert_unchanged(&before, &exp, "a refused run");
}

/// Results that cannot be true are errors that name the cause, never a
/// table of inf and NaN with exit 0.
#[test]
fn impossible_results_are_errors() {
    let env = TestEnv::new();
    let eval = |e: &str| {
        env.modeconn(&[
            "eval",
            "--exp",
            e,
            "--points",
            "3",
            "--train-subset",
            "200",
            "--test-subset",
            "200",
        ])
    };
    // A normalisation std of 0.
    let exp = env.copy_of_fixture("std0");
    let e = exp.display().to_string();
    rewrite(&exp.join("curve_model/curve.safetensors"), |_, m| {
        let m = m.as_mut().unwrap();
        m.norm_std = vec![0.0; m.norm_std.len().max(1)];
        m.norm_mean.resize(m.norm_std.len(), 0.5);
    });
    let msg = assert_clean_error(&eval(&e), "std 0");
    assert!(
        msg.contains("curve_model/curve.safetensors") && msg.contains("std"),
        "{msg}"
    );
    // A weight of 3e38: every loss overflows.
    let exp = env.copy_of_fixture("huge");
    let e = exp.display().to_string();
    rewrite(&exp.join("curve_model/curve.safetensors"), |t, _| {
        for (_, w) in t.iter_mut().filter(|(n, _)| n.ends_with("weight")) {
            *w = w.ones_like() * 3e38;
        }
    });
    let out = eval(&e);
    let msg = assert_clean_error(&out, "3e38");
    assert!(
        !stdout(&out).contains("inf") && !stdout(&out).contains("NaN"),
        "{}",
        stdout(&out)
    );
    assert!(msg.contains("cannot be right"), "{msg}");
    // Endpoints that see their inputs differently are not joined.
    let exp = env.copy_of_fixture("prep");
    let e = exp.display().to_string();
    fs::remove_dir_all(exp.join("curve_model")).unwrap();
    rewrite(&exp.join("end_model/model.safetensors"), |_, m| {
        let m = m.as_mut().unwrap();
        m.normalize = modeconn::loader::Normalize::None;
        m.norm_mean.clear();
        m.norm_std.clear();
    });
    let msg = assert_clean_error(
        &env.modeconn(&["fit-curve", "--exp", &e, "--epochs", "0"]),
        "standard vs none",
    );
    assert!(
        msg.contains("normalisation") && msg.contains("end_model"),
        "{msg}"
    );
}

/// A curve beside endpoints that changed since it was fitted is refused by
/// every reader of `curve_model/`, naming the endpoint, and the report says so.
#[test]
fn a_stale_curve_is_refused_by_every_reader() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    // The curve's config names the fixture's own files; point it at this copy.
    let cfg = exp.join("config.json");
    let mut v = read_json(&cfg);
    for (key, dir) in [("start", "start_model"), ("end", "end_model")] {
        v["curve"][key] = serde_json::json!(exp.join(dir).join("model.safetensors"));
    }
    fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    let fresh = [
        vec![
            "eval",
            "--exp",
            &e,
            "--points",
            "3",
            "--test-subset",
            "100",
            "--train-subset",
            "100",
        ],
        vec![
            "landscape",
            "--exp",
            &e,
            "--grid",
            "3",
            "--test-subset",
            "100",
            "--train-subset",
            "100",
        ],
    ];
    env.ok(&fresh[0]);
    // "Retrained": other bytes in the start endpoint.
    rewrite(&exp.join("start_model/model.safetensors"), |t, _| {
        let (_, w) = t.iter_mut().find(|(n, _)| n.ends_with("weight")).unwrap();
        *w = &*w * 1.01;
    });
    for args in &fresh {
        let msg = assert_clean_error(&env.modeconn(args), args[0]);
        assert!(
            msg.contains("fitted between other endpoints") && msg.contains("start_model"),
            "{}: {msg}",
            args[0]
        );
    }
    let out = env.ok(&["plot", "--exp", &e]);
    let html = fs::read_to_string(exp.join("report.html")).unwrap();
    assert!(
        html.contains("fitted between other endpoints"),
        "{}",
        stderr(&out)
    );
}

/// A curve fit is resumed whatever the spelling of the experiment's path,
/// and after the experiment was moved (its config.json naming the old place).
#[test]
fn resume_does_not_depend_on_how_a_path_is_spelled() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("MVs");
    let cfg = exp.join("config.json");
    let mut v = read_json(&cfg);
    for (key, dir) in [("start", "start_model"), ("end", "end_model")] {
        v["curve"][key] = serde_json::json!(format!("/gone/old/MVs/{dir}/model.safetensors"));
    }
    v["curve"]["epochs"] = serde_json::json!(3);
    fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    for (spelling, epochs) in [("MVs//", "3"), ("./MVs/", "4")] {
        let out = env.modeconn(&[
            "fit-curve",
            "--exp",
            spelling,
            "--epochs",
            epochs,
            "--batch-size",
            "32",
            "--resume",
        ]);
        // The first resume finishes the third epoch; the second asks for
        // a fourth, which is another setting and is refused by name.
        if epochs == "3" {
            assert_ok(&out, &["fit-curve", "--exp", spelling]);
        } else {
            let msg = assert_clean_error(&out, spelling);
            assert!(
                msg.contains("epochs: saved 3, requested 4") && !msg.contains("start"),
                "{msg}"
            );
        }
    }
    assert_eq!(
        log_epochs(&exp.join("curve_model/log.jsonl")),
        vec![1, 2, 3]
    );
    let saved = read_json(&cfg);
    assert_eq!(saved["curve"]["start"], "start_model/model.safetensors");
}

/// Every flag is checked before any data is read and before any training:
/// each refusal below comes with an empty --data-dir, so a check made after
/// reading the data would name the data instead of the flag. Sizes that
/// cannot fit in memory are refused with the estimate, never an abort.
#[test]
fn flags_are_checked_before_data_and_sizes_before_allocation() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let empty = env.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let d = empty.display().to_string();
    let fresh = env.p("fresh");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["train-endpoints", "--exp", &fresh, "--widen", "100000"],
            "--widen",
        ),
        (
            vec!["train-endpoints", "--exp", &fresh, "--dropout", "1.5"],
            "--dropout",
        ),
        (
            vec![
                "train-endpoints",
                "--exp",
                &fresh,
                "--arch",
                "seed-convnet",
                "--depth",
                "20",
            ],
            "--depth",
        ),
        (
            vec![
                "train-endpoints",
                "--exp",
                &fresh,
                "--arch",
                "preresnet",
                "--depth",
                "8",
                "--dropout",
                "0.3",
            ],
            "--dropout",
        ),
        (
            vec!["run", "--exp", &fresh, "--eval-train-subset", "0"],
            "--eval-train-subset",
        ),
        (
            vec!["run", "--exp", &fresh, "--landscape-train-subset", "0"],
            "--landscape-train-subset",
        ),
        (
            vec!["run", "--exp", &fresh, "--landscape-test-subset", "0"],
            "--landscape-test-subset",
        ),
        (
            vec!["run", "--exp", &fresh, "--bends", "1000000"],
            "--bends",
        ),
        (
            vec!["run", "--exp", &fresh, "--grid", "1000000"],
            "--grid 1000000",
        ),
        (
            vec!["fit-curve", "--exp", &e, "--arch", "vgg16"],
            "--arch vgg16",
        ),
        (
            vec!["fit-curve", "--exp", &e, "--bends", "100000000"],
            "--bends",
        ),
        (
            vec!["eval", "--exp", &e, "--points", "100000000000"],
            "--points 100000000000",
        ),
        (
            vec!["eval", "--exp", &e, "--ensemble", "100000000000"],
            "--ensemble 100000000000",
        ),
        (
            vec!["landscape", "--exp", &e, "--grid", "100000"],
            "--grid 100000",
        ),
    ];
    let before = experiment_files(&exp);
    for (mut args, flag) in cases {
        args.extend_from_slice(&["--data-dir", &d]);
        let out = env.modeconn_within(std::time::Duration::from_secs(60), &args);
        let msg = assert_clean_error(&out, &args.join(" "));
        assert!(
            msg.contains(flag) && !msg.contains("holds no"),
            "{}: {msg}",
            args.join(" ")
        );
        if flag.starts_with("--grid")
            || flag.starts_with("--points")
            || flag.contains("--ensemble")
            || flag == "--bends"
            || flag == "--widen"
        {
            assert!(msg.contains("memory") && msg.contains("available"), "{msg}");
        }
    }
    assert!(
        !Path::new(&fresh).exists(),
        "a refused command created {fresh}"
    );
    assert_unchanged(&before, &exp, "refused commands");
}

/// A flag is honoured or refused, never accepted and ignored: each of these
/// used to exit 0 having done something else than asked.
#[test]
fn flags_that_would_be_ignored_are_refused() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let fresh = env.p("fresh");
    let missing_parent = env.path().join("nonexistent/x/y.safetensors");
    let mp = missing_parent.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["train-endpoints", "--exp", &fresh, "--epochs", "0"],
            "--epochs",
        ),
        (
            vec![
                "train-endpoints",
                "--exp",
                &fresh,
                "--train-subset",
                "100000",
            ],
            "at most 60000",
        ),
        (
            vec!["eval", "--exp", &e, "--ensemble", "3", "--points", "5"],
            "--points",
        ),
        (
            vec!["eval", "--exp", &e, "--normalize", "standard"],
            "--normalize standard",
        ),
        (
            vec![
                "fit-curve",
                "--exp",
                &e,
                "--init-bend",
                "1=a.pt",
                "--init-bend",
                "1=b.pt",
            ],
            "given twice",
        ),
        (
            vec!["export", "--exp", &e, "--t", "0.5", "--out", &mp],
            "does not exist",
        ),
    ];
    let before = experiment_files(&exp);
    for (args, what) in cases {
        let out = env.modeconn_within(std::time::Duration::from_secs(60), &args);
        let msg = stderr(&out);
        assert!(
            out.status.code().is_some_and(|c| c != 0)
                && !msg.contains("panicked")
                && msg.contains(what),
            "{}: {msg}",
            args.join(" ")
        );
    }
    assert!(!Path::new(&fresh).exists());
    assert!(
        !env.path().join("nonexistent").exists(),
        "export created the missing directories"
    );
    assert_unchanged(&before, &exp, "refused commands");
}

/// An experiment folder made a link to an outside folder is refused by
/// every writer, which writes nothing outside; a FIFO in place of the lock
/// is named as such.
#[test]
fn outputs_never_follow_a_planted_folder_link() {
    let env = TestEnv::new();
    let outside = env.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "eval",
            vec![
                "eval",
                "--points",
                "3",
                "--train-subset",
                "100",
                "--test-subset",
                "100",
            ],
        ),
        ("figures", vec!["plot"]),
        (
            "end_model_aligned",
            vec!["align", "--train-subset", "100", "--test-subset", "100"],
        ),
    ];
    for (folder, cmd) in cases {
        let exp = env.copy_of_fixture(folder);
        let e = exp.display().to_string();
        if folder == "figures" {
            // Something to draw.
            env.ok(&[
                "eval",
                "--exp",
                &e,
                "--points",
                "3",
                "--train-subset",
                "100",
                "--test-subset",
                "100",
            ]);
        }
        let _ = fs::remove_dir_all(exp.join(folder));
        symlink(&outside, exp.join(folder)).unwrap();
        let mut args = cmd.clone();
        args.insert(1, "--exp");
        args.insert(2, &e);
        let msg = assert_clean_error(&env.modeconn(&args), folder);
        assert!(
            msg.contains("symbolic link") && msg.contains(folder),
            "{msg}"
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{folder}: wrote outside"
        );
    }
    let exp = env.copy_of_fixture("fifo");
    let e = exp.display().to_string();
    let _ = fs::remove_file(exp.join(".lock"));
    let st = std::process::Command::new("mkfifo")
        .arg(exp.join(".lock"))
        .status()
        .unwrap();
    assert!(st.success());
    let msg = assert_clean_error(
        &env.modeconn(&["eval", "--exp", &e, "--points", "3"]),
        "a FIFO as .lock",
    );
    assert!(
        msg.contains(".lock") && msg.contains("not a regular file"),
        "{msg}"
    );
}

/// Refusals speak the user's language: no Rust Debug text, the file that
/// cannot be drawn named, a one-class folder called what it is.
#[test]
fn refusals_name_the_file_and_the_fix() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    // The fixture's fit is complete at 2 epochs of 3 bends.
    let msg = assert_clean_error(
        &env.modeconn(&[
            "fit-curve",
            "--exp",
            &e,
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--bends",
            "4",
            "--resume",
        ]),
        "--resume --bends 4",
    );
    assert!(
        msg.contains("3 bends") && msg.contains("4 bends") && !msg.contains("Some("),
        "{msg}"
    );
    // A degenerate plane.json.
    let ok = env.ok(&[
        "landscape",
        "--exp",
        &e,
        "--grid",
        "3",
        "--train-subset",
        "100",
        "--test-subset",
        "100",
    ]);
    drop(ok);
    let plane = exp.join("landscape/plane.json");
    let mut v = read_json(&plane);
    for k in ["xs", "ys"] {
        v[k] = serde_json::json!([0.0, 0.0, 0.0]);
    }
    for k in ["endpoints", "bends", "curve", "line"] {
        let n = v[k].as_array().unwrap().len();
        v[k] = serde_json::json!(vec![[0.0, 0.0]; n]);
    }
    fs::write(&plane, v.to_string()).unwrap();
    let msg = assert_clean_error(&env.modeconn(&["plot", "--exp", &e]), "degenerate plane");
    assert!(
        msg.contains("landscape/plane.json") && msg.contains("modeconn landscape"),
        "{msg}"
    );
    // An image folder of one class.
    let root = env.path().join("one");
    for split in ["train", "test"] {
        let d = root.join(split).join("cat");
        fs::create_dir_all(&d).unwrap();
        for i in 0..2 {
            image::RgbImage::new(8, 8)
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let r = root.display().to_string();
    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &env.p("f"),
        "--dataset",
        "image-folder",
        "--data-dir",
        &r,
    ]);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("1 class (") && msg.contains("at least 2") && !msg.contains("architecture"),
        "{msg}"
    );
}
