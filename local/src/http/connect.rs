//! `CONNECT host:port` (RFC 9110 §9.3.6): the session opens the outbound, the client gets
//! `200 Connection established` (or the status of [`super::response`]'s table, with a lingering
//! close), then bytes are relayed both ways to the end.

use std::time::Instant;

use bytes::BytesMut;
use tokio::net::TcpStream;
use warren_common::proto::address::Address;

use super::response;
use crate::outbound::{OpenError, Outbounds};
use crate::session::{self, Answer, Connect};

/// Carries out a CONNECT to `target`; `buf` holds what the client sent after the request head.
pub async fn serve(client: TcpStream, buf: BytesMut, outbounds: &Outbounds, target: Address) {
    tracing::Span::current().record("protocol", "http-connect");
    let request = Connect {
        target,
        initial: buf,
        started: Instant::now(),
    };
    session::connect(client, outbounds, request, Tunnel).await;
}

/// HTTP's replies to a CONNECT.
struct Tunnel;

impl Answer for Tunnel {
    const PROTOCOL: &'static str = "http-connect";

    const LINGERS: bool = true;

    fn granted(&self, _bound: &Address) -> Vec<u8> {
        b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec()
    }

    fn refused(&self, error: &OpenError) -> Vec<u8> {
        response::refusal(error)
    }
}
