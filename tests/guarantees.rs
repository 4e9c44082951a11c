//! What modeconn guarantees about an experiment: one writer at a time, a
//! refused command changes nothing, and `--resume` continues a run only with
//! the settings it was started with.

use std::fs;
use std::time::Duration;

use crate::common::*;

#[test]
fn a_refused_command_leaves_the_experiment_as_it_was() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let before = experiment_files(&exp);

    // Endpoints exist and --resume is missing: refused before any write.
    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &e,
        "--threads",
        "1",
        "--train-subset",
        "300",
        "--epochs",
        "1",
        "--lr",
        "0.5",
        "--seed",
        "9",
    ]);
    let err = assert_clean_error(&out, "train-endpoints over a finished run");
    assert!(
        err.contains("already holds a run") && err.contains("--resume"),
        "{err}"
    );
    assert_unchanged(&before, &exp, "train-endpoints without --resume");

    // The same for a curve.
    let out = env.modeconn(&["fit-curve", "--exp", &e, "--epochs", "1", "--wd", "0.3"]);
    let err = assert_clean_error(&out, "fit-curve over a finished fit");
    assert!(err.contains("already holds a curve fit"), "{err}");
    assert_unchanged(&before, &exp, "fit-curve without --resume");

    // A step that needs an experiment does not create one.
    let missing = env.p("missing");
    let out = env.modeconn(&["eval", "--exp", &missing, "--points", "3"]);
    assert_clean_error(&out, "eval of a missing experiment");
    assert!(!Path::new(&missing).exists(), "eval created {missing}");
}

#[test]
fn resume_refuses_changed_settings_and_names_each_field() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let before = experiment_files(&exp);

    let mut a = vec!["train-endpoints", "--exp", &e, "--resume"];
    a.extend_from_slice(FIXTURE_TRAIN);
    a.extend_from_slice(&["--lr", "0.5", "--seed", "9"]);
    let out = env.modeconn(&a);
    let err = assert_clean_error(&out, "resume with another lr and seed");
    assert!(
        err.contains("optim.lr: saved 0.1, requested 0.5")
            && err.contains("seed: saved 1, requested 9"),
        "{err}"
    );
    assert_unchanged(&before, &exp, "a refused resume");

    let mut a = vec!["train-endpoints", "--exp", &e, "--resume"];
    let changed: Vec<&str> = FIXTURE_TRAIN
        .iter()
        .map(|s| if *s == "3000" { "2000" } else { s })
        .collect();
    a.extend_from_slice(&changed);
    let err = assert_clean_error(&env.modeconn(&a), "resume on another training subset");
    assert!(
        err.contains("train_subset: saved 3000, requested 2000"),
        "{err}"
    );

    let out = env.modeconn(&[
        "fit-curve",
        "--exp",
        &e,
        "--resume",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--lr",
        "0.2",
    ]);
    let err = assert_clean_error(&out, "curve resume with another lr");
    assert!(
        err.contains("'curve' settings") && err.contains("lr: saved"),
        "{err}"
    );
    assert_unchanged(&before, &exp, "refused resumes");

    // The same settings resume (here: nothing left to do).
    let mut a = vec!["train-endpoints", "--exp", &e, "--resume"];
    a.extend_from_slice(FIXTURE_TRAIN);
    env.ok(&a);
}

#[test]
fn a_second_process_on_one_experiment_is_refused_with_the_first_one_s_pid() {
    let env = TestEnv::new();
    let e = env.p("e");
    let args = [
        "train-endpoints",
        "--exp",
        &e,
        "--threads",
        "1",
        "--train-subset",
        "6000",
        "--test-subset",
        "500",
        "--epochs",
        "20",
        "--models",
        "1",
    ];
    let mut first = env.spawn(&args, "first");
    let lock = env.path().join("e/.lock");
    let holds = wait_for(Duration::from_secs(60), || {
        fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("PID"))
    });
    assert!(holds, "the first process never took the lock");
    let config_before = fs::read(env.path().join("e/config.json")).ok();

    let out = env.modeconn(&[
        "train-endpoints",
        "--exp",
        &e,
        "--threads",
        "1",
        "--train-subset",
        "300",
        "--epochs",
        "1",
        "--seed",
        "7",
        "--models",
        "1",
    ]);
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().ok();
    first.wait().ok();
    assert!(
        still_running,
        "the first process ended before the second started: nothing was tested"
    );
    let err = assert_clean_error(&out, "a second writer");
    assert!(
        err.contains("another modeconn process") && err.contains(&format!("PID {}", first.id())),
        "{err}"
    );
    let config_after = fs::read(env.path().join("e/config.json")).ok();
    assert!(
        config_before.is_none() || config_after == config_before,
        "the refused process rewrote config.json"
    );

    // Killed holders leave no lock behind: the next command proceeds.
    let out = env.modeconn(&["plot", "--exp", &e]);
    assert!(
        !stderr(&out).contains("another modeconn process"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_checks_every_step_s_flags_before_the_first_step() {
    let env = TestEnv::new();
    for (flag, value, says) in [
        ("--points", "1", "--points must be at least 2"),
        ("--points", "0", "--points must be at least 2"),
        ("--curve-lr", "0", "--curve-lr must be a positive number"),
        (
            "--curve-lr",
            "-0.05",
            "--curve-lr must be a positive number",
        ),
        ("--ensemble", "0", "--ensemble must be at least 1"),
        ("--grid", "1", "--grid must be at least 2"),
        ("--bends", "2", "--bends must be at least 3"),
        (
            "--final-dropout",
            "1.5",
            "--final-dropout must be in [0, 1)",
        ),
    ] {
        let e = env.p(&format!("run{}", flag.trim_start_matches('-')));
        let out = env.modeconn_within(
            Duration::from_secs(30),
            &[
                "run",
                "--exp",
                &e,
                "--train-subset",
                "300",
                "--test-subset",
                "100",
                flag,
                value,
            ],
        );
        let err = assert_clean_error(&out, &format!("run {flag} {value}"));
        assert!(
            err.contains(says) && err.contains("nothing was run"),
            "{flag} {value}: {err}"
        );
        assert!(!Path::new(&e).exists(), "run {flag} {value} created {e}");
    }
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let out = env.modeconn(&["fit-curve", "--exp", &e, "--bends", "2", "--epochs", "1"]);
    let err = assert_clean_error(&out, "fit-curve --bends 2");
    assert!(err.contains("--bends must be at least 3"), "{err}");
}

/// `plot` writes through the program's one atomic writer: a link planted
/// where the report, a figure or their old fixed temporary names belong is
/// replaced, never followed, and the file it points to stays as it was.
#[test]
fn plot_never_writes_through_a_planted_link() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let outside = env.path().join("outside.txt");
    fs::write(&outside, "precious").unwrap();
    fs::create_dir_all(exp.join("figures")).unwrap();
    let planted = [
        "report.html.tmp",
        "report.html",
        "figures/training.png.tmp",
        "figures/training.svg",
    ];
    for name in planted {
        std::os::unix::fs::symlink(&outside, exp.join(name)).unwrap();
    }
    env.ok(&["plot", "--exp", &exp.display().to_string()]);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "precious");
    for name in ["report.html", "figures/training.svg"] {
        let m = fs::symlink_metadata(exp.join(name)).unwrap();
        assert!(m.file_type().is_file(), "{name} is still a link");
    }
}
