//! How the DNS forwarder answers one query: from the cache, from the far side of the tunnel
//! (RESOLVE, PROTOCOL.md §20), or from the upstream servers, as `local.routes` decide for the
//! name. Every answer is cached by its TTL and its addresses remembered for `redir`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use warren_common::config::local_programs::{answers_on, resolv_conf_nameservers, DnsSettings, NAME_MAP_FLOOR};
use warren_common::config::local_routes::LocalAction;
use warren_common::dns::{self, Cache, NameMap, Query, QueryError};
use warren_common::proto::address::Address;
use warren_common::proto::decode_exact;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::resolve::{ResolveAnswer, MAX_ADDRESSES};
use warren_common::proto::status::Status;
use warren_common::time::unix_now;

use crate::outbound::current::Latest;
use crate::outbound::Outbounds;

/// RFC 1035 RCODEs this module answers with.
const NOERROR: u16 = 0;
const SERVFAIL: u16 = 2;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;
/// How long one upstream server has to answer (then the next is asked).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Unrelated datagrams (wrong ID or question) tolerated on an upstream socket per query.
const MAX_STRAYS: usize = 8;
/// The longest an upstream's answer stays cached (RFC 8767 §4's cap).
const MAX_UPSTREAM_TTL: u32 = 86_400;
/// Addresses remembered for `redir`.
const NAME_MAP_CAPACITY: usize = 65_536;

/// The forwarder's state: settings, cache, and the address → name map it shares with `redir`.
pub struct Resolver {
    latest: Latest,
    ttl: u32,
    upstreams: Vec<SocketAddr>,
    /// The cache and the config generation it was filled under: a reload empties it (a name
    /// may now route elsewhere).
    cache: Option<Mutex<(u64, Cache)>>,
    cache_size: usize,
    names: Arc<Mutex<NameMap>>,
}

impl Resolver {
    /// The forwarder for `settings`; without `upstreams` it asks the `nameserver`s of
    /// /etc/resolv.conf (systemd-resolved's own upstreams when that file names only its stub,
    /// which would hand split-DNS names straight back), never itself (a server that is
    /// `listen`, in any spelling, is left out: every direct query would loop).
    pub fn new(settings: &DnsSettings, latest: Latest, names: Arc<Mutex<NameMap>>) -> Resolver {
        let mut upstreams = settings.upstreams.clone();
        if upstreams.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            upstreams = resolv_conf_nameservers(&text);
            let stub = std::net::IpAddr::from([127, 0, 0, 53]);
            if !upstreams.is_empty() && upstreams.iter().all(|u| u.ip() == stub) {
                let text = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default();
                upstreams = resolv_conf_nameservers(&text);
            }
        }
        upstreams.retain(|u| !answers_on(*u, settings.listen));
        if upstreams.is_empty() {
            tracing::warn!(
                "local.dns: no upstream DNS server (set local.dns.upstreams): names routed `direct` get SERVFAIL"
            );
        }
        Resolver {
            ttl: settings.ttl,
            upstreams,
            cache: (settings.cache_size > 0)
                .then(|| Mutex::new((latest.generation(), Cache::new(settings.cache_size)))),
            cache_size: settings.cache_size,
            latest,
            names,
        }
    }

    /// A fresh address → name map for a [`Resolver`] and `redir` to share.
    pub fn name_map() -> Arc<Mutex<NameMap>> {
        Arc::new(Mutex::new(NameMap::new(NAME_MAP_CAPACITY)))
    }

    /// The response to the message `bytes` from `peer`, cut to the query's UDP size when
    /// `udp`; None when the message deserves no answer (not a query at all).
    pub async fn answer(&self, bytes: &[u8], peer: SocketAddr, udp: bool) -> Option<Vec<u8>> {
        let metrics = warren_common::metrics::get();
        let query = match dns::parse_query(bytes) {
            Ok(query) => query,
            Err(QueryError::Drop) => {
                tracing::debug!(%peer, len = bytes.len(), "DNS: not a query: dropped");
                metrics.request_with("dns", "malformed", "dropped");
                return None;
            }
            Err(QueryError::Answer(refusal)) => {
                tracing::info!(%peer, len = bytes.len(), "DNS: malformed query: answered FORMERR/NOTIMP");
                metrics.request_with("dns", "malformed", "formerr");
                return Some(refusal);
            }
        };
        let started = Instant::now();
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| self.fresh_cache(c).1.get(&query, Instant::now()));
        let (response, via) = match cached {
            Some(hit) => (hit, "cache"),
            None => {
                // One deadline for the whole lookup: the tunnel's, or the upstreams' in turn.
                let deadline = self.latest.read().config.timeouts.connect;
                let (response, via, max_ttl) =
                    match tokio::time::timeout(deadline, self.resolve(&query, bytes, peer)).await {
                        Ok(resolved) => resolved,
                        Err(_) => (dns::rcode_answer(&query, SERVFAIL), "timeout", 0),
                    };
                self.remember(&query, &response, max_ttl, via == "tunnel");
                (response, via)
            }
        };
        let rcode = response.get(3).map_or(SERVFAIL, |b| u16::from(b & 0x0f));
        metrics.request_with("dns", via, rcode_name(rcode));
        tracing::info!(%peer, name = %query.name().escape_ascii(), qtype = query.qtype(), via,
            rcode = rcode_name(rcode), duration_ms = started.elapsed().as_millis() as u64, "DNS query answered");
        Some(match udp {
            true => dns::truncate_for_udp(&response, dns::udp_limit(&query)),
            false => response,
        })
    }

    /// The cache, emptied first if the config changed since it was filled.
    fn fresh_cache<'a>(&self, cache: &'a Mutex<(u64, Cache)>) -> std::sync::MutexGuard<'a, (u64, Cache)> {
        let mut guard = lock(cache);
        let now = self.latest.generation();
        if guard.0 != now {
            *guard = (now, Cache::new(self.cache_size));
        }
        guard
    }

    /// Caches `response` (at most `max_ttl` s); a far-side answer (`tunnelled`) also maps its
    /// addresses back to the name asked, for redir. Only those: an upstream's answer could
    /// claim any address (a page's DNS answering 10.x for its own name would otherwise rename
    /// later connections to 10.x).
    fn remember(&self, query: &Query, response: &[u8], max_ttl: u32, tunnelled: bool) {
        let now = Instant::now();
        if let Some(cache) = &self.cache {
            self.fresh_cache(cache).1.insert(query, response, now, max_ttl);
        }
        if !tunnelled {
            return;
        }
        let addresses = dns::answer_addresses(response);
        if !addresses.is_empty() {
            let mut names = lock(&self.names);
            for (ip, ttl) in addresses {
                let keep = Duration::from_secs(u64::from(ttl)).max(NAME_MAP_FLOOR);
                names.remember(ip, query.name(), keep, now);
            }
        }
    }

    /// Resolves `query` (whose message is `bytes`) as the routes say: (response, how, the
    /// TTL cap for caching it). The name goes through the tunnel if any connection to it would
    /// ([`Outbounds::route_name`]), so no lookup in the clear precedes a tunnelled connection.
    async fn resolve(&self, query: &Query, bytes: &[u8], peer: SocketAddr) -> (Vec<u8>, &'static str, u32) {
        let outbounds = self.latest.outbounds(peer);
        // Routed on its labels as sent, whatever bytes they hold; it travels (RESOLVE) only
        // as a name the wire can carry.
        let lossy = String::from_utf8_lossy(query.name());
        let action = outbounds.route_name(&lossy).clone();
        let target = std::str::from_utf8(query.name())
            .ok()
            .and_then(|name| Address::domain(name, 0).ok());
        match (action, target) {
            (LocalAction::Block, _) => (dns::rcode_answer(query, REFUSED), "blocked", 0),
            (LocalAction::Direct, _) => match self.ask_upstreams(query, bytes).await {
                Some(response) => (response, "upstream", MAX_UPSTREAM_TTL),
                None => (dns::rcode_answer(query, SERVFAIL), "upstream", 0),
            },
            // A tunnelled name that cannot travel as one (the root, spaces, odd bytes) is
            // refused, never asked here.
            (LocalAction::Proxy(_), None) => (dns::rcode_answer(query, REFUSED), "tunnel", 0),
            // The far side answers addresses only (its getaddrinfo). Other types of a
            // tunnelled name get an empty NOERROR (NODATA), not an error: a stub resolver
            // asks its next nameserver after NOTIMP or REFUSED, in the clear.
            (LocalAction::Proxy(_), Some(_)) if !query.is_address() => (dns::rcode_answer(query, NOERROR), "tunnel", 0),
            (action @ LocalAction::Proxy(_), Some(target)) => (
                far_side(&outbounds, &action, target, query, self.ttl).await,
                "tunnel",
                self.ttl,
            ),
        }
    }

    /// Asks each upstream in turn the client's own `message` (UDP, then TCP when the answer
    /// is truncated).
    async fn ask_upstreams(&self, query: &Query, message: &[u8]) -> Option<Vec<u8>> {
        for server in &self.upstreams {
            let Some(response) = over_udp(*server, message, query).await else {
                continue;
            };
            // TC (RFC 1035 §4.1.1): the whole answer needs TCP.
            let truncated = response.get(2).is_some_and(|b| b & 0x02 != 0);
            if !truncated {
                return Some(response);
            }
            if let Some(full) = over_tcp(*server, message, query).await {
                return Some(full);
            }
            return Some(response);
        }
        None
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// RESOLVE through the route: the far side's addresses as an answer of `ttl` seconds; its
/// refusals as RCODEs (0x04 host unreachable: NXDOMAIN; 0x02 not allowed: REFUSED; other
/// failures, the way there among them: SERVFAIL).
async fn far_side(outbounds: &Outbounds, action: &LocalAction, target: Address, query: &Query, ttl: u32) -> Vec<u8> {
    let header = RequestHeader::new(Command::Resolve, target.clone(), unix_now());
    let mut outbound = match outbounds.open_along(action, &header, &[]).await {
        Ok((_, outbound)) => outbound,
        Err(error) => {
            error.log(outbounds.peer(), &target);
            let rcode = match error.status() {
                Status::HostUnreachable => NXDOMAIN,
                Status::NotAllowed => REFUSED,
                _ => SERVFAIL,
            };
            return dns::rcode_answer(query, rcode);
        }
    };
    // The whole answer, then the far side's end of stream: bounded in size and time.
    let most = 1 + 17 * MAX_ADDRESSES as u64;
    let mut bytes = Vec::new();
    let mut limited = (&mut outbound).take(most + 1);
    let read = tokio::time::timeout(outbounds.connect_timeout(), limited.read_to_end(&mut bytes));
    match read.await {
        Ok(Ok(_)) => match decode_exact::<ResolveAnswer>(&bytes) {
            Ok(answer) => dns::addresses_answer(query, answer.addresses(), ttl),
            Err(e) => {
                tracing::warn!(peer = %outbounds.peer(), %target, "RESOLVE answer unreadable: {e}");
                dns::rcode_answer(query, SERVFAIL)
            }
        },
        _ => dns::rcode_answer(query, SERVFAIL),
    }
}

/// One exchange with `server` over UDP from a fresh socket (a random source port per query,
/// RFC 5452 §9.2); datagrams that do not answer `query` are ignored.
async fn over_udp(server: SocketAddr, message: &[u8], query: &Query) -> Option<Vec<u8>> {
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await.ok()?;
    socket.connect(server).await.ok()?;
    socket.send(message).await.ok()?;
    let mut buf = vec![0u8; 65_535];
    let exchange = async {
        for _ in 0..MAX_STRAYS {
            let n = socket.recv(&mut buf).await.ok()?;
            let response = buf.get(..n)?;
            if dns::answers(query, response) {
                return Some(response.to_vec());
            }
        }
        None
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await.ok().flatten()
}

/// One exchange with `server` over TCP (RFC 7766), for an answer too large for UDP.
async fn over_tcp(server: SocketAddr, message: &[u8], query: &Query) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.ok()?;
        let len = u16::try_from(message.len()).ok()?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(message);
        stream.write_all(&framed).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut response = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut response).await.ok()?;
        dns::answers(query, &response).then_some(response)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await.ok().flatten()
}

/// RFC 1035 §4.1.1 / RFC 6895 names, for logs and metrics.
fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        NOERROR => "noerror",
        1 => "formerr",
        SERVFAIL => "servfail",
        NXDOMAIN => "nxdomain",
        NOTIMP => "notimp",
        REFUSED => "refused",
        _ => "other",
    }
}
