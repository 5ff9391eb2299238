//! The outbound side shared by the commands: ACL checks (on the name, and on every address it
//! resolves to), then Happy Eyeballs (RFC 8305, `warren_common::dial`) over the allowed
//! addresses, IPv6 and IPv4 interleaved, from `remote.outbound_source` when it is set.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use warren_common::acl::{Acl, Verdict};
use warren_common::dial::{happy_eyeballs, interleave};
use warren_common::proto::address::Address;
use warren_common::proto::socks5::ReplyCode;
use warren_common::status::Status;

/// Connects to `target` if the ACL allows it, from `source` when given; the error is the SOCKS5
/// reply code to send.
pub async fn connect(target: &Address, acl: &Acl, source: Option<IpAddr>) -> Result<TcpStream, ReplyCode> {
    let addrs = allowed_addresses(target, acl).await?;
    happy_eyeballs(addrs, source)
        .await
        .map_err(|e| Status::for_connect_error(&e).into())
}

/// The addresses `target` stands for that the ACL allows (a name is resolved here, and checked
/// before and after), IPv6 and IPv4 interleaved; the error is the SOCKS5 reply code to send.
/// Also used for BIND's expected peer and for UDP destinations.
pub async fn allowed_addresses(target: &Address, acl: &Acl) -> Result<Vec<SocketAddr>, ReplyCode> {
    match target {
        Address::Ip(addr) => {
            if acl.check(None, addr.ip()) == Verdict::Deny {
                return Err(ReplyCode::NotAllowed);
            }
            Ok(vec![*addr])
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
            Ok(interleave(allowed))
        }
    }
}
