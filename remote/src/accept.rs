//! One tunnel connection from its first byte to the command that serves it.
//!
//! ```text
//! read + authenticate the request (deadline: handshake_timeout from accept)
//!   → timestamp window → replay check → route → connect | bind | udp | agent (register, forward)
//! ```
//!
//! A connection that fails any check gets no byte back and causes no outbound connection; the
//! remote reads and discards until the handshake deadline, so a prober learns nothing from when
//! it closes. Every line logged for the connection carries its span: `peer`, then `command` and
//! `target` once the request is read.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;
use warren_common::proto::header::{Command, TIMESTAMP_WINDOW_SECS};
use warren_common::route::RemoteAction;
use warren_common::time::unix_now;
use warren_common::tunnel::{AcceptedRequest, HandshakeError};

use crate::respond::Request;
use crate::shared::{Origin, Shared};
use crate::{agent, bind, connect, udp};

/// Serves one tunnel connection: a TCP connection, or a stream a reverse-tunnel session opened.
pub async fn serve<S>(stream: S, origin: Origin, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!("tunnel", peer = %origin.peer(), command = Empty, target = Empty);
    async move {
        let started = std::time::Instant::now();
        let deadline = Instant::now() + shared.config.timeouts.handshake;
        match check(stream, deadline, &shared).await {
            Ok((accepted, stream)) => dispatch(Request::new(accepted, origin, started), stream, &shared).await,
            Err(Some(stream)) => drain_until(stream, deadline).await,
            Err(None) => {}
        }
    }
    .instrument(span)
    .await
}

/// Reads and authenticates the request, then checks its timestamp and salt. `Err(Some(_))`:
/// refuse silently (drain); `Err(None)`: the connection is already over.
async fn check<S>(mut stream: S, deadline: Instant, shared: &Shared) -> Result<(AcceptedRequest, S), Option<S>>
where
    S: AsyncRead + Unpin,
{
    let read = AcceptedRequest::read(&mut stream, &shared.config.key, shared.forwards);
    let request = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(request)) => request,
        Ok(Err(HandshakeError::Unauthenticated | HandshakeError::Malformed(_))) => {
            tracing::info!("request failed authentication (a probe, or a client with another key): ignored");
            return Err(Some(stream));
        }
        Ok(Err(e)) => {
            tracing::debug!("tunnel handshake failed: {e}");
            return Err(None);
        }
        Err(_) => {
            tracing::debug!("no complete request before the handshake deadline");
            return Err(None);
        }
    };
    let now = unix_now();
    let skew = warren_common::time::skew(request.header.timestamp, now);
    if skew.unsigned_abs() > u128::from(TIMESTAMP_WINDOW_SECS) {
        tracing::warn!(
            "request stamped {skew:+} s from our clock, outside ±{TIMESTAMP_WINDOW_SECS} s: ignored. If this is your \
             own client, synchronise both machines' clocks (NTP)"
        );
        return Err(Some(stream));
    }
    let fresh = shared
        .replay
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .accept(request.salt, request.header.timestamp, now);
    if !fresh {
        tracing::warn!("replayed request (salt seen before): ignored");
        return Err(Some(stream));
    }
    Ok((request, stream))
}

/// Hands the request to the one command that serves it.
async fn dispatch<S>(request: Request, stream: S, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header = request.header();
    let span = tracing::Span::current();
    span.record("command", tracing::field::debug(header.command));
    span.record("target", tracing::field::display(&header.target));
    match header.command {
        Command::Connect => match shared.config.routes.route(&header.target) {
            RemoteAction::Via(name) => agent::server::forward(request, stream, shared, name).await,
            RemoteAction::Direct => connect::serve(request, stream, shared).await,
        },
        Command::Agent => agent::server::register(request, stream, shared).await,
        Command::Bind => bind::serve(request, stream, shared).await,
        Command::UdpOverTcp => udp::tcp::serve(request, stream, shared).await,
    }
}

/// Reads and discards until `deadline` or until the peer closes, then closes. Used for every
/// request we refuse silently: the connection's lifetime and the bytes we consume tell a prober
/// nothing about where its bytes stopped making sense.
async fn drain_until<S: AsyncRead + Unpin>(mut stream: S, deadline: Instant) {
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
