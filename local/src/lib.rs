//! warren-local: a SOCKS5 server for applications on this machine that carries each CONNECT
//! through an encrypted tunnel to warren-remote, which makes the real connection. The same port
//! speaks SOCKS4/4a and HTTP proxy (see `inbound`, which picks by the first byte).
//!
//! Per connection: SOCKS5 handshake (deadline: `handshake_timeout`) → tunnel request to the
//! remote and its answer (deadline: `connect_timeout`, abandoned at once if the client leaves)
//! → SOCKS5 reply carrying the remote's status → relay until both sides close or go idle.
//! BIND (`bind.rs`, reply format pluggable for SOCKS4) and UDP ASSOCIATE (`udp.rs`) branch off
//! after the handshake. Every front end opens its outbound through `outbound.rs`, which applies
//! `local.routes` (direct, block, or remotes and chains with failover; `health.rs` checks the
//! remotes); `/proxy.pac` is served from the same rules (`resources.rs`).
#![forbid(unsafe_code)]

pub mod bind;
mod connect;
mod forward;
mod health;
mod http;
mod inbound;
mod outbound;
pub mod resources;
mod socks4;
mod socks5;
mod tunnel;
mod udp;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::socks5::{Command, Reply, ReplyCode};

use crate::connect::{Connection, OpenFailure};
use crate::outbound::Outbound;

/// Most bytes buffered from a client while its tunnel is being opened.
const EARLY_DATA_LIMIT: usize = 64 * 1024;

/// Serves SOCKS5, SOCKS4/4a and HTTP proxy clients on `listener` until `shutdown` is cancelled, then drains.
pub async fn run(listener: TcpListener, config: LocalConfig, shutdown: CancellationToken) {
    health::spawn(&config, shutdown.clone());
    let config = Arc::new(config);
    let limits = config.limits;
    warren_common::server::serve(listener, shutdown, limits, move |stream, peer| {
        let config = config.clone();
        async move { inbound::handle(stream, peer, config).await }
    })
    .await;
}

async fn handle(client: TcpStream, peer: SocketAddr, config: Arc<LocalConfig>) {
    let started = Instant::now();
    // The handshake's states are boxed and freed once it is done: otherwise every connection's
    // task would stay as large as its largest handshake state for its whole (mostly idle) life.
    let Some(established) = Box::pin(establish(client, peer, &config)).await else {
        return;
    };
    let Established {
        client,
        tunnel,
        target,
        early,
        sent_before,
    } = established;
    let connection = Connection {
        peer,
        target: &target,
        protocol: "socks5",
        started,
    };
    connection
        .relay_to_end(client, tunnel, early, sent_before, config.timeouts.idle)
        .await;
}

/// A SOCKS5 client with its tunnel open and its success reply sent.
struct Established {
    client: TcpStream,
    tunnel: Outbound,
    target: Address,
    /// Client bytes read while the tunnel was opening, not yet in it.
    early: BytesMut,
    /// Client bytes that rode in the tunnel's first chunk.
    sent_before: usize,
}

/// The SOCKS5 handshake and the tunnel's opening, up to the success reply; `None` once an
/// error was answered (or the client left).
async fn establish(mut client: TcpStream, peer: SocketAddr, config: &LocalConfig) -> Option<Established> {
    let mut buf = BytesMut::with_capacity(1024);
    let handshake = socks5::negotiate(&mut client, &mut buf, &config.users);
    let request = match tokio::time::timeout(config.timeouts.handshake, handshake).await {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "SOCKS5 handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "SOCKS5 handshake timed out");
            return None;
        }
    };
    let target = request.target;
    // BIND and UDP ASSOCIATE run to their end here, inside this boxed future.
    match request.command {
        Command::Connect => {}
        Command::Bind => {
            let initial = buf.split();
            bind::bind(client, peer, config, target, &initial, bind::socks5_replies).await;
            return None;
        }
        Command::UdpAssociate => {
            udp::associate(client, peer, config, target).await;
            return None;
        }
    }

    // Bytes the client sent after its request (pipelining) ride in the tunnel's first chunk.
    let initial = buf.split();
    let mut early = BytesMut::new();
    let (bound, tunnel) = match connect::open_watching(&mut client, &mut early, config, &peer, &target, &initial).await
    {
        Ok(opened) => opened,
        Err(OpenFailure::ClientLeft) => return None,
        Err(failure) => {
            let _ = socks5::send_reply(&mut client, &Reply::error(failure.reply_code())).await;
            return None;
        }
    };
    let reply = Reply {
        code: ReplyCode::Succeeded,
        bound,
    };
    if socks5::send_reply(&mut client, &reply).await.is_err() {
        return None;
    }
    Some(Established {
        client,
        tunnel,
        target,
        early,
        sent_before: initial.len(),
    })
}
