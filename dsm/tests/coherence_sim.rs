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
        segments: vec![SegSpec {
            seg: 7,
            home: 2,
            units: 1,
        }],
        threads: 3,
        accesses: 30,
        write_percent: 50,
        refault_percent: 10,
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
        segments: vec![SegSpec {
            seg: 3,
            home: 0,
            units: 2,
        }],
        threads: 2,
        accesses: 25,
        write_percent: 15,
        refault_percent: 0,
    };
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        if let Err(f) = sim::run_random(&cfg, seed, &mut rng, MAX_STEPS) {
            panic!("{f}");
        }
    }
}
