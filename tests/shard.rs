//! `--shard i/n` and `merge`: shards run at once, and their merged parts
//! equal a single run's files to the last digit (the timings aside).

use std::fs;
use std::process::Child;

use crate::common::*;

/// Small data and one thread, so runs are quick and identical across processes.
const SMALL: [&str; 6] = [
    "--train-subset",
    "600",
    "--test-subset",
    "300",
    "--threads",
    "1",
];

fn args<'a>(step: &[&'a str], e: &'a str) -> Vec<&'a str> {
    let mut a = step.to_vec();
    a.extend(["--exp", e]);
    a.extend(SMALL);
    a
}

/// Waits for spawned runs, each within the deadline, and asserts they succeeded.
fn wait_all(env: &TestEnv, children: Vec<(Child, String)>) {
    for (mut c, tag) in children {
        let mut status = None;
        let done = wait_for(deadline(), || {
            status = c.try_wait().expect("waiting for a shard");
            status.is_some()
        });
        if !done {
            c.kill().ok();
            c.wait().ok();
        }
        let err = fs::read_to_string(env.path().join(format!("{tag}.stderr"))).unwrap_or_default();
        assert!(done, "{tag} was still running after the deadline:\n{err}");
        assert!(status.is_some_and(|s| s.success()), "{tag} failed:\n{err}");
    }
}

/// Runs `step` whole on `whole`, and as `n` shards at once on `sharded`.
fn whole_and_shards(env: &TestEnv, step: &[&str], whole: &str, sharded: &str, n: usize) {
    env.ok(&args(step, whole));
    let children = (0..n)
        .map(|i| {
            let s = format!("{i}/{n}");
            let mut a = args(step, sharded);
            a.extend(["--shard", &s]);
            let tag = format!("{}-{i}", step.join("_").replace(' ', ""));
            (env.spawn(&a, &tag), tag)
        })
        .collect();
    wait_all(env, children);
}

/// A JSON result with its timing removed (`seconds` at the top or in `meta`).
fn untimed(p: &Path) -> Value {
    let mut v = read_json(p);
    v.as_object_mut().unwrap().remove("seconds");
    if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
        m.remove("seconds");
    }
    v
}

#[test]
fn merged_shards_equal_a_single_run_to_the_last_digit() {
    let env = TestEnv::new();
    let (w, s) = (env.copy_of_fixture("whole"), env.copy_of_fixture("sharded"));
    let (we, se) = (w.display().to_string(), s.display().to_string());
    let steps: [(&[&str], usize); 5] = [
        (&["landscape", "--grid", "4"], 3),
        (
            &[
                "landscape",
                "--plane",
                "random",
                "--grid",
                "3",
                "--seed",
                "5",
            ],
            2,
        ),
        (&["landscape", "--plane", "random-1d", "--grid", "5"], 2),
        (&["eval", "--points", "5"], 4),
        (&["eval", "--ensemble", "4"], 3),
    ];
    for (step, n) in steps {
        whole_and_shards(&env, step, &we, &se, n);
    }
    assert!(
        s.join("shards/plane/2-of-3.json").is_file() && !s.join("landscape").exists(),
        "shards write only their parts"
    );
    let out = env.ok(&["merge", "--exp", &se]);
    for rel in [
        "landscape/plane.json",
        "landscape/random.json",
        "landscape/random-1d.json",
        "eval/along.json",
        "eval/ensemble.json",
    ] {
        assert!(stdout(&out).contains(rel), "merge did not report {rel}");
        assert_eq!(
            untimed(&w.join(rel)),
            untimed(&s.join(rel)),
            "{rel} differs"
        );
    }
    assert_eq!(
        fs::read(w.join("eval/along.csv")).unwrap(),
        fs::read(s.join("eval/along.csv")).unwrap(),
        "along.csv differs"
    );
    let random = read_json(&s.join("landscape/random.json"));
    assert_eq!(random["meta"]["random"]["seed"], 5);
    assert_eq!(random["meta"]["random"]["bn"], "recompute");
    assert!(!s.join("shards").exists(), "merge left its parts behind");
    // The merged experiment draws like the single run's, random planes included.
    let plot = env.ok(&["plot", "--exp", &se]);
    for fig in ["landscape_random_train_loss", "landscape_random_1d"] {
        assert!(
            s.join(format!("figures/{fig}.png")).is_file(),
            "{fig}: {}",
            stdout(&plot)
        );
    }
}

#[test]
fn merge_refuses_missing_mixed_and_incomplete_parts_by_name() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let shard = |step: &[&str], s: &str| {
        let mut a = args(step, &e);
        a.extend(["--shard", s]);
        env.ok(&a);
    };
    shard(&["eval", "--points", "4"], "0/3");
    shard(&["eval", "--points", "4"], "2/3");
    let err = assert_clean_error(&env.modeconn(&["merge", "--exp", &e]), "missing shard");
    assert!(
        err.contains("shard 1/3 missing") && err.contains("--shard 1/3"),
        "{err}"
    );

    // Shard 1 of other settings: both files and the difference are named.
    shard(&["eval", "--points", "5"], "1/3");
    let err = assert_clean_error(&env.modeconn(&["merge", "--exp", &e]), "mixed settings");
    assert!(
        err.contains("0-of-3.json")
            && err.contains("1-of-3.json")
            && err.contains("points: 0-of-3.json 4, 1-of-3.json 5"),
        "{err}"
    );
    shard(&["eval", "--points", "4"], "1/3");

    // A part with a row not computed (as if its shard was killed).
    let part = exp.join("shards/along/2-of-3.json");
    let mut v = read_json(&part);
    v["line"][1] = Value::Null;
    fs::write(&part, serde_json::to_string(&v).unwrap()).unwrap();
    // The files, the part locks aside (a merge records itself in them).
    let files = || {
        let mut f = experiment_files(&exp);
        f.retain(|(p, _)| p.extension().is_none_or(|x| x != "lock"));
        f
    };
    let before = files();
    let err = assert_clean_error(&env.modeconn(&["merge", "--exp", &e]), "incomplete");
    assert!(
        err.contains("2-of-3.json") && err.contains("Rerun that shard"),
        "{err}"
    );
    assert!(before == files(), "a refused merge changed the experiment");

    // Two splits of one result.
    shard(&["landscape", "--grid", "3"], "0/2");
    shard(&["landscape", "--grid", "3"], "0/3");
    let err = assert_clean_error(
        &env.modeconn(&["merge", "--exp", &e, "--only", "plane"]),
        "two splits",
    );
    assert!(err.contains("two different splits"), "{err}");

    // Rerunning the shard fills its row again; then everything merges.
    shard(&["eval", "--points", "4"], "2/3");
    env.ok(&["merge", "--exp", &e, "--only", "along"]);
    assert!(exp.join("eval/along.json").is_file());
}

#[test]
fn shard_flags_are_checked_before_any_work() {
    let env = TestEnv::new();
    let exp = fixture_exp();
    let e = exp.display().to_string();
    // A shard out of range is refused by the parser (exit code 2), with the rule.
    let out = env.modeconn(&["landscape", "--exp", &e, "--shard", "4/4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("0 <= i < n"), "{}", stderr(&out));
    for (a, needle) in [
        (
            vec!["landscape", "--exp", &e, "--span", "2"],
            "--plane random",
        ),
        (
            vec![
                "landscape",
                "--exp",
                &e,
                "--plane",
                "random",
                "--margin",
                "0.1",
            ],
            "--span",
        ),
        (
            vec![
                "eval",
                "--exp",
                &e,
                "--members",
                "endpoints",
                "--shard",
                "0/2",
            ],
            "--members",
        ),
        (vec!["merge", "--exp", &e], "no parts"),
    ] {
        let err = assert_clean_error(&env.modeconn(&a), &a.join(" "));
        assert!(err.contains(needle), "{}: {err}", a.join(" "));
    }
    assert!(!exp.join("shards").exists(), "a refused step wrote parts");
}

#[test]
fn sharded_endpoints_are_the_single_run_s_networks() {
    let env = TestEnv::new();
    let (w, s) = (env.p("whole"), env.p("sharded"));
    let train = [
        "train-endpoints",
        "--models",
        "3",
        "--epochs",
        "1",
        "--batch-size",
        "64",
    ];
    whole_and_shards(&env, &train, &w, &s, 2);
    let before_merge = Path::new(&s).join("config.json");
    assert!(!before_merge.exists(), "a shard wrote config.json");
    env.ok(&["merge", "--exp", &s]);
    for rel in [
        "config.json",
        "start_model/model.safetensors",
        "model_1/model.safetensors",
        "model_2/state.safetensors",
    ] {
        let (a, b) = (Path::new(&w).join(rel), Path::new(&s).join(rel));
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "{rel} differs"
        );
    }
    // A shard rerun with --resume skips what it finished.
    let mut again = args(&train, &s);
    again.extend(["--shard", "1/2", "--resume"]);
    let out = env.ok(&again);
    assert!(
        stderr(&out).contains("skipped") || stdout(&out).contains("skipped"),
        "{}",
        stderr(&out)
    );
}
