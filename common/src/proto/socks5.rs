//! SOCKS5 (RFC 1928) and its username/password sub-negotiation (RFC 1929), as warren-local
//! speaks them to applications.
//!
//! ```text
//! client greeting         VER=5 | NMETHODS | METHODS[NMETHODS]
//! server choice           VER=5 | METHOD                      (0xFF: none acceptable, then close)
//! RFC 1929 request        VER=1 | ULEN | UNAME | PLEN | PASSWD
//! RFC 1929 reply          VER=1 | STATUS                      (0 = success; else close)
//! request                 VER=5 | CMD | RSV | ATYP | DST.ADDR | DST.PORT
//! reply                   VER=5 | REP | RSV=0 | ATYP | BND.ADDR | BND.PORT
//! ```

use bytes::{Buf, BufMut};

use super::address::Address;
use super::{need, version, Decode, DecodeError, Encode};

pub const VERSION: u8 = 0x05;
pub const AUTH_VERSION: u8 = 0x01;

/// Authentication methods (RFC 1928 §3).
pub const METHOD_NO_AUTH: u8 = 0x00;
pub const METHOD_USER_PASS: u8 = 0x02;
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;

/// The client's first message: the authentication methods it supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<u8>,
}

impl Decode for Greeting {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        version(buf, 2, VERSION)?;
        let n = usize::from(buf.get_u8());
        if n == 0 {
            return Err(DecodeError::BadField("NMETHODS"));
        }
        need(buf, n)?;
        let mut methods = vec![0u8; n];
        buf.copy_to_slice(&mut methods);
        Ok(Greeting { methods })
    }
}

impl Encode for Greeting {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        buf.put_u8(self.methods.len() as u8);
        buf.put_slice(&self.methods);
    }

    fn encoded_len(&self) -> usize {
        2 + self.methods.len()
    }
}

/// The server's answer to a greeting: the method it picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSelection(pub u8);

impl Encode for MethodSelection {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        buf.put_u8(self.0);
    }

    fn encoded_len(&self) -> usize {
        2
    }
}

impl Decode for MethodSelection {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        version(buf, 2, VERSION)?;
        Ok(MethodSelection(buf.get_u8()))
    }
}

/// RFC 1929 username/password request. Both fields are opaque bytes (1..=255 of them).
#[derive(Clone, PartialEq, Eq)]
pub struct UserPassRequest {
    pub username: Vec<u8>,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for UserPassRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPassRequest")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &"***")
            .finish()
    }
}

impl Decode for UserPassRequest {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        version(buf, 2, AUTH_VERSION)?;
        let ulen = usize::from(buf.get_u8());
        need(buf, ulen + 1)?;
        let mut username = vec![0u8; ulen];
        buf.copy_to_slice(&mut username);
        let plen = usize::from(buf.get_u8());
        need(buf, plen)?;
        let mut password = vec![0u8; plen];
        buf.copy_to_slice(&mut password);
        if username.is_empty() {
            return Err(DecodeError::BadField("ULEN"));
        }
        Ok(UserPassRequest { username, password })
    }
}

impl Encode for UserPassRequest {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(AUTH_VERSION);
        buf.put_u8(self.username.len() as u8);
        buf.put_slice(&self.username);
        buf.put_u8(self.password.len() as u8);
        buf.put_slice(&self.password);
    }

    fn encoded_len(&self) -> usize {
        3 + self.username.len() + self.password.len()
    }
}

/// RFC 1929 reply: status 0 is success, anything else failure (and the server then closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPassReply {
    pub success: bool,
}

impl Encode for UserPassReply {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(AUTH_VERSION);
        buf.put_u8(if self.success { 0x00 } else { 0x01 });
    }

    fn encoded_len(&self) -> usize {
        2
    }
}

impl Decode for UserPassReply {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        version(buf, 2, AUTH_VERSION)?;
        Ok(UserPassReply {
            success: buf.get_u8() == 0,
        })
    }
}

/// What the client asks the proxy to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect = 0x01,
    Bind = 0x02,
    UdpAssociate = 0x03,
}

/// A SOCKS5 request: a command and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: Address,
}

impl Decode for Request {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        version(buf, 4, VERSION)?;
        let command = match buf.get_u8() {
            0x01 => Command::Connect,
            0x02 => Command::Bind,
            0x03 => Command::UdpAssociate,
            other => return Err(DecodeError::BadCommand(other)),
        };
        // RSV: RFC 1928 says 0x00; like Dante we ignore its value rather than fail a client.
        let _reserved = buf.get_u8();
        let target = Address::decode(buf)?;
        Ok(Request { command, target })
    }
}

impl Encode for Request {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        buf.put_u8(self.command as u8);
        buf.put_u8(0);
        self.target.encode(buf);
    }

    fn encoded_len(&self) -> usize {
        3 + self.target.encoded_len()
    }
}

/// SOCKS5 reply codes (RFC 1928 §6), the REP byte of this wire only. What a request's outcome
/// means, and how every front end says it, is [`super::status::Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReplyCode {
    Succeeded = 0x00,
    /// Also used when the remote cannot be reached or does not answer (wrong key, clock skew).
    GeneralFailure = 0x01,
    /// Denied by the remote's outbound ACL.
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    /// Host unreachable, or the name did not resolve.
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    /// The outbound connect got no answer in time.
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl ReplyCode {
    pub fn from_u8(v: u8) -> Option<ReplyCode> {
        use ReplyCode::*;
        Some(match v {
            0x00 => Succeeded,
            0x01 => GeneralFailure,
            0x02 => NotAllowed,
            0x03 => NetworkUnreachable,
            0x04 => HostUnreachable,
            0x05 => ConnectionRefused,
            0x06 => TtlExpired,
            0x07 => CommandNotSupported,
            0x08 => AddressTypeNotSupported,
            _ => return None,
        })
    }
}

/// A SOCKS5 reply. Error replies carry [`Address::UNSPECIFIED`], so they are still complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub bound: Address,
}

impl Reply {
    pub fn error(code: ReplyCode) -> Reply {
        Reply {
            code,
            bound: Address::UNSPECIFIED,
        }
    }
}

impl Encode for Reply {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        buf.put_u8(self.code as u8);
        buf.put_u8(0);
        self.bound.encode(buf);
    }

    fn encoded_len(&self) -> usize {
        3 + self.bound.encoded_len()
    }
}

impl Decode for Reply {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        version(buf, 3, VERSION)?;
        let code = ReplyCode::from_u8(buf.get_u8()).ok_or(DecodeError::BadField("REP"))?;
        let _reserved = buf.get_u8();
        let bound = Address::decode(buf)?;
        Ok(Reply { code, bound })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_exact, decode_prefix};
    use proptest::prelude::*;

    /// The session from shared/reference (004): greeting, RFC 1929 login, CONNECT, in hex.
    #[test]
    fn reference_session() {
        let greeting: Greeting = decode_exact(&[0x05, 0x02, 0x00, 0x02]).unwrap();
        assert_eq!(greeting.methods, vec![0x00, 0x02]);
        let login: UserPassRequest = decode_exact(b"\x01\x06myuser\x08mypasswd").unwrap();
        assert_eq!(login.username, b"myuser");
        assert_eq!(login.password, b"mypasswd");
        let req: Request = decode_exact(&[0x05, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x50]).unwrap();
        assert_eq!(req.command, Command::Connect);
        assert_eq!(req.target, Address::Ip("127.0.0.1:80".parse().unwrap()));
        assert!(!format!("{login:?}").contains("mypasswd"));
    }

    #[test]
    fn error_reply_is_complete() {
        let mut buf = Vec::new();
        Reply::error(ReplyCode::TtlExpired).encode(&mut buf);
        assert_eq!(buf, [0x05, 0x06, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn malformed_requests() {
        assert_eq!(
            decode_exact::<Request>(&[0x04, 0x01, 0, 1]),
            Err(DecodeError::BadVersion(4))
        );
        assert_eq!(
            decode_exact::<Request>(&[0x05, 0x09, 0, 1]),
            Err(DecodeError::BadCommand(9))
        );
        assert_eq!(
            decode_exact::<Request>(&[0x05, 0x01, 0, 7]),
            Err(DecodeError::BadAddressType(7))
        );
        assert_eq!(
            decode_exact::<Greeting>(&[0x05, 0x00]),
            Err(DecodeError::BadField("NMETHODS"))
        );
        assert_eq!(decode_exact::<Greeting>(&[0x05, 0x03, 0]), Err(DecodeError::Incomplete));
        assert_eq!(
            decode_exact::<UserPassRequest>(b"\x01\x00\x00"),
            Err(DecodeError::BadField("ULEN"))
        );
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_prefix::<Greeting>(&bytes);
            let _ = decode_prefix::<UserPassRequest>(&bytes);
            let _ = decode_prefix::<Request>(&bytes);
            let _ = decode_prefix::<Reply>(&bytes);
        }

        #[test]
        fn login_round_trips(user in proptest::collection::vec(any::<u8>(), 1..=255),
                             pass in proptest::collection::vec(any::<u8>(), 0..=255)) {
            let msg = UserPassRequest { username: user, password: pass };
            let mut buf = Vec::new();
            msg.encode(&mut buf);
            prop_assert_eq!(decode_exact::<UserPassRequest>(&buf), Ok(msg));
        }
    }
}
