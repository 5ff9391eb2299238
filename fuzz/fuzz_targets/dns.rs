//! Fuzz target `dns`: the body is `warren_common::fuzzing::dns` (shared with the stable replay).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_common::fuzzing::dns(data));
