//! One port, every protocol: the first byte a client sends says which front end serves it.
//! Its debug lines carry a `conn{peer, protocol}` span; its info and warning lines name the
//! peer themselves (through [`Outbounds::peer`]), so they cost no span per connection.
//!
//! ```text
//! 0x05        SOCKS5 (RFC 1928)          → socks5::serve
//! 0x04        SOCKS4 / SOCKS4a           → socks4::serve
//! 'A'..='Z'   HTTP/1.x proxy request     → http::serve (CONNECT, GET http://…, /proxy.pac)
//! 'a'..='z'   the same: methods are case-sensitive tokens (RFC 9110 §9.1), forwarded as sent
//! CR, LF      the same: empty lines before the request line are ignored (RFC 9112 §2.2)
//! other       closed without an answer
//! ```
//!
//! Every front end has the same entry: the client, the configuration it reads (logins,
//! handshake deadlines) and the [`Outbounds`] it opens its way out through.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::Instrument;
use warren_common::config::LocalConfig;
use warren_common::proto::{socks4 as socks4_codec, socks5 as socks5_codec};

use crate::http;
use crate::outbound::{Health, Outbounds};
use crate::socks4;
use crate::socks5;

/// Serves one accepted client, inside its span, until its connection ends.
pub async fn handle(client: TcpStream, peer: SocketAddr, config: Arc<LocalConfig>, health: Arc<Health>) {
    // Context for debug lines only. The lines users read (info and up) name the client
    // themselves: an enabled span per connection costs ~0.9 KiB of RSS while it lives, and the
    // subscriber keeps its slot after close (+288 % RSS after 10,000 connections had closed,
    // against +23 % without; docs/BENCHMARKS.md).
    let span = tracing::debug_span!("conn", %peer, protocol = tracing::field::Empty);
    let _open = warren_common::metrics::OpenConnection::new();
    dispatch(client, peer, config, health).instrument(span).await;
}

/// Peeks the client's first byte (within the handshake timeout) and hands the connection to
/// the matching front end, which reads that byte again as part of its first message.
async fn dispatch(client: TcpStream, peer: SocketAddr, config: Arc<LocalConfig>, health: Arc<Health>) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(config.timeouts.handshake, client.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return,
        Err(_) => {
            tracing::debug!("no byte from the client within the handshake timeout");
            return;
        }
    }
    let outbounds = Outbounds::new(config.clone(), health, peer);
    let config = &*config;
    let span = tracing::Span::current();
    match first[0] {
        socks5_codec::VERSION => {
            span.record("protocol", "socks5");
            socks5::serve(client, config, &outbounds).await;
        }
        socks4_codec::VERSION => {
            span.record("protocol", "socks4");
            // SOCKS4 and HTTP are boxed: their states are larger than SOCKS5's, and this task is
            // as large as its largest state for the connection's whole (mostly idle) life.
            Box::pin(socks4::serve(client, config, &outbounds)).await;
        }
        // HTTP names its protocol once the request says what it is (`http-connect`).
        // Lower case and CR/LF too: the HTTP front end answers what it does not take (400)
        // rather than closing silently.
        b'A'..=b'Z' | b'a'..=b'z' | b'\r' | b'\n' => Box::pin(http::serve(client, config, &outbounds)).await,
        other => tracing::debug!("first byte {other:#04x} is neither SOCKS nor HTTP: closing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use warren_common::config::RawConfig;

    /// A connection's task is as large as the largest state of its future, for the connection's
    /// whole (mostly idle) life: a rarely taken branch kept inline (a BIND, a refusal's drain
    /// buffer) once made every tunnelled connection 3.5 KiB larger (docs/BENCHMARKS.md,
    /// "Memory"). The budget has room for compiler changes, and none for a 4 KiB array.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let yaml = "key: \"c29tZSB0ZXN0IGtleSBvZiAzMiBieXRlcyEhISEhISE=\"\nlocal: { remote: \"127.0.0.1:9\" }\n";
        let config = LocalConfig::try_from(&RawConfig::from_yaml(yaml, "test.yaml").expect("yaml")).expect("config");
        let health = Health::for_config(&config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (accepted, peer) = listener.accept().await.expect("accept");
        let connection = handle(accepted, peer, Arc::new(config), health);
        let size = std::mem::size_of_val(&connection);
        println!("a connection's future: {size} bytes");
        assert!(
            size <= 4096,
            "a connection's future is {size} bytes: box the large, short-lived states"
        );
    }
}
