#!/usr/bin/env bash
# Run the RDMA device tests (tests/rxe.rs) for real, inside the soft-RoCE VM
# of shared/rxe-vm: build on the host, run the test binary in the VM (one VM,
# rxe0, GID index 1; the two processes of each test talk through rxe
# loopback). Extra arguments go to the test binary (e.g. a test name).
#
#   transport-rdma/tests/vm.sh                   # all device tests
#   transport-rdma/tests/vm.sh round_trip        # some of them
#   LATENCY=1 transport-rdma/tests/vm.sh         # also print 4 KiB latencies
#
# Needs: libibverbs-dev librdmacm-dev libclang-dev (scripts/setup.sh), and
# the rxe-vm's own packages (it installs them). RXE_VM overrides the path of
# the VM's `run` script.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-rdma}
run=${RXE_VM:-$root/../shared/rxe-vm/run}
[[ -x $run ]] || { echo "vm.sh: $run not found (set RXE_VM)" >&2; exit 2; }

bin=$(cargo test -p dipc-transport-rdma --test rxe --no-run 2>&1 |
  sed -n 's/.*Executable tests\/rxe.rs (\(.*\))/\1/p' | tail -1)
[[ -n $bin && -x $bin ]] || { echo "vm.sh: building tests/rxe.rs failed" >&2; exit 1; }
# Make the path absolute ($CARGO_TARGET_DIR may be relative).
[[ $bin = /* ]] || bin=$root/$bin

cmd=("$bin" --test-threads=1 --nocapture "$@")
if [[ ${LATENCY:-} ]]; then
  cargo build --release -p dipc-transport-rdma --example latency
  lat=$CARGO_TARGET_DIR/release/examples/latency
  # perftest (if installed on the host) gives the reference number.
  ref='if command -v ib_read_lat >/dev/null; then
         ib_read_lat -d rxe0 -x 1 -s 4096 -n 1000 >/dev/null 2>&1 & sleep 1
         ib_read_lat -d rxe0 -x 1 -s 4096 -n 1000 127.0.0.1 | grep -A1 "#bytes"; wait
       fi'
  exec "$run" -- sh -c "$(printf '%q ' "${cmd[@]}") && $lat 1000 && $ref"
fi
exec "$run" -- "${cmd[@]}"
