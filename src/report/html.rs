//! `report.html`: one self-contained page (inline CSS, no scripts, no external URLs) with the
//! configuration, the training summary, the eval and ensemble tables, the figures (relative links
//! to `figures/*.svg` and `*.png`) and notes about missing inputs. Every JSON string is escaped.

use super::data::{get, Inputs, Metrics, PathEval};
use super::levels::fmt_sig;
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Turns `backtick` spans of already escaped text into `<code>` elements.
fn code_spans(s: &str) -> String {
    let parts: Vec<&str> = s.split('`').collect();
    if parts.len().is_multiple_of(2) {
        return s.to_string();
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 1 {
                format!("<code>{p}</code>")
            } else {
                p.to_string()
            }
        })
        .collect()
}

fn num(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "–".into(), |v| fmt_sig(v, 4))
}

const CSS: &str = "
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em}th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}td.c{text-align:center}
tr:nth-child(even) td{background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.92em}
.notes{background:#fff8e1;border:1px solid #f0d890;padding:.6em 1em}
.notes li{margin:.2em 0}
code,pre{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f6f6;padding:.8em;overflow:auto}
details{margin:.8em 0}
";

/// The whole page.
pub(crate) fn report(exp: &Path, inp: &Inputs, figures: &[&str], notes: &[String]) -> String {
    let title = inp.title();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t} — modeconn report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>Mode connectivity: {t}</h1>\n<p class=\"sub\">Experiment <code>{d}</code></p>\n",
        t = esc(&title),
        d = esc(&exp.display().to_string())
    );
    if !notes.is_empty() {
        h.push_str("<div class=\"notes\"><strong>Missing pieces</strong><ul>\n");
        for n in notes {
            let _ = writeln!(h, "<li>{}</li>", code_spans(&esc(n)));
        }
        h.push_str("</ul></div>\n");
    }
    let has = |n: &str| figures.contains(&n);

    if !inp.logs.is_empty() || has("training") {
        h.push_str("<h2>Training</h2>\n");
        training_table(&mut h, inp);
        if has("training") {
            figure(
                &mut h,
                "training",
                "Loss, accuracy and learning rate per epoch (train solid, test dashed).",
            );
        }
    }
    if let Some(a) = &inp.along {
        h.push_str("<h2>Curve versus line segment</h2>\n");
        along_table(&mut h, &a.curve, a.line.as_ref());
        if has("along_curve") {
            figure(
                &mut h,
                "along_curve",
                "Train loss, test error and test accuracy along the curve (solid) and the line segment (dashed); vertical segments mark the barriers.",
            );
        }
    }
    if let Some(e) = &inp.ensemble {
        h.push_str("<h2>Ensembles</h2>\n");
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
        if has("ensemble") {
            figure(
                &mut h,
                "ensemble",
                "Test accuracy and NLL of the curve ensemble against its size, with the endpoints and their two-model ensemble; reliability diagram of the curve ensemble and the start endpoint.",
            );
        }
    }
    if let Some(p) = &inp.plane {
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
            if has(name) {
                figure(&mut h, name, text);
            }
        }
    }
    if let Some(c) = &inp.config {
        h.push_str("<h2>Configuration</h2>\n");
        config_table(&mut h, c);
        let pretty = serde_json::to_string_pretty(c).unwrap_or_default();
        let _ = writeln!(
            h,
            "<details><summary>config.json</summary>\n<pre>{}</pre>\n</details>",
            esc(&pretty)
        );
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn figure(h: &mut String, name: &str, caption: &str) {
    let n = esc(name);
    let _ = writeln!(
        h,
        "<figure><a href=\"figures/{n}.png\"><img src=\"figures/{n}.svg\" alt=\"{n}\"></a>\n<figcaption><strong>{n}</strong>: {} <a href=\"figures/{n}.png\">PNG</a> · <a href=\"figures/{n}.svg\">SVG</a></figcaption></figure>",
        esc(caption)
    );
}

fn training_table(h: &mut String, inp: &Inputs) {
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
const STATS: [&str; 6] = ["start", "end", "min", "max", "mean", "int"];

fn pretty_metric(key: &str) -> String {
    METRICS
        .iter()
        .find(|m| m.0 == key)
        .map_or_else(|| key.replace('_', " "), |m| m.1.to_string())
}

fn along_table(h: &mut String, curve: &PathEval, line: Option<&PathEval>) {
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
fn plain(v: &Value) -> String {
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
fn config_table(h: &mut String, c: &Value) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(num(Some(0.123456)), "0.1235");
        assert_eq!(num(None), "–");
        assert_eq!(num(Some(f64::NAN)), "–");
        assert_eq!(pretty_metric("test_ece"), "test ECE");
        assert_eq!(pretty_metric("foo_bar"), "foo bar");
        assert_eq!(
            code_spans("run `a &amp; b` now"),
            "run <code>a &amp; b</code> now"
        );
        assert_eq!(code_spans("odd ` tick"), "odd ` tick");
        let cpu = serde_json::json!({"avx2": true, "model": "AMD EPYC", "onednn_isa_cap": null});
        assert_eq!(plain(&cpu), "avx2 true, model AMD EPYC, onednn_isa_cap –");
    }
}
