//! A chain (`local.chains`): warren hops nested in one another, perhaps a SOCKS5 server last.
//!
//! ```text
//! local ─TCP─ hop 0 ══tunnel(key 0)══ CONNECT hop 1
//!                     ╚═ hop 1's handshake (key 1) inside it ══ … ══ last warren hop: the request
//!                                                     (or CONNECT upstream, then SOCKS5 CONNECT)
//! ```
//!
//! Each hop's stream is boxed for the next (the nesting depth is only known at run time).

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use warren_common::config::local_routes::{Chain, Endpoint, Hop};
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::status::Status;
use warren_common::time::unix_now;

use super::tunnel::{self, OpenError};
use super::upstream;

/// A byte stream a hop can be built on (TCP, or the previous hop's tunnel).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> Stream for T {}

/// One warren hop of a chain over `stream`, boxed for the next hop.
async fn warren_hop<S: Stream + 'static>(
    stream: S,
    remote: &Endpoint,
    header: &RequestHeader,
    initial: &[u8],
) -> Result<(Status, Address, Box<dyn Stream>), OpenError> {
    let (status, bound, tunnel) = tunnel::handshake(stream, remote, header, initial).await?;
    Ok((status, bound, Box::new(tunnel)))
}

/// Opens a chain: each warren hop is asked to CONNECT to the next hop, and the next hop's
/// handshake (with its own key) runs inside that tunnel; the last warren hop gets the client's
/// request, or a CONNECT to the upstream SOCKS5 server, which then gets a SOCKS5 CONNECT.
pub async fn open(
    chain: &Chain,
    header: &RequestHeader,
    initial: &[u8],
) -> Result<(Address, Box<dyn Stream>), OpenError> {
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
                        let tcp = tunnel::dial(remote).await.map_err(|e| at_hop(i, e))?;
                        warren_hop(tcp, remote, &hop_header, hop_initial).await
                    }
                    Some(inner) => warren_hop(inner, remote, &hop_header, hop_initial).await,
                };
                let (status, hop_bound, tunnel) = opened.map_err(|e| at_hop(i, e))?;
                if status != Status::Succeeded {
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
        Some(stream) => Ok((bound, stream)),
        None => Err(OpenError::Unsupported("the chain has no hop")),
    }
}
