//! The outbound side shared by the commands: ACL checks (on the name, and on every address it
//! resolves to), then Happy Eyeballs (RFC 8305, `warren_common::dial`) over the allowed
//! addresses, IPv6 and IPv4 interleaved, from `remote.outbound_source` when it is set.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use warren_common::acl::{Acl, Verdict};
use warren_common::dial::{happy_eyeballs, interleave, ConnectFailure};
use warren_common::proto::address::Address;
use warren_common::proto::status::Status;

/// Connects to `target` if the ACL allows it, from `source` when given; the error is the
/// request's outcome.
pub async fn connect(target: &Address, acl: &Acl, source: Option<IpAddr>) -> Result<TcpStream, Status> {
    let addrs = allowed_addresses(target, acl).await?;
    happy_eyeballs(addrs, source)
        .await
        .map_err(|e| ConnectFailure::of(&e).status())
}

/// The addresses `target` stands for that the ACL allows (a name is resolved here, and checked
/// before and after), IPv6 and IPv4 interleaved; the error is the request's outcome.
/// Also used for BIND's expected peer and for UDP destinations.
pub async fn allowed_addresses(target: &Address, acl: &Acl) -> Result<Vec<SocketAddr>, Status> {
    match target {
        Address::Ip(addr) => {
            if acl.check(None, addr.ip()) == Verdict::Deny {
                return Err(Status::NotAllowed);
            }
            Ok(vec![*addr])
        }
        Address::Domain(name, port) => {
            if acl.check_name(name) == Some(Verdict::Deny) {
                return Err(Status::NotAllowed);
            }
            let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((name.as_str(), *port)).await {
                Ok(addrs) => addrs.collect(),
                Err(_) => return Err(Status::HostUnreachable),
            };
            if resolved.is_empty() {
                return Err(Status::HostUnreachable);
            }
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| acl.check(Some(name), a.ip()) == Verdict::Allow)
                .collect();
            if allowed.is_empty() {
                return Err(Status::NotAllowed);
            }
            Ok(interleave(allowed))
        }
    }
}
