//! The SOCKS5 client (RFC 1928, RFC 1929) warren-local speaks to an upstream SOCKS5 server at
//! the end of a chain, inside the last warren hop's tunnel. Message formats are the shared codecs
//! of `warren_common::proto::socks5`; this module only sequences them.
//!
//! ```text
//! local → upstream   greeting       VER=5 | NMETHODS | 0x00 (and 0x02 when a login is configured)
//! upstream → local   selection      VER=5 | METHOD   (0xFF: none acceptable)
//! local → upstream   RFC 1929       VER=1 | ULEN | UNAME | PLEN | PASSWD     (method 0x02 only)
//! upstream → local   RFC 1929       VER=1 | STATUS   (0 = success)
//! local → upstream   request        VER=5 | CMD=1 (CONNECT) | RSV | target
//! upstream → local   reply          VER=5 | REP | RSV | BND   (REP reaches our client unchanged)
//! ```
//!
//! Messages are read a byte at a time until they decode, so no byte after the reply (the
//! target's first data) is consumed here: it stays in the stream for the relay.

use tokio::io::{AsyncRead, AsyncWrite};
use warren_common::config::local_routes::Socks5Login;
use warren_common::framed::{FrameError, Framed, Limits};
use warren_common::proto::address::Address;
use warren_common::proto::socks5::{
    Command, Greeting, MethodSelection, Reply, ReplyCode, Request, UserPassReply, UserPassRequest, METHOD_NO_AUTH,
    METHOD_USER_PASS,
};
use warren_common::proto::status::Status;
use warren_common::proto::DecodeError;

/// No message from the server is longer than a reply with a 255-byte name (262 bytes).
const MAX_MESSAGE: usize = 300;

/// Why the upstream SOCKS5 server did not connect us to the target.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection mid-handshake.
    #[error("closed the connection during the handshake")]
    Closed,
    /// The server sent bytes that are not the SOCKS5 message expected.
    #[error("malformed answer: {0}")]
    Malformed(DecodeError),
    /// The server accepts none of the methods offered (it wants a login we do not have, or
    /// refuses ours).
    #[error("accepts none of the offered authentication methods (is a username/password needed?)")]
    NoAcceptableMethod,
    /// The server refused the username/password.
    #[error("refused the username/password")]
    LoginRefused,
    /// The server answered the CONNECT with a failure code.
    #[error("answered: {}", Status::from(*.0))]
    Replied(ReplyCode),
}

impl From<FrameError> for UpstreamError {
    fn from(e: FrameError) -> UpstreamError {
        match e {
            FrameError::Io(e) => UpstreamError::Io(e),
            FrameError::Closed => UpstreamError::Closed,
            FrameError::Malformed(e) => UpstreamError::Malformed(e),
            FrameError::TooLong(_) => UpstreamError::Malformed(DecodeError::BadField("length")),
        }
    }
}

/// Asks the server at the other end of `stream` to CONNECT to `target`, logging in with
/// `login` if it asks for one. Returns the server's bound address.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    login: Option<&Socks5Login>,
    target: &Address,
) -> Result<Address, UpstreamError> {
    let mut methods = vec![METHOD_NO_AUTH];
    if login.is_some() {
        methods.push(METHOD_USER_PASS);
    }
    // Replies are read a byte at a time: the target's data follows the last one on this stream.
    let mut conn = Framed::new(
        stream,
        Limits {
            max: MAX_MESSAGE,
            read: 1,
        },
    );
    conn.send(&Greeting { methods }).await?;
    let MethodSelection(method) = conn.read().await?;
    match (method, login) {
        (METHOD_NO_AUTH, _) => {}
        (METHOD_USER_PASS, Some(login)) => {
            let request = UserPassRequest {
                username: login.username.as_bytes().to_vec(),
                password: login.password.expose().to_vec(),
            };
            conn.send(&request).await?;
            let reply: UserPassReply = conn.read().await?;
            if !reply.success {
                return Err(UpstreamError::LoginRefused);
            }
        }
        _ => return Err(UpstreamError::NoAcceptableMethod),
    }
    let request = Request {
        command: Command::Connect,
        target: target.clone(),
    };
    conn.send(&request).await?;
    let reply: Reply = conn.read().await?;
    if reply.code != ReplyCode::Succeeded {
        return Err(UpstreamError::Replied(reply.code));
    }
    Ok(reply.bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use warren_common::config::Secret;

    /// The client's bytes against a scripted server on an in-memory pipe, login included; the
    /// byte after the reply stays unread.
    #[tokio::test]
    async fn speaks_rfc1928_and_1929_and_leaves_data_unread() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let login = Socks5Login {
            username: "u".into(),
            password: Secret::new("pw"),
        };
        let target = Address::domain("intranet.test", 80).unwrap();
        let script = tokio::spawn(async move {
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [5, 2, 0, 2]);
            server.write_all(&[5, 2]).await.unwrap();
            let mut got = [0u8; 6];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"\x01\x01u\x02pw");
            server.write_all(&[1, 0]).await.unwrap();
            let mut got = vec![0u8; 4 + 1 + 13 + 2];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got[..5], &[5, 1, 0, 3, 13]);
            server
                .write_all(&[5, 0, 0, 1, 10, 0, 0, 5, 0x1f, 0x90, b'X'])
                .await
                .unwrap();
            server
        });
        let bound = connect(&mut client, Some(&login), &target).await.unwrap();
        assert_eq!(bound, Address::Ip("10.0.0.5:8080".parse().unwrap()));
        assert_eq!(client.read_u8().await.unwrap(), b'X');
        drop(script.await.unwrap());
    }

    #[tokio::test]
    async fn failures_map_to_errors() {
        for (answer, want) in [
            (vec![5u8, 0xFF], "none"),
            (vec![5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0], "refused"),
            (vec![5, 0, 5, 0x09, 0, 1, 0, 0, 0, 0, 0, 0], "malformed"),
            (vec![5], "closed"),
        ] {
            let (mut client, mut server) = tokio::io::duplex(1024);
            server.write_all(&answer).await.unwrap();
            server.shutdown().await.unwrap();
            let err = connect(&mut client, None, &Address::UNSPECIFIED).await.unwrap_err();
            drop(server);
            let ok = match want {
                "none" => matches!(err, UpstreamError::NoAcceptableMethod),
                "refused" => matches!(err, UpstreamError::Replied(ReplyCode::ConnectionRefused)),
                "malformed" => matches!(err, UpstreamError::Malformed(_)),
                _ => matches!(err, UpstreamError::Closed | UpstreamError::Io(_)),
            };
            assert!(ok, "{want}: {err:?}");
        }
    }
}
