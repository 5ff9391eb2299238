//! Port forwards (`local.forwards`), like `ssh -L`: every connection to a forward's listener is
//! a CONNECT to its fixed `to`, and every UDP flow (one per client address) a UDP association
//! to it, routed by `local.routes` as a SOCKS request for `to` would be.
//!
//! ```text
//! program ──TCP──▶ listen ─▶ session::connect(to)       ─▶ route ─▶ direct / remote / chain
//! program ──UDP──▶ listen ─▶ udp.rs: one flow per client ─▶ route ─▶ direct socket / association
//! ```
//!
//! A forward has no reply of its own: the program's bytes go through once the outbound is
//! open, and a refused outbound closes the program's connection (the reason is logged).

pub mod udp;

use std::time::Instant;

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_common::proto::address::Address;
use warren_common::server::ServerLimits;

use crate::outbound::current::Latest;
use crate::outbound::OpenError;
use crate::session::{self, Answer, Connect};

/// A front end with nothing to say to its client: no reply bytes either way. `REDIR` picks
/// the name on the "connection finished" line (and in metrics): `forward` or `redir`.
pub struct Transparent<const REDIR: bool>;

impl<const REDIR: bool> Answer for Transparent<REDIR> {
    const PROTOCOL: &'static str = if REDIR { "redir" } else { "forward" };

    fn granted(&self, _bound: &Address) -> Vec<u8> {
        Vec::new()
    }

    fn refused(&self, _error: &OpenError) -> Vec<u8> {
        Vec::new()
    }
}

/// Serves a TCP forward to `to` on `listener` until `shutdown`, then drains (like the SOCKS
/// listener: `limits` caps its connections).
pub async fn serve_tcp(
    listener: TcpListener,
    to: Address,
    latest: Latest,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    warren_common::server::serve(listener, shutdown, limits, move |client, peer| {
        let outbounds = latest.outbounds(peer);
        let target = to.clone();
        async move {
            warren_common::net::tune(&client);
            let request = Connect {
                target,
                initial: BytesMut::new(),
                started: Instant::now(),
            };
            session::connect(client, &outbounds, request, Transparent::<false>).await;
        }
    })
    .await;
}
