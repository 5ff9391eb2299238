//! The outbound connection: ACL checks (on the name, and on every address it resolves to), then
//! Happy Eyeballs (RFC 8305) over the allowed addresses, IPv6 and IPv4 interleaved.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;
use warren_common::acl::{Acl, Verdict};
use warren_common::proto::address::Address;
use warren_common::proto::socks5::ReplyCode;

/// Head start each attempt gets before the next address is tried alongside it (RFC 8305 §5).
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to `target` if the ACL allows it; the error is the SOCKS5 reply code to send.
pub async fn connect(target: &Address, acl: &Acl) -> Result<TcpStream, ReplyCode> {
    let addrs = match target {
        Address::Ip(addr) => {
            if acl.check(None, addr.ip()) == Verdict::Deny {
                return Err(ReplyCode::NotAllowed);
            }
            vec![*addr]
        }
        Address::Domain(name, port) => {
            if acl.check_name(name) == Some(Verdict::Deny) {
                return Err(ReplyCode::NotAllowed);
            }
            let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((name.as_str(), *port)).await {
                Ok(addrs) => addrs.collect(),
                Err(_) => return Err(ReplyCode::HostUnreachable),
            };
            if resolved.is_empty() {
                return Err(ReplyCode::HostUnreachable);
            }
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| acl.check(Some(name), a.ip()) == Verdict::Allow)
                .collect();
            if allowed.is_empty() {
                return Err(ReplyCode::NotAllowed);
            }
            interleave(allowed)
        }
    };
    happy_eyeballs(addrs).await.map_err(|e| reply_code(&e))
}

/// Orders addresses IPv6, IPv4, IPv6, ... keeping the resolver's order within each family.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
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

/// Starts an attempt per address, each `ATTEMPT_DELAY` after the previous one or as soon as
/// the previous one fails; the first to connect wins and the others are dropped (closed).
async fn happy_eyeballs(addrs: Vec<SocketAddr>) -> io::Result<TcpStream> {
    let mut waiting = addrs.into_iter();
    let mut running = FuturesUnordered::new();
    let mut best_error: Option<io::Error> = None;
    // The first attempt starts now, not on a zero-length timer: tokio rounds timers up to the
    // next millisecond tick, which would add ~1 ms to every connection's set-up.
    if let Some(addr) = waiting.next() {
        running.push(TcpStream::connect(addr));
    }
    let mut delay = pin!(tokio::time::sleep(ATTEMPT_DELAY));
    loop {
        tokio::select! {
            () = &mut delay, if waiting.len() > 0 => {
                if let Some(addr) = waiting.next() {
                    running.push(TcpStream::connect(addr));
                }
                delay.as_mut().reset(tokio::time::Instant::now() + ATTEMPT_DELAY);
            }
            Some(result) = running.next(), if !running.is_empty() => match result {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    if best_error.as_ref().map_or(true, |b| rank(&e) > rank(b)) {
                        best_error = Some(e);
                    }
                    // A failure starts the next attempt at once instead of waiting out the delay.
                    if let Some(addr) = waiting.next() {
                        running.push(TcpStream::connect(addr));
                        delay.as_mut().reset(tokio::time::Instant::now() + ATTEMPT_DELAY);
                    } else if running.is_empty() {
                        return Err(best_error.unwrap_or_else(|| io::ErrorKind::NotFound.into()));
                    }
                }
            },
        }
    }
}

/// How much an error says about the target, so the most telling one is reported when every
/// address fails (a refusal on IPv4 beats "no IPv6 route").
fn rank(e: &io::Error) -> u8 {
    match reply_code(e) {
        ReplyCode::ConnectionRefused => 4,
        ReplyCode::HostUnreachable => 3,
        ReplyCode::NetworkUnreachable => 2,
        ReplyCode::TtlExpired => 1,
        _ => 0,
    }
}

fn reply_code(e: &io::Error) -> ReplyCode {
    const ENETUNREACH: i32 = 101;
    const EHOSTUNREACH: i32 = 113;
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::ConnectionRefused, _) => ReplyCode::ConnectionRefused,
        (io::ErrorKind::TimedOut, _) => ReplyCode::TtlExpired,
        (io::ErrorKind::NetworkUnreachable, _) | (_, Some(ENETUNREACH)) => ReplyCode::NetworkUnreachable,
        (io::ErrorKind::HostUnreachable, _) | (_, Some(EHOSTUNREACH)) => ReplyCode::HostUnreachable,
        _ => ReplyCode::GeneralFailure,
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
}
