//! Request targets (RFC 9112 §3.2) and proxy credentials: what an HTTP proxy request asks for
//! (`CONNECT host:port`, `http://host/path`, `/path`) and the `Basic` credential of its
//! `Proxy-Authorization` field (RFC 7617).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::Engine as _;

use super::RequestHead;
use crate::proto::address::{check_domain, Address, DomainRule};
use crate::proto::DecodeError;

/// What a request-target asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`: a tunnel to `host:port`.
    Tunnel(Address),
    /// `http://authority/path`: forward to `address` with `path` (origin-form) and a `Host`
    /// field set to `authority`.
    Forward {
        address: Address,
        authority: String,
        path: String,
    },
    /// `/path`: a request for the proxy itself.
    Origin(String),
    /// `OPTIONS *` (asterisk-form, RFC 9112 §3.2.4): a question about the proxy itself.
    Asterisk,
}

/// Parses `host[:port]` (IPv6 in brackets) into an address; `default_port` when the port is
/// absent (None: a port is required).
pub fn parse_authority(text: &str, default_port: Option<u16>) -> Result<Address, DecodeError> {
    const BAD: DecodeError = DecodeError::BadField("authority");
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']').ok_or(BAD)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or(BAD)?)),
            }
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u16>().map_err(|_| BAD)?,
        Some(_) => return Err(BAD),
        None => default_port.ok_or(BAD)?,
    };
    if port == 0 {
        return Err(BAD);
    }
    if text.starts_with('[') {
        let ip: Ipv6Addr = host.parse().map_err(|_| BAD)?;
        return Ok(Address::Ip(SocketAddr::new(IpAddr::V6(ip).to_canonical(), port)));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Address::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    let host = check_domain(host.as_bytes(), DomainRule::UriHost)?;
    Address::from_host(host, port)
}

impl RequestHead {
    /// What the request-target asks for. Other forms (`*` with another method, `https://…`,
    /// `user@host`, authority-form without CONNECT) are errors.
    pub fn parse_target(&self) -> Result<Target, DecodeError> {
        if self.method == "CONNECT" {
            return Ok(Target::Tunnel(parse_authority(&self.target, None)?));
        }
        if self.method == "OPTIONS" && self.target == "*" {
            return Ok(Target::Asterisk);
        }
        if self.target.starts_with('/') {
            return Ok(Target::Origin(self.target.clone()));
        }
        let scheme_end = self.target.find("://").ok_or(DecodeError::BadField("request-target"))?;
        if !self.target[..scheme_end].eq_ignore_ascii_case("http") {
            return Err(DecodeError::BadField("scheme"));
        }
        let rest = &self.target[scheme_end + 3..];
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(DecodeError::BadField("userinfo"));
        }
        let address = parse_authority(authority, Some(80))?;
        let path = path.split('#').next().unwrap_or_default();
        let path = match path.chars().next() {
            Some('/') => path.to_owned(),
            _ => format!("/{path}"),
        };
        Ok(Target::Forward {
            address,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// The username and password of a `Basic` credential (`Proxy-Authorization` value), if it is
/// one and decodes.
pub fn basic_credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// `target` (a request-target as received) with any userinfo (`user:password@`, RFC 3986
/// §3.2.1) in its authority replaced by `***@`, for logs: warren refuses such targets (400), and
/// the password must not reach a log line on the way.
pub fn redact_userinfo(target: &str) -> std::borrow::Cow<'_, str> {
    let after_scheme = target.find("://").map_or(0, |i| i + 3);
    let rest = target.get(after_scheme..).unwrap_or("");
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest.get(..authority_end).and_then(|authority| authority.rfind('@')) {
        Some(at) => {
            let (head, tail) = (target.get(..after_scheme).unwrap_or(""), rest.get(at..).unwrap_or(""));
            std::borrow::Cow::Owned(format!("{head}***{tail}"))
        }
        None => std::borrow::Cow::Borrowed(target),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_userinfo;

    #[test]
    fn userinfo_never_survives_redaction() {
        for (given, shown) in [
            ("http://user:hunter2@host/x", "http://***@host/x"),
            ("http://a@b@host:8080/?q=@", "http://***@host:8080/?q=@"),
            ("user:hunter2@host:443", "***@host:443"),
            ("http://host/path@x", "http://host/path@x"),
            ("/just/a/path", "/just/a/path"),
            ("http://ünï:cödé@h/", "http://***@h/"),
        ] {
            assert_eq!(redact_userinfo(given), shown, "{given}");
        }
    }
}
