//! Ports that stay what a test needs for as long as the test holds them, so no parallel test
//! (and no port the kernel picks for one) can take them: a port that refuses every connection,
//! and one whose connections hang without an answer.

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// A TCP port on 127.0.0.1 that is bound but never listens: a connect gets a reset
/// (ECONNREFUSED), and while this value lives no other socket can bind the port (it is bound
/// without SO_REUSEADDR, so neither an explicit bind nor the kernel's port picker reuses it).
pub struct ClosedPort {
    pub addr: SocketAddr,
    _socket: Socket,
}

/// See [`ClosedPort`].
pub fn closed_port() -> ClosedPort {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind a closed port");
    let addr = socket
        .local_addr()
        .expect("closed port addr")
        .as_socket()
        .expect("an IP address");
    ClosedPort { addr, _socket: socket }
}

/// A TCP port on 127.0.0.1 whose connects hang: it listens with a backlog of 0 and one
/// connection that is never accepted fills its accept queue, so Linux drops every later SYN
/// (`LISTENOVERFLOWS`); the connecting side retries until its own timeout. A "down" remote
/// for the health checker (its TCP connect times out) that still holds its port.
pub struct Unanswered {
    pub addr: SocketAddr,
    _listener: Socket,
    _filler: std::net::TcpStream,
}

/// See [`Unanswered`].
pub fn unanswered_port() -> Unanswered {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr").as_socket().expect("an IP address");
    // The queue is empty, so this one completes at once and then fills it.
    let filler = std::net::TcpStream::connect(addr).expect("fill the accept queue");
    Unanswered {
        addr,
        _listener: listener,
        _filler: filler,
    }
}
