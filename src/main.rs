//! The `rch` binary: parse the command line and dispatch; the work lives in the library.

use clap::Parser;

fn main() {
    let cli = rch::cli::Cli::parse();
    std::process::exit(rch::cli::dispatch(cli));
}
