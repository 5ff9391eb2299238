//! `remote.users`: per-user keys on a remote (PROTOCOL.md §19). Each user has a name, a key of
//! its own, and optional ACL rules of its own, matched before `remote.acl`. With users listed,
//! the shared `key` no longer opens a request by itself: it only unmasks the users' hints, so a
//! user whose entry is removed is refused (silently, like any wrong key) although it knows the
//! shared key.
//!
//! ```yaml
//! remote:
//!   users:
//!     alice: { key: "BASE64" }
//!     bob:   { key: "BASE64", acl: [ { deny: "10.0.0.0/8" } ] }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use super::parse::one_to_255_bytes;
use super::remote::{rules, AgentEntry, RawRule};
use crate::acl::Acl;
use crate::crypto::Key;
use crate::tunnel::Users;

/// One entry of `remote.users`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteUser {
    pub key: Option<String>,
    /// Rules for this user only, matched before `remote.acl`.
    pub acl: Option<Vec<RawRule>>,
}

/// A user of a remote with per-user keys.
#[derive(Debug, Clone)]
pub struct RemoteUser {
    /// 1–255 bytes; names the user in logs and metrics.
    pub name: String,
    pub key: Key,
    /// The user's rules, then `remote.acl`'s, then the built-in denies.
    pub acl: Acl,
    /// The user's rules alone: what still applies to a request this remote forwards to an
    /// agent (see [`Acl::rule_for`]).
    pub own: Acl,
}

/// `remote.users` checked, in name order, and the table requests find them in (`None` when
/// there are none).
pub(crate) type CheckedUsers = (Vec<Arc<RemoteUser>>, Option<Arc<Users>>);

/// The checked `remote.users` and their table.
pub(crate) fn remote_users(
    shared: &Key,
    agents: &[AgentEntry],
    own_agent_key: Option<&Key>,
    global: &Acl,
    raw: Option<&BTreeMap<String, RawRemoteUser>>,
) -> Result<CheckedUsers, ConfigError> {
    let mut users: Vec<Arc<RemoteUser>> = Vec::new();
    for (name, entry) in raw.into_iter().flatten() {
        let field = format!("remote.users.{name}");
        one_to_255_bytes(&field, name)?;
        let key_field = format!("{field}.key");
        let text = entry
            .key
            .as_deref()
            .ok_or_else(|| invalid(&key_field, "missing (generate one with `warren-remote genkey`)"))?;
        let key = Key::from_base64(text).map_err(|e| invalid(&key_field, e.to_string()))?;
        if key == *shared {
            return Err(invalid(
                &key_field,
                "is the shared `key`, which every user holds: a user needs a key of its own",
            ));
        }
        if let Some(agent) = agents.iter().find(|a| a.key == key) {
            return Err(invalid(&key_field, format!("is also remote.agents.{}.key", agent.name)));
        }
        if own_agent_key == Some(&key) {
            return Err(invalid(
                &key_field,
                "is also remote.agent.key (this remote's own agent key)",
            ));
        }
        if let Some(other) = users.iter().find(|u| u.key == key) {
            return Err(invalid(
                &key_field,
                format!("is also remote.users.{}.key: each user needs its own key", other.name),
            ));
        }
        let own = rules(&format!("{field}.acl"), entry.acl.as_deref())?;
        let mut acl = own.clone();
        acl.extend(global.rules().iter().cloned());
        users.push(Arc::new(RemoteUser {
            name: name.clone(),
            key,
            acl: Acl::new(acl),
            own: Acl::new(own),
        }));
    }
    // Present, even empty, means per-user mode: the shared key alone opens nothing. Deleting
    // the last user must not hand access back to everyone who holds the shared key.
    let table = raw.map(|_| {
        Arc::new(Users::new(
            shared.clone(),
            users.iter().map(|u| u.key.clone()).collect(),
        ))
    });
    Ok((users, table))
}
