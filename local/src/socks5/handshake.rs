//! The SOCKS5 server handshake (RFC 1928 §3–4, RFC 1929) on a client socket. Message formats
//! live in `warren_common::proto::socks5`; this module only sequences them and answers refusals.
//!
//! ```text
//! client → greeting      VER=5 | NMETHODS | METHODS        → METHOD (0xFF: none acceptable)
//! client → login         VER=1 | ULEN | UNAME | PLEN | PASSWD   → STATUS   (local.users only)
//! client → request       VER=5 | CMD | RSV | DST               → returned to the front end
//! ```

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use warren_common::config::User;
use warren_common::framed::{FrameError, Framed, Limits};
use warren_common::proto::socks5::{
    Greeting, MethodSelection, Reply, Request, UserPassReply, UserPassRequest, METHOD_NONE_ACCEPTABLE, METHOD_NO_AUTH,
    METHOD_USER_PASS,
};
use warren_common::proto::status::Status;
use warren_common::proto::DecodeError;

use crate::auth::check_login;

/// No handshake message is longer than 513 bytes (RFC 1929 login); a client that sends more
/// without completing one is not speaking SOCKS5.
pub const LIMITS: Limits = Limits { max: 1024, read: 1024 };

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

impl From<FrameError> for Socks5Error {
    fn from(e: FrameError) -> Socks5Error {
        match e {
            FrameError::Io(e) => Socks5Error::Io(e),
            FrameError::Closed => Socks5Error::Closed,
            FrameError::Malformed(e) => Socks5Error::Malformed(e),
            FrameError::TooLong(_) => Socks5Error::Malformed(DecodeError::BadField("length")),
        }
    }
}

/// Runs the handshake up to and including the request on `conn` (the client socket and the
/// bytes read from it; bytes after the request stay in its buffer). Refusals (method 0xFF,
/// failed login, an error reply for a malformed request) are sent here before returning the
/// error.
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Framed<S>,
    users: &[User],
) -> Result<Request, Socks5Error> {
    let greeting: Greeting = match conn.read().await.map_err(Socks5Error::from) {
        Ok(greeting) => greeting,
        Err(Socks5Error::Malformed(DecodeError::BadVersion(4))) => {
            // A SOCKS4 client: answer in its own format (VN=0, CD=91 rejected) so it reports a
            // refusal instead of a protocol error.
            let _ = conn.get_mut().write_all(&[0x00, 0x5B, 0, 0, 0, 0, 0, 0]).await;
            return Err(Socks5Error::Malformed(DecodeError::BadVersion(4)));
        }
        Err(Socks5Error::Malformed(DecodeError::BadField("NMETHODS"))) => {
            // No methods offered: none is acceptable, which RFC 1928 §3 answers with 0xFF.
            let _ = conn.send(&MethodSelection(METHOD_NONE_ACCEPTABLE)).await;
            return Err(Socks5Error::NoAcceptableMethod);
        }
        Err(e) => return Err(e),
    };
    let wanted = if users.is_empty() {
        METHOD_NO_AUTH
    } else {
        METHOD_USER_PASS
    };
    if !greeting.methods.contains(&wanted) {
        conn.send(&MethodSelection(METHOD_NONE_ACCEPTABLE)).await?;
        return Err(Socks5Error::NoAcceptableMethod);
    }
    conn.send(&MethodSelection(wanted)).await?;

    if !users.is_empty() {
        let login: UserPassRequest = conn.read().await?;
        let success = check_login(users, &login.username, &login.password);
        conn.send(&UserPassReply { success }).await?;
        if !success {
            return Err(Socks5Error::AuthFailed(
                String::from_utf8_lossy(&login.username).into_owned(),
            ));
        }
    }

    match conn.read::<Request>().await.map_err(Socks5Error::from) {
        Ok(request) => Ok(request),
        Err(Socks5Error::Malformed(e)) => {
            let _ = conn.send(&Reply::error(Status::for_decode_error(&e).socks5())).await;
            Err(Socks5Error::Malformed(e))
        }
        Err(e) => Err(e),
    }
}
