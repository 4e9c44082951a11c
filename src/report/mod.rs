//! Figures and the HTML report of an experiment directory.
//!
//! [`plot_all`] reads whatever exists of `config.json`, `*/log.jsonl`, `eval/along.json`,
//! `eval/ensemble.json` and `landscape/plane.json` (formats in `docs/FORMATS.md`), draws every
//! figure whose inputs exist as `figures/<name>.png` and `figures/<name>.svg` (one drawing routine
//! per figure, generic over the plotters backend), and writes a self-contained `report.html`.
//! Text is rendered with the embedded DejaVu Sans, so no system fonts are needed.

pub(crate) mod budget;
pub(crate) mod data;
mod figures;
mod html;
mod landscape;
mod levels;

pub use levels::log_levels;

use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// What [`plot_all`] wrote, and which inputs were missing (each note names the command that makes them).
#[derive(Debug, Clone, Default)]
pub struct PlotSummary {
    pub written: Vec<PathBuf>,
    pub missing: Vec<String>,
}

/// Reads what exists in `exp_dir` (config.json, */log.jsonl, eval/along.json, eval/ensemble.json,
/// landscape/plane.json), writes `figures/<name>.png` and `figures/<name>.svg` for every figure whose
/// inputs exist, and `report.html`. Returns the written paths and notes about missing inputs.
/// Fails only if nothing at all can be drawn.
pub fn plot_all(exp_dir: &Path) -> Result<PlotSummary> {
    plot_compared(exp_dir, None, &[])
}

/// Another experiment whose curve `plot --compare` draws beside this one's.
#[derive(Debug, Clone)]
pub struct Compared {
    pub label: String,
    pub exp: PathBuf,
}

/// [`plot_all`], plus the `compare` figure and report section when `others` is not empty: this
/// experiment's curve (named `label`, else by its folder's name) and each other's, swept along
/// t, on the same axes. A missing `eval/along.json` in any of them is an error.
pub fn plot_compared(
    exp_dir: &Path,
    label: Option<&str>,
    others: &[Compared],
) -> Result<PlotSummary> {
    register_font()?;
    let compared = load_compared(exp_dir, label, others)?;
    let inputs = data::Inputs::load(exp_dir);
    let mut missing = inputs.notes.clone();
    let nothing = |missing: &[String]| {
        anyhow::anyhow!(
            "nothing to plot in {}:\n  {}",
            exp_dir.display(),
            missing.join("\n  ")
        )
    };
    if inputs.nothing_to_draw() {
        return Err(nothing(&missing));
    }
    crate::experiment::check_own_folders(exp_dir)?;
    let fig_dir = exp_dir.join("figures");
    std::fs::create_dir_all(&fig_dir).with_context(|| format!("creating {}", fig_dir.display()))?;
    // Temporary files a killed or failed plot left behind.
    crate::files::sweep_temp_files(exp_dir);
    crate::files::sweep_temp_files(&fig_dir);
    let mut written = Vec::new();
    let mut figures = Vec::new();
    let title = inputs.title();

    if let Some(plane) = &inputs.plane {
        for metric in [landscape::Metric::TrainLoss, landscape::Metric::TestErr] {
            match landscape::Landscape::new(plane, metric, &title) {
                Some(fig) => {
                    written.extend(render(&fig, &fig_dir, metric.figure_name())?);
                    figures.push(metric.figure_name());
                }
                None => missing.push(format!(
                    "landscape/plane.json has no {} values yet: run `modeconn landscape --exp {}` to finish the grid",
                    metric.key(),
                    exp_dir.display()
                )),
            }
        }
    }
    random_figures(&inputs, &title, &fig_dir, &mut written, &mut figures)?;
    line_figures(&inputs, &title, &fig_dir, &mut written, &mut figures)?;
    if !compared.is_empty() {
        let fig = figures::CompareFigure {
            runs: &compared,
            title: &title,
        };
        written.extend(render(&fig, &fig_dir, "compare")?);
        figures.push("compare");
    }

    if figures.is_empty() {
        return Err(nothing(&missing));
    }
    let report = exp_dir.join("report.html");
    atomic_write(
        &report,
        html::report(exp_dir, &inputs, &compared, &figures, &missing).as_bytes(),
    )?;
    written.push(report);
    Ok(PlotSummary { written, missing })
}

/// This experiment's sweep and each compared one's, labelled; empty when nothing is compared.
fn load_compared(
    exp_dir: &Path,
    label: Option<&str>,
    others: &[Compared],
) -> Result<Vec<(String, data::Along)>> {
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let own = label.map(str::to_string).unwrap_or_else(|| {
        exp_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| exp_dir.display().to_string())
    });
    std::iter::once((own, exp_dir))
        .chain(others.iter().map(|c| (c.label.clone(), c.exp.as_path())))
        .map(|(label, exp)| Ok((label, data::along_of(exp)?)))
        .collect()
}

/// The figures of the random landscapes that exist: the plane's two
/// (`landscape_random_train_loss`, `landscape_random_test_error`) and the
/// line's (`landscape_random_1d`).
fn random_figures(
    inputs: &data::Inputs,
    title: &str,
    fig_dir: &Path,
    written: &mut Vec<PathBuf>,
    figures: &mut Vec<&'static str>,
) -> Result<()> {
    if let Some(plane) = &inputs.random {
        for metric in [landscape::Metric::TrainLoss, landscape::Metric::TestErr] {
            if let Some(fig) = landscape::Landscape::new(plane, metric, title) {
                written.extend(render(&fig, fig_dir, metric.random_figure_name())?);
                figures.push(metric.random_figure_name());
            }
        }
    }
    if let Some(line) = &inputs.random_1d {
        written.extend(render(
            &figures::SliceFigure { line, title },
            fig_dir,
            "landscape_random_1d",
        )?);
        figures.push("landscape_random_1d");
    }
    Ok(())
}

/// The line-chart figures whose inputs exist: along_curve, ensemble, budget
/// and training.
fn line_figures(
    inputs: &data::Inputs,
    title: &str,
    fig_dir: &Path,
    written: &mut Vec<PathBuf>,
    figures: &mut Vec<&'static str>,
) -> Result<()> {
    if let Some(along) = &inputs.along {
        written.extend(render(
            &figures::AlongFigure { along, title },
            fig_dir,
            "along_curve",
        )?);
        figures.push("along_curve");
    }
    if let Some(align) = inputs.align.as_ref().filter(|a| a.raw.is_some()) {
        let fig = figures::AlignFigure {
            align,
            along: inputs.along.as_ref(),
            title,
        };
        written.extend(render(&fig, fig_dir, "align")?);
        figures.push("align");
    }
    if let Some(ens) = &inputs.ensemble {
        written.extend(render(
            &figures::EnsembleFigure { ens, title },
            fig_dir,
            "ensemble",
        )?);
        figures.push("ensemble");
    }
    if let Some(budget) = &inputs.budget {
        written.extend(render(
            &figures::BudgetFigure { budget, title },
            fig_dir,
            "budget",
        )?);
        figures.push("budget");
    }
    if !inputs.logs.is_empty() {
        written.extend(render(
            &figures::TrainingFigure {
                logs: &inputs.logs,
                title,
            },
            fig_dir,
            "training",
        )?);
        figures.push("training");
    }

    Ok(())
}

/// A figure that draws itself onto any plotters backend.
pub(crate) trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// "cannot draw figures/NAME from FILE": the input a figure is drawn from,
/// named with how to make it again.
fn drawing_error(fig_dir: &Path, name: &str) -> String {
    let (file, cmd) = match name {
        n if n.starts_with("landscape_random_1d") => {
            ("landscape/random-1d.json", "landscape --plane random-1d")
        }
        n if n.starts_with("landscape_random") => {
            ("landscape/random.json", "landscape --plane random")
        }
        n if n.starts_with("landscape") => ("landscape/plane.json", "landscape"),
        "along_curve" | "compare" => ("eval/along.json", "eval"),
        "align" => ("eval/align.json", "align"),
        "ensemble" => ("eval/ensemble.json", "eval --ensemble K"),
        _ => ("the training logs (*/log.jsonl)", "the training step"),
    };
    let exp = fig_dir.parent().unwrap_or(fig_dir);
    format!(
        "cannot draw figures/{name} from {}/{file}: it holds values no figure can show (a grid without extent, or a damaged file); make it again with `modeconn {cmd} --exp {}`",
        exp.display(),
        exp.display()
    )
}

/// Draws `fig` to `<dir>/<name>.png` and `<dir>/<name>.svg` (atomically) and returns both paths.
fn render(fig: &impl Figure, dir: &Path, name: &str) -> Result<[PathBuf; 2]> {
    let (w, h) = fig.size();
    if w == 0 || h == 0 {
        bail!(
            "{} (its figure would be {w}x{h} pixels)",
            drawing_error(dir, name)
        );
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root).with_context(|| drawing_error(dir, name))?;
        root.present()?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .with_context(|| format!("encoding {name}.png"))?;
    let png_path = dir.join(format!("{name}.png"));
    atomic_write(&png_path, &png)?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root).with_context(|| drawing_error(dir, name))?;
        root.present()?;
    }
    let svg_path = dir.join(format!("{name}.svg"));
    atomic_write(&svg_path, svg.as_bytes())?;
    Ok([png_path, svg_path])
}

/// The program's one atomic writer: a new temporary file of a unique name,
/// created with `O_EXCL|O_NOFOLLOW` (a planted link is never followed),
/// synced, renamed over `path`, and removed on error.
fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::files::write_atomic(path, bytes)
}

static FONT_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/DejaVuSans.ttf"
));

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" family (once per process).
fn register_font() -> Result<()> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    static OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    ONCE.call_once(|| {
        let ok =
            plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_BYTES).is_ok();
        OK.store(ok, std::sync::atomic::Ordering::SeqCst);
    });
    if !OK.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("the embedded font assets/DejaVuSans.ttf could not be loaded");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testdata;

#[cfg(test)]
mod tests {
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
}
