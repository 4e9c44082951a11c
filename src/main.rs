//! The `modeconn` binary: the command line over the library.

mod cli;

use clap::Parser;

fn main() {
    allocation_failures_are_errors();
    let cli = cli::Cli::parse();
    if let Err(e) = cli::dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// tch panics when libtorch cannot allocate (sizes are checked against the
/// memory available beforehand, but another process may take it meanwhile):
/// such a panic becomes an error with exit code 1 and the size libtorch
/// asked for. Any other panic is a bug and keeps Rust's report.
fn allocation_failures_are_errors() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let oom = [
            "you tried to allocate",
            "out of memory",
            "DefaultCPUAllocator",
        ];
        if oom.iter().any(|k| msg.contains(k)) {
            // The payload is libtorch's error with its C++ frames; keep the size.
            let asked = msg.split("you tried to allocate ").nth(1).map(|r| {
                let n: String = r.chars().take_while(char::is_ascii_digit).collect();
                format!(" ({n} bytes in one tensor)")
            });
            eprintln!(
                "error: libtorch could not allocate the memory this work needs{}. Use smaller sizes (--batch-size, --eval-batch-size, --widen, --grid), or free memory",
                asked.unwrap_or_default()
            );
            std::process::exit(1);
        }
        default(info);
    }));
}
