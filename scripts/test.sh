#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and lints,
# builds everything (the C tests need libsysv.so and the dipc binary) and
# runs every test, including the soft-RoCE ones inside ../shared/rxe-vm.
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
echo "== soft-RoCE tests (inside ../shared/rxe-vm)" >&2
CARGO_TARGET_DIR=target transport-rdma/tests/vm.sh 2>&1 | tee target/test-rdma.log
