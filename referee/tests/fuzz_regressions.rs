//! The registry fuzz target as a stable test.
//!
//! The body of the cargo-fuzz target `registry` (`fuzz/src/referee.rs`) is
//! compiled in here and fed every kept crash input
//! (`fuzz/regressions/registry/`) and a few seconds of seeded random byte
//! strings, which `arbitrary` turns into request sequences. After every
//! request it checks the registry's invariants and that the persisted
//! writes rebuild its state. `DIPC_FUZZ_SEED` picks another seed.

#[path = "../../fuzz/src/driver.rs"]
#[allow(dead_code)]
mod driver;
#[path = "../../fuzz/src/referee.rs"]
mod referee;

use std::time::Duration;

#[test]
fn registry_keeps_its_invariants_under_arbitrary_requests() {
    let n = driver::run(
        env!("CARGO_MANIFEST_DIR"),
        "registry",
        &[],
        referee::registry,
        Duration::from_secs(3),
        100_000,
    );
    eprintln!("registry: {n} random cases");
}
