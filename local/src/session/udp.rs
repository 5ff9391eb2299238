//! UDP ASSOCIATE on the local (RFC 1928 §7): a relay socket per association, bound on the IP
//! the client reached our TCP listener on, announced in the reply. Only datagrams from the
//! client's address are relayed; fragments (FRAG ≠ 0) and malformed headers are dropped. The
//! datagrams travel to the remote as `local.udp_transport` says: sealed packets to its UDP
//! socket (`udp`), or one UDP-over-TCP tunnel stream (`tcp`, see [`tcp`]). An association takes
//! the default route: through a chain it is always UDP-over-TCP, inside the chain; `direct` and
//! `block` defaults refuse it (0x07, 0x02). Its datagrams each name their own destination, which
//! `local.routes` sees like a CONNECT target: a datagram whose destination routes `block` is
//! dropped; every other one goes the association's way, where the remote routes it again.
//! Nothing on this path waits for the far side: under overload datagrams are dropped (and
//! counted), never queued without bound. The association ends at once when the client's TCP
//! control connection closes, the tunnel ends, or nothing moves for `idle_timeout`.

mod packets;
mod tcp;

use std::net::{IpAddr, SocketAddr};
use warren_common::proto::Encode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use warren_common::config::local_routes::{LocalAction, Via};
use warren_common::config::UdpTransport;
use warren_common::datagrams::{Batch, BatchSocket, RecvBatch};
use warren_common::proto::address::Address;
use warren_common::proto::decode_exact;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::socks5::Reply;
use warren_common::proto::status::Status;
use warren_common::proto::udp::{DatagramFrame, Socks5Datagram};
use warren_common::time::unix_now;

use self::packets::PacketLink;
use self::tcp::TunnelQueue;
pub(crate) use self::tcp::{Queued, TunnelWriter};
use crate::outbound::Outbounds;

/// The client address datagrams must come from: the IP is fixed, the port may be learnt from
/// the first datagram.
struct ClientFilter {
    ip: IpAddr,
    port: Option<u16>,
}

impl ClientFilter {
    /// From the request's DST (RFC 1928: the address the client will send from, or zeros when it
    /// does not know it) and the control connection's peer.
    fn new(requested: &Address, control_peer: SocketAddr) -> ClientFilter {
        let (ip, port) = match requested {
            Address::Ip(a) if !a.ip().is_unspecified() => (a.ip().to_canonical(), a.port()),
            other => (control_peer.ip().to_canonical(), other.port()),
        };
        ClientFilter {
            ip,
            port: (port != 0).then_some(port),
        }
    }

    /// True if `from` is the client; learns the port from the first datagram if needed.
    fn accept(&mut self, from: SocketAddr) -> bool {
        if from.ip().to_canonical() != self.ip {
            return false;
        }
        match self.port {
            Some(port) => port == from.port(),
            None => {
                self.port = Some(from.port());
                true
            }
        }
    }
}

/// Datagrams one receive from the client takes at most (recvmmsg). Each slot is 64 KiB of
/// address space, resident only as far as datagrams fill it.
const CLIENT_SLOTS: usize = 8;
/// Receives of a burst handled before the batch leaves (8 × 8 = 64 datagrams: one GSO send).
const BURST_READS: usize = 8;

/// Where the association's datagrams go.
pub(crate) enum Upstream {
    /// A UDP-over-TCP tunnel stream's reading half and its writer's queue.
    Stream(TunnelQueue),
    /// Encrypted packets to the remote's UDP port.
    Packets(Box<PacketLink>),
}

impl Upstream {
    /// Opens the transport `local.udp_transport` asks for along `action` (a SOCKS association
    /// takes the default route, a forward its target's), with the tunnel writer to run beside
    /// the relay loop for UDP-over-TCP; the error is the SOCKS5 reply code. `requested` names
    /// the association in the log.
    pub(crate) async fn open(
        outbounds: &Outbounds,
        action: &LocalAction,
        requested: &Address,
    ) -> Result<(Upstream, Option<TunnelWriter>), Status> {
        let header = RequestHeader::new(Command::UdpOverTcp, Address::UNSPECIFIED, unix_now());
        // Sealed packets go to one remote; chains (and `tcp`) carry the datagrams in a stream.
        let packets_to = match action {
            LocalAction::Proxy(list) if outbounds.udp_transport() == UdpTransport::Udp => {
                let healthy = list.iter().find(|v| outbounds.is_up(v));
                match healthy.or(list.first()) {
                    Some(Via::Remote(remote)) => Some(remote.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        match packets_to {
            None => match outbounds.open_along(action, &header, &[]).await {
                Ok((_, stream)) => {
                    let (queue, writer) = tcp::split(stream);
                    Ok((Upstream::Stream(queue), Some(writer)))
                }
                Err(failure) => {
                    failure.log(outbounds.peer(), requested);
                    Err(failure.status())
                }
            },
            Some(endpoint) => match PacketLink::open(&endpoint, outbounds.connect_timeout(), outbounds.peer()).await {
                Some(link) => Ok((Upstream::Packets(Box::new(link)), None)),
                None => Err(Status::GeneralFailure),
            },
        }
    }

    /// Queues one datagram for `to`, never waiting for the tunnel (UDP-over-TCP), or seals it
    /// into the packet batch (sending the batch first if it is full).
    pub(crate) async fn send(&mut self, to: &Address, data: &[u8]) -> Result<Queued, ()> {
        match self {
            Upstream::Stream(queue) => queue.send(to, data),
            Upstream::Packets(link) => Ok(link.queue(to, data).await),
        }
    }

    /// Sends what [`Upstream::send`] gathered (packets only: the stream's writer runs apart).
    pub(crate) async fn flush(&mut self) {
        if let Upstream::Packets(link) = self {
            link.flush().await;
        }
    }

    /// Waits for datagrams from the remote (cancel-safe: the only await is a socket read).
    /// `Err` ends the association.
    pub(crate) async fn recv(&mut self, buf: &mut [u8]) -> Result<Vec<DatagramFrame>, &'static str> {
        match self {
            Upstream::Stream(queue) => queue.recv().await,
            Upstream::Packets(link) => Ok(link.recv(buf).await),
        }
    }

    /// Ends the association on the remote too (packets: see [`PacketLink::close`]; a
    /// UDP-over-TCP stream ends with its writer's end of stream: see tcp.rs).
    pub(crate) async fn close(self) {
        if let Upstream::Packets(link) = self {
            link.close().await;
        }
    }
}

/// The SOCKS5 reply to a UDP ASSOCIATE (RFC 1928 §6; UDP ASSOCIATE is SOCKS5 only).
fn reply(code: Status, bound: Address) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    Reply {
        code: code.socks5(),
        bound,
    }
    .encode(&mut out);
    out
}

/// Carries out a UDP ASSOCIATE for `client`, whose SOCKS5 request named `requested`; sends
/// the reply, relays datagrams until the association ends, and logs it. All of it runs on the
/// process's UDP thread ([`warren_common::udp_thread`]), where its sockets are created.
pub async fn associate(client: TcpStream, outbounds: &Outbounds, requested: Address) {
    let outbounds = outbounds.clone();
    let span = tracing::Span::current();
    let association = async move { relay(client, &outbounds, requested).await };
    warren_common::udp_thread::run(tracing::Instrument::instrument(association, span)).await;
}

async fn relay(mut client: TcpStream, outbounds: &Outbounds, requested: Address) {
    // The control connection's peer: datagrams are accepted from its IP (unless the request
    // named another).
    let Ok(peer) = client.peer_addr() else {
        return;
    };
    let default = outbounds.route(&RequestHeader::new(Command::UdpOverTcp, Address::UNSPECIFIED, 0));
    let (mut upstream, mut writer) = match Upstream::open(outbounds, default, &requested).await {
        Ok(opened) => opened,
        Err(code) => {
            let _ = client.write_all(&reply(code, Address::UNSPECIFIED)).await;
            return;
        }
    };
    let relay_ip = match client.local_addr() {
        Ok(addr) => addr.ip(),
        Err(_) => return,
    };
    let bound_relay = async {
        let socket = UdpSocket::bind(SocketAddr::new(relay_ip, 0)).await?;
        let bound = socket.local_addr()?;
        Ok::<_, std::io::Error>((BatchSocket::new(socket)?, bound))
    };
    let (relay, bound) = match bound_relay.await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(peer = %outbounds.peer(), "cannot bind a UDP relay socket on {relay_ip}: {e}");
            let _ = client
                .write_all(&reply(Status::GeneralFailure, Address::UNSPECIFIED))
                .await;
            return;
        }
    };
    if client
        .write_all(&reply(Status::Succeeded, Address::Ip(bound)))
        .await
        .is_err()
    {
        return;
    }
    tracing::info!(peer = %outbounds.peer(), relay = %bound, transport = ?outbounds.udp_transport(), "UDP association open");

    let mut filter = ClientFilter::new(&requested, peer);
    let mut from_client = RecvBatch::new(CLIENT_SLOTS);
    let mut from_remote = vec![0u8; 65536];
    let mut replies = Batch::with_capacity(65536);
    let mut control = [0u8; 512];
    let (mut sent, mut received, mut dropped) = (0u64, 0u64, 0u64);
    let idle = tokio::time::sleep(outbounds.idle());
    tokio::pin!(idle);
    let relaying = async {
        loop {
            tokio::select! {
                read = client.read(&mut control) => match read {
                    Ok(0) | Err(_) => return "control connection closed",
                    Ok(_) => continue, // nothing is defined on it after the reply: ignore
                },
                got = from_client.recv(&relay) => {
                    // Every datagram waiting is read (several per system call), then the rest
                    // of the burst without waiting, so their packets leave for the remote
                    // together. A slot may hold several datagrams of one sender (GRO).
                    let mut got = got.ok();
                    for _ in 0..BURST_READS {
                        if got.is_none() {
                            break;
                        }
                        for (from, one) in from_client.datagrams() {
                            if !filter.accept(from) {
                                dropped += 1;
                                continue;
                            }
                            match decode_exact::<Socks5Datagram>(one) {
                                Ok(d) if d.frag == 0 && outbounds.blocks(&d.address) => {
                                    tracing::debug!(target = %d.address, "UDP datagram to a blocked destination: dropped");
                                    dropped += 1;
                                }
                                Ok(d) if d.frag == 0 => match upstream.send(&d.address, &d.data).await {
                                    Ok(Queued::Yes) => sent += 1,
                                    Ok(Queued::Dropped) => dropped += 1,
                                    Err(()) => return "tunnel error",
                                },
                                _ => dropped += 1,
                            }
                        }
                        got = from_client.try_recv(&relay).ok();
                    }
                    upstream.flush().await;
                }
                frames = upstream.recv(&mut from_remote) => {
                    let frames = match frames {
                        Ok(frames) => frames,
                        Err(end) => return end,
                    };
                    let Some(port) = filter.port else { continue };
                    // Same-sized replies leave for the client together too.
                    let client = SocketAddr::new(filter.ip, port);
                    for frame in frames {
                        let encode = |buf: &mut Vec<u8>| {
                            Socks5Datagram::encode_parts(&frame.address, &frame.data, buf);
                            true
                        };
                        if replies.push(&relay, client, encode).await {
                            received += 1;
                        }
                    }
                    replies.flush(&relay, client).await;
                }
                () = &mut idle => return "idle",
            }
            idle.as_mut().reset(tokio::time::Instant::now() + outbounds.idle());
        }
    };
    // The tunnel writer runs beside the relay loop, never inside it (see tcp.rs); whichever
    // ends first ends the association.
    let writing = async {
        match writer.as_mut() {
            Some(writer) => writer.run().await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        end = relaying => end,
        end = writing => end,
    };
    if let Some(writer) = writer {
        writer.close().await;
    }
    upstream.close().await;
    tracing::info!(peer = %outbounds.peer(),
        datagrams_sent = sent,
        datagrams_received = received,
        dropped,
        end,
        "UDP association finished"
    );
}
