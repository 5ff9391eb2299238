use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use warren_common::cli;
use warren_common::config::{RawConfig, RawRemote, RemoteConfig};
use warren_common::crypto::Key;

/// warren-remote: the tunnel's far end; accepts warren-local's encrypted connections and makes
/// the real ones.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    common: cli::CommonArgs,
    /// Tunnel listen address; overrides remote.listen.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// Cap on concurrent connections; overrides remote.max_connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a fresh random key (base64 of 32 bytes) for the `key:` field of both ends.
    Genkey,
    /// Check the config and print it as it takes effect (defaults filled in, secrets masked),
    /// with any warnings and the ports to open; exit 0 if valid, 2 if not. Binds nothing.
    Check,
    #[command(flatten)]
    Doc(cli::DocCmd),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let binary = args.common.binary("warren-remote");
    match args.command {
        Some(Cmd::Genkey) => {
            println!("{}", Key::generate().to_base64());
            ExitCode::SUCCESS
        }
        Some(Cmd::Doc(ref doc)) => doc.print(Args::command()),
        Some(Cmd::Check) => cli::run_check(binary, |raw| flags(raw, &args), |_: &RemoteConfig| ExitCode::SUCCESS),
        None => cli::run_server(
            binary,
            move |raw| flags(raw, &args),
            ready,
            |listener, _extra, configs, shutdown| warren_remote::run_reloadable(listener, configs, shutdown),
        ),
    }
}

/// The flags that override the config file's `remote:` section. Only `--listen` creates the
/// section when the file has none; otherwise such a file is refused ("section missing"),
/// whatever else is passed: it used to start on 0.0.0.0:8388 silently.
fn flags(raw: &mut RawConfig, args: &Args) {
    if raw.remote.is_none() && args.listen.is_none() {
        return;
    }
    let remote: &mut RawRemote = raw.remote_mut();
    remote.listen = args.listen.clone().or(remote.listen.take());
    remote.max_connections = args.max_connections.or(remote.max_connections.take());
}

/// The line that says the remote is up (tests and scripts wait for "accepting tunnels").
fn ready(config: &RemoteConfig) {
    tracing::info!(
        listen = %config.listen,
        max_connections = config.limits.max_connections,
        "warren-remote {} accepting tunnels",
        env!("CARGO_PKG_VERSION")
    );
}
