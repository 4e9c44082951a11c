use clap::Parser;

fn main() {
    let cli = modeconn::cli::Cli::parse();
    if let Err(e) = modeconn::commands::dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
