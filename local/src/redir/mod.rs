//! The transparent proxy (`local.redir`, Linux): TCP connections that nftables (or iptables)
//! `REDIRECT`ed to our port, each carried to the destination it was first sent to, read back
//! with `SO_ORIGINAL_DST` (netfilter's conntrack keeps it). Routes apply as for a SOCKS
//! request: by the address, or by name when the DNS forwarder recently answered that address
//! for a name (`dns::NameMap`), so domain rules and far-side resolution still hold.
//!
//! ```text
//! program ─connect 10.77.3.1:8080─▶ nft redirect ─▶ listen ─▶ SO_ORIGINAL_DST = 10.77.3.1:8080
//!    ─▶ name map: 10.77.3.1 ↦ intranet.campus.test ─▶ session::connect(intranet.campus.test:8080)
//! ```
//!
//! UDP (`redir.udp`) comes by nftables' `tproxy` instead: see [`udp`].
//!
//! A connection made to the port directly (not redirected) has itself as its original
//! destination: it is closed, or it would connect to itself in a loop.

pub mod udp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use warren_common::dns::NameMap;
use warren_common::proto::address::Address;
use warren_common::server::ServerLimits;

use warren_common::config::local_routes::LocalAction;

use crate::forward::Transparent;
use crate::outbound::current::Latest;
use crate::outbound::Outbounds;
use crate::session::{self, Connect};

/// Serves redirected TCP connections on `listener` until `shutdown`, then drains.
pub async fn serve_tcp(
    listener: TcpListener,
    latest: Latest,
    names: Arc<Mutex<NameMap>>,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    warren_common::server::serve(listener, shutdown, limits, move |client, peer| {
        let outbounds = latest.outbounds(peer);
        let names = names.clone();
        async move {
            let Some(original) = original_destination(&client) else {
                tracing::info!(%peer, "connection to the redir port that was not redirected (no original destination): closed");
                return;
            };
            let Some(target) = target_for(&names, original, &outbounds) else {
                tracing::warn!(%peer, %original, "redirected connection routed `direct`: closed (connecting from here \
                    would be redirected to us again; route it through a remote, or exclude it in the nftables rules)");
                return;
            };
            tracing::debug!(%peer, %original, %target, "redirected connection");
            warren_common::net::tune(&client);
            let request = Connect {
                target,
                initial: BytesMut::new(),
                started: Instant::now(),
            };
            session::connect(client, &outbounds, request, Transparent::<true>).await;
        }
    })
    .await;
}

/// What a redirected connection or flow to `original` asks for: the name the DNS forwarder
/// answered that address for from the far side lately, when routes send that name through a
/// tunnel too, else the address itself. None when the result would be routed `direct`: the
/// connection from here would be redirected back to us, for ever (nftables' rules catch this
/// machine's own connections to the range).
fn target_for(names: &Mutex<NameMap>, original: SocketAddr, outbounds: &Outbounds) -> Option<Address> {
    let name = {
        let mut names = names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        names.lookup(original.ip(), std::time::Instant::now())
    };
    // A name that cannot travel as one (it always can: it came from a query) is not used.
    let by_name = name
        .and_then(|n| {
            std::str::from_utf8(&n)
                .ok()
                .and_then(|n| Address::domain(n, original.port()).ok())
        })
        .filter(|target| matches!(outbounds.route_target(target), LocalAction::Proxy(_)));
    let target = by_name.unwrap_or(Address::Ip(original));
    match outbounds.route_target(&target) {
        LocalAction::Direct => None,
        _ => Some(target),
    }
}

/// Where `client` was going before nftables redirected it; None when it was not redirected.
fn original_destination(client: &TcpStream) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(client);
    let local = client.local_addr().ok()?;
    // An IPv4 connection to a dual-stack listener has a v4-mapped local address, and its
    // conntrack entry is IPv4's.
    let original = match local {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => socket.original_dst_ipv6(),
        _ => socket.original_dst(),
    }
    .ok()?
    .as_socket()?;
    // Not redirected: conntrack reports the address it was sent to, which is ours.
    let ours = SocketAddr::new(local.ip().to_canonical(), local.port());
    (original != local && original != ours).then_some(original)
}
