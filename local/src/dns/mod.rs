//! The DNS forwarder (`local.dns`): a stub resolver's server on UDP and TCP (RFC 1035 §4.2,
//! RFC 7766), for split DNS: the laptop's resolver sends it the campus domains only
//! (systemd-resolved, /etc/resolver/, NRPT: README "Programs that do not speak SOCKS").
//!
//! ```text
//! query ─▶ parse (warren_common::dns; garbage: FORMERR or silence) ─▶ cache hit? ─▶ answer
//!            └─▶ route the name (local.routes) ─▶ block:  REFUSED
//!                                              ├─▶ direct: the upstreams (resolve.rs), as asked
//!                                              └─▶ proxy:  RESOLVE through the tunnel (resolve.rs):
//!                                                          the far side's resolver answers
//! ```
//!
//! A name routed through the tunnel is never asked of a DNS server from this machine: the only
//! packets that leave carry the tunnel's ciphertext. Addresses answered are remembered with
//! their name for `redir`.

mod resolve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use warren_common::server::ServerLimits;

pub use self::resolve::Resolver;

/// Queries answered at once over UDP; beyond that, new ones are dropped (the client retries).
const MAX_IN_FLIGHT: usize = 256;
/// Largest query read over UDP (RFC 6891 payloads above 4 KiB are not used in practice).
const MAX_UDP_QUERY: usize = 4096;
/// How long a TCP client may keep a connection open without a query (RFC 7766 §6.2.3 asks
/// servers for an idle timeout; a few seconds is the usual).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once.
const MAX_TCP: usize = 256;

/// Serves DNS on `udp` and `tcp` (the same address) until `shutdown`.
pub async fn serve(
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
) {
    let on_udp = {
        let (resolver, shutdown) = (resolver.clone(), shutdown.clone());
        async move {
            if let Some(socket) = udp {
                serve_udp(socket, resolver, shutdown).await;
            }
        }
    };
    let on_tcp = async move {
        if let Some(listener) = tcp {
            let limits = ServerLimits {
                max_connections: MAX_TCP,
                shutdown_grace: Duration::from_secs(1),
            };
            warren_common::server::serve(listener, shutdown, limits, move |client, peer| {
                let resolver = resolver.clone();
                async move { serve_tcp_client(client, peer, &resolver).await }
            })
            .await;
        }
    };
    tokio::join!(on_udp, on_tcp);
}

async fn serve_udp(socket: UdpSocket, resolver: Arc<Resolver>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; MAX_UDP_QUERY];
    loop {
        let (n, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                Err(_) => continue,
            },
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "DNS: too many queries in flight: dropped");
            continue;
        };
        let query = buf.get(..n).unwrap_or_default().to_vec();
        let (socket, resolver) = (socket.clone(), resolver.clone());
        tokio::spawn(async move {
            if let Some(response) = resolver.answer(&query, peer, true).await {
                let _ = socket.send_to(&response, peer).await;
            }
            drop(permit);
        });
    }
}

/// One TCP client: length-prefixed queries answered in order (RFC 1035 §4.2.2), until it
/// closes, sends garbage framing, or is idle for [`TCP_IDLE`].
async fn serve_tcp_client(mut client: TcpStream, peer: SocketAddr, resolver: &Resolver) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, client.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, client.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(response) = resolver.answer(&query, peer, false).await else {
            // Nothing to say to this message (not a query): the stream's framing may be lost.
            return;
        };
        let Ok(len) = u16::try_from(response.len()) else { return };
        let mut framed = Vec::with_capacity(2 + response.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        if client.write_all(&framed).await.is_err() {
            return;
        }
    }
}
