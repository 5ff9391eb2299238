//! UDP ASSOCIATE on the local (RFC 1928 §7): a relay socket per association, bound on the IP
//! the client reached our TCP listener on, announced in the reply. Only datagrams from the
//! client's address are relayed; fragments (FRAG ≠ 0) and malformed headers are dropped. The
//! datagrams travel in one UDP-over-TCP tunnel stream; the association ends when the client's
//! TCP control connection closes, the tunnel ends, or nothing moves for `idle_timeout`.

use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::socks5::{Reply, ReplyCode};
use warren_common::proto::udp::{DatagramFrame, Socks5Datagram};
use warren_common::proto::{decode_exact, decode_prefix, DecodeError};
use warren_common::time::unix_now;

use crate::socks5::send_reply;
use crate::tunnel;

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

/// Carries out a UDP ASSOCIATE for `client`, whose SOCKS5 request named `requested`.
pub async fn associate(mut client: TcpStream, peer: SocketAddr, config: &LocalConfig, requested: Address) {
    let header = RequestHeader::new(Command::UdpOverTcp, Address::UNSPECIFIED, unix_now());
    let opened = tokio::time::timeout(config.timeouts.connect, tunnel::open_request(config, header, &[])).await;
    let mut tunnel = match opened {
        Ok(Ok((_, tunnel))) => tunnel,
        Ok(Err(failure)) => {
            failure.log(&peer, &requested, &config.remote);
            let _ = send_reply(&mut client, &Reply::error(failure.reply_code())).await;
            return;
        }
        Err(_) => {
            tunnel::log_silent_remote(&peer, &requested, &config.remote, config.timeouts.connect);
            let _ = send_reply(&mut client, &Reply::error(ReplyCode::GeneralFailure)).await;
            return;
        }
    };
    let relay_ip = match client.local_addr() {
        Ok(addr) => addr.ip(),
        Err(_) => return,
    };
    let (socket, bound) = match UdpSocket::bind(SocketAddr::new(relay_ip, 0)).await {
        Ok(s) => match s.local_addr() {
            Ok(bound) => (s, bound),
            Err(_) => return,
        },
        Err(e) => {
            tracing::warn!(%peer, "cannot bind a UDP relay socket on {relay_ip}: {e}");
            let _ = send_reply(&mut client, &Reply::error(ReplyCode::GeneralFailure)).await;
            return;
        }
    };
    let reply = Reply {
        code: ReplyCode::Succeeded,
        bound: Address::Ip(bound),
    };
    if send_reply(&mut client, &reply).await.is_err() {
        return;
    }
    tracing::info!(%peer, relay = %bound, "UDP association open");

    let mut filter = ClientFilter::new(&requested, peer);
    let mut datagram = vec![0u8; 65536];
    let mut from_tunnel = BytesMut::new();
    let mut out = Vec::with_capacity(65536);
    let mut control = [0u8; 512];
    let (mut sent, mut received, mut dropped) = (0u64, 0u64, 0u64);
    let idle = tokio::time::sleep(config.timeouts.idle);
    tokio::pin!(idle);
    let end = 'outer: loop {
        tokio::select! {
            read = client.read(&mut control) => match read {
                Ok(0) | Err(_) => break "control connection closed",
                Ok(_) => continue, // nothing is defined on it after the reply: ignore
            },
            got = socket.recv_from(&mut datagram) => {
                let Ok((n, from)) = got else { continue };
                if !filter.accept(from) {
                    dropped += 1;
                    continue;
                }
                match decode_exact::<Socks5Datagram>(&datagram[..n]) {
                    Ok(d) if d.frag == 0 => {
                        out.clear();
                        if DatagramFrame::encode_parts(&d.address, &d.data, &mut out).is_none() {
                            dropped += 1;
                            continue;
                        }
                        if tunnel.write_all(&out).await.is_err() || tunnel.flush().await.is_err() {
                            break "tunnel error";
                        }
                        sent += 1;
                    }
                    _ => dropped += 1,
                }
            }
            read = tunnel.read_buf(&mut from_tunnel) => {
                if matches!(read, Ok(0) | Err(_)) {
                    break "remote closed";
                }
                loop {
                    match decode_prefix::<DatagramFrame>(&from_tunnel) {
                        Ok((frame, used)) => {
                            from_tunnel.advance(used);
                            let Some(port) = filter.port else { continue };
                            out.clear();
                            Socks5Datagram::encode_parts(&frame.address, &frame.data, &mut out);
                            if socket.send_to(&out, SocketAddr::new(filter.ip, port)).await.is_ok() {
                                received += 1;
                            }
                        }
                        Err(DecodeError::Incomplete) => break,
                        Err(_) => break 'outer "malformed frame from the remote",
                    }
                }
            }
            () = &mut idle => break "idle",
        }
        idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
    };
    let _ = tunnel.shutdown().await;
    tracing::info!(%peer, datagrams_sent = sent, datagrams_received = received, dropped, end, "UDP association finished");
}
