//! warren's shared core: the wire protocol, the crypto, config, ACL and the relay.
//!
//! The modules split into two kinds, on purpose:
//! - pure protocol code with no networking ([`proto`], [`crypto`], [`acl`], [`config`]): every
//!   message has exactly one checked decoder and one encoder, used by every caller, and unit and
//!   property tests exercise them without sockets;
//! - the async glue that puts them on sockets ([`stream`], [`relay`], [`server`], [`net`]), and
//!   [`cli`], the start-up and exit path both binaries share.
#![deny(unsafe_code)] // two audited exceptions: trim.rs (malloc_trim, measured in docs/BENCHMARKS.md) and
                      // datagrams.rs (one setsockopt that no maintained crate wraps)

pub mod acl;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod datagrams;
pub mod dial;
pub mod dns;
pub mod framed;
#[doc(hidden)]
pub mod fuzzing; // the cargo-fuzz targets' bodies, shared with the stable corpus replay
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pac;
pub mod proto;
pub mod relay;
pub mod replay;
pub mod route;
pub mod server;
pub mod stream;
pub mod time;
pub mod trim;
pub mod tunnel;
pub mod udp_session;
pub mod udp_thread;
