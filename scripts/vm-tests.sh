#!/usr/bin/env bash
# The soft-RoCE tests, in one VM of ../shared/rxe-vm (rxe0, GID index 1;
# every process talks through rxe loopback):
#   1. transport-rdma's device tests (tests/rxe.rs: frames, rpc() over RDMA,
#      dead peers, reconnect);
#   2. the end-to-end tests of dipc/tests with a real referee and nodes
#      started with --transport rdma (testkit honours DIPC_TEST_TRANSPORT):
#      shared memory (pattern, MP/SB litmus, atomic counter), msg/sem
#      (ping-pong, semaphore mutex), tests/transport.rs, which asserts
#      that `dipc status` shows rdma(rxe0), and tests/tls.rs's sharing test
#      (RDMA links set up over TLS).
# Builds on the host first; `--build-only` stops after the build
# (scripts/test.sh builds in the background while the other tests run).
#
#   scripts/vm-tests.sh [--build-only]
#
# Needs what scripts/setup.sh installs. RXE_VM overrides the VM's `run`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
[[ $CARGO_TARGET_DIR = /* ]] || CARGO_TARGET_DIR=$root/$CARGO_TARGET_DIR
run=${RXE_VM:-$root/../shared/rxe-vm/run}
[[ -x $run ]] || { echo "vm-tests.sh: $run not found (set RXE_VM)" >&2; exit 2; }

# Build every binary the VM runs (it must not build: emulated builds are
# slow), optimised: debug daemons under TCG are too slow for the tests' own
# time limits. Cargo.toml's `vm` profile is release without debug info
# (output in $CARGO_TARGET_DIR/vm). The test executables (and the dipc
# binary they run) come from one cargo run, so that they share one feature
# resolution and every dependency is built once. libsysv.so is left to the
# host run below: testkit builds it alone (`cargo build --profile vm -p
# sysv`, its own features) into the same file, and building it here first
# would make every later run of this script rebuild dipc and the tests
# (cargo sees a dependency newer than them).
tests=(rxe shm msgsem transport tls)
json=$(cargo test --quiet --profile vm -p dipc -p dipc-transport-rdma \
  "${tests[@]/#/--test=}" --no-run --message-format=json) ||
  { echo "vm-tests.sh: building the tests failed" >&2; exit 1; }
test_bin() { # test -> path of its executable
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' <<<"$json" | grep "/deps/$1-" | tail -1
}
rxe=$(test_bin rxe)
shm=$(test_bin shm)
msgsem=$(test_bin msgsem)
transport=$(test_bin transport)
tls=$(test_bin tls)
for b in "$rxe" "$shm" "$msgsem" "$transport" "$tls"; do
  [[ -n $b && -x $b ]] || { echo "vm-tests.sh: building the tests failed" >&2; exit 1; }
done
[[ ${1:-} = --build-only ]] && exit 0

shm_tests=(pattern_of_64_mib message_passing_litmus store_buffering_litmus atomic_counter_of_six)
msgsem_tests=(ping_pong_of_10000 a_semaphore_mutex_makes_a_plain_counter)
# Under CPU emulation the tests' counts and sizes are divided by this.
scale=${DIPC_TEST_SCALE:-20}

# The same tests on the host first, over TCP: this compiles their C
# programs into the cache the VM reads (compiling under emulation takes
# half a minute each), and is the TCP run to compare with.
echo "== on the host, over TCP (DIPC_TEST_SCALE=$scale)" >&2
DIPC_TEST_SCALE=$scale "$transport" --test-threads=2 -q
DIPC_TEST_SCALE=$scale "$shm" --test-threads=2 -q "${shm_tests[@]}"
DIPC_TEST_SCALE=$scale "$msgsem" --test-threads=2 -q "${msgsem_tests[@]}"
"$tls" --test-threads=2 -q tls_links
# In the VM, testkit's `cargo build -p sysv` (libsysv is built already) is
# skipped: CARGO=true.
script=$(cat <<SH
set -e
export CARGO=true
echo "== transport-rdma device tests (tests/rxe.rs)"
$rxe --test-threads=1
export DIPC_TEST_TRANSPORT=rdma DIPC_TEST_RDMA_DEVICE=\$RXE_VM_DEV DIPC_TEST_GID_INDEX=1
export DIPC_TEST_SCALE=$scale
echo "== dipc tests over RDMA (DIPC_TEST_SCALE=$scale)"
$transport --test-threads=1
$shm --test-threads=1 ${shm_tests[*]}
$msgsem --test-threads=1 ${msgsem_tests[*]}
$tls --test-threads=1 tls_links
SH
)
start=$(date +%s)
"$run" -- sh -c "$script"
echo "vm-tests.sh: all soft-RoCE tests passed in $(($(date +%s) - start)) s" >&2
