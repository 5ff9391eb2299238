use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use warren_common::config::{LocalConfig, RawConfig};

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
    /// Log filter (error, warn, info, debug, trace, or a RUST_LOG-style directive); wins over RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    warren_common::logging::init(args.log_level.as_deref());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-local: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    warren_common::net::raise_fd_limit();
    let mut raw = match &args.config {
        Some(path) => RawConfig::load(path)?,
        None => RawConfig::default(),
    };
    let local = raw.local_mut();
    if let Some(v) = args.listen {
        local.listen = Some(v);
    }
    if let Some(v) = args.remote {
        local.remote = Some(v);
    }
    if let Some(v) = args.max_connections {
        local.max_connections = Some(v);
    }
    let config = LocalConfig::try_from(&raw)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        warren_common::trim::spawn();
        let listener =
            warren_common::net::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        // Signal handlers go in before the ready line, so a signal sent on seeing it is caught.
        let shutdown = warren_common::server::shutdown_on_signals();
        tracing::info!(
            listen = %config.listen,
            remote = %config.remote,
            routes = config.routing.router.rules.len(),
            auth = if config.users.is_empty() { "none" } else { "username/password" },
            max_connections = config.limits.max_connections,
            "warren-local {} serving SOCKS5, SOCKS4 and HTTP proxy",
            env!("CARGO_PKG_VERSION")
        );
        warren_local::run(listener, config, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}
