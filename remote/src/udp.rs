//! UDP-over-TCP on the remote: one tunnel stream per association carrying
//! [`DatagramFrame`]s. Its NAT entry is one outbound UDP socket per address family (created on
//! first use), so the association's table size is bounded by the remote's connection cap; the
//! association ends when the stream ends or stays idle for `idle_timeout`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use warren_common::config::RemoteConfig;
use warren_common::proto::address::Address;
use warren_common::proto::header::ResponseHeader;
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::udp::DatagramFrame;
use warren_common::proto::{decode_prefix, DecodeError};
use warren_common::time::unix_now;
use warren_common::tunnel::AcceptedRequest;

use crate::connect::allowed_addresses;

/// Names remembered per association (so a domain target is not resolved per datagram).
const NAME_CACHE: usize = 64;
/// Destinations remembered per association; only they may answer (see [`Nat::answer_allowed`]).
const PEERS: usize = 4096;

/// The association's outbound sockets and resolved names.
#[derive(Default)]
pub(crate) struct Nat {
    pub(crate) v4: Option<UdpSocket>,
    pub(crate) v6: Option<UdpSocket>,
    names: HashMap<(String, u16), Option<SocketAddr>>,
    /// Addresses this association has sent to.
    peers: std::collections::HashSet<SocketAddr>,
}

impl Nat {
    /// Where a frame goes, if the ACL allows it (None: drop it).
    pub(crate) async fn destination(&mut self, target: &Address, config: &RemoteConfig) -> Option<SocketAddr> {
        if let Address::Domain(name, port) = target {
            if let Some(found) = self.names.get(&(name.clone(), *port)) {
                return *found;
            }
        }
        let lookup = tokio::time::timeout(config.timeouts.connect, allowed_addresses(target, &config.acl));
        let found = match lookup.await {
            Ok(Ok(addrs)) => addrs.first().copied(),
            _ => None,
        };
        if let Address::Domain(name, port) = target {
            if self.names.len() >= NAME_CACHE {
                self.names.clear();
            }
            self.names.insert((name.clone(), *port), found);
        }
        found
    }

    /// Sends `data` to `to` from the association's socket for its family; false if not sent.
    /// Remembers `to` so its answers are let through.
    pub(crate) async fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if self.peers.len() >= PEERS {
            self.peers.clear();
        }
        self.peers.insert(to);
        match self.socket(to).await {
            Some(socket) => socket.send_to(data, to).await.is_ok(),
            None => false,
        }
    }

    /// Only addresses the client sent to may answer (address- and port-restricted NAT), so
    /// nobody can inject datagrams into an association by guessing its outbound port.
    pub(crate) fn answer_allowed(&self, from: SocketAddr) -> bool {
        self.peers.contains(&from)
    }

    async fn socket(&mut self, to: SocketAddr) -> Option<&UdpSocket> {
        let (slot, bind) = if to.is_ipv4() {
            (&mut self.v4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        } else {
            (&mut self.v6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
        };
        if slot.is_none() {
            *slot = UdpSocket::bind(bind).await.ok();
        }
        slot.as_ref()
    }
}

pub(crate) async fn recv(socket: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Serves one authenticated UDP-over-TCP request.
pub async fn serve<S>(stream: S, peer: SocketAddr, request: AcceptedRequest, config: &RemoteConfig)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let response = ResponseHeader::new(request.salt, ReplyCode::Succeeded, unix_now(), Address::UNSPECIFIED);
    let mut inbound = BytesMut::from(&request.initial_data[..]);
    let mut tunnel = match request.respond(stream, &config.key, &response, &[]).await {
        Ok(tunnel) => tunnel,
        Err(e) => {
            tracing::debug!(%peer, "could not send the UDP response: {e}");
            return;
        }
    };
    let mut nat = Nat::default();
    let (mut buf4, mut buf6) = (vec![0u8; 65536], vec![0u8; 65536]);
    let mut out = Vec::with_capacity(65536);
    let (mut sent, mut received) = (0u64, 0u64);
    let idle = tokio::time::sleep(config.timeouts.idle);
    tokio::pin!(idle);
    let end = 'outer: loop {
        loop {
            match decode_prefix::<DatagramFrame>(&inbound) {
                Ok((frame, used)) => {
                    inbound.advance(used);
                    if let Some(to) = nat.destination(&frame.address, config).await {
                        if nat.send(to, &frame.data).await {
                            sent += 1;
                        }
                    }
                }
                Err(DecodeError::Incomplete) => break,
                Err(e) => break 'outer format!("malformed datagram frame: {e}"),
            }
        }
        let reply = tokio::select! {
            read = tunnel.read_buf(&mut inbound) => match read {
                Ok(0) => break "local closed".to_owned(),
                Ok(_) => None,
                Err(e) => break format!("tunnel error: {e}"),
            },
            r = recv(&nat.v4, &mut buf4) => r.ok().map(|(n, from)| (from, &buf4[..n])),
            r = recv(&nat.v6, &mut buf6) => r.ok().map(|(n, from)| (from, &buf6[..n])),
            () = &mut idle => break "idle".to_owned(),
        };
        idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
        if let Some((from, data)) = reply.filter(|(from, _)| nat.answer_allowed(*from)) {
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            out.clear();
            if DatagramFrame::encode_parts(&Address::Ip(from), data, &mut out).is_some() {
                if tunnel.write_all(&out).await.is_err() || tunnel.flush().await.is_err() {
                    break "tunnel error".to_owned();
                }
                received += 1;
            }
        }
    };
    let _ = tunnel.shutdown().await;
    tracing::info!(%peer, datagrams_sent = sent, datagrams_received = received, %end, "UDP association finished");
}
