//! The life of a server binary, shared by warren-local and warren-remote: each `main.rs` keeps
//! only its flags, how they override its config section, and its ready line.
//!
//! ```text
//! log setup (an unknown level: exit 2) ─> raise the open-files limit ─> config ─> runtime ─> bind ─> signal handlers
//!   ─> ready line ─> run(listener, config, shutdown) ─> "stopped", exit 0
//! any error on the way: "warren-X: error: <message>: <cause>..." on stderr, exit 2
//! ```
//!
//! `warren-X check` ([`run_check`]) takes the same road up to the config, prints it, and stops.
//!
//! The open-files limit is raised before the config is checked, because the default connection
//! cap is derived from it; the signal handlers go in before the ready line, so a signal sent on
//! seeing that line is caught.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, LocalConfig, RawConfig, RemoteConfig};
use crate::net::BoundExtra;

mod args;
mod paths;
mod reload;
pub use crate::server::Configs;
pub use args::{CommonArgs, DocCmd};
pub use paths::default_config_paths;

/// A checked config a server binary runs from, built from the whole file.
pub trait ServerConfig: for<'a> TryFrom<&'a RawConfig, Error = ConfigError> {
    /// Where the server listens.
    fn listen(&self) -> SocketAddr;

    /// Where `/metrics` is served, if anywhere (`metrics.listen`).
    fn metrics(&self) -> Option<SocketAddr>;

    /// Sockets beyond the main listener, bound at start before the ready line and handed to
    /// the server in this order (the local's forwards, DNS forwarder and transparent proxy).
    fn extra_listeners(&self) -> Vec<crate::net::ExtraListen> {
        Vec::new()
    }

    /// What is valid but probably not meant, one sentence each; logged at start, before
    /// binding, and printed by `check`.
    fn warnings(&self) -> Vec<String>;

    /// What the operator must arrange outside warren (firewall ports); printed by `check`.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The effective config as YAML, defaults filled in, secrets masked (`check`).
    fn show(&self) -> String;

    /// What differs in `new` that a reload cannot apply (the listener, the connection caps),
    /// one field name each; logged when a reload keeps the old value.
    fn restart_needed(&self, new: &Self) -> Vec<&'static str>;
}

impl ServerConfig for LocalConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn metrics(&self) -> Option<SocketAddr> {
        self.metrics
    }

    fn extra_listeners(&self) -> Vec<crate::net::ExtraListen> {
        self.programs.listeners()
    }

    fn warnings(&self) -> Vec<String> {
        crate::config::advice::local_warnings(self)
    }

    fn show(&self) -> String {
        crate::config::show::local(self)
    }

    fn restart_needed(&self, new: &Self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.listen != new.listen {
            fields.push("local.listen");
        }
        if self.metrics != new.metrics {
            fields.push("local.metrics");
        }
        if self.limits.max_connections != new.limits.max_connections {
            fields.push("local.max_connections");
        }
        if self.limits.shutdown_grace != new.limits.shutdown_grace {
            fields.push("local.shutdown_grace");
        }
        if self.programs != new.programs {
            fields.push("local.forwards, local.dns or local.redir");
        }
        fields
    }
}

impl ServerConfig for RemoteConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn metrics(&self) -> Option<SocketAddr> {
        self.metrics
    }

    fn warnings(&self) -> Vec<String> {
        crate::config::advice::remote_warnings(self)
    }

    fn notes(&self) -> Vec<String> {
        crate::config::advice::remote_notes(self)
    }

    fn show(&self) -> String {
        crate::config::show::remote(self)
    }

    fn restart_needed(&self, new: &Self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.listen != new.listen {
            fields.push("remote.listen");
        }
        if self.metrics != new.metrics {
            fields.push("remote.metrics");
        }
        if self.limits.max_connections != new.limits.max_connections {
            fields.push("remote.max_connections");
        }
        if self.limits.shutdown_grace != new.limits.shutdown_grace {
            fields.push("remote.shutdown_grace");
        }
        if self.handshakes.max_handshakes != new.handshakes.max_handshakes {
            fields.push("remote.max_handshakes");
        }
        if self.handshakes.max_handshakes_per_ip != new.handshakes.max_handshakes_per_ip {
            fields.push("remote.max_handshakes_per_ip");
        }
        fields
    }
}

/// Why a server did not start; the binary prints it with its causes and exits with code 2.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Log(#[from] crate::logging::LogError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no config file: pass -c FILE, or create one of: {} (config.example.yaml shows the format)", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoConfig { tried: Vec<PathBuf> },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({field})")]
    ListenExtra {
        field: String,
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
    /// `--config`: the YAML file; without it, the first of [`default_config_paths`] that exists.
    pub config: Option<PathBuf>,
    /// `--log-level`: wins over `RUST_LOG`.
    pub log_level: Option<String>,
    /// `--log-format`: text or JSON lines.
    pub log_format: crate::logging::LogFormat,
}

/// Runs a server binary to its end and returns its exit code: 0 after a signal stopped it, 2
/// (with `NAME: error: ...` on stderr) if it could not start. `flags` writes the binary's own
/// flags over the parsed file (at start and at each reload), `ready` logs the line that
/// announces the server is up, and `run` serves from the config it is given, and from each
/// one a reload (SIGHUP, [`reload`]) puts in its place, until its shutdown token is cancelled.
pub fn run_server<C, F>(
    binary: Binary,
    flags: impl Fn(&mut RawConfig) + Send + Sync + 'static,
    ready: impl FnOnce(&C),
    run: impl FnOnce(TcpListener, Vec<BoundExtra>, Configs<C>, CancellationToken) -> F,
) -> ExitCode
where
    C: ServerConfig + Send + Sync + 'static,
    F: Future<Output = ()>,
{
    // An unknown --log-level or RUST_LOG stops the binary: it used to silence every line.
    let started = crate::logging::init(binary.log_level.as_deref(), binary.log_format)
        .map_err(StartError::from)
        .and_then(|log| start(binary.config.as_deref(), flags, log, ready, run));
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
    flags: impl Fn(&mut RawConfig) + Send + Sync + 'static,
    log: crate::logging::LogHandle,
    ready: impl FnOnce(&C),
    run: impl FnOnce(TcpListener, Vec<BoundExtra>, Configs<C>, CancellationToken) -> F,
) -> Result<(), StartError>
where
    C: ServerConfig + Send + Sync + 'static,
    F: Future<Output = ()>,
{
    crate::net::raise_fd_limit();
    let loaded = paths::load::<C>(path, &flags)?;
    if loaded.log_level.is_some() {
        log.apply_file_level(loaded.log_level.as_deref());
    }
    for warning in loaded.config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Runtime::new().map_err(StartError::Runtime)?;
    runtime.block_on(async {
        crate::trim::spawn();
        let addr = loaded.config.listen();
        let listener = crate::net::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
        let extra = crate::net::bind_extra(&loaded.config.extra_listeners())
            .map_err(|(field, addr, source)| StartError::ListenExtra { field, addr, source })?;
        let shutdown = crate::server::shutdown_on_signals();
        if let Some(addr) = loaded.config.metrics() {
            let scrapes = crate::net::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            tokio::spawn(crate::metrics::serve(scrapes, shutdown.clone()));
        }
        let (configs, updates) = tokio::sync::watch::channel(Arc::new(loaded.config));
        // Before the ready line, like the other handlers: a SIGHUP sent on seeing it is caught.
        reload::on_sighup(loaded.path, flags, configs, log, shutdown.clone());
        ready(&updates.borrow());
        run(listener, extra, updates, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// `warren-X check`, like `sshd -t`: loads and checks the config exactly as a start would
/// (same file search, same flags), then prints on stdout the file used, the effective config
/// ([`ServerConfig::show`]), and a `warning:` / `note:` line for each of
/// [`ServerConfig::warnings`] and [`ServerConfig::notes`]. Exit code: 2 with the error on
/// stderr if the config is invalid; otherwise what `then` returns after the printout (0, or the
/// local's `--connect` probe's verdict). Binds nothing.
pub fn run_check<C: ServerConfig>(
    binary: Binary,
    flags: impl Fn(&mut RawConfig),
    then: impl FnOnce(&C) -> ExitCode,
) -> ExitCode {
    // Quiet by default: the report goes to stdout, and info lines would only interleave.
    let level = binary.log_level.clone().unwrap_or_else(|| "warn".to_owned());
    let loaded = crate::logging::init(Some(&level), binary.log_format)
        .map_err(StartError::from)
        .and_then(|_| paths::load::<C>(binary.config.as_deref(), &flags));
    let (path, config) = match loaded {
        Ok(loaded) => (loaded.path, loaded.config),
        Err(e) => {
            eprintln!("{}: error: {}", binary.name, with_causes(&e));
            return ExitCode::from(2);
        }
    };
    println!("# {}: {} is valid", binary.name, path.display());
    print!("{}", config.show());
    for warning in config.warnings() {
        println!("# warning: {warning}");
    }
    for note in config.notes() {
        println!("# note: {note}");
    }
    then(&config)
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
