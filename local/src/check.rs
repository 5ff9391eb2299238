//! `warren-local check --connect`: is the way to each remote open, and if not, why? A remote
//! stays silent to anything it cannot accept (docs/PROTOCOL.md §11), so on the laptop a wrong
//! key, a skewed clock and a port that is not warren used to look the same. The check tells them
//! apart with real requests, never with the remote's log:
//!
//! ```text
//! TCP connect ──✗──▶ unreachable (the error)
//!      │
//!      ▼  1 request stamped now; unanswered after 1 s (or 4 TCP round trips), 28 more at once,
//!         stamped ±4, ±8 min and ±1..12 h. Each is CONNECT 0.0.0.0:0: a target every remote
//!         refuses by itself (built-in deny), so an answer costs it no outbound connection
//! the "now" request answered ─────────────▶ warren, key right; clock difference from its TIMESTAMP
//! bytes back that do not authenticate ────▶ not a warren remote (a warren remote never says a
//!                                            word to a request it cannot read)
//! only a shifted request answered ────────▶ key right, clocks too far apart (the difference)
//! silence everywhere ─────────────────────▶ key wrong, or clocks off beyond what was tried
//! ```
//!
//! A stamp shifted by `o` is accepted when the clocks differ by `o ± 120 s`, so the shifts cover
//! differences up to 10 minutes and whole-hour ones (a clock set to local time as UTC).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use warren_common::config::local_routes::{Endpoint, Hop};
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::header::{RequestHeader, ResponseHeader};
use warren_common::time::{skew, TIMESTAMP_WINDOW_SECS};
use warren_common::tunnel::{HandshakeError, PendingTunnel};

/// The clock shifts tried besides 0, in seconds: with the ±120 s window, ±4 and ±8 minutes make
/// one run from −10 to +10 minutes, then whole hours to ±12.
fn shifts() -> Vec<i64> {
    let mut shifts = vec![0, 240, -240, 480, -480];
    for hours in 1..=12 {
        shifts.push(hours * 3600);
        shifts.push(-hours * 3600);
    }
    shifts
}

/// What one request got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// An authenticated response: the remote's clock minus ours, in seconds.
    Answered { skew: i64 },
    /// Bytes that are not a warren response for this key (the first few, as text).
    Foreign(String),
    /// Nothing, until the remote closed or the wait ended.
    Silence,
    /// The TCP connection failed.
    Failed(String),
}

/// What the check concluded about one remote; each prints as one or two lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// TCP could not connect.
    Unreachable(String),
    /// Warren, key right; `skew` is the remote's clock minus ours, seconds.
    Ok { skew: i64, connect: Duration },
    /// Warren, key right, but requests stamped now are refused: the clocks differ by `skew`.
    ClockSkew { skew: i64 },
    /// Something answered that is not warren.
    NotWarren(String),
    /// Every request met silence.
    Silent,
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok { .. })
    }
}

/// Reads through to `inner`, keeping the first bytes read (to show what a non-warren server said).
struct Recording<S> {
    inner: S,
    seen: Vec<u8>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let room = 64usize.saturating_sub(self.seen.len());
        let new: Vec<u8> = buf.filled().iter().skip(before).take(room).copied().collect();
        self.seen.extend_from_slice(&new);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Printable text of what a foreign server said: ASCII kept, the rest as `\xNN`.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

/// A TCP connection to `endpoint`, within `wait`.
async fn dial(endpoint: &Endpoint, wait: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(wait, warren_common::dial::connect(&endpoint.target, None)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no TCP answer within {} s", wait.as_secs_f64())),
    }
}

/// One request stamped `now + shift` on its own connection, awaited up to `wait`.
async fn ask(endpoint: &Endpoint, clock: i64, shift: i64, wait: Duration) -> Heard {
    match dial(endpoint, wait).await {
        Ok(stream) => exchange(stream, endpoint, clock, shift, wait).await,
        Err(e) => Heard::Failed(e),
    }
}

/// Sends one request stamped `now + shift` on `stream` and awaits the answer up to `wait`.
async fn exchange(stream: TcpStream, endpoint: &Endpoint, clock: i64, shift: i64, wait: Duration) -> Heard {
    let mut stream = Recording {
        inner: stream,
        seen: Vec::new(),
    };
    let sent = our_clock(clock);
    let stamp = sent.saturating_add_signed(shift);
    let header = RequestHeader::connect(Address::UNSPECIFIED, stamp);
    let exchange = async {
        let pending = match &endpoint.user_key {
            Some(user) => PendingTunnel::send_request_as_user(&mut stream, &endpoint.key, user, &header, &[]).await?,
            None => PendingTunnel::send_request(&mut stream, &endpoint.key, &header, &[]).await?,
        };
        pending.read_response().await.map(|(response, _)| response)
    };
    let result = tokio::time::timeout(wait, exchange).await;
    let said = printable(&stream.seen);
    match result {
        Ok(Ok(response)) => Heard::Answered {
            skew: answered_skew(&response, our_clock(clock)),
        },
        // Bytes arrived that do not open as a response (or do not parse, or answer another
        // request): whatever it is, it is not a warren remote holding this key.
        Ok(Err(HandshakeError::Unauthenticated | HandshakeError::Malformed(_) | HandshakeError::WrongRequestSalt)) => {
            Heard::Foreign(said)
        }
        // A few bytes and then the close (an HTTP 400, a banner): foreign too.
        Ok(Err(_)) if !stream.seen.is_empty() => Heard::Foreign(said),
        // A warren remote closes a request it cannot accept without a word (sometimes with a
        // reset, when unread bytes remain), or holds it until our wait ends.
        Ok(Err(_)) | Err(_) => Heard::Silence,
    }
}

/// This machine's clock in Unix seconds, moved by `clock` seconds (0 but in tests).
fn our_clock(clock: i64) -> u64 {
    warren_common::time::unix_now().saturating_add_signed(clock)
}

/// The remote's clock minus ours, from its response (`now`: our clock when it arrived).
fn answered_skew(response: &ResponseHeader, now: u64) -> i64 {
    i64::try_from(skew(response.timestamp, now)).unwrap_or(i64::MAX)
}

/// Checks one remote: a TCP connect, then the requests. `clock` moves this machine's clock by
/// that many seconds (0, but a test pretends the clock is wrong).
pub async fn probe(endpoint: &Endpoint, clock: i64, wait: Duration) -> Verdict {
    let started = Instant::now();
    let first = match dial(endpoint, wait).await {
        Ok(stream) => stream,
        Err(e) => return Verdict::Unreachable(e),
    };
    let connect = started.elapsed();
    // The request stamped now goes first, alone: a warren remote holding our key answers it in
    // about one round trip, and then the shifted ones (each a warning in the remote's log) are
    // never sent. Only if it is not answered soon do they follow, while it is still awaited.
    let soon = (connect * 4).max(Duration::from_secs(1)).min(wait);
    let mut now_request = std::pin::pin!(exchange(first, endpoint, clock, 0, wait));
    if let Ok(heard) = tokio::time::timeout(soon, &mut now_request).await {
        if !matches!(heard, Heard::Silence) {
            return conclude(&[(0, heard)], connect);
        }
        let others = ask_shifted(endpoint, clock, wait).await;
        return conclude(&[&[(0, heard)], others.as_slice()].concat(), connect);
    }
    let mut others = std::pin::pin!(ask_shifted(endpoint, clock, wait));
    let mut shifted = None;
    let heard = loop {
        tokio::select! {
            heard = &mut now_request => break heard,
            done = &mut others, if shifted.is_none() => shifted = Some(done),
        }
    };
    if !matches!(heard, Heard::Silence) {
        return conclude(&[(0, heard)], connect);
    }
    let shifted = match shifted {
        Some(done) => done,
        None => others.await,
    };
    conclude(&[&[(0, heard)], shifted.as_slice()].concat(), connect)
}

/// Every shifted request but 0, at once.
async fn ask_shifted(endpoint: &Endpoint, clock: i64, wait: Duration) -> Vec<(i64, Heard)> {
    let asks = shifts()
        .into_iter()
        .filter(|shift| *shift != 0)
        .map(|shift| async move { (shift, ask(endpoint, clock, shift, wait).await) });
    futures_util::future::join_all(asks).await
}

/// The verdict from what each shifted request heard (`heard[i] = (shift, what)`).
pub fn conclude(heard: &[(i64, Heard)], connect: Duration) -> Verdict {
    let at = |shift: i64| heard.iter().find(|(s, _)| *s == shift).map(|(_, h)| h);
    match at(0) {
        Some(Heard::Answered { skew }) => return Verdict::Ok { skew: *skew, connect },
        Some(Heard::Foreign(said)) => return Verdict::NotWarren(said.clone()),
        Some(Heard::Failed(e)) => return Verdict::Unreachable(e.clone()),
        Some(Heard::Silence) | None => {}
    }
    for (_, h) in heard {
        if let Heard::Answered { skew } = h {
            return Verdict::ClockSkew { skew: *skew };
        }
    }
    Verdict::Silent
}

/// The key requests to `endpoint` are sealed with: this laptop's user key, else the shared one.
fn sealing_key(endpoint: &Endpoint) -> &warren_common::crypto::Key {
    endpoint.user_key.as_ref().unwrap_or(&endpoint.key)
}

/// The lines `check --connect` prints for one remote.
pub fn describe(name: &str, endpoint: &Endpoint, verdict: &Verdict) -> String {
    let head = format!("remote {name:?} ({}):", endpoint.address);
    match verdict {
        Verdict::Unreachable(e) => format!("{head} FAILED: TCP: {e}"),
        Verdict::Ok { skew, connect } => {
            let clock = if skew.unsigned_abs() > TIMESTAMP_WINDOW_SECS / 2 {
                format!("its clock is {skew:+} s from ours; past ±{TIMESTAMP_WINDOW_SECS} s it will refuse us: set both clocks (NTP)")
            } else {
                format!("clocks agree ({skew:+} s)")
            };
            format!(
                "{head} ok: TCP in {} ms, a warren remote, key right (id {}), {clock}",
                connect.as_millis(),
                sealing_key(endpoint).id()
            )
        }
        Verdict::ClockSkew { skew } => format!(
            "{head} FAILED: a warren remote and the key is right, but its clock is {skew:+} s from ours \
             (more than the ±{TIMESTAMP_WINDOW_SECS} s it accepts), so it ignores our requests: set both clocks (NTP)"
        ),
        Verdict::NotWarren(said) => format!(
            "{head} FAILED: not a warren remote: it answered with bytes that are not a warren response \
             (a warren remote never answers a request it cannot read){}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": \"{said}\"")
            }
        ),
        Verdict::Silent => {
            let compare = if endpoint.user_key.is_some() {
                "compare your entry under `users:` in `warren-remote check` there; with users listed the shared key alone is refused"
            } else {
                "compare the `key:` line of `warren-remote check` there"
            };
            format!(
                "{head} FAILED: TCP connects, but nothing answered: most likely the key is wrong (ours has id {}; \
                 {compare}), or the clocks differ by more than the 10 minutes and whole hours tried; or it is \
                 not warren but a server that waits for its client",
                sealing_key(endpoint).id()
            )
        }
    }
}

/// The remotes this machine dials itself, and those reached only through a chain (they are
/// not probed: the check would need the hops before them), as `(probed, skipped)` names.
fn dialled(config: &LocalConfig) -> (Vec<&Endpoint>, Vec<(String, String)>) {
    let mut later: Vec<(String, String)> = Vec::new();
    for chain in &config.routing.chains {
        for hop in chain.hops.iter().skip(1) {
            if let Hop::Warren(e) = hop {
                later.push((e.name.clone(), chain.name.clone()));
            }
        }
    }
    let first_hop = |name: &str| {
        config
            .routing
            .chains
            .iter()
            .any(|c| matches!(c.hops.first(), Some(Hop::Warren(e)) if e.name == name))
    };
    let mut probed = Vec::new();
    let mut skipped = Vec::new();
    for remote in &config.routing.remotes {
        match later.iter().find(|(name, _)| *name == remote.name) {
            Some((name, chain)) if !first_hop(name) => skipped.push((name.clone(), chain.clone())),
            _ => probed.push(remote.as_ref()),
        }
    }
    (probed, skipped)
}

/// Probes every remote the config dials and prints a verdict for each; true if all are ok.
pub async fn connect(config: &LocalConfig) -> bool {
    let (probed, skipped) = dialled(config);
    let wait = config.timeouts.connect;
    let verdicts = futures_util::future::join_all(probed.iter().map(|e| probe(e, 0, wait))).await;
    let mut all_ok = true;
    for (endpoint, verdict) in probed.iter().zip(&verdicts) {
        println!("{}", describe(&endpoint.name, endpoint, verdict));
        all_ok &= verdict.is_ok();
    }
    for (name, chain) in skipped {
        println!("remote {name:?}: not checked: reached only through chain {chain:?}, after its first hop");
    }
    all_ok
}
