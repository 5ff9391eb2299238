//! Fuzz target `tunnel`: the body is `warren_common::fuzzing::tunnel` (shared with the stable replay).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_common::fuzzing::tunnel(data));
