//! `examples/connect.rs`, the library-only example, runs on real data.

use std::process::Command;

use crate::common::*;

#[test]
fn the_library_example_connects_two_state_dicts_and_prints_the_barriers() {
    // cargo builds examples next to the test binaries: target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("connect"))
        .unwrap();
    assert!(bin.is_file(), "{} was not built", bin.display());
    let env = TestEnv::new();
    let fx = fixture_exp();
    let start = fx.join("start_model/model.safetensors");
    let end = fx.join("end_model/model.safetensors");
    let exp = env.path().join("x");
    let args = [
        start.to_str().unwrap(),
        end.to_str().unwrap(),
        exp.to_str().unwrap(),
        "2",
        "2000",
    ];
    let mut c = Command::new(&bin);
    c.args(args).current_dir(env.path());
    let out = run_with_deadline(c, &args, deadline());
    assert_ok(&out, &args);
    let so = stdout(&out);
    assert!(so.contains("curve epoch 2:"), "stdout:\n{so}");
    let line = so
        .lines()
        .find(|l| l.starts_with("test-error barrier:"))
        .unwrap_or_else(|| panic!("no barrier line in:\n{so}"));
    let nums: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    let (on_line, on_curve) = (nums[0], nums[1]);
    assert!(on_line.is_finite() && on_curve.is_finite(), "{line}");
    assert!(
        on_curve < on_line,
        "the fitted curve should cross a lower ridge than the line: {line}"
    );
    assert!(exp.join("curve_model/curve.safetensors").is_file());
    assert!(exp.join("eval/along.json").is_file());
}
