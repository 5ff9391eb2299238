//! The reverse tunnel, both ends.
//!
//! ```text
//! local ══▶ public remote ──mux stream (request as it arrived)──▶ agent ──▶ target
//!                 ▲ server.rs: register, forward        client.rs: run, session ▲
//!                 └──────────── one yamux session (mux.rs), heartbeat.rs ───────┘
//! ```
//!
//! Agent (a warren-remote inside a NATed network, [`client`]): dials the public warren-remote,
//! registers under its name, and serves every stream the public remote opens exactly like a
//! TCP connection to itself. Public remote ([`server`]): keeps the sessions by name
//! ([`registry`]) and hands requests routed `via: NAME` to that agent.

pub mod client;
mod heartbeat;
mod mux;
pub mod registry;
pub mod server;
pub mod udp;
