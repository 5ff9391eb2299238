//! CONNECT on the remote: open the outbound connection (ACL, Happy Eyeballs; see
//! [`outbound`](crate::outbound)) while watching the local, answer, then relay.
//!
//! ```text
//! local ──request──▶ remote ──connect (connect_timeout)──▶ target
//!       ◀─response──        (bytes the local sends meanwhile are kept and relayed first)
//!       ◀════════ relay ════════▶
//! ```

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::crypto::MAX_FRAME;
use warren_common::proto::address::Address;
use warren_common::proto::status::Status;
use warren_common::relay::relay;

use crate::outbound;
use crate::respond::{Connection, Reply, Request};
use crate::shared::Shared;

/// Bytes read from the local per wait while the outbound connection opens.
const WATCH_CHUNK: usize = 4096;

/// Serves one authenticated CONNECT request routed here (not to an agent).
pub async fn serve<S>(mut request: Request, mut stream: S, shared: &Shared)
where
    S: Connection,
{
    // The lines users read name the connection themselves (see accept.rs on spans).
    let (peer, target) = (request.origin.peer(), request.header().target.clone());
    let user = request.party.user().map(str::to_owned);
    let config = &*shared.config();
    let Some((connected, early)) = open_watching(&request, &mut stream, shared).await else {
        tracing::info!(%peer, %target, "local left before the outbound connection was made");
        return;
    };
    let reply = match &connected {
        Ok(outbound) => Reply {
            status: Status::Succeeded,
            bound: outbound.local_addr().map(Address::Ip).unwrap_or(Address::UNSPECIFIED),
        },
        Err(code) => Reply::refused(*code),
    };
    let status = reply.status;
    let initial_data = request.take_initial_data();
    let started = request.started;
    // Boxed: the answer's states are freed before the relay, not kept for its whole life.
    let Some(mut tunnel) = Box::pin(request.answer(stream, reply, &early)).await else {
        return;
    };
    let Ok(mut outbound) = connected else {
        tracing::info!(%peer, %target, reply = status.socks5() as u8, "refused: {}", status.describe());
        let _ = tunnel.shutdown().await;
        return;
    };
    warren_common::net::tune(&outbound);
    if !initial_data.is_empty() && outbound.write_all(&initial_data).await.is_err() {
        return;
    }
    let connected_to = outbound.peer_addr().ok();
    let outcome = relay(tunnel, outbound, config.timeouts.idle).await;
    let sent = outcome.sent + initial_data.len() as u64;
    warren_common::metrics::get().relayed(sent, outcome.received);
    if let Some(user) = &user {
        warren_common::metrics::get().user_relayed(user, sent, outcome.received);
    }
    tracing::info!(
        %peer, %target, connected_to = ?connected_to, user = %user.as_deref().unwrap_or("-"),
        sent = outcome.sent + initial_data.len() as u64,
        received = outcome.received,
        duration_ms = started.elapsed().as_millis() as u64,
        end = %outcome.end,
        "connection finished"
    );
}

/// Connects (deadline: `connect_timeout`), but gives up at once if the local goes away
/// meanwhile (`None`); a local that half-closed (end-of-stream chunk, then EOF) is answered. Bytes it sends meanwhile come back with the result, still sealed, for
/// the tunnel to open first.
async fn open_watching<S>(
    request: &Request,
    stream: &mut S,
    shared: &Shared,
) -> Option<(Result<TcpStream, Status>, Vec<u8>)>
where
    S: AsyncRead + Unpin,
{
    let config = &*shared.config();
    let connect = tokio::time::timeout(
        config.timeouts.connect,
        outbound::connect(
            &request.header().target,
            request.party.acl(config),
            config.outbound_source,
        ),
    );
    tokio::pin!(connect);
    let mut early = Vec::new();
    // On the heap and dropped before the relay: an array here would sit in every connection's
    // task for its whole life (a future is as large as its largest state).
    let mut chunk = vec![0u8; WATCH_CHUNK];
    // A local whose client half-closed may send its end-of-stream chunk and FIN before the
    // response: it still wants the answer (RFC 9293 §3.6), so reading stops and the connect goes
    // on; the relay passes the half-close on. A bare EOF (no end-of-stream chunk: PROTOCOL.md §9)
    // or an error is a local that left.
    let mut half_closed = false;
    let connected = loop {
        tokio::select! {
            result = &mut connect => break result,
            read = stream.read(&mut chunk), if !half_closed && early.len() + WATCH_CHUNK <= MAX_FRAME => match read {
                Ok(0) if request.ends_with_end_of_stream(&early) => half_closed = true,
                Ok(0) | Err(_) => return None,
                Ok(n) => early.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            },
        }
    };
    Some((connected.unwrap_or(Err(Status::TtlExpired)), early))
}
