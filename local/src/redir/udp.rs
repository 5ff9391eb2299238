//! The transparent proxy's UDP side (`local.redir.udp`): datagrams nftables' `tproxy` hands to
//! our socket unchanged, still addressed to where the program sent them. The kernel tells that
//! original destination per datagram (`IP_RECVORIGDSTADDR`, a control message, read with
//! recvmsg); each (client, original destination) pair is a flow (forward/udp.rs's `Flow`),
//! and its replies leave from a socket bound to the original destination (`IP_TRANSPARENT`),
//! so the program sees them come from the address it sent to.
//!
//! ```text
//! program ─▶ 10.77.3.1:7007 ─nft tproxy─▶ listen (IP_TRANSPARENT, RECVORIGDSTADDR)
//!   ─▶ flow (client, 10.77.3.1:7007) ─▶ route ─▶ association / direct
//! program ◀── from 10.77.3.1:7007 ◀── transparent socket bound to 10.77.3.1:7007 ◀── answers
//! ```
//!
//! Needs CAP_NET_ADMIN (root, or `AmbientCapabilities=CAP_NET_ADMIN` in a unit) and the
//! policy route that delivers marked packets locally (README "Programs that do not speak SOCKS").

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{self as nix_socket, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use warren_common::dns::NameMap;
use warren_common::proto::address::Address;

use crate::forward::udp::{Flow, Flows, MAX_DATAGRAM};
use crate::outbound::current::Latest;

/// Serves tproxied UDP on `socket` until `shutdown`; logs and returns at once if the socket
/// cannot be made transparent (no CAP_NET_ADMIN).
pub async fn serve(socket: UdpSocket, latest: Latest, names: Arc<Mutex<NameMap>>, shutdown: CancellationToken) {
    if let Err(e) = make_transparent(&socket) {
        tracing::error!("local.redir.udp: cannot take tproxied UDP ({e}): needs CAP_NET_ADMIN; UDP redir is off");
        return;
    }
    let serving = async move {
        let mut flows = Flows::new("UDP redir");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let ours = socket.local_addr().ok();
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                got = socket.async_io(Interest::READABLE, || recv_original(&socket, &mut buf)) => got,
            };
            let Ok((n, client, original)) = received else { continue };
            // Sent to our port itself, not redirected: answering "as" ourselves would loop.
            if Some(original) == ours {
                continue;
            }
            let make = || {
                let reply = match reply_socket(original) {
                    Ok(reply) => Arc::new(reply),
                    Err(e) => {
                        tracing::warn!(%client, %original, "cannot answer as {original}: {e}");
                        return None;
                    }
                };
                let outbounds = latest.outbounds(client);
                // None means routed direct: the flow refuses it (and says so once).
                let to = super::target_for(&names, original, &outbounds).unwrap_or(Address::Ip(original));
                Some(Flow {
                    client,
                    to,
                    outbounds,
                    socket: reply,
                    protocol: "redir-udp",
                    refuse_direct: true,
                })
            };
            flows.dispatch((client, original), buf.get(..n).unwrap_or_default(), make, &shutdown);
        }
    };
    warren_common::udp_thread::run(serving).await;
}

/// IP_TRANSPARENT (tproxy delivers only to such sockets) and the original destination on
/// every datagram.
fn make_transparent(socket: &UdpSocket) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_ip_transparent(true)?;
    match socket.local_addr()? {
        SocketAddr::V4(_) => nix_socket::setsockopt(socket, sockopt::Ipv4OrigDstAddr, &true)?,
        SocketAddr::V6(_) => nix_socket::setsockopt(socket, sockopt::Ipv6OrigDstAddr, &true)?,
    }
    Ok(())
}

/// One datagram: its length, sender, and original destination. WouldBlock when none waits
/// (for `async_io`); a datagram without the control message is an error (skipped).
fn recv_original(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, SocketAddr)> {
    let mut control = nix::cmsg_space!(nix::libc::sockaddr_in6);
    let mut iov = [IoSliceMut::new(buf)];
    let msg =
        nix_socket::recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::empty())?;
    let from = msg.address.as_ref().and_then(to_socket_addr);
    let mut original = None;
    for cmsg in msg.cmsgs()? {
        match cmsg {
            ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                original = Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))));
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                original = Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), 0, 0)));
            }
            _ => {}
        }
    }
    match (from, original) {
        (Some(from), Some(original)) => Ok((msg.bytes, from, original)),
        _ => Err(std::io::Error::other("datagram without its addresses")),
    }
}

fn to_socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
}

/// A socket that sends from `original` (an address not ours: IP_TRANSPARENT; SO_REUSEADDR, as
/// several clients' flows to one destination each bind it).
fn reply_socket(original: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(original);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_ip_transparent(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&original.into())?;
    UdpSocket::from_std(socket.into())
}
