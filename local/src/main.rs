use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use warren_common::cli;
use warren_common::config::{LocalConfig, RawConfig, RawLocal};

/// warren-local: the SOCKS5 proxy your applications use; carries each connection through an
/// encrypted tunnel to warren-remote.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    common: cli::CommonArgs,
    /// SOCKS5 listen address; overrides local.listen.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// warren-remote's host:port; overrides local.remote.
    #[arg(long, value_name = "HOST:PORT")]
    remote: Option<String>,
    /// Cap on concurrent connections; overrides local.max_connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
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
    #[command(flatten)]
    Doc(cli::DocCmd),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let binary = args.common.binary("warren-local");
    match args.command {
        Some(Cmd::Doc(ref doc)) => doc.print(Args::command()),
        Some(Cmd::Check { connect }) => cli::run_check(
            binary,
            |raw| flags(raw, &args),
            |config| {
                if connect {
                    warren_local::check_connect(config)
                } else {
                    ExitCode::SUCCESS
                }
            },
        ),
        None => cli::run_server(binary, move |raw| flags(raw, &args), ready, warren_local::run_all),
    }
}
/// The flags that override the config file's `local:` section. Only `--listen` or `--remote`
/// creates the section when the file has none; otherwise such a file is refused ("section
/// missing"), whatever else is passed.
fn flags(raw: &mut RawConfig, args: &Args) {
    if raw.local.is_none() && args.listen.is_none() && args.remote.is_none() {
        return;
    }
    let local: &mut RawLocal = raw.local_mut();
    local.listen = args.listen.clone().or(local.listen.take());
    local.remote = args.remote.clone().or(local.remote.take());
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
