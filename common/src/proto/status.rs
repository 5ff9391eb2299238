//! The outcome of a request, in one vocabulary for every front end and the tunnel: [`Status`],
//! with one table ([`Status::row`]) that says how each front end answers it.
//!
//! ```text
//! Status                   SOCKS5 REP  SOCKS4 CD  HTTP
//! Succeeded                0x00        0x5A       200 Connection established
//! GeneralFailure           0x01        0x5B       502 Bad Gateway
//! NotAllowed               0x02        0x5B       403 Forbidden
//! NetworkUnreachable       0x03        0x5B       502 Bad Gateway
//! HostUnreachable          0x04        0x5B       502 Bad Gateway
//! ConnectionRefused        0x05        0x5B       502 Bad Gateway
//! TtlExpired               0x06        0x5B       504 Gateway Timeout
//! CommandNotSupported      0x07        0x5B       502 Bad Gateway
//! AddressTypeNotSupported  0x08        0x5B       502 Bad Gateway
//! ```
//!
//! SOCKS5 reply codes are RFC 1928 §6 (the tunnel's STATUS byte uses the same values); SOCKS4 has
//! only "granted" and "rejected or failed"; HTTP statuses are RFC 9110 §15 (403 for a refusal by
//! policy, 504 when the target did not answer in time, 502 for every other upstream failure).
//! A failed outbound connect maps here through `dial::ConnectFailure` (in `dial`, which stays at
//! the I/O level and depends on this table, not the other way round).

use super::socks4;
use super::socks5::ReplyCode;
use super::DecodeError;

/// The outcome of a request (CONNECT, BIND, UDP ASSOCIATE, or its tunnel counterpart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Succeeded,
    /// Anything without a better code; also the remote not answering (wrong key, clock skew).
    GeneralFailure,
    /// Refused by a ruleset (the remote's outbound ACL).
    NotAllowed,
    NetworkUnreachable,
    /// The host is unreachable, or its name did not resolve.
    HostUnreachable,
    ConnectionRefused,
    /// The outbound connect got no answer in time.
    TtlExpired,
    CommandNotSupported,
    AddressTypeNotSupported,
}

/// How one [`Status`] is said on each wire and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The SOCKS5 REP byte (RFC 1928 §6), also the tunnel's STATUS byte.
    pub socks5: ReplyCode,
    /// The SOCKS4 CD byte: granted or rejected.
    pub socks4: socks4::ReplyCode,
    /// The HTTP status code and reason phrase a proxy answers with (RFC 9110 §15).
    pub http: (u16, &'static str),
    /// A short human description for logs and error bodies.
    pub text: &'static str,
}

impl Status {
    /// Every status, in SOCKS5 code order.
    pub const ALL: [Status; 9] = [
        Status::Succeeded,
        Status::GeneralFailure,
        Status::NotAllowed,
        Status::NetworkUnreachable,
        Status::HostUnreachable,
        Status::ConnectionRefused,
        Status::TtlExpired,
        Status::CommandNotSupported,
        Status::AddressTypeNotSupported,
    ];

    /// The table: the one place that says how each outcome is answered.
    pub const fn row(self) -> Row {
        use socks4::ReplyCode::{Granted as GRANTED, Rejected as REJECTED};
        use ReplyCode as R;
        use Status as S;
        const OK: (u16, &str) = (200, "Connection established");
        const FORBIDDEN: (u16, &str) = (403, "Forbidden");
        const BAD_GW: (u16, &str) = (502, "Bad Gateway");
        const TIMEOUT: (u16, &str) = (504, "Gateway Timeout");
        #[rustfmt::skip]
        let (socks5, socks4, http, text) = match self {
            S::Succeeded =>               (R::Succeeded,               GRANTED,  OK,        "succeeded"),
            S::GeneralFailure =>          (R::GeneralFailure,          REJECTED, BAD_GW,    "general failure"),
            S::NotAllowed =>              (R::NotAllowed,              REJECTED, FORBIDDEN, "not allowed by ruleset"),
            S::NetworkUnreachable =>      (R::NetworkUnreachable,      REJECTED, BAD_GW,    "network unreachable"),
            S::HostUnreachable =>         (R::HostUnreachable,         REJECTED, BAD_GW,    "host unreachable"),
            S::ConnectionRefused =>       (R::ConnectionRefused,       REJECTED, BAD_GW,    "connection refused"),
            S::TtlExpired =>              (R::TtlExpired,              REJECTED, TIMEOUT,   "connect timed out"),
            S::CommandNotSupported =>     (R::CommandNotSupported,     REJECTED, BAD_GW,    "command not supported"),
            S::AddressTypeNotSupported => (R::AddressTypeNotSupported, REJECTED, BAD_GW,    "address type not supported"),
        };
        Row {
            socks5,
            socks4,
            http,
            text,
        }
    }

    /// The SOCKS5 reply code (RFC 1928 §6).
    pub const fn socks5(self) -> ReplyCode {
        self.row().socks5
    }

    /// The SOCKS4 reply code: 0x5A granted, 0x5B for every failure.
    pub const fn socks4(self) -> socks4::ReplyCode {
        self.row().socks4
    }

    /// The HTTP status code and reason phrase for a proxy's answer (RFC 9110 §15).
    pub const fn http(self) -> (u16, &'static str) {
        self.row().http
    }

    /// A short human description ("connection refused").
    pub const fn describe(self) -> &'static str {
        self.row().text
    }

    /// The answer a malformed request earns: an unknown command or address type has its own
    /// code, anything else is a general failure.
    pub fn for_decode_error(err: &DecodeError) -> Status {
        match err {
            DecodeError::BadCommand(_) => Status::CommandNotSupported,
            DecodeError::BadAddressType(_) => Status::AddressTypeNotSupported,
            _ => Status::GeneralFailure,
        }
    }
}

impl From<ReplyCode> for Status {
    fn from(code: ReplyCode) -> Status {
        match code {
            ReplyCode::Succeeded => Status::Succeeded,
            ReplyCode::GeneralFailure => Status::GeneralFailure,
            ReplyCode::NotAllowed => Status::NotAllowed,
            ReplyCode::NetworkUnreachable => Status::NetworkUnreachable,
            ReplyCode::HostUnreachable => Status::HostUnreachable,
            ReplyCode::ConnectionRefused => Status::ConnectionRefused,
            ReplyCode::TtlExpired => Status::TtlExpired,
            ReplyCode::CommandNotSupported => Status::CommandNotSupported,
            ReplyCode::AddressTypeNotSupported => Status::AddressTypeNotSupported,
        }
    }
}

impl Status {
    /// The snake_case name metrics label a result with (`succeeded`, `not_allowed`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::GeneralFailure => "general_failure",
            Status::NotAllowed => "not_allowed",
            Status::NetworkUnreachable => "network_unreachable",
            Status::HostUnreachable => "host_unreachable",
            Status::ConnectionRefused => "connection_refused",
            Status::TtlExpired => "ttl_expired",
            Status::CommandNotSupported => "command_not_supported",
            Status::AddressTypeNotSupported => "address_type_not_supported",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks5_codes_are_rfc_1928_and_round_trip() {
        for (i, status) in Status::ALL.into_iter().enumerate() {
            let code = status.socks5();
            assert_eq!(code as u8, i as u8, "{status:?}");
            assert_eq!(Status::from(code), status);
            assert_eq!(ReplyCode::from_u8(i as u8), Some(code));
        }
    }

    #[test]
    fn socks4_grants_only_success() {
        assert_eq!(Status::Succeeded.socks4(), socks4::ReplyCode::Granted);
        for status in &Status::ALL[1..] {
            assert_eq!(status.socks4(), socks4::ReplyCode::Rejected, "{status:?}");
        }
    }

    #[test]
    fn http_statuses_follow_failure_status() {
        assert_eq!(Status::NotAllowed.http(), (403, "Forbidden"));
        assert_eq!(Status::TtlExpired.http(), (504, "Gateway Timeout"));
        for status in [
            Status::GeneralFailure,
            Status::NetworkUnreachable,
            Status::HostUnreachable,
            Status::ConnectionRefused,
            Status::CommandNotSupported,
            Status::AddressTypeNotSupported,
        ] {
            assert_eq!(status.http(), (502, "Bad Gateway"), "{status:?}");
        }
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            Status::for_decode_error(&DecodeError::BadCommand(9)),
            Status::CommandNotSupported
        );
        assert_eq!(
            Status::for_decode_error(&DecodeError::BadAddressType(7)),
            Status::AddressTypeNotSupported
        );
        assert_eq!(
            Status::for_decode_error(&DecodeError::Incomplete),
            Status::GeneralFailure
        );
    }
}
