//! What every connection of one warren-remote shares (config, replay filter, agent registry),
//! and where a tunnel connection came from.
//!
//! The config is replaced whole on reload ([`Shared::set_config`]); each step of a connection
//! reads the current one with [`Shared::config`] and keeps that `Arc` for as long as it needs
//! consistent values. The replay filter, start second, hold factor and agent registry outlive
//! reloads: replay protection does not restart with the config.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::sync::{Mutex, RwLock};

use tokio_util::sync::CancellationToken;
use warren_common::acl::Acl;
use warren_common::config::remote_users::RemoteUser;
use warren_common::config::RemoteConfig;
use warren_common::replay::ReplayFilter;
use warren_common::route::RemoteAction;

use crate::agent::registry::Registry;
use crate::hold::Hold;

/// The state of one running warren-remote, shared by all its connections.
pub struct Shared {
    /// The config in force; read with [`Shared::config`].
    config: RwLock<Arc<RemoteConfig>>,
    /// Salts of tunnel requests inside the timestamp window; refuses stamps before `started`.
    pub replay: Mutex<ReplayFilter>,
    /// The Unix second this remote counts as its start (PROTOCOL.md §10): requests and UDP
    /// packets stamped earlier are refused, so none recorded before a restart works after it.
    pub started: u64,
    /// Reverse-tunnel agents connected to this remote, by name.
    pub agents: Registry,
    /// UDP legs to agents open now (agent/udp.rs caps them).
    pub udp_legs: Arc<AtomicUsize>,
    /// How long this server holds a refused connection (its factor is picked at start).
    pub hold: Hold,
    pub shutdown: CancellationToken,
}

impl Shared {
    /// `started`: see [`Shared::started`].
    pub fn new(config: Arc<RemoteConfig>, shutdown: CancellationToken, started: u64) -> Self {
        Shared {
            config: RwLock::new(config),
            replay: Mutex::new(ReplayFilter::since(started)),
            started,
            agents: Registry::default(),
            udp_legs: Arc::default(),
            hold: Hold::new(&mut rand::thread_rng()),
            shutdown,
        }
    }
}

impl Shared {
    /// The config in force now (a reload may replace it at any moment; this `Arc` stays).
    pub fn config(&self) -> Arc<RemoteConfig> {
        // A poisoned lock only means a writer panicked while swapping an Arc: the value is whole.
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `config` in force for what reads it from now on.
    pub fn set_config(&self, config: Arc<RemoteConfig>) {
        *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }
}

/// Whether any of `config`'s routes leads to an agent, so requests must be kept as they arrived.
pub fn forwards(config: &RemoteConfig) -> bool {
    config
        .routes
        .rules
        .iter()
        .any(|r| matches!(r.action, RemoteAction::Via(_)))
}

/// Who sent a request, as the key that authenticated it says (PROTOCOL.md §17).
#[derive(Debug, Clone)]
pub enum Party {
    /// A client holding the shared `key` (a laptop, or a hop of a chain).
    Client,
    /// The agent listed as `remote.agents.NAME`, holding that entry's own key: it may only
    /// register under that name.
    Agent(String),
    /// The public remote this agent registered with, holding our `remote.agent.key`, on a stream
    /// of our sealed agent link.
    PublicRemote,
    /// A user of `remote.users`, holding its own key (found by the request's hint).
    User(Arc<RemoteUser>),
}

impl Party {
    /// The ACL this party's requests go by: a user's own (its rules, then `remote.acl`'s), or
    /// `config`'s.
    pub fn acl<'a>(&'a self, config: &'a RemoteConfig) -> &'a Acl {
        match self {
            Party::User(user) => &user.acl,
            _ => &config.acl,
        }
    }

    /// The user's name, for logs and per-user metrics.
    pub fn user(&self) -> Option<&str> {
        match self {
            Party::User(user) => Some(&user.name),
            _ => None,
        }
    }
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
