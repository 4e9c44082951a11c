//! `report.html`: one self-contained page (inline CSS, no scripts, no external URLs) with the
//! configuration, the training summary, the eval and ensemble tables, the figures (relative links
//! to `figures/*.svg` and `*.png`) and notes about missing inputs. Every JSON string is escaped.
//!
//! - this file: the page around the sections (head, notes, end) and the escaping helpers;
//! - [`sections`]: one function per section, in page order;
//! - [`tables`]: the tables of those sections.

mod sections;
mod tables;

use super::data::{Along, Inputs};
use super::levels::fmt_sig;
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
pub(crate) fn report(
    exp: &Path,
    inp: &Inputs,
    compared: &[(String, Along)],
    figures: &[&str],
    notes: &[String],
) -> String {
    let mut h = String::new();
    head(&mut h, exp, &inp.title());
    missing_pieces(&mut h, notes);
    sections::training(&mut h, inp, figures);
    if let Some(a) = &inp.along {
        sections::along(&mut h, a, figures);
    }
    if !compared.is_empty() {
        sections::compare(&mut h, compared, figures);
    }
    if let Some(a) = &inp.align {
        sections::align(&mut h, a, inp.along.as_ref(), figures);
    }
    if let Some(e) = &inp.ensemble {
        sections::ensembles(&mut h, e, figures);
    }
    sections::budget(&mut h, inp, figures);
    if let Some(p) = &inp.plane {
        sections::landscape(&mut h, p, figures);
    }
    sections::random_landscapes(&mut h, inp, figures);
    if let Some(c) = &inp.config {
        sections::configuration(&mut h, c);
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// The document head with the style sheet, the page title and the experiment directory.
fn head(h: &mut String, exp: &Path, title: &str) {
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t} — modeconn report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>Mode connectivity: {t}</h1>\n<p class=\"sub\">Experiment <code>{d}</code></p>\n",
        t = esc(title),
        d = esc(&exp.display().to_string())
    );
}

/// The notes about missing inputs (each naming the command that makes it), if any.
fn missing_pieces(h: &mut String, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    h.push_str("<div class=\"notes\"><strong>Missing pieces</strong><ul>\n");
    for n in notes {
        let _ = writeln!(h, "<li>{}</li>", code_spans(&esc(n)));
    }
    h.push_str("</ul></div>\n");
}

/// One figure: the SVG, linking to the PNG, with a caption and links to both files.
fn figure(h: &mut String, name: &str, caption: &str) {
    let n = esc(name);
    let _ = writeln!(
        h,
        "<figure><a href=\"figures/{n}.png\"><img src=\"figures/{n}.svg\" alt=\"{n}\"></a>\n<figcaption><strong>{n}</strong>: {} <a href=\"figures/{n}.png\">PNG</a> · <a href=\"figures/{n}.svg\">SVG</a></figcaption></figure>",
        esc(caption)
    );
}

#[cfg(test)]
mod tests {
    use super::tables::{plain, pretty_metric};
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
