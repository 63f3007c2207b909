//! Every interleaving of small clusters: all delivery orders across links and
//! every access (read or write, any unit) each idle thread may issue, with the
//! simulator's invariants checked after every transition, every terminal
//! state checked to have served all accesses (no deadlock), and the state
//! graph checked to be acyclic (no livelock).

use std::time::Instant;

use dipc_dsm::coherence::sim::{self, Config, SegSpec};

fn config(nodes: u32, home: u32, units: u32, threads: u32, accesses: u32) -> Config {
    Config {
        nodes,
        segments: vec![SegSpec::new(1, home, units)],
        threads,
        accesses,
        write_percent: 0,
        refault_percent: 0,
        sequential_percent: 0,
        crash: None,
    }
}

fn check(cfg: Config, min_states: u64) {
    let start = Instant::now();
    match sim::explore(&cfg, 3_000_000) {
        Ok(stats) => {
            println!("{cfg:?}: {stats:?} in {:?}", start.elapsed());
            // The exploration must really branch (guards against a broken
            // enumerator that would "prove" a trivial graph).
            assert!(stats.states >= min_states, "{stats:?}");
            assert!(stats.terminals > 0, "{stats:?}");
        }
        Err(f) => panic!("{f}"),
    }
}

// The default set explores a few hundred thousand transitions at most (seconds in
// debug). The `#[ignore]`d ones are larger (hundreds of thousands); run them
// with `cargo test --release -p dipc-dsm --test coherence_exhaustive -- --ignored`.

#[test]
fn two_nodes_one_unit_three_threads() {
    // Three local waiters at once on each node: shared transactions and
    // upgrades after a read in flight.
    check(config(2, 0, 1, 3, 3), 2000);
}

#[test]
fn two_nodes_two_units_two_threads() {
    check(config(2, 1, 2, 2, 2), 2000);
}

#[test]
fn two_nodes_two_units_three_accesses() {
    check(config(2, 0, 2, 1, 3), 4000);
}

#[test]
fn three_nodes_one_unit() {
    // Copy sets of two remote sharers, forwarding by a non-home owner.
    check(config(3, 0, 1, 1, 2), 5000);
}

#[test]
fn three_nodes_two_units_home_in_the_middle() {
    check(config(3, 1, 2, 1, 1), 500);
}

#[test]
#[ignore = "large: run in release"]
fn three_nodes_one_unit_two_threads() {
    check(config(3, 0, 1, 2, 2), 20_000);
}

#[test]
#[ignore = "large: run in release"]
fn three_nodes_one_unit_three_accesses() {
    check(config(3, 1, 1, 1, 3), 50_000);
}

#[test]
#[ignore = "large: run in release"]
fn three_nodes_two_units_two_accesses() {
    check(config(3, 0, 2, 1, 2), 100_000);
}

fn with(mut cfg: Config, quantum_us: u64, prefetch: u32) -> Config {
    for s in cfg.segments.iter_mut() {
        s.quantum_us = quantum_us;
        s.prefetch = prefetch;
    }
    cfg
}

#[test]
fn segment_mode_three_nodes_with_quantum() {
    // Segment mode is one unit; every timer may fire at any moment.
    check(with(config(3, 1, 1, 1, 1), 100, 0), 500);
}

#[test]
fn two_nodes_quantum_two_threads() {
    check(with(config(2, 0, 1, 2, 2), 100, 0), 500);
}

#[test]
fn two_nodes_prefetch_three_units() {
    check(with(config(2, 1, 3, 1, 2), 0, 2), 1000);
}

#[test]
fn two_nodes_prefetch_and_quantum() {
    check(with(config(2, 1, 3, 1, 2), 100, 2), 1000);
}

fn crashing(mut cfg: Config, node: u32) -> Config {
    cfg.crash = Some(node);
    cfg
}

/// A sharer or owner crashes at every possible moment (and every survivor
/// hears of it at every possible moment after).
#[test]
fn three_nodes_one_unit_a_node_crashes() {
    check(crashing(config(3, 0, 1, 1, 2), 2), 2000);
}

/// The home crashes at every possible moment.
#[test]
fn three_nodes_one_unit_the_home_crashes() {
    check(crashing(config(3, 1, 1, 1, 2), 1), 2000);
}

/// Two units, two threads on two nodes; the non-home node crashes.
#[test]
fn two_nodes_two_units_a_node_crashes() {
    check(crashing(config(2, 0, 2, 2, 2), 1), 2000);
}

/// Larger crash configurations (release: `-- --ignored`).
#[test]
#[ignore = "large: run in release"]
fn three_nodes_one_unit_two_threads_a_node_crashes() {
    check(crashing(config(3, 0, 1, 2, 2), 1), 20_000);
}

/// The home crashes while copies are held within their quantum (their
/// deferred answers on its behalf are dropped).
#[test]
#[ignore = "large: run in release"]
fn three_nodes_one_unit_the_home_crashes_with_a_quantum() {
    check(crashing(with(config(3, 1, 1, 1, 2), 50, 0), 1), 2000);
}

/// A sharer crashes while prefetched copies and a quantum are in play.
#[test]
#[ignore = "large: run in release"]
fn two_nodes_prefetch_and_quantum_a_node_crashes() {
    check(crashing(with(config(2, 0, 3, 1, 2), 50, 2), 1), 2000);
}
