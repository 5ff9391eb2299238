//! The public remote's half of the reverse tunnel: two commands.
//!
//! `register` (a `Command::Agent` whose target is `Domain(name, 0)`, sealed with that agent's own
//! key from `remote.agents`): refuse it if a live session holds the name, else answer and run a
//! yamux session (server mode) inside the registration's encrypted stream, reachable under the
//! name until it dies.
//!
//! `forward` (a CONNECT or BIND routed `via: NAME`): open a mux stream to that agent and pass
//! the request on unopened, then relay; the agent answers the local itself (for a BIND, both
//! replies: it listens inside its own network).

use tokio::io::AsyncWriteExt;
use warren_common::acl::Verdict;
use warren_common::proto::status::Status;
use warren_common::relay::relay;

use super::heartbeat;
use super::mux::{self, MuxStream};
use crate::respond::{Connection, Reply, Request};
use crate::shared::{Origin, Party, Shared};

/// Serves an authenticated `Command::Agent` request: registers the session until it dies.
/// accept.rs has checked that it was sealed with the key of the agent it names.
pub async fn register<S>(request: Request, stream: S, shared: &Shared)
where
    S: Connection,
{
    // The lines users read name the connection themselves (see accept.rs on spans).
    let peer = request.origin.peer();
    if let Origin::Agent { .. } = request.origin {
        tracing::info!(%peer, "agent registration inside an agent session: refused");
        return;
    }
    let Party::Agent(name) = request.party.clone() else {
        return;
    };
    // The key it registered with, so a reload that removes or changes it ends the session.
    let Some(key) = shared
        .config()
        .agents
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.key.clone())
    else {
        return;
    };
    let claim = shared.agents.claim(&name, &key);
    let reply = match claim {
        Some(_) => Reply::GRANTED,
        None => {
            tracing::warn!(
                %peer,
                agent = %name,
                "agent registration refused: the name is held by a live session (a second agent under one name?)"
            );
            Reply::refused(Status::NotAllowed)
        }
    };
    let Some(mut tunnel) = request.answer(stream, reply, &[]).await else {
        return;
    };
    let Some(claim) = claim else {
        let _ = tunnel.shutdown().await;
        return;
    };
    // The session runs inside the registration's encrypted stream, sealed with the agent's own
    // key: nothing on the link is plaintext, and a byte injected, replayed, reordered or altered
    // fails authentication and ends the session (PROTOCOL.md §17).
    let (beat_tx, beat_rx) = tokio::sync::oneshot::channel::<MuxStream>();
    let mut beat_tx = Some(beat_tx);
    let (opener, driver) = mux::session(tunnel, yamux::Mode::Server, move |s| {
        // The agent's first stream is the heartbeat; it opens no others.
        if let Some(tx) = beat_tx.take() {
            let _ = tx.send(s);
        }
    });
    claim.activate(opener);
    tracing::info!(%peer, agent = %name, "agent connected");
    let _session = SessionGauge::new(&name);
    tokio::select! {
        () = driver => {}
        () = heartbeat::echo(beat_rx) => tracing::warn!(%peer, agent = %name, "agent heartbeat lost"),
        () = claim.revoked() => tracing::warn!(%peer, agent = %name, "agent's key revoked by a reload: session closed"),
        () = shared.shutdown.cancelled() => {}
    }
    drop(claim);
    tracing::info!(%peer, agent = %name, "agent disconnected");
}

/// Hands a CONNECT or BIND routed `via: name` to that agent and relays.
///
/// The request goes on unopened: the agent receives the local's salt and first chunk exactly as
/// they arrived and authenticates them itself, so the tunnel is sealed end to end between the
/// local and the agent and this remote relays ciphertext without a cipher pass of its own. It
/// answers (sealed) only when there is no agent to ask.
pub async fn forward<S>(request: Request, stream: S, shared: &Shared, name: &str)
where
    S: Connection,
{
    // The lines users read name the connection themselves (see accept.rs on spans).
    let (peer, target) = (request.origin.peer(), request.header().target.clone());
    let config = &*shared.config();
    // The agent applies its own ACL where it connects; a user's own rules hold on the way there.
    let denied = match &request.party {
        Party::User(user) => user.own.rule_for(&target) == Some(Verdict::Deny),
        _ => false,
    };
    let opener = match denied {
        true => None,
        false => shared.agents.get_or_wait(name, config.timeouts.connect).await,
    };
    let opened = match (opener, request.raw()) {
        _ if denied => Err(Status::NotAllowed),
        (None, _) => Err(Status::HostUnreachable),
        // `raw` is kept whenever a route leads to an agent (see `Shared::forwards`).
        (Some(_), None) => Err(Status::GeneralFailure),
        (Some(opener), Some(raw)) => {
            let attempt = async {
                let mut s = opener.open().await?;
                s.write_all(raw).await?;
                Ok::<_, std::io::Error>(s)
            };
            match tokio::time::timeout(config.timeouts.connect, attempt).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(_)) => Err(Status::GeneralFailure),
                Err(_) => Err(Status::TtlExpired),
            }
        }
    };
    let upstream = match opened {
        Ok(upstream) => {
            let agent = warren_common::metrics::Agent {
                agent: warren_common::metrics::label(name),
            };
            warren_common::metrics::get().agent_streams.get_or_create(&agent).inc();
            upstream
        }
        Err(status) => {
            tracing::info!(%peer, %target, agent = %name, reply = status.socks5() as u8, "refused: {}", status.describe());
            return request.refuse(stream, status).await;
        }
    };
    let outcome = relay(stream, upstream, config.timeouts.idle).await;
    warren_common::metrics::get().relayed(outcome.sent, outcome.received);
    tracing::info!(%peer, %target, agent = %name, sent = outcome.sent, received = outcome.received, end = %outcome.end, "connection via agent finished");
}

/// `warren_agent_sessions{agent}` counts a session while this lives (however its task ends).
struct SessionGauge(warren_common::metrics::Agent);

impl SessionGauge {
    fn new(name: &str) -> SessionGauge {
        let labels = warren_common::metrics::Agent {
            agent: warren_common::metrics::label(name),
        };
        warren_common::metrics::get()
            .agent_sessions
            .get_or_create(&labels)
            .inc();
        SessionGauge(labels)
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        warren_common::metrics::get()
            .agent_sessions
            .get_or_create(&self.0)
            .dec();
    }
}
