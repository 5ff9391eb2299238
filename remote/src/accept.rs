//! One tunnel connection from its first byte to the command that serves it.
//!
//! ```text
//! read + authenticate the request (deadline: the hold time from accept, crate::hold)
//!   → timestamp window → replay check → connection slot → route
//!   → connect | bind | udp | agent (register, forward)
//! ```
//!
//! Until its request passes every check a connection counts in the handshake pool, not against
//! `max_connections` (common's `server::gate`), so probes cannot keep real users waiting.
//! A connection that fails any check gets no byte back and causes no outbound connection; the
//! remote reads and discards until the handshake deadline, which is randomised per server and
//! per connection, so a prober learns nothing from when it closes. Its info and warning lines name the `peer` (and the commands add the `target`);
//! debug lines carry a `tunnel{peer, command, target}` span.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;
use warren_common::proto::header::{Command, TIMESTAMP_WINDOW_SECS};
use warren_common::route::RemoteAction;
use warren_common::server::Admission;
use warren_common::time::unix_now;
use warren_common::tunnel::{AcceptedRequest, HandshakeError};

use crate::respond::{Connection, Request};
use crate::shared::{Origin, Shared};
use crate::{agent, bind, connect, udp};

/// Serves one tunnel connection: a TCP connection, or a stream a reverse-tunnel session opened.
/// `admission` is its place in the listener's pools ([`Admission::uncounted`] for a stream of
/// an agent session); it moves to the connection pool once the request passes its checks and
/// is dropped when the connection ends.
pub async fn serve<S: Connection>(mut stream: S, origin: Origin, shared: Arc<Shared>, mut admission: Admission) {
    // Context for debug lines only. The lines users read (info and up) name the connection
    // themselves: an enabled span per connection costs ~0.9 KiB of RSS while it lives, and the
    // subscriber keeps its slot after close (+288 % RSS after 10,000 connections had closed,
    // against +23 % without; docs/BENCHMARKS.md).
    let span = tracing::debug_span!("tunnel", peer = %origin.peer(), command = Empty, target = Empty);
    async move {
        let started = std::time::Instant::now();
        let hold = shared
            .hold
            .pick(shared.config.timeouts.handshake, &mut rand::thread_rng());
        let deadline = Instant::now() + hold;
        match check(&mut stream, origin.peer(), deadline, &shared).await {
            Ok(accepted) => {
                admission.authenticated().await;
                let request = Request::new(accepted, origin, started);
                dispatch(request, stream, &shared).await;
            }
            Err(Refusal::Silent) => {
                // Read and discard until the deadline or until the peer closes: the
                // connection's lifetime and the bytes we consume tell a prober nothing about
                // where its bytes stopped making sense.
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
            Err(Refusal::Over) => {}
        }
    }
    .instrument(span)
    .await
}

/// Why a connection gets no command.
enum Refusal {
    /// Refused silently: read and discard until the handshake deadline.
    Silent,
    /// The connection is already over (closed, failed, or out of time).
    Over,
}

/// Reads and authenticates the request, then checks its timestamp and salt.
async fn check<S>(
    stream: &mut S,
    peer: SocketAddr,
    deadline: Instant,
    shared: &Shared,
) -> Result<AcceptedRequest, Refusal>
where
    S: AsyncRead + Unpin,
{
    let read = AcceptedRequest::read(stream, &shared.config.key, shared.forwards);
    let request = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(request)) => request,
        Ok(Err(HandshakeError::Unauthenticated | HandshakeError::Malformed(_))) => {
            tracing::info!(%peer, "request failed authentication (a probe, or a client with another key): ignored");
            return Err(Refusal::Silent);
        }
        Ok(Err(e)) => {
            tracing::debug!("tunnel handshake failed: {e}");
            return Err(Refusal::Over);
        }
        Err(_) => {
            tracing::debug!("no complete request before the handshake deadline");
            return Err(Refusal::Over);
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
        return Err(Refusal::Silent);
    }
    let fresh = shared
        .replay
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .accept(request.salt, request.header.timestamp, now);
    if !fresh {
        tracing::warn!(%peer, "replayed request (salt seen before): ignored");
        return Err(Refusal::Silent);
    }
    Ok(request)
}

/// Hands the request to the one command that serves it (CONNECT goes where its route says).
/// Every command has the same shape, `serve(request, stream, shared)`, and answers through
/// [`Request::answer`] before it relays.
async fn dispatch<S: Connection>(request: Request, stream: S, shared: &Shared) {
    let header = request.header();
    let span = tracing::Span::current();
    span.record("command", tracing::field::debug(header.command));
    span.record("target", tracing::field::display(&header.target));
    match header.command {
        Command::Connect => match shared.config.routes.route(&header.target) {
            RemoteAction::Via(agent) => agent::server::forward(request, stream, shared, agent).await,
            RemoteAction::Direct => connect::serve(request, stream, shared).await,
        },
        Command::Agent => agent::server::register(request, stream, shared).await,
        Command::Bind => bind::serve(request, stream, shared).await,
        Command::UdpOverTcp => udp::tcp::serve(request, stream, shared).await,
    }
}
