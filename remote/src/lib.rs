//! warren-remote: accepts tunnel connections from warren-local, checks them, and makes the real
//! outbound connections.
//!
//! Per connection: read and authenticate the request header (deadline: `handshake_timeout`
//! from accept) → timestamp window and replay check → ACL → outbound connect (deadline:
//! `connect_timeout`, abandoned at once if the local goes away) → response → relay. BIND
//! (`bind.rs`) and UDP-over-TCP (`udp.rs`) branch off after the replay check; encrypted UDP
//! packets arrive on a UDP socket with the listener's address (`packet.rs`).
//!
//! A connection that fails any check before the response gets no byte back and causes no
//! outbound connection; the remote reads and discards until the handshake deadline, so a prober
//! learns nothing from when it closes.
#![forbid(unsafe_code)]

mod agent;
mod bind;
mod connect;
mod mux;
mod packet;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_common::config::RemoteConfig;
use warren_common::crypto::MAX_FRAME;
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, ResponseHeader, TIMESTAMP_WINDOW_SECS};
use warren_common::proto::socks5::ReplyCode;
use warren_common::relay::relay;
use warren_common::route::RemoteAction;
use warren_common::time::unix_now;
use warren_common::tunnel::{AcceptedRequest, HandshakeError};

use warren_common::replay::ReplayFilter;

struct Shared {
    config: RemoteConfig,
    /// Salts of tunnel requests inside the timestamp window.
    replay: std::sync::Mutex<ReplayFilter>,
    agents: agent::Registry,
    /// Whether any route leads to an agent, so requests must be kept as they arrived.
    forwards: bool,
    shutdown: CancellationToken,
}

/// Serves tunnel connections on `listener` until `shutdown` is cancelled, then drains.
pub async fn run(listener: TcpListener, config: RemoteConfig, shutdown: CancellationToken) {
    let limits = config.limits;
    // The encrypted UDP transport listens on the same address and port number, over UDP.
    if let Ok(addr) = listener.local_addr() {
        match tokio::net::UdpSocket::bind(addr).await {
            Ok(socket) => {
                tokio::spawn(packet::serve(socket, Arc::new(config.clone()), shutdown.clone()));
            }
            Err(e) => tracing::warn!(%addr, "cannot bind the UDP relay socket ({e}): encrypted UDP is unavailable"),
        }
    }
    let forwards = config
        .routes
        .rules
        .iter()
        .any(|r| matches!(r.action, RemoteAction::Via(_)));
    let shared = Arc::new(Shared {
        config,
        replay: std::sync::Mutex::default(),
        agents: agent::Registry::default(),
        forwards,
        shutdown: shutdown.clone(),
    });
    if let Some(settings) = shared.config.agent.clone() {
        tokio::spawn(agent::run(settings, shared.clone(), shutdown.clone()));
    }
    warren_common::server::serve(listener, shutdown, limits, move |stream, peer| {
        let shared = shared.clone();
        async move {
            let tunnel_local = stream.local_addr().ok();
            handle(stream, tunnel_local, peer, shared).await
        }
    })
    .await;
}

/// Serves one tunnel connection: a TCP connection, or a stream a reverse-tunnel session opened.
/// `tunnel_local` is this end's address of the tunnel connection (None for a mux stream), which
/// BIND announces when the remote listens on an unspecified address.
async fn handle<S>(mut stream: S, tunnel_local: Option<SocketAddr>, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let config = &shared.config;
    let deadline = tokio::time::Instant::now() + config.timeouts.handshake;
    let mut request = match tokio::time::timeout_at(
        deadline,
        AcceptedRequest::read(&mut stream, &config.key, shared.forwards),
    )
    .await
    {
        Ok(Ok(request)) => request,
        Ok(Err(HandshakeError::Unauthenticated | HandshakeError::Malformed(_))) => {
            tracing::info!(%peer, "request failed authentication (a probe, or a client with another key): ignored");
            return drain_until(stream, deadline).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, "tunnel handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no complete request before the handshake deadline");
            return;
        }
    };
    let now = unix_now();
    let skew = warren_common::time::skew(request.header.timestamp, now);
    if skew.unsigned_abs() > u128::from(TIMESTAMP_WINDOW_SECS) {
        tracing::warn!(
            %peer,
            "request stamped {skew:+} s from our clock, outside ±{TIMESTAMP_WINDOW_SECS} s: ignored. If this is your \
             own client, synchronise both machines' clocks (NTP)"
        );
        return drain_until(stream, deadline).await;
    }
    let fresh = shared
        .replay
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .accept(request.salt, request.header.timestamp, now);
    if !fresh {
        tracing::warn!(%peer, "replayed request (salt seen before): ignored");
        return drain_until(stream, deadline).await;
    }
    match request.header.command {
        Command::Connect => {}
        Command::Agent if tunnel_local.is_none() => {
            tracing::info!(%peer, "agent registration inside an agent session: refused");
            return;
        }
        Command::Agent => return agent::register(request, stream, peer, shared).await,
        Command::Bind => return bind::serve(stream, tunnel_local, peer, request, config).await,
        Command::UdpOverTcp => return udp::serve(stream, peer, request, config).await,
    }
    let target = request.header.target.clone();
    if let RemoteAction::Via(name) = config.routes.route(&target) {
        return agent::forward(request, stream, peer, &shared, name).await;
    }

    // Connect, but give up at once if the local goes away meanwhile. Bytes it sends meanwhile
    // are kept for the relay.
    let connect = tokio::time::timeout(
        config.timeouts.connect,
        connect::connect(&target, &config.acl, config.outbound_source),
    );
    tokio::pin!(connect);
    let mut early = Vec::new();
    // On the heap and dropped before the relay: an array here would sit in every connection's
    // task for its whole life (a future is as large as its largest state).
    let mut chunk = vec![0u8; 4096];
    let connected = loop {
        tokio::select! {
            result = &mut connect => break result,
            read = stream.read(&mut chunk), if early.len() + 4096 <= MAX_FRAME => match read {
                Ok(0) | Err(_) => {
                    tracing::info!(%peer, %target, "local left before the outbound connection was made");
                    return;
                }
                Ok(n) => early.extend_from_slice(&chunk[..n]),
            },
        }
    };
    drop(chunk);
    let result = match connected {
        Ok(result) => result,
        Err(_) => Err(ReplyCode::TtlExpired),
    };
    let (status, bound, outbound) = match result {
        Ok(outbound) => {
            let bound = outbound.local_addr().map(Address::Ip).unwrap_or(Address::UNSPECIFIED);
            (ReplyCode::Succeeded, bound, Some(outbound))
        }
        Err(code) => (code, Address::UNSPECIFIED, None),
    };
    let response = ResponseHeader::new(request.salt, status, unix_now(), bound);
    let initial_data = std::mem::take(&mut request.initial_data);
    let mut tunnel = match request.respond(stream, &config.key, &response, &early).await {
        Ok(tunnel) => tunnel,
        Err(e) => {
            tracing::debug!(%peer, %target, "could not send the response: {e}");
            return;
        }
    };
    let Some(mut outbound) = outbound else {
        tracing::info!(%peer, %target, reply = status as u8, "refused: {}", status.describe());
        let _ = tunnel.shutdown().await;
        return;
    };
    warren_common::net::tune(&outbound);
    if !initial_data.is_empty() && outbound.write_all(&initial_data).await.is_err() {
        return;
    }
    let connected_to = outbound.peer_addr().ok();
    let outcome = relay(tunnel, outbound, config.timeouts.idle).await;
    tracing::info!(
        %peer,
        %target,
        connected_to = ?connected_to,
        sent = outcome.sent + initial_data.len() as u64,
        received = outcome.received,
        duration_ms = started.elapsed().as_millis() as u64,
        end = %outcome.end,
        "connection finished"
    );
}

/// Reads and discards until `deadline` or until the peer closes, then closes. Used for every
/// request we refuse silently: the connection's lifetime and the bytes we consume tell a prober
/// nothing about where its bytes stopped making sense.
async fn drain_until<S: AsyncRead + Unpin>(mut stream: S, deadline: tokio::time::Instant) {
    let mut sink = [0u8; 2048];
    let _ = tokio::time::timeout_at(deadline, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
