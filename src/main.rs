//! The `rch` binary: parse the command line and dispatch; the work lives in the library.

use clap::Parser;

fn main() {
    let code = match rch::cli::Cli::try_parse() {
        Ok(cli) => rch::cli::dispatch(cli),
        Err(err) => rch::cli::parse_failure(err),
    };
    std::process::exit(code);
}
