use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use warren_common::cli;
use warren_common::config::{LocalConfig, RawConfig, RawLocal};

/// warren-local: the SOCKS5 proxy your applications use; carries each connection through an
/// encrypted tunnel to warren-remote.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// YAML config file (see config.example.yaml).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SOCKS5 listen address; overrides local.listen.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// warren-remote's host:port; overrides local.remote.
    #[arg(long, value_name = "HOST:PORT")]
    remote: Option<String>,
    /// Cap on concurrent connections; overrides local.max_connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Log filter: error, warn (or warning), info, debug, trace, off, or target=level directives;
    /// wins over RUST_LOG. Anything else (or a bad RUST_LOG) exits 2.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let binary = cli::Binary {
        name: "warren-local",
        config: args.config.clone(),
        log_level: args.log_level.clone(),
    };
    cli::run_server(binary, |raw| flags(raw, args), ready, warren_local::run)
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
