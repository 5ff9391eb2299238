//! Small socket helpers shared by both binaries.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Per-connection socket options: no Nagle delay (the relay writes whole chunks; interactive
/// protocols should not wait 40 ms), and TCP keepalive so a dead peer is eventually noticed
/// even on an idle connection.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// Binds a listener with SO_REUSEADDR (a restart does not wait out TIME_WAIT) and a deep backlog
/// (connections queue in the kernel while the connection cap is reached).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // On Windows SO_REUSEADDR lets another process bind the same port and steal connections;
    // a Windows listener's port is free again at once without it.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Raises the soft open-files limit to the hard limit and returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// A socket a server needs beyond its main listener (the local's `forwards`, `dns`, `redir`),
/// named by its config field so a failed bind says which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraListen {
    /// The config field, e.g. `local.forwards[0].listen`.
    pub field: String,
    pub addr: SocketAddr,
    /// Bind a TCP listener.
    pub tcp: bool,
    /// Bind a UDP socket (on the TCP listener's port when both are asked with port 0).
    pub udp: bool,
}

/// The sockets of one [`ExtraListen`], bound.
#[derive(Debug)]
pub struct BoundExtra {
    pub field: String,
    pub tcp: Option<TcpListener>,
    pub udp: Option<tokio::net::UdpSocket>,
}

impl BoundExtra {
    /// The address it is bound to (TCP's, else UDP's): where a port 0 landed.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match (&self.tcp, &self.udp) {
            (Some(tcp), _) => tcp.local_addr().ok(),
            (None, Some(udp)) => udp.local_addr().ok(),
            (None, None) => None,
        }
    }
}

/// Binds every socket of `wanted`, in order (a failure names its field and address).
pub fn bind_extra(wanted: &[ExtraListen]) -> Result<Vec<BoundExtra>, (String, SocketAddr, io::Error)> {
    let mut bound = Vec::with_capacity(wanted.len());
    for want in wanted {
        let fail = |e: io::Error| (want.field.clone(), want.addr, e);
        let tcp = match want.tcp {
            true => Some(bind(want.addr).map_err(fail)?),
            false => None,
        };
        let udp = match want.udp {
            true => {
                // Both on one port: a TCP port 0 picked the number; UDP takes the same.
                let addr = match &tcp {
                    Some(tcp) => tcp.local_addr().map_err(fail)?,
                    None => want.addr,
                };
                let socket = std::net::UdpSocket::bind(addr).map_err(fail)?;
                socket.set_nonblocking(true).map_err(fail)?;
                Some(tokio::net::UdpSocket::from_std(socket).map_err(fail)?)
            }
            false => None,
        };
        bound.push(BoundExtra {
            field: want.field.clone(),
            tcp,
            udp,
        });
    }
    Ok(bound)
}
