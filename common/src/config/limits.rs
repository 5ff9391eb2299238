//! What both ends share besides the key: their timeouts and the server limits (connection cap,
//! shutdown grace), each read from the end's own section with the same defaults rules; and the
//! remote's caps on connections that have not authenticated yet.

use std::time::Duration;

use super::error::{invalid, ConfigError};
use super::parse::seconds;
use crate::server::{HandshakeLimits, ServerLimits};

/// Default `remote.max_handshakes`: unauthenticated connections held at once, in all.
pub const DEFAULT_MAX_HANDSHAKES: usize = 512;
/// Default `remote.max_handshakes_per_ip`: the same from one IPv4 address or IPv6 /64.
pub const DEFAULT_MAX_HANDSHAKES_PER_IP: usize = 32;

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
/// Windows has no such per-process limit on sockets: there it is the same figure for a soft
/// limit of 65,536 (32,736 connections).
pub fn default_max_connections() -> usize {
    #[cfg(unix)]
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    #[cfg(not(unix))]
    let limit: u64 = 65_536;
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

/// `remote.max_handshakes` (default [`DEFAULT_MAX_HANDSHAKES`]) and `remote.max_handshakes_per_ip`
/// (default [`DEFAULT_MAX_HANDSHAKES_PER_IP`], at most `max_handshakes`); both at least 1.
pub(crate) fn handshake_limits(max: Option<usize>, per_ip: Option<usize>) -> Result<HandshakeLimits, ConfigError> {
    let max_handshakes = max.unwrap_or(DEFAULT_MAX_HANDSHAKES);
    if max_handshakes == 0 {
        return Err(invalid("remote.max_handshakes", "must be at least 1"));
    }
    let max_handshakes_per_ip = per_ip.unwrap_or(DEFAULT_MAX_HANDSHAKES_PER_IP.min(max_handshakes));
    if max_handshakes_per_ip == 0 {
        return Err(invalid("remote.max_handshakes_per_ip", "must be at least 1"));
    }
    if max_handshakes_per_ip > max_handshakes {
        return Err(invalid(
            "remote.max_handshakes_per_ip",
            format!("{max_handshakes_per_ip} is more than remote.max_handshakes ({max_handshakes})"),
        ));
    }
    Ok(HandshakeLimits {
        max_handshakes,
        max_handshakes_per_ip,
    })
}
