use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warren_common::cli;
use warren_common::config::{LocalConfig, RawConfig, RawLocal};

/// warren-local: the SOCKS5 proxy your applications use; carries each connection through an
/// encrypted tunnel to warren-remote.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// YAML config file (see config.example.yaml); without it, the first of
    /// ~/.config/warren/config.yaml and /etc/warren/config.yaml that exists.
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// SOCKS5 listen address; overrides local.listen.
    #[arg(long, value_name = "IP:PORT", global = true)]
    listen: Option<String>,
    /// warren-remote's host:port; overrides local.remote.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    remote: Option<String>,
    /// Cap on concurrent connections; overrides local.max_connections.
    #[arg(long, value_name = "N", global = true)]
    max_connections: Option<usize>,
    /// Log filter: error, warn (or warning), info, debug, trace, off, or target=level directives;
    /// wins over RUST_LOG. Anything else (or a bad RUST_LOG) exits 2.
    #[arg(long, value_name = "LEVEL", global = true)]
    log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check the config and print it as it takes effect (defaults filled in, secrets masked),
    /// with any warnings; exit 0 if valid, 2 if not. Binds nothing.
    Check {
        /// Also try each remote: TCP reachable? a warren remote? key right? clocks agree?
        /// Exit 1 if any is not.
        #[arg(long)]
        connect: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let binary = cli::Binary {
        name: "warren-local",
        config: args.config.clone(),
        log_level: args.log_level.clone(),
    };
    match args.command {
        Some(Cmd::Check { connect }) => cli::run_check(
            binary,
            |raw| flags(raw, args),
            |config| {
                if connect {
                    warren_local::check_connect(config)
                } else {
                    ExitCode::SUCCESS
                }
            },
        ),
        None => cli::run_server(binary, |raw| flags(raw, args), ready, warren_local::run),
    }
}

/// The flags that override the config file's `local:` section. Only `--listen` or `--remote`
/// creates the section when the file has none; otherwise such a file is refused ("section
/// missing"), whatever else is passed.
fn flags(raw: &mut RawConfig, args: Args) {
    if raw.local.is_none() && args.listen.is_none() && args.remote.is_none() {
        return;
    }
    let local: &mut RawLocal = raw.local_mut();
    local.listen = args.listen.or(local.listen.take());
    local.remote = args.remote.or(local.remote.take());
    local.max_connections = args.max_connections.or(local.max_connections.take());
}

/// The line that says the proxy is up (tests and scripts wait for "serving SOCKS5").
fn ready(config: &LocalConfig) {
    tracing::info!(
        listen = %config.listen,
        remote = %config.remote,
        routes = config.routing.router.rules.len(),
        auth = if config.users.is_empty() { "none" } else { "username/password" },
        max_connections = config.limits.max_connections,
        "warren-local {} serving SOCKS5, SOCKS4 and HTTP proxy",
        env!("CARGO_PKG_VERSION")
    );
}
