//! The local's front ends for programs that do not speak SOCKS (`local.forwards`, `local.dns`,
//! `local.redir`): their serde shapes and the checked settings warren-local serves them from.
//! Each is off unless its section is present; every address they carry goes through
//! `local.routes` like a SOCKS request.
//!
//! ```text
//! forwards: [{ listen, to, tcp?, udp? }]   ─▶ Forward  (a fixed target per listener)
//! dns:      { listen, upstreams?, ttl?, cache_size? } ─▶ DnsSettings
//! redir:    { listen, udp? }               ─▶ RedirSettings (Linux: REDIRECT / TPROXY)
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use super::parse::{host_port, socket_addr};
use crate::net::ExtraListen;
use crate::proto::address::Address;

/// One entry of `local.forwards`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub listen: Option<String>,
    pub to: Option<String>,
    pub tcp: Option<bool>,
    pub udp: Option<bool>,
}

/// `local.dns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub listen: Option<String>,
    pub upstreams: Option<Vec<String>>,
    pub ttl: Option<u32>,
    pub cache_size: Option<usize>,
}

/// `local.redir`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedir {
    pub listen: Option<String>,
    pub udp: Option<bool>,
}

/// A port forward: every TCP connection to `listen` (and every UDP flow, when `udp`) is
/// carried to `to`, as a CONNECT (UDP ASSOCIATE) to it would be.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub listen: SocketAddr,
    /// The fixed target, routed by `local.routes` (a name is resolved where the route ends).
    pub to: Address,
    /// Accept TCP connections on `listen` (`tcp`, default: true unless `udp: true` alone).
    pub tcp: bool,
    /// Accept UDP datagrams on `listen` (`udp`, default false).
    pub udp: bool,
}

/// The DNS forwarder (`local.dns`), on UDP and TCP at `listen`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    pub listen: SocketAddr,
    /// Where names routed `direct` are asked (UDP, then TCP when truncated); empty: the
    /// `nameserver` lines of /etc/resolv.conf, read at start.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of answers resolved on the far side, whose resolver reports none (`ttl`, seconds,
    /// default 60, 1..=86400).
    pub ttl: u32,
    /// Responses kept in the cache (`cache_size`, default 4096; 0 turns caching off).
    pub cache_size: usize,
}

/// The transparent proxy (`local.redir`), Linux only.
#[derive(Debug, Clone, PartialEq)]
pub struct RedirSettings {
    /// The TCP port nftables' `redirect` sends connections to (and the UDP port of `tproxy`).
    pub listen: SocketAddr,
    /// Also take UDP redirected by nftables' `tproxy` (needs CAP_NET_ADMIN).
    pub udp: bool,
}

/// The checked `forwards`, `dns` and `redir` of the `local:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Programs {
    pub forwards: Vec<Forward>,
    pub dns: Option<DnsSettings>,
    pub redir: Option<RedirSettings>,
}

/// Longest `local.dns.ttl`: a day, RFC 8767's cap on serving data past its TTL.
const MAX_TTL: u32 = 86_400;
/// Most entries `local.dns.cache_size` may ask for.
const MAX_CACHE: usize = 1 << 20;
/// How long an address the DNS forwarder answered is remembered for `redir`, at least.
pub const NAME_MAP_FLOOR: Duration = Duration::from_secs(600);

impl Programs {
    /// Checks the three sections; errors name the field (`local.forwards[1].to`).
    pub(crate) fn from_raw(
        forwards: Option<&[RawForward]>,
        dns: Option<&RawDns>,
        redir: Option<&RawRedir>,
    ) -> Result<Programs, ConfigError> {
        let mut checked: Vec<Forward> = Vec::new();
        for (i, raw) in forwards.unwrap_or_default().iter().enumerate() {
            let field = |name: &str| format!("local.forwards[{i}].{name}");
            let Some(listen) = raw.listen.as_deref() else {
                return Err(invalid(field("listen"), "missing (the IP:port to listen on)"));
            };
            let listen = socket_addr(&field("listen"), Some(listen), "")?;
            let Some(to) = raw.to.as_deref() else {
                return Err(invalid(field("to"), "missing (the host:port to carry connections to)"));
            };
            let (_, to) = host_port(&field("to"), to)?;
            let udp = raw.udp.unwrap_or(false);
            let tcp = raw.tcp.unwrap_or(!udp);
            if !tcp && !udp {
                return Err(invalid(
                    field("tcp"),
                    "`tcp: false` without `udp: true` forwards nothing",
                ));
            }
            checked.push(Forward { listen, to, tcp, udp });
        }
        let dns = match dns {
            None => None,
            Some(raw) => {
                let Some(listen) = raw.listen.as_deref() else {
                    return Err(invalid("local.dns.listen", "missing (e.g. \"127.0.0.1:5353\")"));
                };
                let listen = socket_addr("local.dns.listen", Some(listen), "")?;
                let mut upstreams = Vec::new();
                for (i, text) in raw.upstreams.iter().flatten().enumerate() {
                    let field = format!("local.dns.upstreams[{i}]");
                    // A bare IP means port 53.
                    let addr = text
                        .parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                        .or_else(|_| socket_addr(&field, Some(text), ""))?;
                    if answers_on(addr, listen) {
                        return Err(invalid(&field, "is local.dns.listen itself (a loop)"));
                    }
                    upstreams.push(addr);
                }
                let ttl = raw.ttl.unwrap_or(60);
                if !(1..=MAX_TTL).contains(&ttl) {
                    return Err(invalid("local.dns.ttl", format!("{ttl} is not 1 to {MAX_TTL} seconds")));
                }
                let cache_size = raw.cache_size.unwrap_or(4096);
                if cache_size > MAX_CACHE {
                    return Err(invalid(
                        "local.dns.cache_size",
                        format!("{cache_size} is more than {MAX_CACHE}"),
                    ));
                }
                Some(DnsSettings {
                    listen,
                    upstreams,
                    ttl,
                    cache_size,
                })
            }
        };
        let redir = match redir {
            None => None,
            Some(raw) => {
                let Some(listen) = raw.listen.as_deref() else {
                    return Err(invalid("local.redir.listen", "missing (e.g. \"127.0.0.1:12345\")"));
                };
                let listen = socket_addr("local.redir.listen", Some(listen), "")?;
                if !cfg!(target_os = "linux") {
                    return Err(invalid(
                        "local.redir",
                        "the transparent proxy needs Linux (SO_ORIGINAL_DST, TPROXY)",
                    ));
                }
                Some(RedirSettings {
                    listen,
                    udp: raw.udp.unwrap_or(false),
                })
            }
        };
        Ok(Programs {
            forwards: checked,
            dns,
            redir,
        })
    }

    /// The sockets these front ends listen on, in the order the local serves them: forwards,
    /// then the DNS forwarder (TCP and UDP), then the transparent proxy.
    pub fn listeners(&self) -> Vec<ExtraListen> {
        let mut all = Vec::new();
        for (i, f) in self.forwards.iter().enumerate() {
            all.push(ExtraListen {
                field: format!("local.forwards[{i}].listen"),
                addr: f.listen,
                tcp: f.tcp,
                udp: f.udp,
            });
        }
        if let Some(dns) = &self.dns {
            all.push(ExtraListen {
                field: "local.dns.listen".to_owned(),
                addr: dns.listen,
                tcp: true,
                udp: true,
            });
        }
        if let Some(redir) = &self.redir {
            all.push(ExtraListen {
                field: "local.redir.listen".to_owned(),
                addr: redir.listen,
                tcp: true,
                udp: redir.udp,
            });
        }
        all
    }

    /// Refuses two listeners on one port of one protocol (the second bind would fail at start),
    /// `main` being `local.listen` (TCP) and `local.metrics.listen`. Port 0 never clashes.
    pub(crate) fn check_clashes(&self, main: &[(&str, SocketAddr)]) -> Result<(), ConfigError> {
        let mut seen: Vec<ExtraListen> = main
            .iter()
            .map(|(field, addr)| ExtraListen {
                field: (*field).to_owned(),
                addr: *addr,
                tcp: true,
                udp: false,
            })
            .collect();
        // A forward whose target is one of our own listeners would connect to itself for ever.
        for (i, forward) in self.forwards.iter().enumerate() {
            let Address::Ip(to) = &forward.to else { continue };
            let mut own: Vec<SocketAddr> = main.iter().map(|(_, addr)| *addr).collect();
            own.extend(self.listeners().iter().map(|l| l.addr));
            if own.iter().any(|listen| answers_on(*to, *listen)) {
                return Err(invalid(
                    format!("local.forwards[{i}].to"),
                    format!("{to} is this warren-local's own listener (a loop)"),
                ));
            }
        }
        for this in self.listeners() {
            let clash = seen.iter().find(|o| {
                let same_port = o.addr.port() == this.addr.port() && this.addr.port() != 0;
                let overlap =
                    o.addr.ip() == this.addr.ip() || o.addr.ip().is_unspecified() || this.addr.ip().is_unspecified();
                same_port && overlap && ((o.tcp && this.tcp) || (o.udp && this.udp))
            });
            if let Some(other) = clash {
                return Err(invalid(&this.field, format!("{} is also {}", this.addr, other.field)));
            }
            seen.push(this);
        }
        Ok(())
    }
}

/// Whether a packet sent to `server` reaches a socket listening on `listen`: the same
/// address, or, `listen` being unspecified (every address), a loopback one on its port. (An
/// address of another interface of this machine is not seen here.)
pub fn answers_on(server: SocketAddr, listen: SocketAddr) -> bool {
    let (server_ip, listen_ip) = (server.ip().to_canonical(), listen.ip().to_canonical());
    server.port() == listen.port()
        && (server_ip == listen_ip || (listen_ip.is_unspecified() && server_ip.is_loopback()))
}

/// The `nameserver` addresses of a resolv.conf text (port 53), in order; other lines ignored.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(ip)) => ip.parse::<std::net::IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
