//! cargo-fuzz target `local_msgs`: see `dipc_fuzz::wire::local_msgs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dipc_fuzz::wire::local_msgs(data));
