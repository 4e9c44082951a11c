//! The tables of the report's sections: the training summary, the statistics along the curve and
//! the line segment, the ensemble comparison and the configuration.

use super::{esc, num};
use crate::report::data::{get, Ensemble, Inputs, Metrics, PathEval};
use crate::report::levels::fmt_sig;
use serde_json::Value;
use std::fmt::Write;

/// One row per model: its last epoch's metrics and the total training time.
pub(super) fn training_table(h: &mut String, inp: &Inputs) {
    if inp.logs.is_empty() {
        return;
    }
    h.push_str("<table>\n<tr><th>model</th><th>epochs</th><th>train loss</th><th>train acc (%)</th><th>test loss</th><th>test acc (%)</th><th>final lr</th><th>time (s)</th></tr>\n");
    for l in &inp.logs {
        let name = match l.last("test_t") {
            Some(t) => format!("{} (test at t = {})", l.label, fmt_sig(t, 3)),
            None => l.label.clone(),
        };
        let secs: f64 = l.series("seconds").iter().map(|p| p.1).sum();
        let epochs = l.last("epoch").unwrap_or(l.rows.len() as f64);
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td>",
            esc(&name),
            fmt_sig(epochs, 6)
        );
        for key in ["train_loss", "train_acc", "test_loss", "test_acc", "lr"] {
            let _ = write!(h, "<td class=\"n\">{}</td>", num(l.last(key)));
        }
        let _ = writeln!(
            h,
            "<td class=\"n\">{}</td></tr>",
            if secs > 0.0 {
                fmt_sig(secs, 4)
            } else {
                "–".into()
            }
        );
    }
    h.push_str("</table>\n");
}

/// One row per model: the endpoints, their two-model ensemble and the curve ensemble.
pub(super) fn ensemble_table(h: &mut String, e: &Ensemble) {
    let k = e
        .meta
        .get("k")
        .and_then(Value::as_u64)
        .map_or(String::new(), |k| format!(" (k = {k})"));
    let rows: [(String, &Metrics); 4] = [
        ("start endpoint".into(), &e.start),
        ("end endpoint".into(), &e.end),
        ("two-endpoint ensemble".into(), &e.endpoints),
        (format!("curve ensemble{k}"), &e.curve),
    ];
    h.push_str("<table>\n<tr><th>model</th><th>accuracy (%)</th><th>NLL</th><th>ECE</th><th>Brier</th><th>AUROC</th></tr>\n");
    for (name, m) in rows {
        let _ = write!(h, "<tr><td>{}</td>", esc(&name));
        for key in ["acc", "nll", "ece", "brier", "auroc"] {
            let _ = write!(h, "<td class=\"n\">{}</td>", num(get(m, key)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

/// Metric keys of eval/along.json in table order, with their readable names.
const METRICS: [(&str, &str); 9] = [
    ("train_loss", "train loss"),
    ("train_nll", "train NLL"),
    ("train_err", "train error (%)"),
    ("train_acc", "train accuracy (%)"),
    ("test_loss", "test loss"),
    ("test_nll", "test NLL"),
    ("test_err", "test error (%)"),
    ("test_acc", "test accuracy (%)"),
    ("test_ece", "test ECE"),
];
/// Statistics of a metric along a path (`int`: its integral over t).
const STATS: [&str; 6] = ["start", "end", "min", "max", "mean", "int"];

/// The readable name of a metric key (`test_err` → "test error (%)").
pub(super) fn pretty_metric(key: &str) -> String {
    METRICS
        .iter()
        .find(|m| m.0 == key)
        .map_or_else(|| key.replace('_', " "), |m| m.1.to_string())
}

/// One row per metric with its statistics on the curve and the line segment, then the lengths
/// and the barriers.
pub(super) fn along_table(h: &mut String, curve: &PathEval, line: Option<&PathEval>) {
    let paths: Vec<(&str, &PathEval)> = std::iter::once(("curve", curve))
        .chain(line.map(|l| ("line segment", l)))
        .collect();
    let mut keys: Vec<String> = METRICS
        .iter()
        .map(|m| m.0.to_string())
        .filter(|k| paths.iter().any(|(_, p)| p.summary.contains_key(k)))
        .collect();
    for (_, p) in &paths {
        for k in p.summary.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    h.push_str("<table>\n<tr><th rowspan=\"2\">metric</th>");
    for (name, _) in &paths {
        let _ = write!(h, "<th colspan=\"6\">{name}</th>");
    }
    h.push_str("</tr>\n<tr>");
    for _ in &paths {
        for s in STATS {
            let _ = write!(h, "<th>{s}</th>");
        }
    }
    h.push_str("</tr>\n");
    for k in &keys {
        let _ = write!(h, "<tr><td>{}</td>", esc(&pretty_metric(k)));
        for (_, p) in &paths {
            let s = p.summary.get(k);
            for stat in STATS {
                let _ = write!(
                    h,
                    "<td class=\"n\">{}</td>",
                    num(s.and_then(|s| get(s, stat)))
                );
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("<tr><td>length</td>");
    for (_, p) in &paths {
        let _ = write!(h, "<td class=\"c\" colspan=\"6\">{}</td>", num(p.length));
    }
    h.push_str("</tr>\n");
    let mut bkeys: Vec<&String> = paths.iter().flat_map(|(_, p)| p.barrier.keys()).collect();
    bkeys.sort_by_key(|k| {
        METRICS
            .iter()
            .position(|m| m.0 == k.as_str())
            .unwrap_or(usize::MAX)
    });
    bkeys.dedup();
    for k in bkeys {
        let _ = write!(h, "<tr><td>barrier: {}</td>", esc(&pretty_metric(k)));
        for (_, p) in &paths {
            let cell = match (get(&p.barrier, k), get(&p.barrier_t, k)) {
                (Some(b), Some(t)) => format!("{} at t = {}", fmt_sig(b, 4), fmt_sig(t, 3)),
                (b, _) => num(b),
            };
            let _ = write!(h, "<td class=\"c\" colspan=\"6\">{cell}</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n<p class=\"sub\">int = integral over t ∈ [0, 1] (the curve's mean under uniform t); barrier = largest excess of the metric over the chord joining its end values.</p>\n");
}

/// A config value as a person reads it: strings unquoted, nested objects as
/// "key value, key value" (the runtime's CPU features, an optimiser), null as "–".
pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".to_string(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k} {}", plain(v)))
            .collect::<Vec<_>>()
            .join(", "),
        v => v.to_string(),
    }
}

/// One row per setting: top-level sections are flattened one level (`train` / `lr` / `0.05`).
pub(super) fn config_table(h: &mut String, c: &Value) {
    let Value::Object(top) = c else { return };
    h.push_str("<table>\n<tr><th>section</th><th>setting</th><th>value</th></tr>\n");
    let cell = |v: &Value| esc(&plain(v));
    for (section, v) in top {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let _ = writeln!(
                        h,
                        "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                        esc(section),
                        esc(k),
                        cell(v)
                    );
                }
            }
            v => {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td></td><td><code>{}</code></td></tr>",
                    esc(section),
                    cell(v)
                );
            }
        }
    }
    h.push_str("</table>\n");
}
