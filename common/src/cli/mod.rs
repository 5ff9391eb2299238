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

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, LocalConfig, RawConfig, RemoteConfig};

mod args;
pub use args::{CommonArgs, DocCmd};

/// A checked config a server binary runs from, built from the whole file.
pub trait ServerConfig: for<'a> TryFrom<&'a RawConfig, Error = ConfigError> {
    /// Where the server listens.
    fn listen(&self) -> SocketAddr;

    /// What is valid but probably not meant, one sentence each; logged at start, before
    /// binding, and printed by `check`.
    fn warnings(&self) -> Vec<String>;

    /// What the operator must arrange outside warren (firewall ports); printed by `check`.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The effective config as YAML, defaults filled in, secrets masked (`check`).
    fn show(&self) -> String;
}

impl ServerConfig for LocalConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn warnings(&self) -> Vec<String> {
        crate::config::advice::local_warnings(self)
    }

    fn show(&self) -> String {
        crate::config::show::local(self)
    }
}

impl ServerConfig for RemoteConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
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
    let started = crate::logging::init(binary.log_level.as_deref(), binary.log_format)
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
    let (_, config) = load::<C>(path, flags)?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
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

/// The config file (`path`, else the first default that exists), parsed, with the binary's
/// flags written over it, and checked; with the path it came from.
fn load<C: ServerConfig>(path: Option<&Path>, flags: impl FnOnce(&mut RawConfig)) -> Result<(PathBuf, C), StartError> {
    let path = match path {
        Some(path) => path.to_owned(),
        None => {
            let tried = default_config_paths(|name| std::env::var_os(name));
            // A path that exists but cannot be read (permissions, a directory, a dangling link) is
            // chosen, so its error is reported, rather than silently passed over for the next.
            let found = tried
                .iter()
                .find(|p| !matches!(std::fs::metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound))
                .cloned();
            match found {
                Some(found) => {
                    tracing::info!(config = %found.display(), "no -c given: using the config file found here");
                    found
                }
                None => return Err(StartError::NoConfig { tried }),
            }
        }
    };
    let mut raw = RawConfig::load(&path)?;
    flags(&mut raw);
    let config = C::try_from(&raw)?;
    Ok((path, config))
}

/// `warren-X check`, like `sshd -t`: loads and checks the config exactly as a start would
/// (same file search, same flags), then prints on stdout the file used, the effective config
/// ([`ServerConfig::show`]), and a `warning:` / `note:` line for each of
/// [`ServerConfig::warnings`] and [`ServerConfig::notes`]. Exit code: 2 with the error on
/// stderr if the config is invalid; otherwise what `then` returns after the printout (0, or the
/// local's `--connect` probe's verdict). Binds nothing.
pub fn run_check<C: ServerConfig>(
    binary: Binary,
    flags: impl FnOnce(&mut RawConfig),
    then: impl FnOnce(&C) -> ExitCode,
) -> ExitCode {
    // Quiet by default: the report goes to stdout, and info lines would only interleave.
    let level = binary.log_level.clone().unwrap_or_else(|| "warn".to_owned());
    let loaded = crate::logging::init(Some(&level), binary.log_format)
        .map_err(StartError::from)
        .and_then(|()| load::<C>(binary.config.as_deref(), flags));
    let (path, config) = match loaded {
        Ok(loaded) => loaded,
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

/// Where a binary started without `-c` looks for its config, in order (the first that exists
/// is used): on Unix `$XDG_CONFIG_HOME/warren/config.yaml` (or `$HOME/.config/warren/...` when
/// XDG_CONFIG_HOME is unset or empty), then `/etc/warren/config.yaml`; on Windows
/// `%APPDATA%\warren\config.yaml`, then `%PROGRAMDATA%\warren\config.yaml`; a variable that
/// is unset, empty or not an absolute path is skipped. `env` reads
/// an environment variable (a parameter, so tests need not change the process's own).
pub fn default_config_paths(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
    config_paths_for(cfg!(windows), env)
}

/// [`default_config_paths`] for Windows (`windows`) or Unix: a parameter, so the unit tests
/// check both lists on any platform.
fn config_paths_for(windows: bool, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
    // Unset, empty and relative values are ignored (the XDG Base Directory spec's rule).
    let set = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let mut paths = Vec::new();
    if windows {
        for var in ["APPDATA", "PROGRAMDATA"] {
            if let Some(dir) = set(var) {
                paths.push(dir.join("warren").join("config.yaml"));
            }
        }
    } else {
        if let Some(dir) = set("XDG_CONFIG_HOME").or_else(|| set("HOME").map(|home| home.join(".config"))) {
            paths.push(dir.join("warren").join("config.yaml"));
        }
        paths.push(PathBuf::from("/etc/warren/config.yaml"));
    }
    paths
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

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        move |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.into())
    }

    #[test]
    fn default_config_paths_on_windows_are_appdata_then_programdata() {
        // Absolute on the platform the test runs on.
        let (a, p) = if cfg!(windows) {
            ("C:\\A", "C:\\P")
        } else {
            ("/A", "/P")
        };
        let paths = config_paths_for(true, env(&[("APPDATA", a), ("PROGRAMDATA", p), ("HOME", "/h")]));
        assert_eq!(
            paths,
            [
                PathBuf::from(a).join("warren").join("config.yaml"),
                PathBuf::from(p).join("warren").join("config.yaml")
            ]
        );
        assert!(config_paths_for(true, env(&[])).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn default_config_paths_follow_xdg_then_home_then_etc() {
        let paths = |pairs: &[(&str, &str)]| config_paths_for(false, env(pairs));
        let etc = PathBuf::from("/etc/warren/config.yaml");
        assert_eq!(
            paths(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]),
            [PathBuf::from("/x/warren/config.yaml"), etc.clone()]
        );
        // An empty XDG_CONFIG_HOME counts as unset (the XDG Base Directory spec).
        assert_eq!(
            paths(&[("XDG_CONFIG_HOME", ""), ("HOME", "/h")]),
            [PathBuf::from("/h/.config/warren/config.yaml"), etc.clone()]
        );
        // A relative XDG_CONFIG_HOME is ignored too.
        assert_eq!(
            paths(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")]),
            [PathBuf::from("/h/.config/warren/config.yaml"), etc.clone()]
        );
        assert_eq!(paths(&[]), [etc]);
    }

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
