//! The `rch` binary: parse the command line and dispatch; the work lives in the library.

use clap::{CommandFactory, Parser};

fn main() {
    // A completion request from the shell (`rch completions`): answer, exit.
    clap_complete::CompleteEnv::with_factory(rch::cli::Cli::command)
        .var(rch::cli::completions::COMPLETE_VAR)
        .complete();
    let code = match rch::cli::Cli::try_parse() {
        Ok(cli) => rch::cli::dispatch(cli),
        Err(err) => rch::cli::parse_failure(err),
    };
    std::process::exit(code);
}
