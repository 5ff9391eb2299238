//! The one piece of runtime state the config still carries: whether each remote answered its
//! last health check. It sits in its own file because it is not configuration: the local's
//! health checker writes it and its outbound picker reads it. It moves to the local crate once
//! the local's restructure lands (issue 9, item 4); until then [`super::local_routes::Endpoint`]
//! holds one (created as up), and nothing else in `config` touches it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether a remote answered its last health check. Clones share the flag; a remote counts as
/// up until a check says otherwise.
#[derive(Clone)]
pub struct Health(Arc<AtomicBool>);

impl Default for Health {
    fn default() -> Self {
        Health(Arc::new(AtomicBool::new(true)))
    }
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Records a check's result; true when it changed the state.
    pub fn set(&self, up: bool) -> bool {
        self.0.swap(up, Ordering::Relaxed) != up
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_up() { "up" } else { "down" })
    }
}
