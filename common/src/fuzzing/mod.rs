//! The bodies of the `cargo fuzz` targets in `fuzz/`, one function per target, each taking the
//! fuzzer's raw bytes. They live here, not in the fuzz crate, so that
//! `common/tests/fuzz_corpus.rs` replays every committed corpus file through the very same code
//! on stable Rust (`cargo test --workspace`), with no nightly toolchain and no libFuzzer.
//!
//! The property everywhere is "no panic"; where a message has an encoder the target also checks
//! the round trip ([`round_trip`]). A failed check panics, which libFuzzer reports as a crash.
//! Not part of warren's API: hidden from the docs and used by nothing but the fuzzers and the
//! replay test.

mod bind;
mod dns;
mod http;
mod route;
mod socks;
mod tunnel;
mod udp;

pub use bind::bind;
pub use dns::dns;
pub use http::http;
pub use route::route;
pub use socks::socks;
pub use tunnel::tunnel;
pub use udp::udp;

use std::fmt::Debug;

use crate::proto::{decode_exact, decode_prefix, Decode, DecodeError, Encode};

/// A target's body: the fuzzer's bytes in, a panic on any failed check.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` file and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("socks", socks),
    ("http", http),
    ("tunnel", tunnel),
    ("udp", udp),
    ("bind", bind),
    ("route", route),
    ("dns", dns),
];

/// Decodes a `T` from the front of `bytes`; when that succeeds, checks the codec's promises:
/// - the encoding has [`Encode::encoded_len`] bytes and decodes, filling it exactly, to the
///   same value (decode → encode → decode is the identity on values);
/// - encoding that value again gives the same bytes (the encoding is canonical);
/// - where `T` delimits itself (`self_delimiting`), the decoder used no more than the bytes it
///   was given, and the encoding cut short by one byte is [`DecodeError::Incomplete`], never a
///   different message or another error.
pub fn round_trip<T>(bytes: &[u8], self_delimiting: bool) -> Option<T>
where
    T: Decode + Encode + PartialEq + Debug,
{
    let (value, used) = decode_prefix::<T>(bytes).ok()?;
    assert!(used <= bytes.len(), "decoder claims {used} of {} bytes", bytes.len());
    let mut wire = Vec::new();
    value.encode(&mut wire);
    assert_eq!(wire.len(), value.encoded_len(), "encoded_len of {value:?}");
    let again: T = decode_exact(&wire).unwrap_or_else(|e| panic!("{value:?} encodes to {wire:02x?}: {e}"));
    assert_eq!(again, value, "decode(encode(x)) != x for {wire:02x?}");
    let mut rewire = Vec::new();
    again.encode(&mut rewire);
    assert_eq!(rewire, wire, "encoding of {value:?} is not canonical");
    if self_delimiting {
        if let Some(short) = wire.len().checked_sub(1).and_then(|n| wire.get(..n)) {
            assert_eq!(
                decode_prefix::<T>(short).err(),
                Some(DecodeError::Incomplete),
                "truncated {wire:02x?}"
            );
        }
    }
    Some(value)
}

/// Splits `data` into its first byte (which picks a decoder) and the rest.
fn selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(first, rest)| (*first, rest))
}
