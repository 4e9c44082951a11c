//! Realistic synthetic experiment files for the report tests (a Bezier curve with one bend whose
//! loss stays low while the line segment's midpoint loss is `ratio` times the endpoints').

use serde_json::{json, Value};
use std::f64::consts::PI;
use std::path::Path;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn meta() -> Value {
    json!({"dataset": "fashion-mnist", "arch": "seed-convnet"})
}

pub fn write_all(dir: &Path, ratio: f64) {
    write_config(dir);
    write_logs(dir, &["start_model", "end_model", "curve_model"]);
    write_along(dir, ratio);
    write_ensemble(dir);
    write_plane(dir, ratio, false);
}

pub fn write_config(dir: &Path) {
    let c = json!({
        "data": {"dataset": "fashion-mnist", "root": "data", "augment": false, "note": "<b>x</b>"},
        "train": {"arch": "seed-convnet", "epochs": 20, "lr": 0.05, "momentum": 0.9, "wd": 5e-4, "batch": 128, "seeds": [1, 2]},
        "curve": {"kind": "bezier", "bends": 3, "epochs": 20, "lr": 0.03, "init": "linear"},
        "eval": {"points": 61, "ensemble": 30},
        "landscape": {"grid": 21, "margin": 0.2, "coords": "orthonormal"},
    });
    write(
        dir,
        "config.json",
        &serde_json::to_string_pretty(&c).unwrap(),
    );
}

pub fn write_logs(dir: &Path, names: &[&str]) {
    for (m, name) in names.iter().enumerate() {
        let curve = *name == "curve_model";
        let mut text = String::new();
        for e in 1..=20 {
            let f = e as f64 / 20.0;
            let lr = 0.05 * 0.5 * (1.0 + (PI * (e - 1) as f64 / 20.0).cos());
            let (a, b) = (1.0 + 0.15 * m as f64, if curve { 0.6 } else { 1.0 });
            let train_loss = (0.55 * (-3.2 * f * a).exp() + 0.012 + 0.004 * m as f64) * (2.0 - b);
            let test_loss =
                0.42 * (-2.5 * f * a).exp() + 0.24 + 0.03 * m as f64 + (f - 0.6).max(0.0) * 0.1;
            let mut row = json!({
                "epoch": e, "lr": lr, "train_loss": train_loss, "train_acc": 100.0 - 30.0 * train_loss,
                "test_loss": test_loss, "test_acc": 100.0 - 28.0 * test_loss + m as f64 * 0.6, "seconds": 12.3 + m as f64,
            });
            if curve {
                row["test_t"] = json!(0.5);
            }
            text.push_str(&row.to_string());
            text.push('\n');
        }
        write(dir, &format!("{name}/log.jsonl"), &text);
    }
}

/// Rows and summary of one path where the train loss is `base * (1 + (ratio-1) * bump(t))`.
fn path_eval(ratio: f64, err_peak: f64, length: f64) -> Value {
    let bump = |t: f64| (PI * t).sin().powi(2);
    let rows: Vec<Value> = (0..61)
        .map(|i| {
            let t = i as f64 / 60.0;
            let train_loss = 0.02 * (1.0 + (ratio - 1.0) * bump(t)) + 0.002 * t;
            let test_err = 8.6 + 0.5 * t + (err_peak - 8.6) * bump(t);
            json!({
                "t": t, "train_loss": train_loss, "train_nll": train_loss * 0.95, "train_acc": 100.0 - 40.0 * train_loss.min(2.0),
                "train_err": 40.0 * train_loss.min(2.0), "test_loss": 0.28 + 2.0 * bump(t) * (ratio / 100.0),
                "test_nll": 0.27 + 2.0 * bump(t) * (ratio / 100.0), "test_acc": 100.0 - test_err, "test_err": test_err,
                "test_ece": 0.015 + 0.1 * bump(t) * (ratio / 100.0), "dl": if i == 0 { 0.0 } else { length / 60.0 },
            })
        })
        .collect();
    let keys = [
        "train_loss",
        "train_nll",
        "train_acc",
        "train_err",
        "test_loss",
        "test_nll",
        "test_acc",
        "test_err",
        "test_ece",
    ];
    let mut summary = serde_json::Map::new();
    let mut barrier = serde_json::Map::new();
    let mut barrier_t = serde_json::Map::new();
    for k in keys {
        let v: Vec<f64> = rows.iter().map(|r| r[k].as_f64().unwrap()).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let (min, max) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        summary.insert(
            k.into(),
            json!({"start": v[0], "end": v[60], "min": min, "max": max, "mean": mean, "int": mean}),
        );
        if k == "train_loss" || k == "test_err" {
            let (i, b) = v
                .iter()
                .enumerate()
                .map(|(i, x)| (i, x - (v[0] + (v[60] - v[0]) * i as f64 / 60.0)))
                .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
            barrier.insert(k.into(), json!(b));
            barrier_t.insert(k.into(), json!(i as f64 / 60.0));
        }
    }
    json!({"rows": rows, "summary": summary, "length": length, "barrier": barrier, "barrier_t": barrier_t})
}

pub fn write_along(dir: &Path, ratio: f64) {
    let mut m = meta();
    for (k, v) in [
        ("curve", json!("bezier")),
        ("bends", json!(3)),
        ("points", json!(61)),
        ("train_subset", Value::Null),
        ("test_subset", Value::Null),
        ("n_train", json!(60000)),
        ("n_test", json!(10000)),
        ("full_train", json!(60000)),
        ("full_test", json!(10000)),
        ("wd", json!(5e-4)),
        ("seconds", json!(12.5)),
        ("precision", json!("fp32")),
        ("stack_models", json!(1)),
        ("curve_id", json!("epoch 20 / 1000 bytes")),
    ] {
        m[k] = v;
    }
    let a = json!({"format": crate::schema::FORMAT, "meta": m, "curve": path_eval(1.6, 10.1, 41.2), "line": path_eval(ratio, 78.0, 30.5)});
    write(dir, "eval/along.json", &a.to_string());
}

pub fn write_ensemble(dir: &Path) {
    let mut m = meta();
    for (k, v) in [
        ("k", json!(30)),
        ("sampling", json!("grid")),
        ("average", json!("probs")),
        ("seed", json!(0)),
        ("n_test", json!(10000)),
        ("test_subset", Value::Null),
        ("seconds", json!(3.5)),
        ("curve_id", json!("epoch 20 / 1000 bytes")),
    ] {
        m[k] = v;
    }
    let metrics = |acc: f64, nll: f64, ece: f64| json!({"acc": acc, "nll": nll, "ece": ece, "brier": 0.14 - (acc - 90.0) * 0.01, "auroc": 0.985});
    let by_size: Vec<Value> = (1..=30)
        .map(|k| {
            let g = 1.0 - (-(k as f64 - 1.0) / 5.0).exp();
            let mut v = metrics(90.05 + 2.26 * g, 0.29 - 0.07 * g, 0.021 - 0.012 * g);
            v["k"] = json!(k);
            v
        })
        .collect();
    let bins = |sharp: f64| -> Vec<Value> {
        (0..15)
            .map(|i| {
                let (lo, hi) = (i as f64 / 15.0, (i + 1) as f64 / 15.0);
                let conf = (lo + hi) / 2.0;
                let count = if lo < 0.2 { 0 } else { (10.0 * (sharp * conf).exp()) as u64 };
                let acc = if count == 0 { 0.0 } else { (conf - 0.06 * (1.0 - conf) * sharp / 4.0).max(0.0) };
                json!({"lo": lo, "hi": hi, "count": count, "conf": if count == 0 { 0.0 } else { conf }, "acc": acc})
            })
            .collect()
    };
    let e = json!({
        "format": crate::schema::FORMAT,
        "meta": m,
        "members_t": (0..30).map(|i| i as f64 / 29.0).collect::<Vec<_>>(),
        "order": (0..30).collect::<Vec<_>>(),
        "start": metrics(90.12, 0.284, 0.024), "end": metrics(90.03, 0.291, 0.026),
        "endpoints": metrics(91.2, 0.251, 0.013), "curve": metrics(92.31, 0.221, 0.009),
        "by_size": by_size,
        "reliability": {"curve": bins(4.0), "start": bins(8.0)},
    });
    write(dir, "eval/ensemble.json", &e.to_string());
}

/// A 21x21 plane in orthonormal coordinates with w1 = (0,0), w2 = (L,0), bend θ = (L/2, 0.6L):
/// the loss grows like exp(d²) away from the Bezier curve, so the line midpoint is `ratio` x the endpoints.
pub fn write_plane(dir: &Path, ratio: f64, with_nulls: bool) {
    let l = 40.0;
    let n = 21;
    let xs: Vec<f64> = (0..n)
        .map(|i| -0.2 * l + 1.4 * l * i as f64 / (n - 1) as f64)
        .collect();
    let ys: Vec<f64> = (0..n)
        .map(|j| -0.35 * l + 1.2 * l * j as f64 / (n - 1) as f64)
        .collect();
    let (w1, w2, th) = ([0.0, 0.0], [l, 0.0], [l / 2.0, 0.6 * l]);
    let curve: Vec<[f64; 2]> = (0..61)
        .map(|i| {
            let t = i as f64 / 60.0;
            let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
            [
                a * w1[0] + b * th[0] + c * w2[0],
                a * w1[1] + b * th[1] + c * w2[1],
            ]
        })
        .collect();
    let dist = |x: f64, y: f64| {
        curve
            .iter()
            .map(|p| ((p[0] - x).powi(2) + (p[1] - y).powi(2)).sqrt())
            .fold(f64::MAX, f64::min)
    };
    // Distance from the line midpoint to the curve sets the width so that loss(mid) = ratio * loss(w1).
    let dmid = dist(l / 2.0, 0.0);
    let sigma2 = dmid * dmid / (2.0 * ratio.ln());
    let grid = |f: &dyn Fn(f64, f64) -> f64| -> Vec<Vec<Value>> {
        ys.iter()
            .enumerate()
            .map(|(j, &y)| {
                xs.iter()
                    .enumerate()
                    .map(|(i, &x)| {
                        if with_nulls && j >= 17 && i >= 8 {
                            Value::Null
                        } else {
                            json!(f(x, y))
                        }
                    })
                    .collect()
            })
            .collect()
    };
    let loss = |x: f64, y: f64| {
        let d = dist(x, y);
        (0.02 * (d * d / (2.0 * sigma2)).exp() * (1.0 + 0.1 * (x / 7.0).sin())).min(40.0)
    };
    let err = |x: f64, y: f64| {
        let d = dist(x, y);
        8.4 + 81.6 * (1.0 - (-(d * d) / (2.0 * 1.5 * sigma2)).exp())
    };
    let nll = |x: f64, y: f64| 0.27 * loss(x, y) / 0.02;
    let mut m = meta();
    for (k, v) in [
        ("coords", json!("orthonormal")),
        ("grid", json!(n)),
        ("margin", json!(0.2)),
        ("plane_bend", json!(1)),
        ("caption", json!("plane through w1, bend 1 and w2")),
        ("train_subset", json!(10000)),
        ("test_subset", Value::Null),
        ("curve_id", json!("epoch 20 / 1000 bytes")),
        ("wd", json!(5e-4)),
    ] {
        m[k] = v;
    }
    let p = json!({
        "format": crate::schema::FORMAT, "seconds": 60.0,
        "meta": m, "x_label": "u (along w2 - w1)", "y_label": "v",
        "xs": xs, "ys": ys, "train_loss": grid(&loss), "test_err": grid(&err), "test_nll": grid(&nll),
        "endpoints": [w1, w2], "bends": [th], "curve": curve, "line": [w1, w2],
    });
    write(dir, "landscape/plane.json", &p.to_string());
}
