//! cargo-fuzz target `msg_queue`: see `dipc_fuzz::engines::msg_queue`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dipc_fuzz::engines::msg_queue(data));
