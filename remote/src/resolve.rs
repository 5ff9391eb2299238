//! RESOLVE on the remote (PROTOCOL.md §20): the name is resolved by this machine's own
//! resolver, as a CONNECT to it would be, and the addresses its ACL allows are sent back. This
//! is what lets a laptop's DNS forwarder answer for an intranet name that only the network the
//! connection will come from knows (an agent's /etc/hosts or campus DNS).
//!
//! ```text
//! local ──RESOLVE name──▶ remote ── ACL(name), resolve, ACL(each address) ──▶ (system resolver)
//!       ◀─ STATUS 0x00 + ResolveAnswer, end of stream ── (or STATUS 0x02 / 0x04, end of stream)
//! ```

use tokio::io::AsyncWriteExt;
use warren_common::proto::address::Address;
use warren_common::proto::resolve::ResolveAnswer;
use warren_common::proto::status::Status;
use warren_common::proto::Encode;

use crate::outbound;
use crate::respond::{Connection, Reply, Request};
use crate::shared::Shared;

/// Serves one authenticated RESOLVE routed here (not to an agent).
pub async fn serve<S: Connection>(request: Request, stream: S, shared: &Shared) {
    let (peer, target) = (request.origin.peer(), request.header().target.clone());
    let config = &*shared.config();
    let resolved = match &target {
        // Only names are resolved: an address needs no lookup, and the answer would only
        // tell whether the ACL allows it.
        Address::Domain(..) => {
            let lookup = outbound::allowed_addresses(&target, request.party.acl(config));
            match tokio::time::timeout(config.timeouts.connect, lookup).await {
                Ok(result) => result,
                Err(_) => Err(Status::TtlExpired),
            }
        }
        Address::Ip(_) => Err(Status::AddressTypeNotSupported),
    };
    let answer = match resolved {
        Ok(addrs) => {
            let answer = ResolveAnswer::new(addrs.iter().map(|a| a.ip().to_canonical()));
            tracing::info!(%peer, %target, addresses = answer.addresses().len(), "resolved");
            answer
        }
        Err(status) => {
            tracing::info!(%peer, %target, reply = status.socks5() as u8, "not resolved: {}", status.describe());
            return request.refuse(stream, status).await;
        }
    };
    let Some(mut tunnel) = request.answer(stream, Reply::GRANTED, &[]).await else {
        return;
    };
    let mut bytes = Vec::with_capacity(answer.encoded_len());
    answer.encode(&mut bytes);
    if tunnel.write_all(&bytes).await.is_ok() {
        let _ = tunnel.shutdown().await;
    }
}
