//! What both binaries' command lines share: the flags every run takes ([`CommonArgs`]) and the
//! subcommands that print the binary's own documentation ([`DocCmd`]: shell completions and the
//! man page, generated from the same clap definition that parses the flags, so they cannot
//! drift from it).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::logging::LogFormat;

/// The flags of every run of either binary, flattened into its own `Args`.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// YAML config file (see config.example.yaml); without it, the first of
    /// ~/.config/warren/config.yaml and /etc/warren/config.yaml that exists.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Log filter: error, warn (or warning), info, debug, trace, off, or target=level directives;
    /// wins over RUST_LOG. Anything else (or a bad RUST_LOG) exits 2.
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,
    /// Log line format on stderr: text, or json (one object per line).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t, global = true)]
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// The [`super::Binary`] these flags describe, for the binary called `name`.
    pub fn binary(&self, name: &'static str) -> super::Binary {
        super::Binary {
            name,
            config: self.config.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format,
        }
    }
}

/// Subcommands that print documentation generated from the binary's clap definition.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DocCmd {
    /// Print a completion script for SHELL to stdout, e.g.
    /// `warren-local completions bash > /usr/share/bash-completion/completions/warren-local`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g. `warren-local man > warren-local.1`; with
    /// --out-dir, write it and one page per subcommand (warren-local-check.1, ...) there.
    Man {
        /// Directory to write every page into, instead of the main page to stdout.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

impl DocCmd {
    /// Writes the completion script or man page of `command` (the binary's whole clap
    /// definition) to stdout; exit 0, or 1 if stdout cannot be written.
    pub fn print(&self, mut command: clap::Command) -> ExitCode {
        let mut out = Vec::new();
        let rendered = match self {
            DocCmd::Completions { shell } => {
                let name = command.get_name().to_owned();
                clap_complete::generate(*shell, &mut command, name, &mut out);
                Ok(())
            }
            DocCmd::Man { out_dir: None } => clap_mangen::Man::new(command).render(&mut out),
            DocCmd::Man { out_dir: Some(dir) } => {
                return match clap_mangen::generate_to(command, dir) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: writing man pages to {}: {e}", dir.display());
                        ExitCode::from(1)
                    }
                };
            }
        };
        match rendered.and_then(|()| std::io::stdout().write_all(&out)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: writing to stdout: {e}");
                ExitCode::from(1)
            }
        }
    }
}
