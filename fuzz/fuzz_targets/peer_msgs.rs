//! cargo-fuzz target `peer_msgs`: see `dipc_fuzz::peer::peer_msgs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dipc_fuzz::peer::peer_msgs(data));
