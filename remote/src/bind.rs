//! BIND on the remote: listen for one inbound connection from the expected peer, announce the
//! listening address in the tunnel response (BIND's first reply), send a [`BindNotice`] as the
//! stream's first payload when a peer arrives, a mismatched peer is turned away, or the wait
//! times out (BIND's second reply), then relay as for CONNECT.
//!
//! ```text
//! local ──BIND request──▶ remote: listen        local ◀──response(bound)── remote
//! peer ──connect──▶ listener                     local ◀──BindNotice(peer)── remote ══ relay ══ peer
//! ```

use std::net::{IpAddr, SocketAddr};
use warren_common::proto::Encode;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use warren_common::acl::Acl;
use warren_common::config::RemoteConfig;
use warren_common::proto::address::Address;
use warren_common::proto::bind::BindNotice;
use warren_common::proto::status::Status;
use warren_common::relay::relay;
use warren_common::stream::EncryptedStream;

use crate::outbound::allowed_addresses;
use crate::respond::{Connection, Reply, Request};
use crate::shared::{Origin, Shared};

/// Most bytes the local may send before the peer connects (they are delivered to the peer).
const EARLY_LIMIT: usize = 64 * 1024;

/// BIND: one inbound connection to a listener of ours.
/// Who may connect: `None` when the request named the unspecified address (any peer the ACL
/// allows), else the allowed addresses the request's target stands for.
async fn expected_peers(target: &Address, acl: &Acl, config: &RemoteConfig) -> Result<Option<Vec<IpAddr>>, Status> {
    if let Address::Ip(addr) = target {
        if addr.ip().is_unspecified() {
            return Ok(None);
        }
    }
    let lookup = tokio::time::timeout(config.timeouts.connect, allowed_addresses(target, acl));
    match lookup.await {
        Ok(Ok(addrs)) => Ok(Some(addrs.iter().map(|a| a.ip().to_canonical()).collect())),
        Ok(Err(code)) => Err(code),
        Err(_) => Err(Status::HostUnreachable),
    }
}

/// Binds the listener and works out the address the peer must connect to: on the remote's
/// listen IP, or, on an agent, on the address it dials the public remote from. That is the
/// agent's address on the network it serves (the intranet side of its NAT), which a peer there
/// can reach, while its own `remote.listen` is often loopback.
async fn listen(config: &RemoteConfig, origin: Origin) -> Result<(TcpListener, Address), Status> {
    let ip = match origin {
        Origin::Agent { local: Some(local), .. } => local.ip(),
        _ => config.listen.ip(),
    };
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|_| Status::GeneralFailure)?;
    let mut announced = listener.local_addr().map_err(|_| Status::GeneralFailure)?;
    if announced.ip().is_unspecified() {
        // Bound on every address: name the one the local reached us on.
        let Origin::Tcp { local: Some(local), .. } = origin else {
            return Err(Status::GeneralFailure);
        };
        announced.set_ip(local.ip());
    }
    Ok((listener, Address::Ip(announced)))
}

/// Serves one authenticated BIND request.
pub async fn serve<S>(mut request: Request, stream: S, shared: &Shared)
where
    S: Connection,
{
    // The lines users read name the connection themselves (see accept.rs on spans).
    let (peer, target) = (request.origin.peer(), request.header().target.clone());
    let config = &*shared.config();
    // The party's ACL, owned: the request is answered (consumed) before the peer arrives.
    let acl = request.party.acl(config).clone();
    let acl = &acl;
    let prepared = match expected_peers(&request.header().target, acl, config).await {
        Ok(expected) => listen(config, request.origin).await.map(|(l, a)| (expected, l, a)),
        Err(code) => Err(code),
    };
    let reply = match &prepared {
        Ok((_, _, announced)) => Reply {
            status: Status::Succeeded,
            bound: announced.clone(),
        },
        Err(code) => Reply::refused(*code),
    };
    let status = reply.status;
    let mut early = request.take_initial_data();
    let Some(mut tunnel) = request.answer(stream, reply, &[]).await else {
        return;
    };
    let Ok((expected, listener, bound)) = prepared else {
        tracing::info!(%peer, %target, reply = status.socks5() as u8, "BIND refused: {}", status.describe());
        let _ = tunnel.shutdown().await;
        return;
    };
    tracing::info!(%peer, %target, listening = %bound, "BIND listening");

    let wait = tokio::time::sleep(config.bind_timeout);
    tokio::pin!(wait);
    // The end-of-stream chunk (read() == 0 here) is a half-close: the peer still gets the
    // bytes, then EOF from the relay. Only an error (a truncated or forged stream) is a local
    // that left.
    let mut half_closed = false;
    let accepted = loop {
        tokio::select! {
            result = listener.accept() => break result.ok(),
            () = &mut wait => break None,
            read = tokio::io::AsyncReadExt::read_buf(&mut tunnel, &mut early), if !half_closed && early.len() < EARLY_LIMIT => match read {
                Ok(0) => half_closed = true,
                Ok(_) => {}
                Err(_) => {
                    tracing::info!(%peer, %target, "local left while BIND was waiting");
                    return;
                }
            }
        }
    };
    drop(listener);
    let Some((mut inbound, from)) = accepted else {
        tracing::info!(%peer, %target, "BIND: no peer before the timeout");
        return refuse(tunnel, Status::TtlExpired, Address::UNSPECIFIED).await;
    };
    let from_ip = from.ip().to_canonical();
    let allowed = match &expected {
        Some(ips) => ips.contains(&from_ip),
        None => acl.check(None, from_ip) == warren_common::acl::Verdict::Allow,
    };
    if !allowed {
        tracing::info!(%peer, %target, %from, "BIND: refused a peer that does not match the request");
        drop(inbound);
        return refuse(tunnel, Status::NotAllowed, Address::Ip(from)).await;
    }
    let notice = BindNotice {
        status: Status::Succeeded,
        peer: Address::Ip(from),
    };
    let mut out = Vec::with_capacity(notice.encoded_len());
    notice.encode(&mut out);
    if tunnel.write_all(&out).await.is_err() || tunnel.flush().await.is_err() {
        return;
    }
    warren_common::net::tune(&inbound);
    if !early.is_empty() && inbound.write_all(&early).await.is_err() {
        return;
    }
    let outcome = relay(tunnel, inbound, config.timeouts.idle).await;
    warren_common::metrics::get().relayed(outcome.sent + early.len() as u64, outcome.received);
    tracing::info!(
        %peer, %target, %from,
        sent = outcome.sent + early.len() as u64,
        received = outcome.received,
        end = %outcome.end,
        "BIND connection finished"
    );
}

/// Sends a failure notice (BIND's second reply) and ends the stream.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut tunnel: EncryptedStream<S>, status: Status, peer: Address) {
    let notice = BindNotice { status, peer };
    let mut out = Vec::with_capacity(notice.encoded_len());
    notice.encode(&mut out);
    let _ = tunnel.write_all(&out).await;
    let _ = tunnel.shutdown().await;
}
