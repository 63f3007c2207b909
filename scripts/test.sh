#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and lints,
# builds everything and runs every test, including the soft-RoCE ones
# inside ../shared/rxe-vm (scripts/vm-tests.sh: transport-rdma device tests
# and nodes on RDMA), and a short run of every fuzz target.
#
# There is no separate `cargo build --workspace`: `cargo test` builds every
# target (the dipc binary the tests run, every bin, example and test) and
# testkit builds libsysv.so (`cargo build -p sysv`) for the C tests. A plain
# build first would not save it any work: with the dev-dependencies'
# features (dipc-dsm's `sim`, ...) every dependent crate is compiled again
# (45 of its 262 units). The crates as users build them (dsm without
# `sim`) are still compiled: by scripts/vm-tests.sh's optimised build of
# dipc's tests (only dipc's own dev-dependencies) and testkit's `cargo
# build -p sysv`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The soft-RoCE stage comes last; fail now, not after the other tests, if
# its VM tool is missing (scripts/vm-tests.sh looks in the same place).
rxe_vm=${RXE_VM:-$PWD/../shared/rxe-vm/run}
if [[ ! -x $rxe_vm ]]; then
  echo "test.sh: the soft-RoCE VM tool $rxe_vm is not there (set RXE_VM)" >&2
  exit 2
fi

echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The later stages' builds (the fuzz targets, and the optimised binaries
# the soft-RoCE VM runs) go in the background at the lowest priority while
# `cargo test` runs: its tests mostly wait on daemons and leave the CPUs
# idle. The fuzz build has its own target dir (cargo-fuzz's flags differ);
# for a smoke run of a few seconds per target it is unoptimised
# (FUZZ_DEV=1: ~200 CPU-s instead of ~390 cold, measured side by side).
fuzz_secs=${DIPC_FUZZ_SECS:-10}
fuzz=no
if [ "$fuzz_secs" -gt 0 ] && cargo fuzz --version >/dev/null 2>&1; then fuzz=yes; fi
export FUZZ_SANITIZER=none # the fuzzed code is safe Rust
export FUZZ_DEV=${FUZZ_DEV:-1}
mkdir -p target
# In its own process group (setsid), so that a failing test stops it all.
setsid -w nice -n 19 bash -c '
  set -e
  CARGO_TARGET_DIR=target scripts/vm-tests.sh --build-only
  if [ "$1" = yes ]; then
    CARGO_TARGET_DIR="$PWD/target-fuzz" scripts/fuzz.sh --build-only </dev/null
  fi' builds "$fuzz" >target/test-builds.log 2>&1 &
builds=$!
trap 'kill -- -$builds 2>/dev/null || true' EXIT

echo "== cargo test" >&2
cargo test --workspace --quiet 2>&1 | tee target/test.log
echo "== waiting for the fuzz and soft-RoCE builds" >&2
if ! wait $builds; then
  cat target/test-builds.log >&2
  echo "test.sh: the fuzz or soft-RoCE build failed (target/test-builds.log)" >&2
  exit 1
fi
trap - EXIT

# A short fuzz run of every cargo-fuzz target (DIPC_FUZZ_SECS each, 0 to
# skip).
if [ $fuzz = yes ]; then
  echo "== fuzz: ${fuzz_secs}s per target" >&2
  CARGO_TARGET_DIR="$PWD/target-fuzz" scripts/fuzz.sh "$fuzz_secs" </dev/null 2>&1 | tee target/test-fuzz.log | grep -E '^(===|fuzz.sh:|Done )'
else
  echo "== fuzz: skipped (DIPC_FUZZ_SECS=0 or no cargo-fuzz)" >&2
fi
echo "== soft-RoCE tests (inside ../shared/rxe-vm)" >&2
CARGO_TARGET_DIR=target scripts/vm-tests.sh 2>&1 | tee target/test-rdma.log
