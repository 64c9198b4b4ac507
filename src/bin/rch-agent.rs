//! The `rch-agent` program rch installs on workers (see `rch::agent`). It
//! compiles the agent's modules on their own, without the rest of rch, so
//! the program copied to each worker stays small.

#[path = "../agent/mod.rs"]
#[allow(dead_code)]
mod agent;

fn main() {
    std::process::exit(agent::main(std::env::args_os().collect()));
}
