//! The agents connected to a public remote, by name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::mux::Opener;

/// Connected agents by name; a newer registration replaces an older one.
#[derive(Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, (u64, Opener)>>,
    next_id: AtomicU64,
}

impl Registry {
    /// The session registered under `name`, if any.
    pub(super) fn get(&self, name: &str) -> Option<Opener> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.get(name).map(|(_, o)| o.clone())
    }

    /// Registers a session under `name`; returns its id for [`Registry::remove`].
    pub(super) fn insert(&self, name: &str, opener: Opener) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.insert(name.to_string(), (id, opener));
        id
    }

    /// Removes the session `id` under `name`, unless a newer one replaced it.
    pub(super) fn remove(&self, name: &str, id: u64) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.get(name).is_some_and(|(i, _)| *i == id) {
            agents.remove(name);
        }
    }
}
