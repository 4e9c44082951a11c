//! `modeconn fge` and `train-endpoints --save-every`: Fast Geometric
//! Ensembling from a trained network, on the one trainer.

use std::fs;

use crate::common::*;

#[test]
fn fge_cycles_the_rate_collects_members_and_evaluates_their_ensemble() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let small = [
        "--train-subset",
        "600",
        "--test-subset",
        "300",
        "--threads",
        "1",
    ];
    let mut args = vec!["fge", "--exp", &e, "--epochs", "4", "--cycle", "2"];
    args.extend_from_slice(&small);
    let out = env.ok(&args);
    // Cycle 2: members after epochs 1 and 3, at the low point of the rate.
    let so = stdout(&out);
    assert!(
        so.contains("fge/member_0") && so.contains("fge/member_1"),
        "{so}"
    );
    let log = check_rates_and_members(&exp);
    // A member's test accuracy is the one logged at its epoch.
    let out = env.ok(&[
        "--json",
        "eval",
        "--exp",
        &e,
        "--members",
        "fge",
        "--test-subset",
        "300",
    ]);
    let v: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let members = v["fge"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for (k, epoch) in [(0, 0), (1, 2)] {
        let (a, b) = (f(&members[k]["acc"]), f(&log[epoch]["test_acc"]));
        assert!((a - b).abs() < 1e-9, "member {k}: {a} vs the log's {b}");
    }
    assert_eq!(v["fge"]["by_size"].as_array().map(Vec::len), Some(2));
    assert!(exp.join("eval/fge.json").is_file());
    // The independent endpoints as an ensemble of their own.
    let out = env.ok(&[
        "--json",
        "eval",
        "--exp",
        &e,
        "--members",
        "endpoints",
        "--test-subset",
        "300",
    ]);
    let v: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(v["endpoints"]["members"].as_array().map(Vec::len), Some(2));
    assert!(exp.join("eval/endpoints.json").is_file());

    check_budget_report(&env, &exp);

    // A second run without --resume is refused; an odd cycle too.
    let err = assert_clean_error(&env.modeconn(&args), "fge over a finished run");
    assert!(err.contains("already holds an FGE run"), "{err}");
    let err = assert_clean_error(
        &env.modeconn(&["fge", "--exp", &e, "--cycle", "3"]),
        "an odd cycle",
    );
    assert!(err.contains("--cycle"), "{err}");
}

/// The logged rates of a cycle-2 run (lr1 and lr2 alternating at epoch
/// starts) and its two members, plain PyTorch state dicts; returns the log.
fn check_rates_and_members(exp: &Path) -> Vec<Value> {
    let log = read_jsonl(&exp.join("fge/log.jsonl"));
    let lrs: Vec<f64> = log.iter().map(|l| f(&l["lr"])).collect();
    assert_eq!(lrs.len(), 4);
    for (i, want) in [0.05, 1e-4, 0.05, 1e-4].iter().enumerate() {
        assert!(
            (lrs[i] - want).abs() < 1e-12,
            "epoch {} starts at lr {}",
            i + 1,
            lrs[i]
        );
    }
    // Members are plain PyTorch state dicts of the network.
    for k in 0..2 {
        let m = exp.join(format!("fge/member_{k}/model.safetensors"));
        let buf = fs::read(&m).unwrap();
        let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        assert_eq!(names, SEED_CONVNET_KEYS, "member {k}");
    }
    let d = max_diff_files(
        &exp.join("fge/member_0/model.safetensors"),
        &exp.join("fge/member_1/model.safetensors"),
    );
    assert!(d > 0.0, "the two members are identical");
    log
}

/// The report compares the ensembles at equal budget.
fn check_budget_report(env: &TestEnv, exp: &Path) {
    let e = exp.display().to_string();
    // The report compares them at equal budget: the fixture's endpoints took
    // 3 epochs each; FGE started there, so member k costs 3 + 2(k-1) + 1.
    env.ok(&["plot", "--exp", &e]);
    assert!(exp.join("figures/budget.png").is_file());
    let html = fs::read_to_string(exp.join("report.html")).unwrap();
    assert!(
        html.contains("Ensembles at equal training budget"),
        "no budget section"
    );
    assert!(
        html.contains("FGE: from ") && html.contains("every 2 epochs (members at its low points)"),
        "the report does not say how FGE ran"
    );
    for (row, epochs) in [
        ("1 independent network(s)", 3),
        ("2 independent network(s)", 6),
        ("FGE, 1 member(s)", 4),
        ("FGE, 2 member(s)", 6),
    ] {
        let cell = format!("<tr><td>{row}</td><td class=\"n\">{epochs}</td>");
        assert!(html.contains(&cell), "{row} at {epochs} epochs is missing");
    }
}

#[test]
fn save_every_keeps_snapshots_that_fge_starts_from() {
    let env = TestEnv::new();
    let e = env.p("e");
    env.ok(&[
        "train-endpoints",
        "--exp",
        &e,
        "--models",
        "1",
        "--epochs",
        "2",
        "--save-every",
        "1",
        "--train-subset",
        "400",
        "--test-subset",
        "200",
        "--threads",
        "1",
    ]);
    let exp = env.path().join("e");
    for n in [1, 2] {
        for f in ["model.safetensors", "state.safetensors"] {
            let p = exp.join(format!("start_model/epoch-{n}/{f}"));
            assert!(p.is_file(), "{} missing", p.display());
        }
        assert_eq!(
            meta_epoch(&exp.join(format!("start_model/epoch-{n}/model.safetensors"))),
            n
        );
    }
    // The last snapshot is the final model.
    let d = max_diff_files(
        &exp.join("start_model/epoch-2/model.safetensors"),
        &exp.join("start_model/model.safetensors"),
    );
    assert_eq!(d, 0.0);
    let from = exp.join("start_model/epoch-1");
    env.ok(&[
        "fge",
        "--exp",
        &e,
        "--from",
        from.to_str().unwrap(),
        "--epochs",
        "1",
        "--cycle",
        "2",
        "--train-subset",
        "400",
        "--test-subset",
        "200",
        "--threads",
        "1",
    ]);
    assert!(exp.join("fge/member_0/model.safetensors").is_file());
}

#[test]
fn run_with_fge_compares_the_ensembles_at_equal_budget() {
    let env = TestEnv::new();
    let e = env.p("e");
    let out = env.ok(&[
        "run",
        "--exp",
        &e,
        "--fge",
        "--fge-dropout",
        "0.2",
        "--train-subset",
        "600",
        "--test-subset",
        "300",
        "--epochs",
        "2",
        "--curve-epochs",
        "1",
        "--points",
        "3",
        "--ensemble",
        "2",
        "--grid",
        "2",
        "--eval-train-subset",
        "300",
        "--landscape-train-subset",
        "200",
        "--landscape-test-subset",
        "100",
        "--threads",
        "1",
    ]);
    assert!(
        stderr(&out).contains("step 3/7: fast geometric ensembling"),
        "{}",
        stderr(&out)
    );
    let exp = env.path().join("e");
    // The snapshot at 80% of 2 epochs (epoch 1), one FGE epoch of cycle 2: one member.
    assert!(exp.join("start_model/epoch-1/state.safetensors").is_file());
    assert!(exp.join("fge/member_0/model.safetensors").is_file());
    let cfg = read_json(&exp.join("config.json"));
    assert_eq!(cfg["fge"]["dropout"], 0.2, "--fge-dropout is FGE's");
    assert_ne!(cfg["arch"]["dropout"], 0.2, "and not the endpoints'");
    for f in ["eval/endpoints.json", "eval/fge.json", "figures/budget.png"] {
        assert!(exp.join(f).is_file(), "{f} missing");
    }
    let html = fs::read_to_string(exp.join("report.html")).unwrap();
    // Independent: 2 and 4 epochs; the curve ensemble 2·2 + 1; FGE member 1: 1 + 1.
    for (row, epochs) in [
        ("1 independent network(s)", 2),
        ("2 independent network(s)", 4),
        ("curve ensemble of 2", 5),
        ("FGE, 1 member(s)", 2),
    ] {
        let cell = format!("<tr><td>{row}</td><td class=\"n\">{epochs}</td>");
        assert!(html.contains(&cell), "{row} at {epochs} epochs is missing");
    }
    let err = assert_clean_error(
        &env.modeconn(&["run", "--exp", &env.p("f"), "--fge", "--fge-dropout", "1.5"]),
        "--fge-dropout out of range",
    );
    assert!(
        err.contains("--dropout must be in [0, 1)") && err.contains("nothing was run"),
        "{err}"
    );
    assert!(
        !env.path().join("f").exists(),
        "a refused run writes nothing"
    );
}

/// FGE with Adam from an Adam-trained snapshot keeps its moments and step count; SGD from the
/// same snapshot starts its state at zero and says so; both train with the endpoints'
/// augmentation unless told otherwise.
#[test]
fn adam_fge_keeps_the_moments_and_the_training_augmentation() {
    let env = TestEnv::new();
    let e = env.p("e");
    let subsets = [
        "--train-subset",
        "400",
        "--test-subset",
        "200",
        "--threads",
        "1",
    ];
    let mut train = vec![
        "train-endpoints",
        "--exp",
        &e,
        "--models",
        "1",
        "--epochs",
        "2",
        "--save-every",
        "1",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--augment",
    ];
    train.extend(subsets);
    env.ok(&train);
    let exp = env.path().join("e");
    let steps = |p: &Path| tensors(p)["optim.steps"].int64_value(&[0]);
    let s1 = steps(&exp.join("start_model/epoch-1/state.safetensors"));
    let per_epoch = steps(&exp.join("start_model/epoch-2/state.safetensors")) - s1;
    assert!(per_epoch > 0);
    let from = exp.join("start_model/epoch-1");
    let fge = |optimizer: &str| {
        let mut a = vec![
            "fge",
            "--exp",
            &e,
            "--from",
            from.to_str().unwrap(),
            "--epochs",
            "1",
            "--cycle",
            "2",
            "--optimizer",
            optimizer,
            "--lr1",
            "0.001",
            "--lr2",
            "0.0001",
        ];
        a.extend(subsets);
        env.ok(&a)
    };
    let out = fge("adam");
    assert!(!stderr(&out).contains("starts at zero"), "{}", stderr(&out));
    assert_eq!(
        steps(&exp.join("fge/state.safetensors")),
        s1 + per_epoch,
        "Adam's step count continues from the snapshot's"
    );
    let cfg = read_json(&exp.join("config.json"));
    assert_eq!(cfg["fge"]["optimizer"], "adam");
    assert_eq!(
        cfg["fge"]["augment"], true,
        "the endpoints were trained with --augment"
    );

    std::fs::remove_dir_all(exp.join("fge")).unwrap();
    let out = fge("sgd");
    assert!(
        stderr(&out).contains("trained with adam, FGE runs sgd: its state starts at zero"),
        "{}",
        stderr(&out)
    );
    let cfg = read_json(&exp.join("config.json"));
    assert!(
        cfg["fge"].get("optimizer").is_none(),
        "sgd is the default, left out"
    );
}

/// `fge --dropout` trains at its own dropout, as `fit-curve --dropout` does: recorded in the fge
/// section, the architecture unchanged, the members different from those at the network's own
/// dropout; a value out of range is refused before anything is written.
#[test]
fn fge_dropout_is_the_runs_own_and_changes_the_members() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let arch_before = read_json(&exp.join("config.json"))["arch"].clone();
    let run = |extra: &[&str]| {
        fs::remove_dir_all(exp.join("fge")).ok();
        let mut a = vec![
            "fge",
            "--exp",
            &e,
            "--epochs",
            "1",
            "--cycle",
            "2",
            "--train-subset",
            "400",
            "--test-subset",
            "100",
            "--threads",
            "1",
        ];
        a.extend_from_slice(extra);
        env.ok(&a);
        tensors(&exp.join("fge/member_0/model.safetensors"))
    };
    let plain = run(&[]);
    assert!(read_json(&exp.join("config.json"))["fge"]
        .get("dropout")
        .is_none());
    let low = run(&["--dropout", "0.0"]);
    let cfg = read_json(&exp.join("config.json"));
    assert_eq!(cfg["fge"]["dropout"], 0.0);
    assert_eq!(cfg["arch"], arch_before, "the architecture is unchanged");
    let moved = max_diff_all(&plain, &low);
    assert!(moved > 1e-4, "dropout 0 trained the same member ({moved})");
    fs::remove_dir_all(exp.join("fge")).unwrap();
    let err = assert_clean_error(
        &env.modeconn(&["fge", "--exp", &e, "--dropout", "1.5"]),
        "dropout out of range",
    );
    assert!(err.contains("--dropout must be in [0, 1)"), "{err}");
    assert!(!exp.join("fge").exists(), "a refused run writes nothing");
}

/// FGE from a real Fashion-MNIST endpoint (the fixture's start network: seed-convnet, 3 epochs on
/// 3,000 images) with the reference's rates beats that endpoint in NLL on the same test images,
/// and its ensemble is no worse in NLL than its average member (the mean of the softmax).
#[test]
fn fge_of_a_fashion_mnist_endpoint_beats_it_in_nll() {
    let env = TestEnv::new();
    let exp = env.copy_of_fixture("e");
    let e = exp.display().to_string();
    let data = [
        "--train-subset",
        "3000",
        "--test-subset",
        "1000",
        "--threads",
        "1",
    ];
    let mut fge = vec!["fge", "--exp", &e, "--epochs", "4", "--cycle", "2"];
    fge.extend_from_slice(&data);
    env.ok(&fge);
    let scores = |set: &str| -> Value {
        let mut a = vec!["--json", "eval", "--exp", &e, "--members", set];
        a.extend_from_slice(&data);
        let out = env.ok(&a);
        let v: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
        v[set].clone()
    };
    let (fge, ends) = (scores("fge"), scores("endpoints"));
    let endpoint = f(&ends["members"][0]["nll"]);
    let members: Vec<f64> = fge["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| f(&m["nll"]))
        .collect();
    assert_eq!(members.len(), 2);
    let ensemble = f(&fge["by_size"][1]["nll"]);
    assert!(
        ensemble < endpoint,
        "FGE's ensemble (NLL {ensemble}) does not beat the endpoint it started from ({endpoint})"
    );
    let mean = members.iter().sum::<f64>() / members.len() as f64;
    assert!(
        ensemble <= mean + 1e-9,
        "the ensemble's NLL {ensemble} is above its members' mean {mean}"
    );
}
