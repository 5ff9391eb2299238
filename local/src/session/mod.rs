//! The steps every front end shares once it knows what its client wants: open the way out while
//! watching the client, answer it, relay to the end, log one line. A front end makes ONE call
//! here per request and passes its own reply format in (an [`Answer`]), so a request walks down
//! and never back up:
//!
//! ```text
//! front end (socks5/, socks4.rs, http/connect.rs)
//!   └─ connect(client, outbounds, request, answer)
//!        open:   outbound opens (local.connect_timeout); meanwhile the client's bytes are kept
//!                (up to EARLY_DATA_LIMIT); a client that half-closes (FIN) is still answered,
//!                one that resets abandons the attempt at once, and the remote then abandons
//!                its outbound connect
//!        answer: answer.granted(bound) or answer.refused(error), written to the client
//!        relay:  the kept bytes first, then both directions until both close or go idle (a
//!                FIN the client sent while opening goes on as the end-of-stream chunk);
//!                one "connection finished" line
//! ```
//!
//! BIND ([`bind`]) and UDP ASSOCIATE ([`udp`]) are commands of the same level, called by the
//! SOCKS front ends; HTTP forwarding uses [`open`] alone (it relays message by message).

pub mod bind;
pub mod udp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::status::Status;
use warren_common::relay::relay;
use warren_common::time::unix_now;

use crate::outbound::{OpenError, Outbound, Outbounds};

/// Most bytes kept from a client while its outbound is being opened (or its BIND peer awaited);
/// reading stops there until the outbound is open.
pub const EARLY_DATA_LIMIT: usize = 64 * 1024;

/// How long a refused client that gets a lingering close may still send before it is dropped.
const LINGER: Duration = Duration::from_secs(2);

/// Why a session opened no outbound.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The client's connection failed (reset) while the outbound was being opened; nothing to
    /// answer. A FIN is no failure: see [`open`].
    #[error("client left before the tunnel opened")]
    ClientLeft,
    /// The outbound did not open (blocked, refused, unreachable, timed out; already logged).
    #[error("{0}")]
    Open(#[from] OpenError),
}

/// A front end's reply format for a CONNECT. The encodings are plain bytes, so the session
/// writes them and the front end is not entered again.
pub trait Answer {
    /// The front end's name on the "connection finished" line (`socks5`, `socks4`,
    /// `http-connect`).
    const PROTOCOL: &'static str;

    /// Whether a refused client gets a lingering close ([`answer_and_close`], HTTP) rather than
    /// an immediate one (SOCKS).
    const LINGERS: bool = false;

    /// The success reply; `bound` is the outbound's address as the remote (or this host) bound it.
    fn granted(&self, bound: &Address) -> Vec<u8>;

    /// The refusal for an outbound that did not open.
    fn refused(&self, error: &OpenError) -> Vec<u8>;
}

/// A CONNECT a front end has read and accepted.
pub struct Connect {
    pub target: Address,
    /// Bytes the client sent after its request (pipelining): they ride in the outbound's first chunk.
    pub initial: BytesMut,
    /// When the client's request began (the finished line's `duration_ms` counts from here).
    pub started: Instant,
}

/// Carries out a CONNECT: opens the outbound while watching the client, writes `answer`'s reply,
/// and relays until the end. Everything is logged here; nothing is returned.
pub async fn connect<A: Answer>(mut client: TcpStream, outbounds: &Outbounds, request: Connect, answer: A) {
    let Connect {
        target,
        initial,
        started,
    } = request;
    let mut early = BytesMut::new();
    // The opening's states are boxed and freed once it is done: otherwise every connection's
    // task would stay as large as its largest opening state for its whole (mostly idle) life.
    let opened = Box::pin(open(&mut client, &mut early, outbounds, &target, &initial)).await;
    // The initial bytes rode in the outbound's first chunk; their buffer (the handshake's, up
    // to 1 KiB or more) must not stay allocated for the connection's whole life.
    let sent_before = initial.len();
    drop(initial);
    let metrics = warren_common::metrics::get();
    let tunnel = match opened {
        Ok((bound, tunnel)) => {
            metrics.request(A::PROTOCOL, "connect", Status::Succeeded);
            if client.write_all(&answer.granted(&bound)).await.is_err() {
                return;
            }
            tunnel
        }
        Err(Failure::ClientLeft) => return,
        Err(Failure::Open(error)) => {
            metrics.request(A::PROTOCOL, "connect", error.status());
            let refusal = answer.refused(&error);
            if A::LINGERS {
                answer_and_close(&mut client, &refusal).await;
            } else {
                let _ = client.write_all(&refusal).await;
            }
            return;
        }
    };
    let finished = Finished {
        peer: outbounds.peer(),
        target: &target,
        protocol: A::PROTOCOL,
        started,
    };
    relay_to_end(client, tunnel, early, sent_before, outbounds.idle(), finished).await;
}

/// Opens the outbound to `target` (as routed) carrying `initial` first, within the connect
/// timeout, reading whatever the client sends meanwhile into `early` (up to
/// [`EARLY_DATA_LIMIT`] more bytes). A client that half-closes meanwhile is read no further
/// and the opening goes on (its next read returns EOF again, for the caller to pass on); only
/// a read error abandons. Returns the bound address and the open outbound; failures are logged
/// here.
pub async fn open(
    client: &mut TcpStream,
    early: &mut BytesMut,
    outbounds: &Outbounds,
    target: &Address,
    initial: &[u8],
) -> Result<(Address, Outbound), Failure> {
    let open = outbounds.open(RequestHeader::connect(target.clone(), unix_now()), initial);
    tokio::pin!(open);
    let limit = early.len() + EARLY_DATA_LIMIT;
    // A FIN from the client only says it will send nothing more (RFC 9293 §3.6): it still wants
    // the reply and the target's answer, so reading stops and the opening goes on; the relay
    // passes the half-close on after the kept bytes. Only an error (a reset) abandons.
    let mut half_closed = false;
    let opened = loop {
        tokio::select! {
            result = &mut open => break result,
            read = client.read_buf(early), if !half_closed && early.len() < limit => match read {
                Ok(0) => half_closed = true,
                Ok(_) => {}
                Err(_) => {
                    tracing::info!(peer = %outbounds.peer(), %target, "client left before the tunnel opened");
                    return Err(Failure::ClientLeft);
                }
            },
        }
    };
    opened.map_err(|error| {
        error.log(outbounds.peer(), target);
        Failure::Open(error)
    })
}

/// What the "connection finished" line says about a connection besides its bytes.
struct Finished<'a> {
    peer: SocketAddr,
    target: &'a Address,
    protocol: &'static str,
    started: Instant,
}

/// After the success reply: the client's read-ahead goes into the outbound, then the relay runs
/// to its end and the connection is logged once. `sent_before` counts the client bytes that
/// rode in the outbound's first chunk.
async fn relay_to_end(
    client: TcpStream,
    mut tunnel: Outbound,
    early: BytesMut,
    sent_before: usize,
    idle: Duration,
    finished: Finished<'_>,
) {
    if !early.is_empty() && tunnel.write_all(&early).await.is_err() {
        return;
    }
    let sent_before = (sent_before + early.len()) as u64;
    drop(early);
    let outcome = relay(client, tunnel, idle).await;
    let Finished {
        peer,
        target,
        protocol,
        started,
    } = finished;
    warren_common::metrics::get().relayed(outcome.sent + sent_before, outcome.received);
    tracing::info!(
        %peer,
        %target,
        protocol,
        sent = outcome.sent + sent_before,
        received = outcome.received,
        duration_ms = started.elapsed().as_millis() as u64,
        end = %outcome.end,
        "connection finished"
    );
}

/// Sends `answer`, half-closes, and reads (discarding) what the client still sends for a
/// moment, so the answer is not lost to a reset caused by unread request bytes.
pub async fn answer_and_close(client: &mut TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(LINGER, async {
        client.write_all(answer).await?;
        client.shutdown().await?;
        // On the heap, not in the future: an array here would make every connection's task
        // (which may end here) 4 KiB larger for its whole life (docs/BENCHMARKS.md, memory).
        let mut sink = vec![0u8; 4096];
        while client.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
