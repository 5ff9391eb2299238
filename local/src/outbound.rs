//! How a request leaves the local: the one seam every front end (SOCKS5, SOCKS4, HTTP CONNECT
//! and forwarding, BIND, UDP-over-TCP) opens its outbound through.
//!
//! ```text
//! route (local.routes, first match, else local.default)
//!   block   → refused: SOCKS5 0x02, SOCKS4 0x5B, HTTP 403
//!   direct  → Happy Eyeballs from the local itself               → Outbound::Direct
//!   proxy   → each way out in order, those marked down last:
//!               remote → TCP + tunnel handshake                   → Outbound::Tunnel
//!               chain  → hop 1 tunnel, CONNECT hop 2, hop 2's handshake inside it, …,
//!                        optionally a SOCKS5 client handshake last → Outbound::Nested
//!             the next one is tried when the way there fails; an answer about the target
//!             (a refusal) ends the attempt
//! ```
//!
//! Everything up to the answer runs under one deadline, `local.connect_timeout`. The
//! single-remote case stays a concrete type (no dynamic dispatch in the relay's hot path);
//! only chains are boxed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use warren_common::config::local_routes::{Chain, Endpoint, Hop, LocalAction, Via};
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::socks5::ReplyCode;
use warren_common::stream::EncryptedStream;
use warren_common::time::unix_now;

use crate::tunnel::{self, OpenError};
use crate::upstream;

/// A byte stream an outbound can be built on.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> Stream for T {}

/// An open outbound, ready for the relay.
pub enum Outbound {
    /// A tunnel to one warren-remote (the common case, statically dispatched).
    Tunnel(EncryptedStream<TcpStream>),
    /// Route `direct`: a connection to the target itself.
    Direct(TcpStream),
    /// A chain: tunnels nested in tunnels, perhaps a SOCKS5 upstream at the end.
    Nested(Box<dyn Stream>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Outbound::Tunnel($s) => $e,
            Outbound::Direct($s) => $e,
            Outbound::Nested($s) => $e,
        }
    };
}

impl AsyncRead for Outbound {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Outbound {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// The routing decision for a request: by its target, except UDP associations (whose
/// datagrams each name their own destination), which take the default route.
pub fn route<'a>(config: &'a LocalConfig, header: &RequestHeader) -> &'a LocalAction {
    match header.command {
        Command::UdpOverTcp => &config.routing.router.default,
        _ => config.routing.router.route(&header.target),
    }
}

/// Opens the outbound for `header` as the routing rules say, with `initial` client bytes
/// carried in its first chunk (or written first). Returns the bound address for the client's
/// reply and the open outbound.
pub async fn open(
    config: &LocalConfig,
    header: RequestHeader,
    initial: &[u8],
) -> Result<(Address, Outbound), OpenError> {
    open_action(config, route(config, &header), &header, initial).await
}

/// [`open`] along an already chosen route.
pub async fn open_action(
    config: &LocalConfig,
    action: &LocalAction,
    header: &RequestHeader,
    initial: &[u8],
) -> Result<(Address, Outbound), OpenError> {
    let deadline = Instant::now() + config.timeouts.connect;
    match action {
        LocalAction::Block => Err(OpenError::Blocked),
        LocalAction::Direct => match timeout_at(deadline, direct(header, initial)).await {
            Ok(result) => result,
            Err(_) => Err(OpenError::TimedOut(
                "the direct connection".into(),
                config.timeouts.connect,
            )),
        },
        LocalAction::Proxy(list) => {
            // Ways out whose first remote answered its last health check go first, in order;
            // the others stay as a last resort (the check may be stale).
            let (up, down): (Vec<&Via>, Vec<&Via>) = list
                .iter()
                .partition(|v| v.first_remote().map_or(true, |e| e.health.is_up()));
            let order: Vec<&Via> = up.into_iter().chain(down).collect();
            let mut last = None;
            for (i, via) in order.iter().enumerate() {
                match timeout_at(deadline, open_via(via, header, initial)).await {
                    Ok(Ok(opened)) => {
                        if list.len() > 1 {
                            tracing::info!(target = %header.target, via = via.name(), "served by {}", via.name());
                        }
                        return Ok(opened);
                    }
                    Ok(Err(e)) if e.is_about_target() => return Err(e),
                    Ok(Err(e)) => {
                        if i + 1 < order.len() {
                            tracing::warn!(target = %header.target, via = via.name(), "{e}: trying the next way out");
                        }
                        last = Some(e);
                    }
                    Err(_) => return Err(OpenError::TimedOut(via.name().to_owned(), config.timeouts.connect)),
                }
            }
            Err(last.unwrap_or(OpenError::Unsupported("the route names no way out")))
        }
    }
}

/// Route `direct`: CONNECT only (BIND and UDP need a remote to listen and relay).
async fn direct(header: &RequestHeader, initial: &[u8]) -> Result<(Address, Outbound), OpenError> {
    if header.command != Command::Connect {
        return Err(OpenError::Unsupported(
            "BIND and UDP ASSOCIATE need a remote: the direct route carries CONNECT only",
        ));
    }
    let mut stream = warren_common::dial::connect(&header.target, None)
        .await
        .map_err(|e| OpenError::Direct(warren_common::status::Status::from(&e).into()))?;
    warren_common::net::tune(&stream);
    if !initial.is_empty() {
        stream
            .write_all(initial)
            .await
            .map_err(|e| OpenError::Direct(warren_common::status::Status::for_connect_error(&e).into()))?;
    }
    let bound = stream.local_addr().map(Address::Ip).unwrap_or(Address::UNSPECIFIED);
    Ok((bound, Outbound::Direct(stream)))
}

async fn dial(remote: &Endpoint) -> Result<TcpStream, OpenError> {
    let stream = TcpStream::connect(&remote.address)
        .await
        .map_err(|e| OpenError::Unreachable(remote.name.clone(), e))?;
    warren_common::net::tune(&stream);
    Ok(stream)
}

async fn open_via(via: &Via, header: &RequestHeader, initial: &[u8]) -> Result<(Address, Outbound), OpenError> {
    match via {
        Via::Remote(remote) => {
            let stream = dial(remote).await?;
            let (status, bound, tunnel) = tunnel::handshake(stream, remote, header, initial).await?;
            if status != ReplyCode::Succeeded {
                return Err(OpenError::Refused(remote.name.clone(), status));
            }
            Ok((bound, Outbound::Tunnel(tunnel)))
        }
        Via::Chain(chain) => open_chain(chain, header, initial).await,
    }
}

/// One warren hop of a chain over `stream`, boxed for the next hop.
async fn warren_hop<S: Stream + 'static>(
    stream: S,
    remote: &Endpoint,
    header: &RequestHeader,
    initial: &[u8],
) -> Result<(ReplyCode, Address, Box<dyn Stream>), OpenError> {
    let (status, bound, tunnel) = tunnel::handshake(stream, remote, header, initial).await?;
    Ok((status, bound, Box::new(tunnel)))
}

/// Opens a chain: each warren hop is asked to CONNECT to the next hop, and the next hop's
/// handshake (with its own key) runs inside that tunnel; the last warren hop gets the client's
/// request, or a CONNECT to the upstream SOCKS5 server, which then gets a SOCKS5 CONNECT.
async fn open_chain(chain: &Chain, header: &RequestHeader, initial: &[u8]) -> Result<(Address, Outbound), OpenError> {
    let at_hop = |i: usize, e: OpenError| OpenError::Chain(chain.name.clone(), i, Box::new(e));
    if matches!(chain.hops.last(), Some(Hop::Socks5 { .. })) && header.command != Command::Connect {
        return Err(OpenError::Unsupported(
            "an upstream SOCKS5 server at the end of a chain carries CONNECT only",
        ));
    }
    let mut stream: Option<Box<dyn Stream>> = None;
    let mut bound = Address::UNSPECIFIED;
    for (i, hop) in chain.hops.iter().enumerate() {
        let next = chain.hops.get(i + 1);
        match hop {
            Hop::Warren(remote) => {
                let hop_header = match next {
                    None => header.clone(),
                    Some(Hop::Warren(n)) => RequestHeader::connect(n.target.clone(), unix_now()),
                    Some(Hop::Socks5 { address, .. }) => RequestHeader::connect(address.clone(), unix_now()),
                };
                let hop_initial = if next.is_none() { initial } else { &[] };
                let opened = match stream.take() {
                    None => {
                        let tcp = dial(remote).await.map_err(|e| at_hop(i, e))?;
                        warren_hop(tcp, remote, &hop_header, hop_initial).await
                    }
                    Some(inner) => warren_hop(inner, remote, &hop_header, hop_initial).await,
                };
                let (status, hop_bound, tunnel) = opened.map_err(|e| at_hop(i, e))?;
                if status != ReplyCode::Succeeded {
                    let who = format!("chain {} (hop {i}, remote {})", chain.name, remote.name);
                    return Err(match next {
                        None => OpenError::Refused(who, status),
                        Some(_) => at_hop(
                            i,
                            OpenError::Refused(format!("{} (towards the next hop)", remote.name), status),
                        ),
                    });
                }
                bound = hop_bound;
                stream = Some(tunnel);
            }
            Hop::Socks5 { login, .. } => {
                let Some(inner) = stream.as_mut() else {
                    return Err(at_hop(i, OpenError::Unsupported("a chain starts with a warren hop")));
                };
                bound = upstream::connect(inner, login.as_ref(), &header.target)
                    .await
                    .map_err(|e| OpenError::Upstream(chain.name.clone(), e))?;
                if !initial.is_empty() {
                    let written = async {
                        inner.write_all(initial).await?;
                        inner.flush().await
                    };
                    written
                        .await
                        .map_err(|e| OpenError::Upstream(chain.name.clone(), e.into()))?;
                }
            }
        }
    }
    match stream {
        Some(stream) => Ok((bound, Outbound::Nested(stream))),
        None => Err(OpenError::Unsupported("the chain has no hop")),
    }
}
