//! The one place a request is answered. A command works out its outcome (status, the address
//! it bound, ciphertext it read meanwhile) and hands it here; this turns it into the sealed
//! [`ResponseHeader`] and the encrypted stream the command relays on.
//!
//! ```text
//! accept ──Request──▶ command ──Reply──▶ respond ──EncryptedStream──▶ command (relay)
//! ```
//!
//! [`Request`] is the only way to a tunnel: it cannot relay before it has answered. Every
//! command has one shape, `serve(request, stream, shared)`; accept picks one per request.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader, ResponseHeader};
use warren_common::proto::status::Status;
use warren_common::stream::EncryptedStream;
use warren_common::time::unix_now;
use warren_common::tunnel::AcceptedRequest;

use crate::shared::{Origin, Party};

/// A tunnel connection: a TCP connection, or a stream of a reverse-tunnel session.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for S {}

/// An authenticated, fresh request (it passed the timestamp window and the replay check), not
/// yet answered.
pub struct Request {
    /// Boxed: a request is moved through several futures on its way to the answer, and each
    /// keeps a slot of its size for the connection's life (216 bytes inline, 8 boxed).
    accepted: Box<AcceptedRequest>,
    /// Who sent it (the key that authenticated it).
    pub party: Party,
    /// Where its connection came from.
    pub origin: Origin,
    /// When its connection was accepted.
    pub started: Instant,
}

/// A command's outcome, as the response header tells it.
pub struct Reply {
    pub status: Status,
    /// The address the remote bound for the request (CONNECT's outbound source, BIND's
    /// listener), or the unspecified address.
    pub bound: Address,
}

impl Reply {
    /// Success with nothing bound to announce.
    pub const GRANTED: Reply = Reply::refused(Status::Succeeded);

    /// `status` with the unspecified address.
    pub const fn refused(status: Status) -> Reply {
        Reply {
            status,
            bound: Address::UNSPECIFIED,
        }
    }
}

impl Request {
    pub fn new(accepted: AcceptedRequest, party: Party, origin: Origin, started: Instant) -> Self {
        Request {
            accepted: Box::new(accepted),
            party,
            origin,
            started,
        }
    }

    pub fn header(&self) -> &RequestHeader {
        &self.accepted.header
    }

    /// Client bytes that travelled in the header's chunk; taken, so the request keeps none.
    pub fn take_initial_data(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.accepted.initial_data)
    }

    /// The salt and first chunk exactly as they arrived, when they were kept (see
    /// `Shared::forwards`).
    pub fn raw(&self) -> Option<&[u8]> {
        self.accepted.raw.as_deref()
    }

    /// Whether `ciphertext` read after the first chunk ends the local's stream: whole chunks,
    /// the last the end-of-stream chunk (see [`AcceptedRequest::ends_with_end_of_stream`]).
    pub fn ends_with_end_of_stream(&self, ciphertext: &[u8]) -> bool {
        self.accepted.ends_with_end_of_stream(ciphertext)
    }

    /// Sends `reply` sealed with the key that authenticated the request; the connection becomes
    /// the encrypted stream for the relay.
    /// `already_read` is ciphertext the command read after the first chunk (it is opened
    /// first). `None` when the response could not be sent (logged; nothing is left to do).
    pub async fn answer<S>(self, stream: S, reply: Reply, already_read: &[u8]) -> Option<EncryptedStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let front = match self.origin {
            Origin::Tcp { .. } => "tunnel",
            Origin::Agent { .. } => "agent_link",
        };
        let command = match self.accepted.header.command {
            Command::Connect => "connect",
            Command::Bind => "bind",
            Command::UdpOverTcp => "udp_over_tcp",
            Command::Resolve => "resolve",
            Command::Agent => "agent",
        };
        let metrics = warren_common::metrics::get();
        metrics.request(front, command, reply.status);
        if let Some(user) = self.party.user() {
            let user = warren_common::metrics::User {
                user: warren_common::metrics::label(user),
            };
            metrics.user_connections.get_or_create(&user).inc();
        }
        let response = ResponseHeader::new(self.accepted.salt, reply.status, unix_now(), reply.bound);
        match self.accepted.respond(stream, &response, already_read).await {
            Ok(tunnel) => Some(tunnel),
            Err(e) => {
                tracing::debug!("could not send the response: {e}");
                None
            }
        }
    }

    /// Answers with a failure `status` and closes the stream.
    pub async fn refuse<S>(self, stream: S, status: Status)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(mut tunnel) = self.answer(stream, Reply::refused(status), &[]).await {
            let _ = tunnel.shutdown().await;
        }
    }
}
