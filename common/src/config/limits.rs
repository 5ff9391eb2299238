//! What both ends share besides the key: their timeouts and the server limits (connection cap,
//! shutdown grace), each read from the end's own section with the same defaults rules.

use std::time::Duration;

use super::error::{invalid, ConfigError};
use super::parse::seconds;
use crate::server::ServerLimits;

/// Timeouts shared by both ends.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole client handshake (SOCKS5 on the local, the tunnel header on the remote).
    pub handshake: Duration,
    /// Local: dialling the remote and receiving its answer. Remote: the outbound connect.
    pub connect: Duration,
    /// A relay with no byte in either direction for this long is closed.
    pub idle: Duration,
}

/// The default connection cap: what the open-files limit allows at two sockets per connection.
pub fn default_max_connections() -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(limit.saturating_sub(64) / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 1_000_000)
}

/// `PREFIX.max_connections` (default: [`default_max_connections`]) and `PREFIX.shutdown_grace`
/// (default 10 s).
pub(crate) fn limits(prefix: &str, max: Option<usize>, grace: Option<f64>) -> Result<ServerLimits, ConfigError> {
    let max_connections = match max {
        Some(0) => return Err(invalid(format!("{prefix}.max_connections"), "must be at least 1")),
        Some(n) => n,
        None => default_max_connections(),
    };
    Ok(ServerLimits {
        max_connections,
        shutdown_grace: seconds(&format!("{prefix}.shutdown_grace"), grace, 10.0)?,
    })
}
