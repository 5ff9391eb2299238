//! The SOCKS5 server handshake (RFC 1928, RFC 1929) on a client socket. Message formats live in
//! `warren_common::proto::socks5`; this module only sequences them and answers refusals.

use bytes::{Buf, BytesMut};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::config::User;
use warren_common::proto::socks5::{
    Greeting, MethodSelection, Reply, ReplyCode, Request, UserPassReply, UserPassRequest, METHOD_NONE_ACCEPTABLE,
    METHOD_NO_AUTH, METHOD_USER_PASS,
};
use warren_common::proto::{decode_prefix, Decode, DecodeError};

/// No handshake message is longer than 513 bytes (RFC 1929 login); a client that sends more
/// without completing one is not speaking SOCKS5.
const MAX_MESSAGE: usize = 1024;

/// Why a SOCKS5 handshake ended without a request to carry out.
#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The client closed before finishing its handshake.
    #[error("client closed during the handshake")]
    Closed,
    /// A message that is not valid SOCKS5 (the client got the matching refusal).
    #[error("malformed message: {0}")]
    Malformed(DecodeError),
    /// The client offered no method we accept (it got METHOD 0xFF).
    #[error("no acceptable authentication method offered")]
    NoAcceptableMethod,
    /// Wrong username or password (the client got RFC 1929 status 1).
    #[error("authentication failed for user {0:?}")]
    AuthFailed(String),
}

/// Reads one message, pulling more bytes from the socket until it is complete.
async fn read_message<T: Decode>(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<T, Socks5Error> {
    loop {
        match decode_prefix::<T>(buf) {
            Ok((msg, used)) => {
                buf.advance(used);
                return Ok(msg);
            }
            Err(DecodeError::Incomplete) if buf.len() < MAX_MESSAGE => {}
            Err(DecodeError::Incomplete) => return Err(Socks5Error::Malformed(DecodeError::BadField("length"))),
            Err(e) => return Err(Socks5Error::Malformed(e)),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Socks5Error::Closed);
        }
    }
}

pub async fn send_reply(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(22);
    reply.encode(&mut out);
    stream.write_all(&out).await
}

/// Runs the handshake up to and including the request. Refusals (method 0xFF, failed login,
/// an error reply for a malformed request) are sent here before returning the error.
pub async fn negotiate(stream: &mut TcpStream, buf: &mut BytesMut, users: &[User]) -> Result<Request, Socks5Error> {
    let greeting: Greeting = match read_message(stream, buf).await {
        Ok(greeting) => greeting,
        Err(Socks5Error::Malformed(DecodeError::BadVersion(4))) => {
            // A SOCKS4 client: answer in its own format (VN=0, CD=91 rejected) so it reports a
            // refusal instead of a protocol error.
            let _ = stream.write_all(&[0x00, 0x5B, 0, 0, 0, 0, 0, 0]).await;
            return Err(Socks5Error::Malformed(DecodeError::BadVersion(4)));
        }
        Err(Socks5Error::Malformed(DecodeError::BadField("NMETHODS"))) => {
            // No methods offered: none is acceptable, which RFC 1928 §3 answers with 0xFF.
            let mut out = Vec::with_capacity(2);
            MethodSelection(METHOD_NONE_ACCEPTABLE).encode(&mut out);
            let _ = stream.write_all(&out).await;
            return Err(Socks5Error::NoAcceptableMethod);
        }
        Err(e) => return Err(e),
    };
    let wanted = if users.is_empty() {
        METHOD_NO_AUTH
    } else {
        METHOD_USER_PASS
    };
    let mut out = Vec::with_capacity(2);
    if !greeting.methods.contains(&wanted) {
        MethodSelection(METHOD_NONE_ACCEPTABLE).encode(&mut out);
        stream.write_all(&out).await?;
        return Err(Socks5Error::NoAcceptableMethod);
    }
    MethodSelection(wanted).encode(&mut out);
    stream.write_all(&out).await?;

    if !users.is_empty() {
        let login: UserPassRequest = read_message(stream, buf).await?;
        let success = check_login(users, &login);
        out.clear();
        UserPassReply { success }.encode(&mut out);
        stream.write_all(&out).await?;
        if !success {
            return Err(Socks5Error::AuthFailed(
                String::from_utf8_lossy(&login.username).into_owned(),
            ));
        }
    }

    match read_message::<Request>(stream, buf).await {
        Ok(request) => Ok(request),
        Err(Socks5Error::Malformed(e)) => {
            let _ = send_reply(stream, &Reply::error(ReplyCode::for_decode_error(&e))).await;
            Err(Socks5Error::Malformed(e))
        }
        Err(e) => Err(e),
    }
}

/// Compares against every user in constant time per comparison, so timing does not reveal
/// which part of a guess was right.
pub(crate) fn check_login(users: &[User], login: &UserPassRequest) -> bool {
    let mut ok = subtle::Choice::from(0u8);
    for user in users {
        let name = user.username.as_bytes().ct_eq(&login.username);
        let pass = user.password.expose().ct_eq(&login.password);
        ok |= name & pass;
    }
    ok.into()
}
