//! The agents connected to a public remote, by name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use warren_common::config::AgentEntry;
use warren_common::crypto::Key;

use super::mux::Opener;

/// One name's session: its id, its opener once active, the key it registered with, and the
/// token that ends it when a reload revokes that key.
struct Entry {
    id: u64,
    opener: Option<Opener>,
    key: Key,
    revoked: CancellationToken,
}

/// Connected agents by name. A name holds one live session: a second registration under it is
/// refused (never silently swapped in), and the name is free again once its session has ended
/// (closed, failed, or its heartbeat lost).
#[derive(Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
    /// Woken when a session becomes reachable ([`Claim::activate`]).
    activated: tokio::sync::Notify,
}

impl Registry {
    /// The session registered under `name`, if any.
    pub(super) fn get(&self, name: &str) -> Option<Opener> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.get(name).and_then(|e| e.opener.clone())
    }

    /// The session registered under `name`; if it is still being set up (the agent has its
    /// answer, this side has not activated it yet), waits up to `limit` for it. Without this,
    /// a request arriving in that gap was refused although the agent had just registered.
    pub(super) async fn get_or_wait(&self, name: &str, limit: std::time::Duration) -> Option<Opener> {
        let wait = async {
            loop {
                let activated = self.activated.notified();
                let pending = {
                    let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
                    match agents.get(name) {
                        Some(Entry {
                            opener: Some(opener), ..
                        }) => return Some(opener.clone()),
                        Some(_) => true,
                        None => false,
                    }
                };
                if !pending {
                    return None;
                }
                activated.await;
            }
        };
        tokio::time::timeout(limit, wait).await.ok().flatten()
    }

    /// Reserves `name` for a session about to start, or `None` while another session holds
    /// it. Requests routed to the name find no agent until [`Claim::activate`]; dropping the
    /// claim frees the name.
    pub(super) fn claim<'a>(&'a self, name: &str, key: &Key) -> Option<Claim<'a>> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.contains_key(name) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        agents.insert(
            name.to_string(),
            Entry {
                id,
                opener: None,
                key: key.clone(),
                revoked: revoked.clone(),
            },
        );
        Some(Claim {
            registry: self,
            name: name.to_string(),
            id,
            revoked,
        })
    }

    /// Ends the sessions whose name is no longer in `allowed` or whose key changed (a reload
    /// revoked it): their forwarding stops and the name is free for the agent holding the new
    /// key. Returns the names ended.
    pub fn revoke_all_but(&self, allowed: &[AgentEntry]) -> Vec<String> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = Vec::new();
        for (name, entry) in agents.iter() {
            if !allowed.iter().any(|a| a.name == *name && a.key == entry.key) {
                entry.revoked.cancel();
                ended.push(name.clone());
            }
        }
        ended
    }

    /// Frees `name` if the session `id` holds it.
    fn remove(&self, name: &str, id: u64) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.get(name).is_some_and(|e| e.id == id) {
            agents.remove(name);
        }
    }
}

/// A name held by one session: freed when dropped.
pub(super) struct Claim<'a> {
    registry: &'a Registry,
    name: String,
    id: u64,
    revoked: CancellationToken,
}

impl Claim<'_> {
    /// Makes the session reachable through `opener`.
    pub(super) fn activate(&self, opener: Opener) {
        let mut agents = self.registry.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = agents.get_mut(&self.name) {
            if entry.id == self.id {
                entry.opener = Some(opener);
            }
        }
        self.registry.activated.notify_waiters();
    }
}

impl Claim<'_> {
    /// Completes when a reload revokes the key this session registered with.
    pub(super) async fn revoked(&self) {
        self.revoked.cancelled().await;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.registry.remove(&self.name, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reload_ends_sessions_whose_key_is_gone_or_changed() {
        let registry = Registry::default();
        let (a, b) = (Key::generate(), Key::generate());
        let kept = registry.claim("kept", &a).unwrap();
        let renamed = registry.claim("gone", &a).unwrap();
        let rekeyed = registry.claim("rekeyed", &b).unwrap();
        let allowed = [
            AgentEntry {
                name: "kept".into(),
                key: a.clone(),
            },
            AgentEntry {
                name: "rekeyed".into(),
                key: Key::generate(),
            },
        ];
        let mut ended = registry.revoke_all_but(&allowed);
        ended.sort();
        assert_eq!(ended, ["gone", "rekeyed"]);
        renamed.revoked().await;
        rekeyed.revoked().await;
        assert!(!kept.revoked.is_cancelled());
        // The names are free once the sessions drop their claims.
        drop((renamed, rekeyed));
        assert!(registry.claim("gone", &a).is_some());
    }
}
