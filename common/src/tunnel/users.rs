//! Per-user keys (PROTOCOL.md §19): a request sealed with a user's own key carries, between
//! the salt and the first chunk, a 16-byte hint that lets the remote find that key in one
//! table lookup, whatever the number of users:
//!
//! ```text
//! salt_L (32) || hint (16) || chunk( RequestHeader || initial data )   sealed with the user's key
//!
//! hint = user_id(user key) XOR HKDF-SHA256(ikm = remote's shared key, salt = salt_L,
//!                                          info = "warren v2 identity")[..16]
//! user_id(k) = SHA-256("warren user id" || k)[..16]
//! ```
//!
//! The mask depends on the salt, so hints of one user's connections look unrelated to an
//! observer without the shared key. Everyone holding the shared key (every user) can unmask a
//! hint and learn which user id made a connection, but never the user's key: the chunk still
//! has to open under it.

use std::collections::HashMap;

use crate::crypto::{Key, Purpose, SALT_LEN};

/// Bytes of the hint on the wire.
pub const HINT_LEN: usize = 16;

/// The mask over the hints of requests with `salt`, from the remote's shared key.
fn mask(server: &Key, salt: &[u8; SALT_LEN]) -> [u8; HINT_LEN] {
    let subkey = server.subkey(Purpose::Identity, salt);
    let mut mask = [0u8; HINT_LEN];
    for (m, s) in mask.iter_mut().zip(subkey.iter()) {
        *m = *s;
    }
    mask
}

fn xor(a: [u8; HINT_LEN], b: [u8; HINT_LEN]) -> [u8; HINT_LEN] {
    let mut out = [0u8; HINT_LEN];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// The hint a local holding `user` sends with `salt` to a remote whose shared key is `server`.
pub fn hint(server: &Key, user: &Key, salt: &[u8; SALT_LEN]) -> [u8; HINT_LEN] {
    xor(user.user_id(), mask(server, salt))
}

/// The remote's users, found by the hint: the shared key that unmasks hints, and each user's
/// key by its id. Building it costs one SHA-256 per user; finding a user, one HKDF and one
/// hash lookup.
#[derive(Clone)]
pub struct Users {
    server: Key,
    keys: Vec<Key>,
    by_id: HashMap<[u8; HINT_LEN], usize>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("count", &self.keys.len()).finish()
    }
}

impl Users {
    /// The table for `keys` (index = the user's position), unmasked with `server`. Two equal
    /// keys would share an id; the config refuses them before this is built (the later one
    /// would not be found).
    pub fn new(server: Key, keys: Vec<Key>) -> Users {
        let mut by_id = HashMap::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            by_id.entry(key.user_id()).or_insert(i);
        }
        Users { server, keys, by_id }
    }

    /// The index and key of the user whose `hint` came with `salt`, if any.
    pub fn find(&self, salt: &[u8; SALT_LEN], hint: [u8; HINT_LEN]) -> Option<(usize, &Key)> {
        let id = xor(hint, mask(&self.server, salt));
        let i = *self.by_id.get(&id)?;
        Some((i, self.keys.get(i)?))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_finds_its_user_and_only_under_its_salt() {
        let server = Key::generate();
        let keys: Vec<Key> = (0..100).map(|_| Key::generate()).collect();
        let users = Users::new(server.clone(), keys.clone());
        let salt = [7u8; SALT_LEN];
        for (i, key) in keys.iter().enumerate() {
            let found = users.find(&salt, hint(&server, key, &salt));
            assert_eq!(found.map(|(j, k)| (j, k.clone())), Some((i, key.clone())));
        }
        // Another salt, another server key, or a stranger's key: not found.
        assert!(users.find(&[8u8; SALT_LEN], hint(&server, &keys[0], &salt)).is_none());
        assert!(users.find(&salt, hint(&Key::generate(), &keys[0], &salt)).is_none());
        assert!(users.find(&salt, hint(&server, &Key::generate(), &salt)).is_none());
    }

    #[test]
    fn hints_of_one_user_differ_per_salt() {
        let (server, user) = (Key::generate(), Key::generate());
        assert_ne!(
            hint(&server, &user, &[1; SALT_LEN]),
            hint(&server, &user, &[2; SALT_LEN])
        );
    }
}
