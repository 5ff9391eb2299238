//! Fuzz target `udp`: the body is `warren_common::fuzzing::udp` (shared with the stable replay).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_common::fuzzing::udp(data));
