use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use warren_common::config::{RawConfig, RemoteConfig};
use warren_common::crypto::Key;

/// warren-remote: the tunnel's far end; accepts warren-local's encrypted connections and makes
/// the real ones.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// YAML config file (see config.example.yaml).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Tunnel listen address; overrides remote.listen.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// Cap on concurrent connections; overrides remote.max_connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Log filter (error, warn, info, debug, trace, or a RUST_LOG-style directive); wins over RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a fresh random key (base64 of 32 bytes) for the `key:` field of both ends.
    Genkey,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::Genkey) = args.command {
        println!("{}", Key::generate().to_base64());
        return ExitCode::SUCCESS;
    }
    warren_common::logging::init(args.log_level.as_deref());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-remote: error: {e:#}");
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
    let remote = raw.remote_mut();
    if let Some(v) = args.listen {
        remote.listen = Some(v);
    }
    if let Some(v) = args.max_connections {
        remote.max_connections = Some(v);
    }
    let config = RemoteConfig::try_from(&raw)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        warren_common::trim::spawn();
        let listener =
            warren_common::net::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        // Signal handlers go in before the ready line, so a signal sent on seeing it is caught.
        let shutdown = warren_common::server::shutdown_on_signals();
        tracing::info!(
            listen = %config.listen,
            max_connections = config.limits.max_connections,
            "warren-remote {} accepting tunnels",
            env!("CARGO_PKG_VERSION")
        );
        warren_remote::run(listener, config, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}
