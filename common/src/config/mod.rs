//! Configuration as plain data: YAML parsed into `Raw*` structs (serde, unknown fields
//! refused), then checked and converted into [`LocalConfig`] and [`RemoteConfig`], which hold
//! only valid values. Every error names the field it is about, and the binaries exit before
//! binding anything.
//!
//! One file can serve both ends (`local:` and `remote:` sections); each binary requires its own
//! section and the shared `key`.
//!
//! The files form a one-way stack (each uses only those listed after it, never back up):
//!
//! ```text
//! mod.rs     RawConfig: load, parse, the key; LocalConfig / RemoteConfig from it
//!  ├─ local.rs ── local_routes.rs               the `local:` section and its routing
//!  ├─ remote.rs ── remote_users.rs              the `remote:` section and its per-user keys
//!  ├─ advice.rs, show.rs                         warnings and notes; the effective config for `check`
//!  └─ error.rs, parse.rs, secret.rs, limits.rs   leaf helpers used by all of the above
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::crypto::Key;
use error::invalid;

pub mod advice;
mod error;
mod limits;
mod local;
pub mod local_programs;
pub mod local_routes;
mod parse;
mod remote;
pub mod remote_users;
mod secret;
pub mod show;
#[cfg(test)]
mod tests;

pub use error::ConfigError;
pub use limits::{default_max_connections, Timeouts};
pub use local::{LocalConfig, RawLocal, RawUser, UdpTransport, WarmSettings, MAX_WARM_CONNECTIONS};
pub use remote::{AgentEntry, AgentSettings, RawAgent, RawRemote, RawRemoteRoute, RawRule, RemoteConfig};
pub use secret::{Secret, User};

/// The key printed in config.example.yaml. Anyone can read it, so the remote refuses it on any
/// address but loopback.
pub const EXAMPLE_KEY: &str = "ZXhhbXBsZSBrZXkgLSBuZXZlciBkZXBsb3kgdGhpcyE=";

/// `local.metrics` / `remote.metrics`: `{ listen: IP:PORT }` turns the Prometheus endpoint on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

/// The `metrics` field of `section`: the scrape address, or `None` (off) when absent.
pub(crate) fn metrics_listen(
    section: &str,
    raw: Option<&RawMetrics>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let field = format!("{section}.metrics.listen");
    let Some(listen) = raw.listen.as_deref() else {
        return Err(invalid(
            &field,
            "missing (the address to serve /metrics on, e.g. \"127.0.0.1:9100\")",
        ));
    };
    parse::socket_addr(&field, Some(listen), "").map(Some)
}

/// The whole file: the shared `key` and each end's section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub key: Option<String>,
    /// The log filter when neither `--log-level` nor `RUST_LOG` sets one (re-read on reload).
    pub log_level: Option<String>,
    pub local: Option<RawLocal>,
    pub remote: Option<RawRemote>,
}

impl RawConfig {
    /// Parses `text` (an empty file is an empty config); `path` names the file in errors.
    pub fn from_yaml(text: &str, path: &str) -> Result<RawConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(RawConfig::default());
        }
        serde_yaml::from_str(text).map_err(|cause| ConfigError::Syntax {
            path: path.to_owned(),
            cause,
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: shown.clone(),
            cause,
        })?;
        RawConfig::from_yaml(&text, &shown)
    }

    /// The `local:` section, created empty if absent (for command-line overrides).
    pub fn local_mut(&mut self) -> &mut RawLocal {
        self.local.get_or_insert_with(RawLocal::default)
    }

    /// The `remote:` section, created empty if absent (for command-line overrides).
    pub fn remote_mut(&mut self) -> &mut RawRemote {
        self.remote.get_or_insert_with(RawRemote::default)
    }

    /// `log_level`, checked: comma-separated levels or `target=level` directives (as
    /// `--log-level` takes them), in canonical form; `None` when absent.
    pub fn log_level(&self) -> Result<Option<String>, ConfigError> {
        self.log_level
            .as_deref()
            .map(|value| {
                crate::logging::directives(value).ok_or_else(|| {
                    invalid(
                        "log_level",
                        format!(
                            "{value:?} is not a log level: expected one of {}, or target=level directives",
                            crate::logging::LEVELS
                        ),
                    )
                })
            })
            .transpose()
    }

    fn key(&self) -> Result<Key, ConfigError> {
        let text = self
            .key
            .as_deref()
            .ok_or_else(|| invalid("key", "missing (generate one with `warren-remote genkey`)"))?;
        Key::from_base64(text).map_err(|e| invalid("key", e.to_string()))
    }
}

impl TryFrom<&RawConfig> for LocalConfig {
    type Error = ConfigError;

    fn try_from(raw: &RawConfig) -> Result<Self, ConfigError> {
        let key = raw.key()?;
        let local = raw.local.as_ref().ok_or_else(|| {
            invalid(
                "local",
                "section missing: warren-local runs from the `local:` section of the file (see config.example.yaml)",
            )
        })?;
        LocalConfig::from_section(key, local)
    }
}

impl TryFrom<&RawConfig> for RemoteConfig {
    type Error = ConfigError;

    fn try_from(raw: &RawConfig) -> Result<Self, ConfigError> {
        let key = raw.key()?;
        let remote = raw.remote.as_ref().ok_or_else(|| {
            invalid(
                "remote",
                "section missing: warren-remote runs from the `remote:` section of the file (see config.example.yaml)",
            )
        })?;
        let example_key = raw.key.as_deref().map(str::trim) == Some(EXAMPLE_KEY);
        RemoteConfig::from_section(key, example_key, remote)
    }
}
