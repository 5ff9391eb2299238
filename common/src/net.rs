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
