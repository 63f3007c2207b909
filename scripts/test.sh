#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and lints,
# builds everything (the C tests need libsysv.so and the dipc binary) and
# runs every test, including the soft-RoCE ones inside ../shared/rxe-vm
# (scripts/vm-tests.sh: transport-rdma device tests and nodes on RDMA).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build" >&2
cargo build --workspace --quiet
echo "== cargo test" >&2
cargo test --workspace --quiet 2>&1 | tee target/test.log
# A short fuzz run of every cargo-fuzz target (DIPC_FUZZ_SECS each, 0 to
# skip; its own target dir, so the sanitizer build is kept between runs).
fuzz_secs=${DIPC_FUZZ_SECS:-10}
if [ "$fuzz_secs" -gt 0 ] && cargo fuzz --version >/dev/null 2>&1; then
  echo "== fuzz: ${fuzz_secs}s per target" >&2
  CARGO_TARGET_DIR="$PWD/target-fuzz" scripts/fuzz.sh "$fuzz_secs" </dev/null 2>&1 | tee target/test-fuzz.log | grep -E '^(===|fuzz.sh:|Done )'
else
  echo "== fuzz: skipped (DIPC_FUZZ_SECS=0 or no cargo-fuzz)" >&2
fi
echo "== soft-RoCE tests (inside ../shared/rxe-vm)" >&2
CARGO_TARGET_DIR=target scripts/vm-tests.sh 2>&1 | tee target/test-rdma.log
