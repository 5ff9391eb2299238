//! Outbound TCP connections: resolve, order the addresses IPv6 and IPv4 interleaved, and race
//! them with Happy Eyeballs (RFC 8305), optionally from a fixed source address. Shared by the
//! remote (after its ACL has filtered the addresses) and the local's `direct` route.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::proto::address::Address;
use crate::proto::status::Status;

/// Head start each attempt gets before the next address is tried alongside it (RFC 8305 §5).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Linux's errno values for "network unreachable" and "host unreachable", for errors whose
/// `ErrorKind` does not say so.
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;

/// Why an outbound connection could not be made. I/O-level: [`DialError::status`] says what it
/// means for the request, and each front end answers that [`Status`] in its own protocol.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The name resolved to no address.
    #[error("{0} resolved to no address")]
    NoAddress(String),
    /// The name did not resolve.
    #[error("resolving {0}: {1}")]
    Resolve(String, #[source] io::Error),
    /// Every attempt failed; this is the most telling of their errors (see [`ConnectFailure`]).
    #[error("{0}")]
    Connect(#[source] io::Error),
}

/// What a failed connect attempt says about its target, least to most telling: when every
/// address fails, the most telling error is reported (a refusal on IPv4 beats "no IPv6 route").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectFailure {
    Other,
    TimedOut,
    NetworkUnreachable,
    HostUnreachable,
    Refused,
}

impl DialError {
    /// The request's outcome: a name that did not resolve (or resolved to nothing) is "host
    /// unreachable"; a failed connect maps by its error.
    pub fn status(&self) -> Status {
        match self {
            DialError::NoAddress(_) | DialError::Resolve(_, _) => Status::HostUnreachable,
            DialError::Connect(e) => ConnectFailure::of(e).status(),
        }
    }
}

impl ConnectFailure {
    /// The request's outcome for a connect attempt that failed this way.
    pub fn status(self) -> Status {
        match self {
            ConnectFailure::Refused => Status::ConnectionRefused,
            ConnectFailure::TimedOut => Status::TtlExpired,
            ConnectFailure::NetworkUnreachable => Status::NetworkUnreachable,
            ConnectFailure::HostUnreachable => Status::HostUnreachable,
            ConnectFailure::Other => Status::GeneralFailure,
        }
    }

    /// Classifies `e` by its kind, or by its Linux errno where the kind does not say.
    pub fn of(e: &io::Error) -> ConnectFailure {
        match (e.kind(), e.raw_os_error()) {
            (io::ErrorKind::ConnectionRefused, _) => ConnectFailure::Refused,
            (io::ErrorKind::TimedOut, _) => ConnectFailure::TimedOut,
            (io::ErrorKind::NetworkUnreachable, _) | (_, Some(ENETUNREACH)) => ConnectFailure::NetworkUnreachable,
            (io::ErrorKind::HostUnreachable, _) | (_, Some(EHOSTUNREACH)) => ConnectFailure::HostUnreachable,
            _ => ConnectFailure::Other,
        }
    }
}

/// The addresses `target` stands for (a name is resolved here), IPv6 and IPv4 interleaved.
pub async fn resolve(target: &Address) -> Result<Vec<SocketAddr>, DialError> {
    match target {
        Address::Ip(addr) => Ok(vec![*addr]),
        Address::Domain(name, port) => match tokio::net::lookup_host((name.as_str(), *port)).await {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    Err(DialError::NoAddress(name.to_string()))
                } else {
                    Ok(interleave(addrs))
                }
            }
            Err(e) => Err(DialError::Resolve(name.to_string(), e)),
        },
    }
}

/// Resolves `target` and connects to it (no ACL: the local's `direct` route).
pub async fn connect(target: &Address, source: Option<IpAddr>) -> Result<TcpStream, DialError> {
    let addrs = resolve(target).await?;
    happy_eyeballs(addrs, source).await.map_err(DialError::Connect)
}

/// Orders addresses IPv6, IPv4, IPv6, ... keeping the resolver's order within each family.
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv6);
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// One attempt, bound to `source` when given. An address of the other family than `source`
/// cannot be reached from it and fails as "network unreachable".
async fn connect_one(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = match (source, addr) {
        (IpAddr::V4(_), SocketAddr::V4(_)) => TcpSocket::new_v4()?,
        (IpAddr::V6(_), SocketAddr::V6(_)) => TcpSocket::new_v6()?,
        _ => return Err(io::Error::from_raw_os_error(ENETUNREACH)),
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Starts an attempt per address, each `ATTEMPT_DELAY` after the previous one or as soon as
/// the previous one fails; the first to connect wins and the others are dropped (closed).
pub async fn happy_eyeballs(addrs: Vec<SocketAddr>, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let mut waiting = addrs.into_iter();
    let mut running = FuturesUnordered::new();
    let mut best_error: Option<io::Error> = None;
    // The first attempt starts now, not on a zero-length timer: tokio rounds timers up to the
    // next millisecond tick, which would add ~1 ms to every connection's set-up.
    if let Some(addr) = waiting.next() {
        running.push(connect_one(addr, source));
    }
    let mut delay = pin!(tokio::time::sleep(ATTEMPT_DELAY));
    loop {
        tokio::select! {
            () = &mut delay, if waiting.len() > 0 => {
                if let Some(addr) = waiting.next() {
                    running.push(connect_one(addr, source));
                }
                delay.as_mut().reset(tokio::time::Instant::now() + ATTEMPT_DELAY);
            }
            Some(result) = running.next(), if !running.is_empty() => match result {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    if best_error.as_ref().is_none_or(|b| ConnectFailure::of(&e) > ConnectFailure::of(b)) {
                        best_error = Some(e);
                    }
                    // A failure starts the next attempt at once instead of waiting out the delay.
                    if let Some(addr) = waiting.next() {
                        running.push(connect_one(addr, source));
                        delay.as_mut().reset(tokio::time::Instant::now() + ATTEMPT_DELAY);
                    } else if running.is_empty() {
                        return Err(best_error.unwrap_or_else(|| io::ErrorKind::NotFound.into()));
                    }
                }
            },
            else => return Err(best_error.unwrap_or_else(|| io::ErrorKind::NotFound.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_families() {
        let a: Vec<SocketAddr> = ["1.1.1.1:1", "[::1]:1", "2.2.2.2:1", "3.3.3.3:1", "[::2]:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = interleave(a).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["[::1]:1", "1.1.1.1:1", "[::2]:1", "2.2.2.2:1", "3.3.3.3:1"]);
    }

    #[test]
    fn connect_errors_map_to_statuses() {
        let kind = |k: io::ErrorKind| ConnectFailure::of(&io::Error::from(k)).status();
        assert_eq!(kind(io::ErrorKind::ConnectionRefused), Status::ConnectionRefused);
        assert_eq!(kind(io::ErrorKind::TimedOut), Status::TtlExpired);
        assert_eq!(kind(io::ErrorKind::NetworkUnreachable), Status::NetworkUnreachable);
        assert_eq!(kind(io::ErrorKind::HostUnreachable), Status::HostUnreachable);
        assert_eq!(kind(io::ErrorKind::PermissionDenied), Status::GeneralFailure);
        let errno = |n| ConnectFailure::of(&io::Error::from_raw_os_error(n)).status();
        assert_eq!(errno(101), Status::NetworkUnreachable); // ENETUNREACH
        assert_eq!(errno(113), Status::HostUnreachable); // EHOSTUNREACH
        assert_eq!(
            DialError::NoAddress("example.invalid".into()).status(),
            Status::HostUnreachable
        );
        let refused = DialError::Connect(io::ErrorKind::ConnectionRefused.into());
        assert_eq!(refused.status(), Status::ConnectionRefused);
    }

    #[tokio::test]
    async fn binds_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let stream = happy_eyeballs(vec![addr], Some(source)).await.unwrap();
        assert_eq!(stream.local_addr().unwrap().ip(), source);
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), source);
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let err = happy_eyeballs(vec![v6], Some(source)).await.unwrap_err();
        assert_eq!(ConnectFailure::of(&err), ConnectFailure::NetworkUnreachable);
    }
}
