//! Fuzz targets of dipc (a cargo-fuzz crate, built with nightly and
//! libFuzzer; outside the main workspace).
//!
//! Every target in `fuzz_targets/` is one line calling a *body* here. The
//! bodies are plain functions of the input bytes that panic when a property
//! fails, and they use only crates the tested crates' tests also have, so
//! the same files are compiled into stable `cargo test` runs with
//! `#[path]` (`wire/tests`, `dsm/tests`, `referee/tests`, `node/tests`,
//! each `fuzz_regressions.rs`), which feed them seeded random inputs and
//! every crash input found so far (`fuzz/regressions/<target>/`).
//!
//! * [`wire`]: the frame codec, the referee and local protocols;
//! * [`peer`]: the node-to-node envelope and messages;
//! * [`engines`]: the coherence engine, message queue and semaphore set
//!   fed arbitrary input sequences;
//! * [`referee`]: the referee's registry fed arbitrary requests.
//!
//! Run: `scripts/fuzz.sh [SECONDS]` (every target for SECONDS, default 60).

pub mod driver;
pub mod engines;
pub mod peer;
pub mod referee;
pub mod wire;
