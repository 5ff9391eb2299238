//! Small parsers for single config values: durations in seconds, `IP:port` listen addresses,
//! `host:port` outbound addresses, 1-to-255-byte names, and a route's `{domain, cidr, port}`
//! conditions. Each returns a [`ConfigError`] naming the field it was given. Plain data in,
//! plain data out: nothing here knows a wire codec.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use crate::proto::address::Address;
use crate::route::{Matcher, RouteError};

/// `value` seconds (`default` when absent), which must lie in (0, one year].
pub(crate) fn seconds(field: &str, value: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let secs = value.unwrap_or(default);
    if !(secs > 0.0 && secs <= 86_400.0 * 365.0) {
        return Err(invalid(
            field,
            format!("{secs} is not a number of seconds between 0 and one year"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A listen address: `IP:port` (`default` when absent), IPv6 as `[::1]:1080`.
pub(crate) fn socket_addr(field: &str, value: Option<&str>, default: &str) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or(default);
    text.parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not an IP:port address (IPv6 as [::1]:1080)"),
        )
    })
}

/// `host:port` with a non-empty host and a port from 1 to 65535 (IPv6 as `[::1]:8388`): the text
/// as written (resolved on each connection) and the same as an [`Address`] (an IP literal is
/// [`Address::Ip`], anything else a domain).
pub(crate) fn host_port(field: &str, value: &str) -> Result<(String, Address), ConfigError> {
    match parse_host_port(value) {
        Some(address) => Ok((value.to_owned(), address)),
        None => Err(invalid(field, format!("{value:?} is not host:port"))),
    }
}

/// `host:port`, `IPv4:port` or `[IPv6]:port`. The port is decimal digits only, 1 to 65535; a
/// domain is ASCII letters, digits and `-._~` (the URI's unreserved set), at most 255 bytes.
fn parse_host_port(text: &str) -> Option<Address> {
    let (host, port, bracketed) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':')?, true)
        }
        None => {
            let (host, port) = text.rsplit_once(':')?;
            (host, port, false)
        }
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse::<u16>().ok().filter(|&p| p != 0)?;
    if bracketed {
        let ip: Ipv6Addr = host.parse().ok()?;
        return Some(Address::Ip(SocketAddr::new(IpAddr::V6(ip).to_canonical(), port)));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(Address::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    let domain_ok = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    domain_ok.then(|| Address::from_host(host, port).ok()).flatten()
}

/// A looser `host:port` check (any non-empty host text, a port from 1 to 65535), for an
/// address that is only ever handed to the resolver as written.
pub(crate) fn host_port_ok(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

/// Names and passwords that go on the wire with a one-byte length (SOCKS5 logins, agent names).
pub(crate) fn one_to_255_bytes(field: impl Into<String>, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 255 {
        return Err(invalid(field, "must be 1 to 255 bytes"));
    }
    Ok(())
}

/// `port: 25` or `port: "8000-8999"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPort {
    Number(u64),
    Text(String),
}

/// A rule's conditions from config values (local and remote routes alike); the error names
/// `field` and the condition at fault.
pub(crate) fn parse_matcher(
    field: &str,
    domain: Option<&str>,
    cidr: Option<&str>,
    port: Option<&RawPort>,
) -> Result<Matcher, ConfigError> {
    let port = port.map(|p| match p {
        RawPort::Number(n) => n.to_string(),
        RawPort::Text(t) => t.clone(),
    });
    Matcher::parse(domain, cidr, port.as_deref()).map_err(|e| {
        let sub = match e {
            RouteError::Domain(_) => ".domain",
            RouteError::Cidr(_) => ".cidr",
            RouteError::Port(_) => ".port",
            RouteError::Empty => "",
        };
        invalid(format!("{field}{sub}"), e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_spellings() {
        let ip = |s: &str| Some(Address::Ip(s.parse().unwrap()));
        let dom = |s: &str, p| Address::domain(s, p).ok();
        assert_eq!(parse_host_port("vps.example.net:8388"), dom("vps.example.net", 8388));
        assert_eq!(parse_host_port("h:1"), dom("h", 1));
        assert_eq!(parse_host_port("a_b~c-d:080"), dom("a_b~c-d", 80));
        assert_eq!(parse_host_port("10.0.0.5:1080"), ip("10.0.0.5:1080"));
        assert_eq!(parse_host_port("[::1]:8388"), ip("[::1]:8388"));
        assert_eq!(parse_host_port("[2001:db8::7]:65535"), ip("[2001:db8::7]:65535"));
        // inet_aton's short form: the resolver makes 1.2.0.3 of it, so warren does too.
        assert_eq!(parse_host_port("1.2.3:80"), ip("1.2.0.3:80"));
        let long = format!("{}:80", "a".repeat(255));
        assert!(parse_host_port(&long).is_some());
        for bad in [
            "nohost",
            ":80",
            "h:",
            "h:0",
            "h:65536",
            "h:+80",
            "h: 80",
            "h:8x",
            "::1:80",
            "[::1]",
            "[::1]:",
            "[::1]80",
            "[::1]]:80",
            "[]:80",
            "[1.2.3.4]:80",
            "[fe80::1%eth0]:80",
            "a b:80",
            "a@b:80",
            "a[b:80",
            "é.test:80",
            "",
        ] {
            assert_eq!(parse_host_port(bad), None, "{bad:?}");
        }
        let long = format!("{}:80", "a".repeat(256));
        assert_eq!(parse_host_port(&long), None);
    }

    #[test]
    fn errors_name_the_field() {
        let e = host_port("local.remote", "nohost").unwrap_err().to_string();
        assert_eq!(e, "local.remote: \"nohost\" is not host:port");
        let e = one_to_255_bytes("x.name", "").unwrap_err().to_string();
        assert_eq!(e, "x.name: must be 1 to 255 bytes");
        let e = seconds("t", Some(0.0), 1.0).unwrap_err().to_string();
        assert_eq!(e, "t: 0 is not a number of seconds between 0 and one year");
    }
}
