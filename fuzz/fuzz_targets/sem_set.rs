//! cargo-fuzz target `sem_set`: see `dipc_fuzz::engines::sem_set`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dipc_fuzz::engines::sem_set(data));
