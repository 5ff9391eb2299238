//! What every connection of one warren-remote shares (config, replay filter, agent registry),
//! and where a tunnel connection came from.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use warren_common::config::RemoteConfig;
use warren_common::replay::ReplayFilter;
use warren_common::route::RemoteAction;

use crate::agent::registry::Registry;
use crate::hold::Hold;

/// The state of one running warren-remote, shared by all its connections.
pub struct Shared {
    pub config: RemoteConfig,
    /// Salts of tunnel requests inside the timestamp window; refuses stamps before `started`.
    pub replay: Mutex<ReplayFilter>,
    /// The Unix second this remote counts as its start (PROTOCOL.md §10): requests and UDP
    /// packets stamped earlier are refused, so none recorded before a restart works after it.
    pub started: u64,
    /// Reverse-tunnel agents connected to this remote, by name.
    pub agents: Registry,
    /// UDP legs to agents open now (agent/udp.rs caps them).
    pub udp_legs: Arc<AtomicUsize>,
    /// Whether any route leads to an agent, so requests must be kept as they arrived.
    pub forwards: bool,
    /// How long this server holds a refused connection (its factor is picked at start).
    pub hold: Hold,
    pub shutdown: CancellationToken,
}

impl Shared {
    /// `started`: see [`Shared::started`].
    pub fn new(config: RemoteConfig, shutdown: CancellationToken, started: u64) -> Self {
        let forwards = config
            .routes
            .rules
            .iter()
            .any(|r| matches!(r.action, RemoteAction::Via(_)));
        Shared {
            config,
            replay: Mutex::new(ReplayFilter::since(started)),
            started,
            agents: Registry::default(),
            udp_legs: Arc::default(),
            forwards,
            hold: Hold::new(&mut rand::thread_rng()),
            shutdown,
        }
    }
}

/// Who sent a request, as the key that authenticated it says (PROTOCOL.md §17).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Party {
    /// A client holding the shared `key` (a laptop, or a hop of a chain).
    Client,
    /// The agent listed as `remote.agents.NAME`, holding that entry's own key: it may only
    /// register under that name.
    Agent(String),
    /// The public remote this agent registered with, holding our `remote.agent.key`, on a stream
    /// of our sealed agent link.
    PublicRemote,
}

/// Where a tunnel connection came from.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A TCP connection to our listener. `local` is this end's address of it (unknown if the
    /// socket would not say), which BIND announces when the remote listens on an unspecified
    /// address.
    Tcp {
        peer: SocketAddr,
        local: Option<SocketAddr>,
    },
    /// A stream the public remote opened in this agent's reverse-tunnel session to `server`.
    /// `local` is this agent's end of that session's connection: its address on the network it
    /// serves, where a BIND listens (unknown if the socket would not say).
    Agent {
        server: SocketAddr,
        local: Option<SocketAddr>,
    },
}

impl Origin {
    /// The other end, named on every line logged for the connection.
    pub fn peer(&self) -> SocketAddr {
        match *self {
            Origin::Tcp { peer, .. } => peer,
            Origin::Agent { server, .. } => server,
        }
    }
}
