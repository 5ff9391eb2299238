//! The agents connected to a public remote, by name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::mux::Opener;

/// Connected agents by name. A name holds one live session: a second registration under it is
/// refused (never silently swapped in), and the name is free again once its session has ended
/// (closed, failed, or its heartbeat lost).
#[derive(Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, (u64, Option<Opener>)>>,
    next_id: AtomicU64,
}

impl Registry {
    /// The session registered under `name`, if any.
    pub(super) fn get(&self, name: &str) -> Option<Opener> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.get(name).and_then(|(_, o)| o.clone())
    }

    /// Reserves `name` for a session about to start, or `None` while another session holds
    /// it. Requests routed to the name find no agent until [`Claim::activate`]; dropping the
    /// claim frees the name.
    pub(super) fn claim<'a>(&'a self, name: &str) -> Option<Claim<'a>> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.contains_key(name) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        agents.insert(name.to_string(), (id, None));
        Some(Claim {
            registry: self,
            name: name.to_string(),
            id,
        })
    }

    /// Frees `name` if the session `id` holds it.
    fn remove(&self, name: &str, id: u64) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.get(name).is_some_and(|(i, _)| *i == id) {
            agents.remove(name);
        }
    }
}

/// A name held by one session: freed when dropped.
pub(super) struct Claim<'a> {
    registry: &'a Registry,
    name: String,
    id: u64,
}

impl Claim<'_> {
    /// Makes the session reachable through `opener`.
    pub(super) fn activate(&self, opener: Opener) {
        let mut agents = self.registry.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, slot)) = agents.get_mut(&self.name) {
            if *id == self.id {
                *slot = Some(opener);
            }
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.registry.remove(&self.name, self.id);
    }
}
