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
    crate::files::write_atomic(
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
    crate::files::write_atomic(&png_path, &png)?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root).with_context(|| drawing_error(dir, name))?;
        root.present()?;
    }
    let svg_path = dir.join(format!("{name}.svg"));
    crate::files::write_atomic(&svg_path, svg.as_bytes())?;
    Ok([png_path, svg_path])
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
mod tests;
