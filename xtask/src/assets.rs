// SPDX-License-Identifier: GPL-2.0-only
//! `cargo xtask assets DIR`: the man pages (clap_mangen) and the bash, zsh and fish completions
//! (clap_complete) of `seng` and `seng-sim`, rendered from their clap definitions, which are
//! compiled in from the binaries' own `cli.rs` so there is one definition of each command line.
//!
//! Layout: `DIR/man/man8/seng*.8` (an admin command), `DIR/man/man1/seng-sim*.1`, and
//! `DIR/completions/{bash/NAME,zsh/_NAME,fish/NAME.fish}`, as the files are named when installed.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::paths::{mkdir, remove_all};

// Only rendered here: nothing reads the parsed fields.
#[allow(dead_code)]
#[path = "../../seng-nl/src/bin/seng/cli.rs"]
mod seng_cli;

#[allow(dead_code)]
#[path = "../../seng-sim/src/cli.rs"]
mod sim_cli;

/// Writes every page and completion script under `out` (replacing what was there).
pub fn write(out: &Path) -> Result<()> {
    remove_all(out)?;
    for (cmd, section) in [(seng_cli::Cli::command(), "8"), (sim_cli::Cli::command(), "1")] {
        let name = cmd.get_name().to_string();
        let man = out.join("man").join(format!("man{section}"));
        mkdir(&man)?;
        // Every page's footer names the program and its version, not the subcommand.
        let source = format!("{name} {}", cmd.get_version().unwrap_or_default());
        pages(cmd.clone(), section, &source, &man)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let file = match shell {
                Shell::Zsh => format!("_{name}"),
                Shell::Fish => format!("{name}.fish"),
                _ => name.clone(),
            };
            let dir = out.join("completions").join(shell.to_string());
            mkdir(&dir)?;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut script);
            fs::write(dir.join(&file), script)
                .with_context(|| format!("cannot write the {shell} completion of {name}"))?;
        }
    }
    Ok(())
}

/// One page for `cmd` and one for each of its visible subcommands, at any depth
/// (`seng-enclave-add.8`), as clap_mangen's `generate_to` does but in `section`.
fn pages(cmd: clap::Command, section: &str, source: &str, dir: &Path) -> Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub.clone(), section, source, dir)?;
    }
    let man = clap_mangen::Man::new(cmd).section(section).source(source);
    man.generate_to(dir)
        .with_context(|| format!("cannot write {}", dir.join(man.get_filename()).display()))?;
    Ok(())
}
