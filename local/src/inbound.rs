//! One port, every protocol: the first byte a client sends says which one it speaks.
//!
//! ```text
//! 0x05        SOCKS5 (RFC 1928)
//! 0x04        SOCKS4 / SOCKS4a
//! 'A'..='Z'   HTTP/1.x proxy request (CONNECT, GET http://…, …)
//! other       closed without an answer
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use warren_common::config::LocalConfig;
use warren_common::proto::{socks4, socks5};

/// Peeks the client's first byte (within the handshake timeout) and hands the connection to
/// the matching front end, which reads that byte again as part of its first message.
pub async fn handle(client: TcpStream, peer: SocketAddr, config: Arc<LocalConfig>) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(config.timeouts.handshake, client.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return,
        Err(_) => {
            tracing::debug!(%peer, "no byte from the client within the handshake timeout");
            return;
        }
    }
    match first[0] {
        socks5::VERSION => crate::handle(client, peer, config).await,
        socks4::VERSION => crate::socks4::handle(client, peer, config).await,
        b'A'..=b'Z' => crate::http::handle(client, peer, config).await,
        other => tracing::debug!(%peer, "first byte {other:#04x} is neither SOCKS nor HTTP: closing"),
    }
}
