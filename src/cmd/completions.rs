//! `faissx completions SHELL`: print a completion script (`clap_complete`) for bash, zsh,
//! fish, elvish or PowerShell, generated from the same definitions the binary parses.

use super::render::println_out;
use super::Ctx;
use crate::engine::Result;
use clap::Args;
use clap_complete::Shell;

const EXAMPLES: &str = "\
Examples:
  faissx completions bash > /etc/bash_completion.d/faissx
  source <(faissx completions bash)          # this bash session only
  faissx completions zsh > \"${fpath[1]}/_faissx\"
  faissx completions fish > ~/.config/fish/completions/faissx.fish";

/// Print a shell completion script for faissx.
///
/// Completes subcommands, flags and their fixed values (--metric, --format, …) and file
/// names where a path is expected. Install the script where the shell loads completions
/// from (see the examples), or source it.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: Shell,
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    // clap_complete's generators list hidden subcommands too: leave out faissx's internal
    // one (the rest of the tree is the binary's own).
    let full = super::command();
    let mut cmd = clap::Command::new("faissx")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "faissx", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Run `faissx completions`.
pub fn run(_ctx: &Ctx, a: CompletionsArgs) -> Result<()> {
    println_out(script(a.shell).trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            for sub in ["build", "search", "query-remote", "completions"] {
                assert!(s.contains(sub), "{shell}: {sub} missing");
            }
            assert!(!s.contains("__probe-index"), "{shell}: the hidden subcommand is not completed");
        }
    }
}
