#!/usr/bin/env bash
# `dipc bench --transport rdma` inside the soft-RoCE VM of ../shared/rxe-vm
# (one VM, rxe0, GID index 1, every endpoint on rxe loopback): remote read
# fault, write fault with invalidation and ownership ping-pong with the
# nodes' links on RDMA and on TCP, next to perftest's `ib_read_lat -s 4096`,
# raw 4 KiB RDMA round trips and the local uffd fault, all in one run.
# The VM is TCG-emulated: only ratios mean anything.
#
#   scripts/bench-rdma.sh                 # 10,000 samples per row
#   scripts/bench-rdma.sh --samples 2000  # extra flags go to dipc bench
#
# Needs what scripts/setup.sh installs (perftest for ib_read_lat).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
[[ $CARGO_TARGET_DIR = /* ]] || CARGO_TARGET_DIR=$root/$CARGO_TARGET_DIR
run=${RXE_VM:-$root/../shared/rxe-vm/run}
[[ -x $run ]] || { echo "bench-rdma.sh: $run not found (set RXE_VM)" >&2; exit 2; }
cargo build --quiet --release -p dipc -p sysv
dipc=$CARGO_TARGET_DIR/release/dipc
command -v ib_read_lat >/dev/null ||
  echo "bench-rdma.sh: perftest is not installed; the ib_read_lat row is skipped" >&2
echo "command: dipc bench --transport rdma --rdma-device rxe0 --gid-index 1 $*" >&2
exec "$run" -- "$dipc" bench --transport rdma --rdma-device rxe0 --gid-index 1 "$@"
