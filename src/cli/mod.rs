//! The command line: arguments, one thin function per subcommand (convert
//! the arguments, take the experiment's lock, call the library, render the
//! result), and the terminal observer. Nothing outside this folder and
//! main.rs knows about it.

mod align;
mod args;
mod convert;
mod eval;
mod landscape;
mod output;
mod run;
mod step_args;
mod train;

use anyhow::{bail, Result};
use serde_json::json;

pub use args::Cli;
use args::{Command, DownloadArgs, PlotArgs};
use modeconn::data::{self, DatasetKind};
use modeconn::report::Compared;
use output::Terminal;

pub fn dispatch(cli: Cli) -> Result<()> {
    let out = Terminal::new(cli.json);
    match cli.command {
        Command::Run(a) => run::run(&a, &out),
        Command::TrainEndpoints(a) => train::endpoints(&a, &out),
        Command::FitCurve(a) => train::curve(&a, &out),
        Command::Fge(a) => train::fge(&a, &out),
        Command::Align(a) => align::align(&a, &out),
        Command::Eval(a) => eval::eval(&a, &out),
        Command::Landscape(a) => landscape::landscape(&a, &out),
        Command::Export(a) => eval::export(&a, &out),
        Command::Merge(a) => landscape::merge(&a, &out),
        Command::Plot(a) => plot(&a, &out),
        Command::Download(a) => download(&a, &out),
    }
}

/// The runtime for `a`, its warnings shown once.
fn runtime(
    a: &args::RuntimeArgs,
    precision: modeconn::runtime::PrecisionChoice,
    out: &Terminal,
) -> Result<modeconn::runtime::Runtime> {
    use modeconn::runtime::PrecisionChoice;
    // A TorchScript network computes in fp32 (bf16 would need autocast
    // inside the user's module, which the archive does not have).
    let rt = if modeconn::model::script::any_trusted() {
        if a.precision == Some(PrecisionChoice::Bf16) {
            bail!("--precision bf16: a TorchScript network (--model-file) computes in fp32; drop --precision or give fp32");
        }
        args::RuntimeArgs {
            precision: Some(PrecisionChoice::Fp32),
            ..a.clone()
        }
        .runtime(precision)?
    } else {
        a.runtime(precision)?
    };
    for w in &rt.warnings {
        out.warn(w);
    }
    Ok(rt)
}

/// The result of a shard: where its part is, and what to do next.
fn shard_done(
    exp: &std::path::Path,
    target: modeconn::shard::Target,
    shard: modeconn::vocab::Shard,
    seconds: f64,
    out: &Terminal,
) {
    let part = target.part(exp, shard);
    out.result(
        &format!(
            "{}: shard {shard} of {} done ({seconds:.1}s of compute); when every shard is done: modeconn merge --exp {}\n",
            part.display(),
            target.output(),
            exp.display()
        ),
        &json!({"part": part, "shard": shard, "of": target.output(), "seconds": seconds}),
    );
}

fn plot(a: &PlotArgs, out: &Terminal) -> Result<()> {
    let _lock = modeconn::lock::ExperimentLock::acquire_existing(&a.exp)?;
    let others: Vec<Compared> = a.compare.iter().map(|c| compared(c)).collect();
    let s = modeconn::report::plot_compared(&a.exp, a.label.as_deref(), &others)?;
    for m in &s.missing {
        out.warn(&format!("note: {m}"));
    }
    let human: String = s
        .written
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    out.result(&human, &json!({"written": s.written, "missing": s.missing}));
    Ok(())
}

/// `--compare DIR` (labelled by the folder's name) or `--compare LABEL=DIR`.
fn compared(arg: &str) -> Compared {
    let as_dir = std::path::Path::new(arg);
    let (label, exp) = match arg.split_once('=') {
        Some((label, dir)) if !as_dir.is_dir() && !label.is_empty() => {
            (label.to_string(), dir.into())
        }
        _ => {
            let name = as_dir
                .file_name()
                .map_or(arg.to_string(), |n| n.to_string_lossy().into_owned());
            (name, as_dir.to_path_buf())
        }
    };
    Compared { label, exp }
}

fn download(a: &DownloadArgs, out: &Terminal) -> Result<()> {
    let kind = DatasetKind::parse(&a.dataset)?;
    if kind == DatasetKind::ImageFolder {
        bail!("image-folder datasets are local directories; there is nothing to download");
    }
    let dest = a
        .data_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("data").join(kind.name()));
    data::download(kind, &dest)?;
    out.result(
        &format!("{}\n", dest.display()),
        &json!({"dataset": kind, "data_dir": dest}),
    );
    Ok(())
}
