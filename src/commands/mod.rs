//! One module per subcommand; each turns parsed arguments into configs,
//! validates them once, and calls into the library.

pub mod endpoints;
pub mod eval;
pub mod fit_curve;
pub mod run;

use anyhow::{bail, Result};

use crate::cli::{Cli, Command, DownloadArgs, PlotArgs};
use crate::data::{self, DatasetKind};

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => run::run(&a),
        Command::TrainEndpoints(a) => endpoints::run(&a),
        Command::FitCurve(a) => fit_curve::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Landscape(a) => eval::landscape(&a),
        Command::Export(a) => eval::export(&a),
        Command::Plot(a) => plot(&a),
        Command::Download(a) => download(&a),
    }
}

fn plot(a: &PlotArgs) -> Result<()> {
    let _lock = crate::lock::ExperimentLock::acquire_existing(&a.exp)?;
    let s = crate::report::plot_all(&a.exp)?;
    for p in &s.written {
        println!("{}", p.display());
    }
    for m in &s.missing {
        eprintln!("note: {m}");
    }
    Ok(())
}

fn download(a: &DownloadArgs) -> Result<()> {
    let kind = DatasetKind::parse(&a.dataset)?;
    if kind == DatasetKind::ImageFolder {
        bail!("image-folder datasets are local directories; there is nothing to download");
    }
    let dest = a
        .data_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("data").join(kind.name()));
    data::download(kind, &dest)?;
    println!("{}", dest.display());
    Ok(())
}
