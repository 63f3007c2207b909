#!/usr/bin/env bash
# The main job: an embedded referee and nodes on loopback, a page-fault
# latency run, a readable result.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet -p dipc -p sysv
exec target/release/dipc demo "$@"
