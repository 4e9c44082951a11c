//! The sections of the page, in page order: training, curve versus line segment, ensembles, loss
//! landscape, configuration. Each writes its heading, its table and the figures that were drawn.

use super::tables::{along_table, config_table, ensemble_table, training_table};
use super::{esc, figure};
use crate::report::data::{get, Aligned, Along, Ensemble, Inputs, PathEval, Plane};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Write;

/// The last epoch of every model and the `training` figure (when there are logs or the figure).
pub(super) fn training(h: &mut String, inp: &Inputs, figures: &[&str]) {
    let has_figure = figures.contains(&"training");
    if inp.logs.is_empty() && !has_figure {
        return;
    }
    h.push_str("<h2>Training</h2>\n");
    training_table(h, inp);
    if let Some(line) = inp.config.as_ref().and_then(final_dropout_line) {
        let _ = writeln!(h, "<p class=\"sub\">{}</p>", esc(&line));
    }
    if has_figure {
        figure(
            h,
            "training",
            "Loss, accuracy and learning rate per epoch (train solid, test dashed).",
        );
    }
}

/// config.json's section `name` read through its own schema (None when it is
/// absent or does not parse: the report then leaves out what it would say).
fn typed_section<T: DeserializeOwned>(config: &Value, name: &str) -> Option<T> {
    T::deserialize(config.get(name)?).ok()
}

/// The endpoints' final dropout, from config.json's `train` section: it
/// explains the step in their training curves.
fn final_dropout_line(config: &Value) -> Option<String> {
    let t: crate::config::TrainConfig = typed_section(config, "train")?;
    let f = t.final_dropout?;
    Some(format!(
        "The endpoints trained their last {} of {} epochs (from epoch {}) at dropout {} (--final-dropout). The saved networks keep their architecture's dropout, which is off at evaluation.",
        f.epochs,
        t.epochs,
        f.from_epoch(t.epochs) + 1,
        f.dropout
    ))
}

/// Statistics of the metrics along the curve and the line segment, and the `along_curve` figure.
pub(super) fn along(h: &mut String, a: &Along, figures: &[&str]) {
    h.push_str("<h2>Curve versus line segment</h2>\n");
    along_table(h, &a.curve, a.line.as_ref());
    if figures.contains(&"along_curve") {
        figure(
            h,
            "along_curve",
            "Train loss, test error and test accuracy along the curve (solid) and the line segment (dashed); vertical segments mark the barriers.",
        );
    }
}

/// Curves of other experiments next to this one's (`plot --compare`): test accuracy at the ends
/// and the worst point, and the barriers, with the `compare` figure.
pub(super) fn compare(h: &mut String, runs: &[(String, Along)], figures: &[&str]) {
    h.push_str("<h2>Curves compared</h2>\n");
    h.push_str("<table><tr><th>experiment</th><th>test accuracy at t = 0 / 1 (%)</th><th>worst test accuracy (%)</th><th>at t</th><th>below the ends' mean (points)</th><th>test-error barrier (points)</th><th>train-loss barrier</th></tr>\n");
    let num = |v: Option<f64>, d: usize| v.map_or("–".to_string(), |v| format!("{v:.d$}"));
    for (label, a) in runs {
        let d = a.curve.accuracy_dip();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{} / {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(label),
            num(d.map(|d| d.start), 2),
            num(d.map(|d| d.end), 2),
            num(d.map(|d| d.worst), 2),
            num(d.map(|d| d.worst_t), 2),
            num(d.map(|d| d.dip), 2),
            num(get(&a.curve.barrier, "test_err"), 2),
            num(get(&a.curve.barrier, "train_loss"), 4),
        );
    }
    h.push_str("</table>\n");
    if figures.contains(&"compare") {
        figure(
            h,
            "compare",
            "Train loss and test accuracy along each experiment's curve, on the same axes.",
        );
    }
}

/// The line barriers before and after alignment (and the curve's), and the `align` figure.
pub(super) fn align(h: &mut String, a: &Aligned, along: Option<&Along>, figures: &[&str]) {
    h.push_str("<h2>Permutation alignment</h2>\n");
    let m = &a.meta;
    let num = |k: &str| m.get(k).and_then(Value::as_f64);
    let sweeps = m
        .get("objective")
        .and_then(Value::as_array)
        .map_or(0, |o| o.len().saturating_sub(1));
    let _ = writeln!(
        h,
        "<p>Weight matching moved {} of {} hidden units of the end model in {sweeps} sweeps ({:.2} s); \
         the permuted end model gives the same logits (largest difference {:.1e}).</p>",
        num("moved").unwrap_or(f64::NAN),
        num("permutable").unwrap_or(f64::NAN),
        num("match_seconds").unwrap_or(f64::NAN),
        num("max_logit_diff").unwrap_or(f64::NAN),
    );
    h.push_str("<table><tr><th>path</th><th>test-error barrier (points)</th><th>train-loss barrier</th><th>test error at t = 0.5 (%)</th><th>seconds</th></tr>\n");
    let repair_s =
        get(&a.seconds, "repaired").map(|s| s + num("repair_stats_seconds").unwrap_or(0.0));
    let rows: [(&str, Option<&PathEval>, Option<f64>); 4] = [
        ("line", a.raw.as_ref(), get(&a.seconds, "raw")),
        (
            "line, aligned",
            a.aligned.as_ref(),
            get(&a.seconds, "aligned"),
        ),
        ("line, aligned + REPAIR", a.repaired.as_ref(), repair_s),
        ("curve", along.map(|l| &l.curve), None),
    ];
    let cell = |v: Option<f64>, d: usize| v.map_or("–".to_string(), |v| format!("{v:.d$}"));
    for (name, p, secs) in rows {
        let Some(p) = p else { continue };
        let mid = p
            .series("test_err")
            .iter()
            .min_by(|x, y| (x.0 - 0.5).abs().total_cmp(&(y.0 - 0.5).abs()))
            .map(|x| x.1);
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            cell(get(&p.barrier, "test_err"), 2),
            cell(get(&p.barrier, "train_loss"), 4),
            cell(mid, 2),
            cell(secs, 1),
        );
    }
    h.push_str("</table>\n");
    if m.get("repair").and_then(Value::as_str) == Some("bn-reset") {
        h.push_str("<p>A BatchNorm network: every line has its BN statistics re-estimated at each point, which is what REPAIR does there.</p>\n");
    }
    if figures.contains(&"align") {
        figure(
            h,
            "align",
            "Train loss and test error along the straight line from start to end before alignment, after it, and after it with REPAIR (dashed), and along the curve (solid); vertical segments mark the barriers.",
        );
    }
}

/// The endpoints and the ensembles compared, and the `ensemble` figure.
pub(super) fn ensembles(h: &mut String, e: &Ensemble, figures: &[&str]) {
    h.push_str("<h2>Ensembles</h2>\n");
    ensemble_table(h, e);
    if figures.contains(&"ensemble") {
        figure(
            h,
            "ensemble",
            "Test accuracy and NLL of the curve ensemble against its size, with the endpoints and their two-model ensemble; reliability diagram of the curve ensemble and the start endpoint.",
        );
    }
}

/// Ensembles at equal training budget: a table and the `budget` figure.
pub(super) fn budget(h: &mut String, inp: &Inputs, figures: &[&str]) {
    let Some(b) = &inp.budget else { return };
    h.push_str("<h2>Ensembles at equal training budget</h2>\n");
    h.push_str("<table><tr><th>ensemble</th><th>training epochs</th><th>test accuracy (%)</th><th>test NLL</th></tr>\n");
    let rows = b
        .independent
        .iter()
        .map(|p| (format!("{} independent network(s)", p.size), p))
        .chain(
            b.curve
                .iter()
                .map(|p| (format!("curve ensemble of {}", p.size), p)),
        )
        .chain(
            b.fge
                .iter()
                .map(|p| (format!("FGE, {} member(s)", p.size), p)),
        );
    for (name, p) in rows {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.4}</td></tr>",
            esc(&name),
            p.epochs,
            p.acc,
            p.nll
        );
    }
    h.push_str("</table>\n");
    if let Some(f) = inp.config.as_ref().and_then(fge_settings) {
        let _ = writeln!(h, "<p class=\"sub\">{}</p>", esc(&f));
    }
    if figures.contains(&"budget") {
        figure(
            h,
            "budget",
            "Test accuracy and NLL of independent networks (1 to N), the curve ensemble and FGE (first k members) against the epochs of training each cost: endpoints count their epochs, the curve ensemble two endpoints plus the curve, FGE the starting network plus its epochs up to the last member.",
        );
    }
}

/// How the FGE members were trained, from config.json's `fge` section.
fn fge_settings(config: &Value) -> Option<String> {
    let f: crate::config::FgeConfig = typed_section(config, "fge")?;
    let mut line = format!(
        "FGE: from {}, {} epochs, {} with the rate cycling from {} to {} every {} epochs (members at its low points)",
        f.from.display(),
        f.epochs,
        f.optimizer.name(),
        f.lr1,
        f.lr2,
        f.cycle
    );
    if let Some(p) = f.dropout {
        let _ = write!(line, ", trained at dropout {p}");
    }
    line.push_str(if f.augment {
        ", with augmentation."
    } else {
        ", without augmentation."
    });
    Some(line)
}

/// The plane's caption and settings, and the two landscape figures.
pub(super) fn landscape(h: &mut String, p: &Plane, figures: &[&str]) {
    h.push_str("<h2>Loss landscape</h2>\n");
    let caption = p
        .meta
        .get("caption")
        .and_then(Value::as_str)
        .unwrap_or("plane through the endpoints and a bend");
    let mut details = Vec::new();
    for key in [
        "coords",
        "grid",
        "margin",
        "plane_bend",
        "train_subset",
        "test_subset",
    ] {
        if let Some(v) = p.meta.get(key).filter(|v| !v.is_null()) {
            details.push(format!(
                "{key} = {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            ));
        }
    }
    let _ = writeln!(
        h,
        "<p>{}{}</p>",
        esc(caption),
        if details.is_empty() {
            String::new()
        } else {
            esc(&format!(" ({})", details.join(", ")))
        }
    );
    let text = "Filled contours on log-spaced levels; values above the top level share the top colour; grey cells are not computed yet. Endpoints w1, w2 (circles), inner bends θ (diamonds), the projected curve (solid) and the line segment (dashed).";
    for name in ["landscape_train_loss", "landscape_test_error"] {
        if figures.contains(&name) {
            figure(h, name, text);
        }
    }
}

/// The random-direction landscapes that exist: their captions and figures.
pub(super) fn random_landscapes(h: &mut String, inp: &Inputs, figures: &[&str]) {
    let found = [
        (
            inp.random.as_ref(),
            &["landscape_random_train_loss", "landscape_random_test_error"][..],
        ),
        (inp.random_1d.as_ref(), &["landscape_random_1d"][..]),
    ];
    if found.iter().all(|(p, _)| p.is_none()) {
        return;
    }
    h.push_str("<h2>Random directions</h2>\n");
    for (p, names) in found {
        let Some(p) = p else { continue };
        let caption = p
            .meta
            .get("caption")
            .and_then(Value::as_str)
            .unwrap_or("random directions");
        let _ = writeln!(h, "<p>{}</p>", esc(caption));
        for name in names.iter().filter(|n| figures.contains(n)) {
            figure(h, name, "Grid point (α, β) is w + α·d₁ + β·d₂ for the centre network w and filter-normalised random directions d₁, d₂.");
        }
    }
}

/// The settings of config.json as a table, and the file itself folded away.
pub(super) fn configuration(h: &mut String, c: &Value) {
    h.push_str("<h2>Configuration</h2>\n");
    config_table(h, c);
    let pretty = serde_json::to_string_pretty(c).unwrap_or_default();
    let _ = writeln!(
        h,
        "<details><summary>config.json</summary>\n<pre>{}</pre>\n</details>",
        esc(&pretty)
    );
}
