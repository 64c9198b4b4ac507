//! Counting the remote commands rch starts on a lab worker: the worker's
//! `~/.bashrc` (bash, which sshd runs for every remote command, reads it;
//! zsh reads `~/.zshenv`) appends a line to a file in the exchange dir for
//! each one but the daemon's worker probes (a script starting `base=$1`),
//! which run on their own schedule.

use super::TestEnv;
use std::path::{Path, PathBuf};

/// Start counting on worker `index` (of `env.lab.workers()`); returns the tally file.
pub fn count_shells_on(env: &TestEnv, index: usize) -> PathBuf {
    let worker = &env.lab.workers()[index];
    let tally = env.exchange_dir().join(format!("shells-{}", worker.id));
    let script = |var: &str| {
        format!(
            "case ${var} in \"sh -lc 'base=\"*) ;; *) echo \"${{{var}:0:60}}\" | head -1 >> {t} ;; esac\n",
            t = tally.display()
        )
    };
    let home = worker.home();
    std::fs::write(home.join(".bashrc"), script("BASH_EXECUTION_STRING")).unwrap();
    std::fs::write(home.join(".zshenv"), script("ZSH_EXECUTION_STRING")).unwrap();
    tally
}

/// Start counting on the first worker.
pub fn count_shells(env: &TestEnv) -> PathBuf {
    count_shells_on(env, 0)
}

/// Remote commands tallied since the tally held `before` of them.
pub fn shells_since(tally: &Path, before: usize) -> usize {
    let now = std::fs::read_to_string(tally).unwrap_or_default();
    now.lines().count() - before
}
