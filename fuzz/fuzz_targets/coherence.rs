//! cargo-fuzz target `coherence`: see `dipc_fuzz::engines::coherence`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dipc_fuzz::engines::coherence(data));
