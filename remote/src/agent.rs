//! The reverse tunnel, both ends.
//!
//! Agent (a warren-remote inside a NATed network): dials the public warren-remote, sends an
//! authenticated `Command::Agent` request whose target is `Domain(name, 0)`, and after the
//! success response runs a yamux session (client mode) over the encrypted stream. Every stream
//! the public remote opens is handled exactly like a TCP connection to this remote. On any
//! failure it redials with exponential backoff (200 ms doubling to 4 s, jitter 50–100 %).
//!
//! Public remote: registers the session under the name (a newer registration replaces an older
//! one), and for a request routed `via: NAME` opens a mux stream and acts as a tunnel client over
//! it with the same command, target and initial data, relays the agent's status to the local,
//! then relays bytes. Heartbeat: the agent opens the session's first stream and sends one byte
//! each second; the public remote echoes it. Either end drops the session after 5 s of silence,
//! which fails every stream on it (the relays see an error and close).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use warren_common::config::AgentSettings;
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader, ResponseHeader};
use warren_common::proto::socks5::ReplyCode;
use warren_common::relay::relay;
use warren_common::time::unix_now;
use warren_common::tunnel::{AcceptedRequest, PendingTunnel};

use crate::mux::{self, MuxStream, Opener};
use crate::Shared;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_DEAD: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// Connected agents by name.
#[derive(Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, (u64, Opener)>>,
    next_id: AtomicU64,
}

impl Registry {
    fn get(&self, name: &str) -> Option<Opener> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.get(name).map(|(_, o)| o.clone())
    }

    fn insert(&self, name: &str, opener: Opener) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.insert(name.to_string(), (id, opener));
        id
    }

    fn remove(&self, name: &str, id: u64) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.get(name).is_some_and(|(i, _)| *i == id) {
            agents.remove(name);
        }
    }
}

/// Public remote: an authenticated `Command::Agent` request; serve the session until it dies.
pub async fn register<S>(request: AcceptedRequest, stream: S, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Address::Domain(name, 0) = request.header.target.clone() else {
        tracing::info!(%peer, "agent registration without a name: refused");
        let response = ResponseHeader::new(
            request.salt,
            ReplyCode::GeneralFailure,
            unix_now(),
            Address::UNSPECIFIED,
        );
        if let Ok(mut t) = request.respond(stream, &shared.config.key, &response, &[]).await {
            let _ = t.shutdown().await;
        }
        return;
    };
    let response = ResponseHeader::new(request.salt, ReplyCode::Succeeded, unix_now(), Address::UNSPECIFIED);
    let Ok(tunnel) = request.respond(stream, &shared.config.key, &response, &[]).await else {
        return;
    };
    // The session runs on the bare connection: every stream on it is a tunnel sealed end to end
    // between the local and the agent (see `forward`).
    let Some(tunnel) = tunnel.into_inner() else { return };
    let (beat_tx, beat_rx) = tokio::sync::oneshot::channel::<MuxStream>();
    let mut beat_tx = Some(beat_tx);
    let (opener, driver) = mux::session(tunnel, false, move |s| {
        // The agent's first stream is the heartbeat; it opens no others.
        if let Some(tx) = beat_tx.take() {
            let _ = tx.send(s);
        }
    });
    let id = shared.agents.insert(&name, opener);
    tracing::info!(%peer, agent = %name, "agent connected");
    let heartbeat = async {
        let Ok(Ok(mut beat)) = tokio::time::timeout(HEARTBEAT_DEAD, beat_rx).await else {
            return;
        };
        let mut b = [0u8; 1];
        while let Ok(Ok(_)) = tokio::time::timeout(HEARTBEAT_DEAD, beat.read_exact(&mut b)).await {
            if beat.write_all(&b).await.is_err() || beat.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = driver => {}
        () = heartbeat => tracing::warn!(%peer, agent = %name, "agent heartbeat lost"),
        () = shared.shutdown.cancelled() => {}
    }
    shared.agents.remove(&name, id);
    tracing::info!(%peer, agent = %name, "agent disconnected");
}

/// Public remote: hands a request routed `via: name` to that agent and relays.
///
/// The request goes on unopened: the agent receives the local's salt and first chunk exactly as
/// they arrived and authenticates them itself, so the tunnel is sealed end to end between the
/// local and the agent and this remote relays ciphertext without a cipher pass of its own. It
/// answers (sealed) only when there is no agent to ask.
pub async fn forward<S>(request: AcceptedRequest, mut stream: S, peer: SocketAddr, shared: &Shared, name: &str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let target = request.header.target.clone();
    let opened = match (shared.agents.get(name), request.raw.as_deref()) {
        (None, _) => Err(ReplyCode::HostUnreachable),
        // `raw` is kept whenever a route leads to an agent (see `Shared::forwards`).
        (Some(_), None) => Err(ReplyCode::GeneralFailure),
        (Some(opener), Some(raw)) => {
            let attempt = async {
                let mut s = opener.open().await?;
                s.write_all(raw).await?;
                Ok::<_, std::io::Error>(s)
            };
            match tokio::time::timeout(config.timeouts.connect, attempt).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(_)) => Err(ReplyCode::GeneralFailure),
                Err(_) => Err(ReplyCode::TtlExpired),
            }
        }
    };
    let upstream = match opened {
        Ok(upstream) => upstream,
        Err(status) => {
            tracing::info!(%peer, %target, agent = %name, reply = status as u8, "refused: {}", status.describe());
            let response = ResponseHeader::new(request.salt, status, unix_now(), Address::UNSPECIFIED);
            if let Ok(mut tunnel) = request.respond(&mut stream, &config.key, &response, &[]).await {
                let _ = tunnel.shutdown().await;
            }
            return;
        }
    };
    let outcome = relay(stream, upstream, config.timeouts.idle).await;
    tracing::info!(%peer, %target, agent = %name, sent = outcome.sent, received = outcome.received, end = %outcome.end, "connection via agent finished");
}

/// Agent: keeps a session to the public remote up until `shutdown`.
pub async fn run(settings: AgentSettings, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let outcome = tokio::select! {
            r = session(&settings, shared.clone()) => r,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                tracing::warn!(server = %settings.server, "agent session ended; reconnecting");
            }
            Err(e) => tracing::info!(server = %settings.server, "agent cannot connect: {e}"),
        }
        let wait = backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One session: `Err` if it never came up, `Ok` once an established session ended.
async fn session(settings: &AgentSettings, shared: Arc<Shared>) -> Result<(), String> {
    let config = &shared.config;
    let setup = async {
        let tcp = TcpStream::connect(settings.server.as_str())
            .await
            .map_err(|e| e.to_string())?;
        warren_common::net::tune(&tcp);
        let target = Address::Domain(settings.name.clone(), 0);
        let header = RequestHeader::new(Command::Agent, target, unix_now());
        let pending = PendingTunnel::send_request(tcp, &config.key, &header, &[])
            .await
            .map_err(|e| e.to_string())?;
        let (response, tunnel) = pending.read_response().await.map_err(|e| e.to_string())?;
        if response.status != ReplyCode::Succeeded {
            return Err(format!("server answered: {}", response.status.describe()));
        }
        tunnel
            .into_inner()
            .ok_or_else(|| "bytes after the registration response".to_string())
    };
    let tunnel = tokio::time::timeout(config.timeouts.handshake, setup)
        .await
        .map_err(|_| "no answer before the handshake deadline (wrong key, or clocks apart?)".to_string())??;
    let server: SocketAddr = tunnel.peer_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let inner = shared.clone();
    let (opener, driver) = mux::session(tunnel, true, move |s| {
        tokio::spawn(crate::handle(s, None, server, inner.clone()));
    });
    tracing::info!(server = %settings.server, name = %settings.name, "agent connected");
    let heartbeat = async {
        let Ok(mut beat) = opener.open().await else { return };
        let mut b = [0u8; 1];
        loop {
            if beat.write_all(&[1]).await.is_err() || beat.flush().await.is_err() {
                return;
            }
            match tokio::time::timeout(HEARTBEAT_DEAD, beat.read_exact(&mut b)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            tokio::time::sleep(HEARTBEAT_EVERY).await;
        }
    };
    tokio::select! {
        () = driver => {}
        () = heartbeat => tracing::warn!(server = %settings.server, "heartbeat lost"),
    }
    Ok(())
}
