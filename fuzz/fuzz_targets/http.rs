//! Fuzz target `http`: the body is `warren_common::fuzzing::http` (shared with the stable replay).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_common::fuzzing::http(data));
