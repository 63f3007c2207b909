//! A small stable-Rust driver for the fuzz bodies: replays the crash inputs
//! kept in `fuzz/regressions/<target>/`, then feeds seeded random inputs
//! (fresh bytes and mutations of valid seed inputs) for a bounded time.
//!
//! Compiled into each `*/tests/fuzz_regressions.rs` with `#[path]`, next to
//! the bodies. It needs nothing but std. A failing random input is written
//! to the temporary directory and its path and seed printed, so it can be
//! copied into `fuzz/regressions/<target>/` as a regression case.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A xorshift generator: reproducible from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// A mutation of `seed`: flipped, replaced, inserted, removed or truncated
/// bytes, or a splice of random bytes.
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = v.len();
        match rng.below(6) {
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                v[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.below(n + 1);
                let b = rng.next_u64() as u8;
                v.insert(i, b);
            }
            3 if n > 0 => {
                v.remove(rng.below(n));
            }
            4 => v.truncate(rng.below(n + 1)),
            _ => {
                let i = rng.below(n + 1);
                let k = rng.below(16);
                let extra = rng.bytes(k);
                v.splice(i..i, extra);
            }
        }
    }
    v
}

/// Where the crash inputs of `target` are kept.
pub fn regressions_dir(manifest_dir: &str, target: &str) -> PathBuf {
    Path::new(manifest_dir)
        .join("../fuzz/regressions")
        .join(target)
}

/// Random cases run whatever the time budget says (a loaded machine still
/// tests something).
pub const MIN_CASES: u64 = 32;

/// Run `body` on every regression input of `target`, then on random inputs
/// for `budget` (at least [`MIN_CASES`], at most `max_cases` of them). Panics (with the input's
/// file or seed) when the body does.
pub fn run(
    manifest_dir: &str,
    target: &str,
    seeds: &[Vec<u8>],
    body: fn(&[u8]),
    budget: Duration,
    max_cases: u64,
) -> u64 {
    let dir = regressions_dir(manifest_dir, target);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let Ok(data) = std::fs::read(&f) else {
                continue;
            };
            eprintln!("{target}: regression input {}", f.display());
            body(&data);
        }
    }
    let seed = match std::env::var("DIPC_FUZZ_SEED") {
        Ok(s) => s.parse().unwrap_or(1),
        Err(_) => 0x5eed_0000 ^ target.len() as u64 ^ u64::from(target.as_bytes()[0]),
    };
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut cases = 0u64;
    while cases < max_cases && (cases < MIN_CASES || start.elapsed() < budget) {
        let input = if !seeds.is_empty() && rng.below(4) != 0 {
            let s = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, s)
        } else {
            let len = rng.below(512);
            rng.bytes(len)
        };
        let outcome = std::panic::catch_unwind(|| body(&input));
        if let Err(panic) = outcome {
            let path = std::env::temp_dir().join(format!("dipc-fuzz-{target}-{seed}-{cases}"));
            let _ = std::fs::write(&path, &input);
            eprintln!(
                "{target}: case {cases} of seed {seed} failed; input saved to {} \
                 (copy it into {} to keep it as a regression)",
                path.display(),
                dir.display()
            );
            std::panic::resume_unwind(panic);
        }
        cases += 1;
    }
    cases
}
