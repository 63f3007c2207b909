//! The engine fuzz targets as stable tests.
//!
//! The bodies of the cargo-fuzz targets `coherence`, `msg_queue` and
//! `sem_set` (`fuzz/src/engines.rs`) are compiled in here and fed every
//! kept crash input (`fuzz/regressions/<target>/`) and a few seconds of
//! seeded random byte strings, which `arbitrary` turns into input
//! sequences. The bodies check the engines' invariants after every input
//! (see their module doc). `DIPC_FUZZ_SEED` picks another seed.

#[path = "../../fuzz/src/driver.rs"]
#[allow(dead_code)]
mod driver;
#[path = "../../fuzz/src/engines.rs"]
mod engines;

use std::time::Duration;

const BUDGET: Duration = Duration::from_secs(3);
const MAX_CASES: u64 = 100_000;

fn run(target: &str, body: fn(&[u8])) {
    let n = driver::run(
        env!("CARGO_MANIFEST_DIR"),
        target,
        &[],
        body,
        BUDGET,
        MAX_CASES,
    );
    eprintln!("{target}: {n} random cases");
}

#[test]
fn coherence_engines_survive_arbitrary_schedules_and_forged_messages() {
    run("coherence", engines::coherence);
}

#[test]
fn message_queue_keeps_its_invariants_under_arbitrary_operations() {
    run("msg_queue", engines::msg_queue);
}

#[test]
fn semaphore_set_keeps_its_invariants_under_arbitrary_operations() {
    run("sem_set", engines::sem_set);
}
