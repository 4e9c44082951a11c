//! The CPU issue: no configuration hangs in oneDNN, a hang fails fast, and
//! precision knows the CPU. `ONEDNN_MAX_CPU_ISA=AVX2` makes libtorch pick
//! the AVX2 kernels on any newer x86 CPU, so the AVX2-only case is tested
//! wherever the suite runs; `MODECONN_CPU_FLAGS` poses as any CPU for the
//! precision choice.

use std::panic::AssertUnwindSafe;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;

/// oneDNN's AVX2 kernels, whatever the CPU (they need AVX2, which every
/// x86-64 machine this project runs on has).
const AVX2: (&str, &str) = ("ONEDNN_MAX_CPU_ISA", "AVX2");

#[test]
fn a_hung_child_is_killed_at_its_deadline_and_fails_the_test_with_its_command() {
    let started = Instant::now();
    let mut c = std::process::Command::new("sleep");
    c.arg("60");
    let hit = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run_with_deadline(c, &["sleep", "60"], Duration::from_secs(1))
    }));
    let msg = match hit {
        Ok(_) => panic!("a 60 s sleep finished inside a 1 s deadline"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        msg.contains("deadline") && msg.contains("`modeconn sleep 60`") && msg.contains("killed"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the deadline took {:?}",
        started.elapsed()
    );
}

/// One epoch on 128 images: enough for every convolution's forward and
/// weight gradient.
fn train_tiny(env: &TestEnv, vars: &[(&str, &str)], arch: &[&str], format: &str) -> Output {
    let e = env.p(&format!("x{}", rand_tag()));
    let mut a = vec![
        "train-endpoints",
        "--exp",
        &e,
        "--models",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--train-subset",
        "128",
        "--test-subset",
        "64",
        "--threads",
        "2",
        "--memory-format",
        format,
    ];
    a.extend_from_slice(arch);
    env.modeconn_within_env(Duration::from_secs(120), vars, &a)
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn small_widths_train_in_both_memory_formats_with_onednn_avx2_kernels() {
    // PreResNet-8 at these widths has 2-7 input channels on its strided 1x1
    // downsample convolutions: in channels-last, oneDNN's AVX2 weight
    // gradient for them spun forever (the hang) before modeconn
    // rewrote them. Bottleneck PreResNet and WRN have 1x1 convolutions too.
    let env = TestEnv::new();
    let mut cases: Vec<Vec<String>> = Vec::new();
    for w in [13, 19, 25, 31, 38, 44, 50] {
        cases.push(vec![
            "--arch".into(),
            "preresnet".into(),
            "--depth".into(),
            "8".into(),
            "--widen".into(),
            w.to_string(),
        ]);
    }
    for w in [13, 25] {
        cases.push(vec![
            "--arch".into(),
            "preresnet".into(),
            "--depth".into(),
            "47".into(),
            "--widen".into(),
            w.to_string(),
        ]);
    }
    for w in [1, 2] {
        cases.push(vec![
            "--arch".into(),
            "wrn".into(),
            "--depth".into(),
            "10".into(),
            "--widen".into(),
            w.to_string(),
        ]);
    }
    for case in &cases {
        let arch: Vec<&str> = case.iter().map(String::as_str).collect();
        for format in ["channels-last", "contiguous", "auto"] {
            let out = train_tiny(&env, &[AVX2], &arch, format);
            assert!(
                out.status.success(),
                "{arch:?} --memory-format {format} under ONEDNN_MAX_CPU_ISA=AVX2 failed:\n{}",
                stderr(&out)
            );
        }
        // And with the CPU's own kernels (AVX-512 where present).
        let out = train_tiny(&env, &[], &arch, "channels-last");
        assert!(
            out.status.success(),
            "{arch:?} channels-last:\n{}",
            stderr(&out)
        );
    }
}

#[test]
fn explicit_channels_last_warns_about_the_rewritten_convolutions_and_auto_does_not() {
    let env = TestEnv::new();
    let arch = ["--arch", "preresnet", "--depth", "8", "--widen", "25"];
    let out = train_tiny(&env, &[AVX2], &arch, "channels-last");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: --memory-format channels-last")
            && err.contains("layer2.0.downsample.0 (4 → 8, stride 2)")
            && err.contains("layer3.0.downsample.0 (8 → 16, stride 2)"),
        "{err}"
    );
    for format in ["auto", "contiguous"] {
        let out = train_tiny(&env, &[AVX2], &arch, format);
        assert!(
            !stderr(&out).contains("warning"),
            "{format}: {}",
            stderr(&out)
        );
    }
    // Wide enough that no strided 1x1 convolution has under 16 input channels: no warning.
    let wide = ["--arch", "preresnet", "--depth", "8", "--widen", "100"];
    let out = train_tiny(&env, &[], &wide, "channels-last");
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// The `runtime` section of an experiment's config.json.
fn runtime_section(env: &TestEnv, vars: &[(&str, &str)], precision: &str) -> (Value, String) {
    let e = env.p(&format!("p{}", rand_tag()));
    // Only the caps this test sets count (the suite may run under one).
    let mut all = vec![("ONEDNN_MAX_CPU_ISA", ""), ("DNNL_MAX_CPU_ISA", "")];
    all.extend_from_slice(vars);
    let out = env.modeconn_within_env(
        Duration::from_secs(120),
        &all,
        &[
            "train-endpoints",
            "--exp",
            &e,
            "--models",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--train-subset",
            "256",
            "--test-subset",
            "64",
            "--precision",
            precision,
        ],
    );
    assert_ok(&out, &["train-endpoints", "--precision", precision]);
    let cfg = read_json(&Path::new(&e).join("config.json"));
    (cfg["runtime"].clone(), stderr(&out))
}

#[test]
fn precision_auto_follows_the_cpu_and_bf16_without_native_support_warns() {
    let env = TestEnv::new();
    let zen3 = ("MODECONN_CPU_FLAGS", "fpu sse4_2 avx fma avx2");
    let zen4 = ("MODECONN_CPU_FLAGS", "avx2 avx512f avx512_bf16");

    let (rt, err) = runtime_section(&env, &[zen3], "auto");
    assert_eq!(rt["precision"], "fp32", "{rt}");
    assert_eq!(rt["precision_requested"], "auto");
    assert_eq!(rt["cpu_native_bf16"], false);
    assert_eq!(rt["cpu"]["avx2"], true);
    assert!(!err.contains("warning"), "{err}");

    let (rt, err) = runtime_section(&env, &[zen4], "auto");
    assert_eq!(rt["precision"], "bf16", "{rt}");
    assert_eq!(rt["cpu"]["avx512_bf16"], true);
    assert!(!err.contains("warning"), "{err}");

    // An explicit bf16 is honoured, with one warning naming what was found and the cost.
    let (rt, err) = runtime_section(&env, &[zen3], "bf16");
    assert_eq!(rt["precision"], "bf16", "{rt}");
    assert_eq!(err.matches("warning: --precision bf16").count(), 1, "{err}");
    assert!(
        err.contains("AVX512_BF16 no, AMX-BF16 no") && err.contains("14x"),
        "{err}"
    );

    // A oneDNN ISA cap below bf16 counts as no native bf16.
    let (rt, _) = runtime_section(&env, &[zen4, AVX2], "auto");
    assert_eq!(rt["precision"], "fp32", "{rt}");
    assert_eq!(rt["cpu"]["onednn_isa_cap"], "AVX2");

    // The default stays fp32 for a single step.
    let (rt, _) = runtime_section(&env, &[zen4], "fp32");
    assert_eq!(rt["precision"], "fp32");
}
