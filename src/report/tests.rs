use super::*;

fn check_figure(dir: &Path, name: &str) {
    let png = std::fs::read(dir.join("figures").join(format!("{name}.png"))).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{name}.png signature"
    );
    assert!(png.len() > 10_000, "{name}.png is only {} bytes", png.len());
    let svg = std::fs::read_to_string(dir.join("figures").join(format!("{name}.svg"))).unwrap();
    assert!(
        svg.contains("<svg") && svg.len() > 5_000,
        "{name}.svg is only {} bytes",
        svg.len()
    );
}

/// Writes into `$REPORT_TEST_OUT/<sub>` when set (to look at the figures), else into a tempdir.
fn out_dir(sub: &str) -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("REPORT_TEST_OUT") {
        Some(p) => {
            let d = PathBuf::from(p).join(sub);
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            (None, d)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    }
}

#[test]
fn full_experiment_draws_everything() {
    let (_keep, dir) = out_dir("full");
    testdata::write_all(&dir, 100.0);
    let s = plot_all(&dir).unwrap();
    assert!(s.missing.is_empty(), "{:?}", s.missing);
    let names = [
        "landscape_train_loss",
        "landscape_test_error",
        "along_curve",
        "ensemble",
        "training",
    ];
    for n in names {
        check_figure(&dir, n);
    }
    assert_eq!(s.written.len(), 2 * names.len() + 1);
    assert!(s.written.iter().all(|p| p.exists()));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for n in names {
        assert!(
            html.contains(&format!("figures/{n}.svg"))
                && html.contains(&format!("figures/{n}.png")),
            "{n}"
        );
    }
    // Key numbers: curve length, ensemble accuracy, a barrier, the final test accuracy, the caption.
    for needle in [
        "41.2",
        "92.31",
        "fashion-mnist",
        "seed-convnet",
        "plane through w1, bend 1 and w2",
        "&lt;b&gt;",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    assert!(!html.contains("<b>x"), "unescaped JSON string");
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(std::fs::read_dir(dir.join("figures")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn compare_draws_each_curve_and_needs_every_sweep() {
    let (_keep, dir) = out_dir("compare");
    let (ours, theirs) = (dir.join("ours"), dir.join("theirs"));
    testdata::write_config(&ours);
    testdata::write_along(&ours, 100.0);
    testdata::write_along(&theirs, 50.0);
    let other = |exp: &Path| Compared {
        label: "the <seed>".into(),
        exp: exp.to_path_buf(),
    };
    let s = plot_compared(&ours, Some("modeconn"), &[other(&theirs)]).unwrap();
    check_figure(&ours, "compare");
    assert!(s.written.contains(&ours.join("figures/compare.png")));
    let html = std::fs::read_to_string(ours.join("report.html")).unwrap();
    for needle in [
        "Curves compared",
        "modeconn",
        "the &lt;seed&gt;",
        "figures/compare.svg",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    // Without --compare the figure is not listed.
    plot_all(&ours).unwrap();
    let html = std::fs::read_to_string(ours.join("report.html")).unwrap();
    assert!(!html.contains("Curves compared"));
    // A compared experiment without a sweep: an error naming the command, nothing written.
    let bare = dir.join("bare");
    testdata::write_config(&bare);
    std::fs::remove_dir_all(ours.join("figures")).unwrap();
    let err = format!(
        "{:#}",
        plot_compared(&ours, None, &[other(&bare)]).unwrap_err()
    );
    assert!(
        err.contains("bare/eval/along.json") && err.contains("modeconn eval --exp"),
        "{err}"
    );
    assert!(!ours.join("figures").exists());
}

#[test]
fn the_accuracy_dip_is_measured_from_the_ends_mean() {
    let p: data::PathEval = serde_json::from_value(serde_json::json!({"rows": [
        {"t": 0.0, "test_acc": 80.0}, {"t": 0.25, "test_acc": 76.0},
        {"t": 0.5, "test_acc": 70.0}, {"t": 0.75, "test_acc": null}, {"t": 1.0, "test_acc": 78.0}
    ]}))
    .unwrap();
    let d = p.accuracy_dip().unwrap();
    assert_eq!(
        (d.start, d.end, d.worst, d.worst_t),
        (80.0, 78.0, 70.0, 0.5)
    );
    assert!((d.dip - 9.0).abs() < 1e-12);
    let one: data::PathEval =
        serde_json::from_value(serde_json::json!({"rows": [{"t": 0.0, "test_acc": 80.0}]}))
            .unwrap();
    assert!(one.accuracy_dip().is_none());
}

#[test]
fn partial_inputs_draw_what_exists() {
    let (_keep, dir) = out_dir("partial");
    testdata::write_config(&dir);
    testdata::write_logs(&dir, &["start_model", "end_model"]);
    testdata::write_along(&dir, 100.0);
    let s = plot_all(&dir).unwrap();
    check_figure(&dir, "along_curve");
    check_figure(&dir, "training");
    assert!(!dir.join("figures/ensemble.png").exists());
    assert!(!dir.join("figures/landscape_train_loss.png").exists());
    let all = s.missing.join("\n");
    for cmd in [
        "modeconn eval --exp",
        "--ensemble 30",
        "modeconn landscape --exp",
        "modeconn fit-curve",
    ] {
        assert!(all.contains(cmd), "missing notes lack {cmd}: {all}");
    }
    assert!(!all.contains("train-endpoints"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("modeconn landscape --exp") && html.contains("modeconn fit-curve"));
}

#[test]
fn nothing_to_draw_is_an_error_naming_commands() {
    let dir = tempfile::tempdir().unwrap();
    testdata::write_config(dir.path());
    let err = format!("{:#}", plot_all(dir.path()).unwrap_err());
    for needle in [
        "eval/along.json",
        "landscape/plane.json",
        "modeconn train-endpoints",
        "modeconn eval --exp",
    ] {
        assert!(err.contains(needle), "{err}");
    }
    assert!(!dir.path().join("report.html").exists());
}

#[test]
fn steep_landscape_and_partial_grid() {
    let (_keep, dir) = out_dir("steep");
    testdata::write_plane(&dir, 100.0, true);
    let s = plot_all(&dir).unwrap();
    check_figure(&dir, "landscape_train_loss");
    check_figure(&dir, "landscape_test_error");
    assert!(s
        .missing
        .iter()
        .any(|m| m.contains("modeconn train-endpoints")));
    let svg = std::fs::read_to_string(dir.join("figures/landscape_train_loss.svg")).unwrap();
    assert!(
        svg.contains("&gt; ") || svg.contains("> "),
        "colour bar top label"
    );
}
