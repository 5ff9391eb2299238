//! Fuzz target `bind`: the BIND notice that crosses the tunnel after BIND's first reply
//! (`proto/bind.rs`), alone and followed by the peer's first bytes.

use crate::proto::bind::BindNotice;

use super::round_trip;

/// Decodes a [`BindNotice`] from the front of `data`; checks its round trip and that the bytes
/// after it (the peer's data) are left for the relay.
pub fn bind(data: &[u8]) {
    if let Some(notice) = round_trip::<BindNotice>(data, true) {
        let mut wire = Vec::new();
        crate::proto::Encode::encode(&notice, &mut wire);
        wire.extend_from_slice(data);
        let (again, used) = crate::proto::decode_prefix::<BindNotice>(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((again, wire.len() - used), (notice, data.len()), "peer bytes not left");
    }
}
