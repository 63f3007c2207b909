//! cargo-fuzz target `registry`: see `dipc_fuzz::referee::registry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dipc_fuzz::referee::registry(data));
