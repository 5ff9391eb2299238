//! The life of a server binary, shared by warren-local and warren-remote: each `main.rs` keeps
//! only its flags, how they override its config section, and its ready line.
//!
//! ```text
//! log setup (an unknown level: exit 2) ─> raise the open-files limit ─> config ─> runtime ─> bind ─> signal handlers
//!   ─> ready line ─> run(listener, config, shutdown) ─> "stopped", exit 0
//! any error on the way: "warren-X: error: <message>: <cause>..." on stderr, exit 2
//! ```
//!
//! The open-files limit is raised before the config is checked, because the default connection
//! cap is derived from it; the signal handlers go in before the ready line, so a signal sent on
//! seeing that line is caught.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, LocalConfig, RawConfig, RemoteConfig};

/// A checked config a server binary runs from, built from the whole file.
pub trait ServerConfig: for<'a> TryFrom<&'a RawConfig, Error = ConfigError> {
    /// Where the server listens.
    fn listen(&self) -> SocketAddr;
}

impl ServerConfig for LocalConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }
}

impl ServerConfig for RemoteConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }
}

/// Why a server did not start; the binary prints it with its causes and exits with code 2.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Log(#[from] crate::logging::LogError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What every server binary is started with, besides its own flags.
#[derive(Debug, Clone)]
pub struct Binary {
    /// `warren-local` or `warren-remote`: the prefix of its error message.
    pub name: &'static str,
    /// `--config`: the YAML file; without it the config is empty and flags must fill it.
    pub config: Option<PathBuf>,
    /// `--log-level`: wins over `RUST_LOG`.
    pub log_level: Option<String>,
}

/// Runs a server binary to its end and returns its exit code: 0 after a signal stopped it, 2
/// (with `NAME: error: ...` on stderr) if it could not start. `flags` writes the binary's own
/// flags over the parsed file, `ready` logs the line that announces the server is up, and `run`
/// serves until its shutdown token is cancelled.
pub fn run_server<C, F>(
    binary: Binary,
    flags: impl FnOnce(&mut RawConfig),
    ready: impl FnOnce(&C),
    run: impl FnOnce(TcpListener, C, CancellationToken) -> F,
) -> ExitCode
where
    C: ServerConfig,
    F: Future<Output = ()>,
{
    // An unknown --log-level or RUST_LOG stops the binary: it used to silence every line.
    let started = crate::logging::init(binary.log_level.as_deref())
        .map_err(StartError::from)
        .and_then(|()| start(binary.config.as_deref(), flags, ready, run));
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: error: {}", binary.name, with_causes(&e));
            ExitCode::from(2)
        }
    }
}

fn start<C, F>(
    path: Option<&Path>,
    flags: impl FnOnce(&mut RawConfig),
    ready: impl FnOnce(&C),
    run: impl FnOnce(TcpListener, C, CancellationToken) -> F,
) -> Result<(), StartError>
where
    C: ServerConfig,
    F: Future<Output = ()>,
{
    crate::net::raise_fd_limit();
    let mut raw = match path {
        Some(path) => RawConfig::load(path)?,
        None => RawConfig::default(),
    };
    flags(&mut raw);
    let config = C::try_from(&raw)?;
    let runtime = tokio::runtime::Runtime::new().map_err(StartError::Runtime)?;
    runtime.block_on(async {
        crate::trim::spawn();
        let addr = config.listen();
        let listener = crate::net::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
        let shutdown = crate::server::shutdown_on_signals();
        ready(&config);
        run(listener, config, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// `error: cause: cause's cause...`, each source on the chain after a colon.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_their_causes_in_order() {
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = StartError::Listen {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io(),
        };
        assert_eq!(with_causes(&e), "cannot listen on 127.0.0.1:1: address in use");
        assert_eq!(
            with_causes(&StartError::Runtime(io())),
            "starting the async runtime: address in use"
        );
        // The config error's cause is printed once (it used to be twice).
        let e = StartError::from(ConfigError::Read {
            path: "x.yaml".into(),
            cause: io(),
        });
        assert_eq!(with_causes(&e), "cannot read x.yaml: address in use");
    }
}
