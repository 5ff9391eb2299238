//! One tunnel connection from its first byte to the command that serves it.
//!
//! ```text
//! read + authenticate the request under one of its keys (deadline: the hold time from
//!   accept, crate::hold) → timestamp window → replay check → may this key ask this?
//!   → connection slot → route → connect | bind | udp | agent (register, forward)
//! ```
//!
//! Until its request passes every check a connection counts in the handshake pool, not against
//! `max_connections` (common's `server::gate`), so probes cannot keep real users waiting.
//! A connection that fails any check gets no byte back and causes no outbound connection; the
//! remote reads and discards until the handshake deadline, which is randomised per server and
//! per connection, so a prober learns nothing from when it closes. Its info and warning lines name the `peer` (and the commands add the `target`);
//! debug lines carry a `tunnel{peer, command, target}` span.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;
use warren_common::config::RemoteConfig;
use warren_common::crypto::Key;
use warren_common::metrics;
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, TIMESTAMP_WINDOW_SECS};
use warren_common::replay::Verdict;
use warren_common::route::RemoteAction;
use warren_common::server::Admission;
use warren_common::time::unix_now;
use warren_common::tunnel::{AcceptedRequest, HandshakeError, Opener};

use crate::respond::{Connection, Request};
use crate::shared::{Origin, Party, Shared};
use crate::{agent, bind, connect, resolve, udp};

/// Serves one tunnel connection: a TCP connection, or a stream a reverse-tunnel session opened.
/// `admission` is its place in the listener's pools ([`Admission::uncounted`] for a stream of
/// an agent session); it moves to the connection pool once the request passes its checks and
/// is dropped when the connection ends.
pub async fn serve<S: Connection>(mut stream: S, origin: Origin, shared: Arc<Shared>, mut admission: Admission) {
    // Context for debug lines only. The lines users read (info and up) name the connection
    // themselves: an enabled span per connection costs ~0.9 KiB of RSS while it lives, and the
    // subscriber keeps its slot after close (+288 % RSS after 10,000 connections had closed,
    // against +23 % without; docs/BENCHMARKS.md).
    let span = tracing::debug_span!("tunnel", peer = %origin.peer(), command = Empty, target = Empty);
    async move {
        let _open = warren_common::metrics::OpenConnection::new();
        let started = std::time::Instant::now();
        let hold = shared
            .hold
            .pick(shared.config().timeouts.handshake, &mut rand::thread_rng());
        let deadline = Instant::now() + hold;
        match check(&mut stream, origin, deadline, &shared).await {
            Ok((accepted, party)) => {
                admission.authenticated().await;
                let request = Request::new(accepted, party, origin, started);
                dispatch(request, stream, &shared).await;
            }
            Err(Refusal::Silent) => {
                // Read and discard until the deadline or until the peer closes: the
                // connection's lifetime and the bytes we consume tell a prober nothing about
                // where its bytes stopped making sense.
                // On the heap: an array here would be part of every connection's task, for
                // the connection's whole life.
                let mut sink = vec![0u8; 2048];
                let _ = tokio::time::timeout_at(deadline, async {
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            Err(Refusal::Over) => {}
        }
    }
    .instrument(span)
    .await
}

/// Why a connection gets no command.
enum Refusal {
    /// Refused silently: read and discard until the handshake deadline.
    Silent,
    /// The connection is already over (closed, failed, or out of time).
    Over,
}

/// The keys a request on a connection from `origin` may be sealed with, each with who holds
/// it: the shared key (unless `remote.users` is set: then users' own keys, found by their hint,
/// take its place), then every listed agent's own key (on our listener) or our own agent key
/// (on a stream of our agent link, opened by the public remote). [`party`] names the holder of
/// the one that matched, from the same `config` (one snapshot: after a reload, an index means
/// another list).
fn keys(origin: Origin, config: &RemoteConfig) -> Vec<&Key> {
    let mut keys = Vec::with_capacity(1 + config.agents.len());
    if config.user_table.is_none() {
        keys.push(&config.key);
    }
    match origin {
        Origin::Tcp { .. } => keys.extend(config.agents.iter().map(|a| &a.key)),
        Origin::Agent { .. } => keys.extend(config.agent.iter().map(|a| &a.key)),
    }
    keys
}

/// Who holds the key that opened the request: the one at that index of [`keys`] (same
/// `origin` and `config`), or a user of `config`'s table. Names are cloned for the match only.
fn party(opener: Opener, origin: Origin, config: &RemoteConfig) -> Option<Party> {
    let i = match opener {
        Opener::User(i) => return config.users.get(i).map(|user| Party::User(user.clone())),
        Opener::Listed(i) => i,
    };
    // The shared key comes first when it is offered at all.
    let i = match (config.user_table.is_none(), i.checked_sub(1)) {
        (true, None) => return Some(Party::Client),
        (true, Some(i)) => i,
        (false, _) => i,
    };
    match origin {
        Origin::Tcp { .. } => config.agents.get(i).map(|a| Party::Agent(a.name.clone())),
        Origin::Agent { .. } => config.agent.as_ref().map(|_| Party::PublicRemote),
    }
}

/// Reads and authenticates the request, then checks its timestamp, its salt and that its key
/// may ask for its command.
async fn check<S>(
    stream: &mut S,
    origin: Origin,
    deadline: Instant,
    shared: &Shared,
) -> Result<(AcceptedRequest, Party), Refusal>
where
    S: AsyncRead + Unpin,
{
    let peer = origin.peer();
    // One snapshot for the whole check: a reload in the middle must not pair a key index with
    // another config's list of agents.
    let config = &*shared.config();
    let keys = keys(origin, config);
    let read = AcceptedRequest::read(
        stream,
        &keys,
        config.user_table.as_deref(),
        crate::shared::forwards(config),
    );
    let request = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(request)) => request,
        Ok(Err(HandshakeError::Unauthenticated | HandshakeError::Malformed(_))) => {
            tracing::info!(%peer, "request failed authentication (a probe, or a client with another key): ignored");
            metrics::get().refused("unauthenticated");
            return Err(Refusal::Silent);
        }
        Ok(Err(e)) => {
            tracing::debug!("tunnel handshake failed: {e}");
            metrics::get().refused("incomplete");
            return Err(Refusal::Over);
        }
        Err(_) => {
            tracing::debug!("no complete request before the handshake deadline");
            metrics::get().refused("incomplete");
            return Err(Refusal::Over);
        }
    };
    let now = unix_now();
    let skew = warren_common::time::skew(request.header.timestamp, now);
    if skew.unsigned_abs() > u128::from(TIMESTAMP_WINDOW_SECS) {
        tracing::warn!(
            %peer,
            "request stamped {skew:+} s from our clock, outside ±{TIMESTAMP_WINDOW_SECS} s: ignored. If this is your \
             own client, synchronise both machines' clocks (NTP)"
        );
        metrics::get().refused("stale");
        return Err(Refusal::Silent);
    }
    let verdict = shared
        .replay
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .check(request.salt, request.header.timestamp, now);
    match verdict {
        Verdict::Fresh => {}
        Verdict::BeforeStart => {
            let behind = shared.started.saturating_sub(request.header.timestamp);
            tracing::warn!(
                %peer,
                "request stamped {behind} s before this remote started: ignored (a replay from before a restart, \
                 or a client whose clock is behind ours: synchronise the clocks (NTP))"
            );
            metrics::get().refused("before_start");
            return Err(Refusal::Silent);
        }
        Verdict::Replay | Verdict::OutsideWindow => {
            tracing::warn!(%peer, "replayed request (salt seen before): ignored");
            metrics::get().refused("replay");
            return Err(Refusal::Silent);
        }
    }
    let Some(party) = party(request.opener, origin, config) else {
        return Err(Refusal::Silent);
    };
    let registers = request.header.command == Command::Agent;
    match &party {
        // Only an agent's own key may register, and only under its own name: the shared key is
        // on every laptop, and one agent's key must not let it take another's name.
        Party::Agent(name)
            if registers && matches!(&request.header.target, Address::Domain(n, 0) if n.as_str() == name.as_str()) => {}
        Party::Agent(name) => {
            tracing::warn!(%peer, agent = %name, "request with agent {name:?}'s key that is not its registration: ignored");
            metrics::get().refused("misused_key");
            return Err(Refusal::Silent);
        }
        Party::Client | Party::PublicRemote | Party::User(_) if registers => {
            tracing::warn!(
                %peer,
                "agent registration without an agent's key: ignored (agents register with their own key, listed \
                 under remote.agents)"
            );
            metrics::get().refused("misused_key");
            return Err(Refusal::Silent);
        }
        // The public remote's own requests on our link are its UDP legs and nothing else: a
        // CONNECT or BIND always arrives as a laptop's request, sealed with the shared key. So a
        // leaked agent key, even with the agent's dial redirected to an impostor, opens no
        // TCP connection inside the agent's network.
        Party::PublicRemote if request.header.command != Command::UdpOverTcp => {
            tracing::warn!(%peer, "request with our agent key that is not a UDP leg: ignored");
            metrics::get().refused("misused_key");
            return Err(Refusal::Silent);
        }
        Party::Client | Party::PublicRemote | Party::User(_) => {}
    }
    Ok((request, party))
}

/// Hands the request to the one command that serves it (CONNECT and BIND go where their route
/// says; UDP datagrams are routed one by one, in udp/nat.rs).
/// Every command has the same shape, `serve(request, stream, shared)`, and answers through
/// [`Request::answer`] before it relays.
async fn dispatch<S: Connection>(request: Request, stream: S, shared: &Shared) {
    let header = request.header();
    let span = tracing::Span::current();
    span.record("command", tracing::field::debug(header.command));
    span.record("target", tracing::field::display(&header.target));
    // Every command but a direct CONNECT is boxed: inline, the largest command's states would
    // set the size of every connection's task for its whole (mostly idle) life.
    match header.command {
        Command::Connect => match shared.config().routes.route(&header.target) {
            RemoteAction::Via(agent) => Box::pin(agent::server::forward(request, stream, shared, agent)).await,
            RemoteAction::Direct => connect::serve(request, stream, shared).await,
        },
        Command::Agent => Box::pin(agent::server::register(request, stream, shared)).await,
        // A BIND is routed by its request's target (the address its peer will come from): via
        // an agent, the agent listens inside its network and answers the local itself.
        Command::Bind => match shared.config().routes.route(&header.target) {
            RemoteAction::Via(agent) => Box::pin(agent::server::forward(request, stream, shared, agent)).await,
            RemoteAction::Direct => Box::pin(bind::serve(request, stream, shared)).await,
        },
        Command::UdpOverTcp => Box::pin(udp::tcp::serve(request, stream, shared)).await,
        // A name is resolved where a connection to it would be made: if any rule sends one
        // (on any port) via an agent, by that agent.
        Command::Resolve => {
            let config = shared.config();
            let via = match &header.target {
                Address::Domain(name, _) => config.routes.actions_for_name(name).into_iter().find_map(|a| match a {
                    RemoteAction::Via(agent) => Some(agent.as_str()),
                    RemoteAction::Direct => None,
                }),
                Address::Ip(_) => None,
            };
            match via {
                Some(agent) => Box::pin(agent::server::forward(request, stream, shared, agent)).await,
                None => Box::pin(resolve::serve(request, stream, shared)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;
    use warren_common::config::{RawConfig, RemoteConfig};
    use warren_common::proto::header::RequestHeader;
    use warren_common::proto::status::Status;
    use warren_common::tunnel::PendingTunnel;

    use super::*;

    /// A connection's task is as large as the largest state of its future, for the connection's
    /// whole (mostly idle) life: commands other than a direct CONNECT, the answer and the
    /// request itself are boxed, which took it from 4.6 to 2.7 KiB (docs/BENCHMARKS.md,
    /// "Memory"). The budget has room for compiler changes, none for an inline BIND.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let yaml = format!(
            "key: '{}'\nremote: {{ listen: '127.0.0.1:0' }}",
            Key::generate().to_base64()
        );
        let config = RemoteConfig::try_from(&RawConfig::from_yaml(&yaml, "t").expect("yaml")).expect("config");
        let shared = Arc::new(Shared::new(Arc::new(config), CancellationToken::new(), unix_now()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _local = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (accepted, peer) = listener.accept().await.expect("accept");
        let origin = Origin::Tcp { peer, local: None };
        let connection = serve(accepted, origin, shared, Admission::uncounted());
        let size = std::mem::size_of_val(&connection);
        println!("a connection's future: {size} bytes");
        assert!(
            size <= 3584,
            "a connection's future is {size} bytes: box the large, short-lived states"
        );
    }

    /// On an agent's link, a request sealed with the agent's own key is the public remote's, and
    /// only its UDP legs may use it: a CONNECT under that key opens nothing, while the same
    /// CONNECT under the shared key (a laptop's, forwarded) is served. A leaked agent key with the
    /// agent's dial redirected to an impostor therefore reaches no TCP service inside campus.
    #[tokio::test]
    async fn on_an_agent_link_the_agent_key_opens_no_connect() {
        let (key, agent_key) = (Key::generate(), Key::generate());
        let yaml = format!(
            "key: '{}'\nremote:\n  listen: '127.0.0.1:0'\n  handshake_timeout: 2\n  acl: [ {{ allow: '127.0.0.1/32' }} ]\n  \
             agent: {{ server: '127.0.0.1:9', name: campus, key: '{}' }}",
            key.to_base64(),
            agent_key.to_base64()
        );
        let config = RemoteConfig::try_from(&RawConfig::from_yaml(&yaml, "t").expect("yaml")).expect("config");
        let shared = Arc::new(Shared::new(
            Arc::new(config),
            CancellationToken::new(),
            unix_now().saturating_sub(600),
        ));
        let target = TcpListener::bind("127.0.0.1:0").await.expect("target");
        let to = Address::Ip(target.local_addr().expect("addr"));
        let origin = Origin::Agent {
            server: "127.0.0.1:9".parse().expect("addr"),
            local: None,
        };
        let connect = |sealing: Key| {
            let (ours, theirs) = tokio::io::duplex(1 << 16);
            tokio::spawn(serve(theirs, origin, shared.clone(), Admission::uncounted()));
            let header = RequestHeader::connect(to.clone(), unix_now());
            async move {
                let pending = PendingTunnel::send_request(ours, &sealing, &header, b"").await?;
                let bounded = tokio::time::timeout(Duration::from_secs(30), pending.read_response());
                bounded
                    .await
                    .map_err(|_| HandshakeError::Closed)?
                    .map(|(r, _)| r.status)
            }
        };
        let refused = connect(agent_key).await;
        assert!(matches!(refused, Err(HandshakeError::Closed)), "{refused:?}");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), target.accept())
                .await
                .is_err(),
            "the agent key's CONNECT reached its target"
        );
        let served = connect(key).await;
        assert!(matches!(served, Ok(Status::Succeeded)), "{served:?}");
        let reached = tokio::time::timeout(Duration::from_secs(30), target.accept()).await;
        assert!(
            reached.is_ok_and(|r| r.is_ok()),
            "the laptop's CONNECT reaches its target"
        );
    }
}
