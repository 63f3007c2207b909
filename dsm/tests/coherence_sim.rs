//! Thousands of seeded random schedules of random small clusters through the
//! deterministic simulator (`dipc_dsm::coherence::sim`), with the coherence
//! invariants checked after every step.
//!
//! `DSM_SIM_SEED=<n>` runs one seed and prints its full trace;
//! `DSM_SIM_SEEDS=<n>` changes how many seeds the default run covers.

use dipc_dsm::coherence::sim::{self, Config, Rng, SegSpec};

const MAX_STEPS: u64 = 200_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn random_schedules_keep_coherence() {
    if let Some(seed) = env_u64("DSM_SIM_SEED") {
        let mut rng = Rng::new(seed);
        let cfg = Config::random(&mut rng);
        let outcome = sim::run_random(&cfg, seed, &mut rng, MAX_STEPS);
        match outcome {
            Ok(stats) => {
                // Re-run to print the trace of a passing seed too.
                let mut rng = Rng::new(seed);
                let cfg = Config::random(&mut rng);
                let mut steps = Vec::new();
                let mut world = sim::World::new(&cfg);
                while let Some(step) = world.random_step(&mut rng) {
                    steps.push(step);
                    if let Err(e) = world.apply(step, None) {
                        panic!("seed {seed} diverged on replay: {e}");
                    }
                }
                let (lines, _) = sim::replay(&cfg, &steps);
                println!("config: {cfg:?}\n{}\nok: {stats:?}", lines.join("\n"));
            }
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let seeds = env_u64("DSM_SIM_SEEDS").unwrap_or(3000);
    let mut total = 0;
    for seed in 0..seeds {
        match sim::run_seed(seed, MAX_STEPS) {
            Ok(stats) => total += stats.steps,
            Err(f) => panic!("{f}"),
        }
    }
    // Thousands of seeds must exercise real traffic, not empty runs.
    assert!(total > seeds * 20, "only {total} steps in {seeds} seeds");
}

/// Many nodes hammering one unit with several threads each: the hardest case
/// for queueing at the home (every request waits behind others).
#[test]
fn contended_single_unit() {
    let cfg = Config {
        nodes: 5,
        segments: vec![SegSpec::new(7, 2, 1)],
        threads: 3,
        accesses: 30,
        write_percent: 50,
        refault_percent: 10,
        sequential_percent: 0,
        crash: None,
    };
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        if let Err(f) = sim::run_random(&cfg, seed, &mut rng, MAX_STEPS) {
            panic!("{f}");
        }
    }
}

/// Read-mostly traffic builds large copy sets, so writes invalidate many
/// sharers at once and the acknowledgements race with the reply.
#[test]
fn read_mostly_many_sharers() {
    let cfg = Config {
        nodes: 5,
        segments: vec![SegSpec::new(3, 0, 2)],
        threads: 2,
        accesses: 25,
        write_percent: 15,
        refault_percent: 0,
        sequential_percent: 0,
        crash: None,
    };
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        if let Err(f) = sim::run_random(&cfg, seed, &mut rng, MAX_STEPS) {
            panic!("{f}");
        }
    }
}

/// Run `seeds` random schedules of `cfg`; the number of answers deferred
/// by a quantum and given when its timer fired.
fn run_many(cfg: &Config, seeds: u64) -> u64 {
    let mut deferred = 0;
    for seed in 0..seeds {
        let mut rng = Rng::new(seed);
        match sim::run_random(cfg, seed, &mut rng, MAX_STEPS) {
            Ok(stats) => deferred += stats.deferred,
            Err(f) => panic!("{f}"),
        }
    }
    deferred
}

/// Segment mode (the whole segment is one unit) under contention, with
/// and without a quantum.
#[test]
fn segment_mode_contended() {
    let mut seg = SegSpec::new(4, 1, 1);
    let mut cfg = Config {
        nodes: 4,
        segments: vec![seg],
        threads: 2,
        accesses: 20,
        write_percent: 60,
        refault_percent: 10,
        sequential_percent: 0,
        crash: None,
    };
    assert_eq!(run_many(&cfg, 60), 0);
    seg.quantum_us = 200;
    cfg.segments = vec![seg];
    assert!(
        run_many(&cfg, 60) > 60,
        "the quantum never deferred an answer"
    );
}

/// A quantum longer than many message delays: invalidations and
/// ownership requests queue at the holders and at the home, and are served
/// in order when the timers fire (virtual time).
#[test]
fn quantum_with_queued_requests() {
    let mut a = SegSpec::new(5, 0, 2);
    a.quantum_us = 500;
    let mut b = SegSpec::new(6, 2, 1);
    b.quantum_us = 50;
    let cfg = Config {
        nodes: 4,
        segments: vec![a, b],
        threads: 3,
        accesses: 25,
        write_percent: 50,
        refault_percent: 10,
        sequential_percent: 0,
        crash: None,
    };
    assert!(
        run_many(&cfg, 80) > 80,
        "the quantum never deferred an answer"
    );
}

/// Sequential readers and writers over a segment of many units with a
/// prefetch window: prefetched units are invalidated like any other copy.
#[test]
fn prefetch_windows_under_sequential_traffic() {
    let mut seg = SegSpec::new(8, 1, 10);
    seg.prefetch = 4;
    let mut cfg = Config {
        nodes: 3,
        segments: vec![seg],
        threads: 2,
        accesses: 30,
        write_percent: 25,
        refault_percent: 5,
        sequential_percent: 85,
        crash: None,
    };
    run_many(&cfg, 80);
    seg.quantum_us = 100;
    cfg.segments = vec![seg];
    run_many(&cfg, 60);
}

/// Runs of `cfg` over `seeds` seeds: (accesses failed, runs that crashed).
fn run_crashing(cfg: &Config, seeds: u64) -> (u64, u64) {
    let (mut failed, mut crashed) = (0, 0);
    for seed in 0..seeds {
        let mut rng = Rng::new(seed);
        match sim::run_random(cfg, seed, &mut rng, MAX_STEPS) {
            Ok(stats) => {
                failed += stats.failed;
                crashed += stats.crashed;
            }
            Err(f) => panic!("{f}"),
        }
    }
    (failed, crashed)
}

/// A node crashes at a random moment of busy traffic (a sharer or owner,
/// then the home): every access of the survivors still ends, reads see the
/// latest write or fail, and a failure is only ever for a unit the home
/// declares lost (or a segment whose home crashed).
#[test]
fn a_node_crashes_under_traffic() {
    let mut a = SegSpec::new(1, 0, 3);
    let b = SegSpec::new(2, 1, 1);
    let mut cfg = Config {
        nodes: 4,
        segments: vec![a, b],
        threads: 2,
        accesses: 25,
        write_percent: 50,
        refault_percent: 10,
        sequential_percent: 30,
        crash: Some(2),
    };
    let (failed, crashed) = run_crashing(&cfg, 300);
    assert_eq!(crashed, 300);
    assert!(failed > 0, "no access ever found a lost unit");
    // The home of segment 1 crashes: its units fail unless held.
    cfg.crash = Some(0);
    let (failed, _) = run_crashing(&cfg, 300);
    assert!(failed > 0, "no access ever failed on a dead home");
    // With a quantum and prefetch (deferred answers and prefetched copies
    // at the moment of the crash).
    a.quantum_us = 100;
    a.prefetch = 2;
    cfg.segments = vec![a, b];
    cfg.crash = Some(1);
    run_crashing(&cfg, 200);
    cfg.crash = Some(3);
    run_crashing(&cfg, 200);
}
