//! One tunnel connection from its first byte to the command that serves it.
//!
//! ```text
//! read + authenticate the request (deadline: handshake_timeout from accept)
//!   → timestamp window → replay check → route → connect | bind | udp | agent (register, forward)
//! ```
//!
//! A connection that fails any check gets no byte back and causes no outbound connection; the
//! remote reads and discards until the handshake deadline, so a prober learns nothing from when
//! it closes. Its info and warning lines name the `peer` (and the commands add the `target`);
//! debug lines carry a `tunnel{peer, command, target}` span.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;
use warren_common::proto::header::{Command, TIMESTAMP_WINDOW_SECS};
use warren_common::replay::Verdict;
use warren_common::route::RemoteAction;
use warren_common::time::unix_now;
use warren_common::tunnel::{AcceptedRequest, HandshakeError};

use crate::respond::{Connection, Request};
use crate::shared::{Origin, Shared};
use crate::{agent, bind, connect, udp};

/// Serves one tunnel connection: a TCP connection, or a stream a reverse-tunnel session opened.
pub async fn serve<S: Connection>(mut stream: S, origin: Origin, shared: Arc<Shared>) {
    // Context for debug lines only. The lines users read (info and up) name the connection
    // themselves: an enabled span per connection costs ~0.9 KiB of RSS while it lives, and the
    // subscriber keeps its slot after close (+288 % RSS after 10,000 connections had closed,
    // against +23 % without; docs/BENCHMARKS.md).
    let span = tracing::debug_span!("tunnel", peer = %origin.peer(), command = Empty, target = Empty);
    async move {
        let started = std::time::Instant::now();
        let deadline = Instant::now() + shared.config.timeouts.handshake;
        match check(&mut stream, origin.peer(), deadline, &shared).await {
            Ok(accepted) => {
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
    let verdict = shared
        .replay
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .check(request.salt, request.header.timestamp, now);
    match verdict {
        Verdict::Fresh => Ok(request),
        Verdict::BeforeStart => {
            let behind = shared.started.saturating_sub(request.header.timestamp);
            tracing::warn!(
                %peer,
                "request stamped {behind} s before this remote started: ignored (a replay from before a restart, \
                 or a client whose clock is behind ours: synchronise the clocks (NTP))"
            );
            Err(Refusal::Silent)
        }
        Verdict::Replay | Verdict::OutsideWindow => {
            tracing::warn!(%peer, "replayed request (salt seen before): ignored");
            Err(Refusal::Silent)
        }
    }
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
