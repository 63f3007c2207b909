//! cargo-fuzz target `frame`: see `dipc_fuzz::wire::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dipc_fuzz::wire::frame(data));
