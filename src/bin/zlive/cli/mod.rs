//! What a person runs: the command line itself, `zlive status`, `zlive plan` and the listing of
//! snapshots. Reads the system and PID 1's view of it; never imports a pool, opens a volume or
//! mounts anything (the service verbs the units run live in the other rooms).

pub mod args;
pub mod plan;
pub mod secure_boot;
pub mod status;

/// `zlive completions SHELL`: the completion script clap derives from the command line, which
/// `make install` and the Debian package install for bash, zsh and fish.
pub fn completions(shell: args::Shell) {
    use clap::CommandFactory;
    use clap_complete::{generate, shells};
    let mut command = args::Cli::command();
    let out = &mut std::io::stdout();
    match shell {
        args::Shell::Bash => generate(shells::Bash, &mut command, "zlive", out),
        args::Shell::Zsh => generate(shells::Zsh, &mut command, "zlive", out),
        args::Shell::Fish => generate(shells::Fish, &mut command, "zlive", out),
    }
}
