//! cargo-fuzz target `referee_msgs`: see `dipc_fuzz::wire::referee_msgs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dipc_fuzz::wire::referee_msgs(data));
