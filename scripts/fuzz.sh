#!/usr/bin/env bash
# Run every cargo-fuzz target of dipc for SECONDS each (default 60) and
# report the crashes found.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh --build-only     # build every target, run none
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain
# (`cargo +nightly`); with only a stable toolchain it retries with
# RUSTC_BOOTSTRAP=1, which lets stable rustc accept -Zsanitizer=address.
# The targets' bodies also run as ordinary stable tests
# (*/tests/fuzz_regressions.rs), so `cargo test` covers them without any
# of this.
#
# A crash input is left by libFuzzer in fuzz/artifacts/<target>/. To keep
# it as a regression case, copy it to fuzz/regressions/<target>/: the
# stable tests replay every file there.
#
# Environment: CARGO_TARGET_DIR (default target-fuzz at the repo root),
# FUZZ_JOBS (parallel libFuzzer jobs per target, default 1), FUZZ_SANITIZER
# (cargo fuzz's --sanitizer, default address; scripts/test.sh uses none:
# the fuzzed code is safe Rust, and the uninstrumented build is quicker),
# FUZZ_DEV (1: build unoptimised and without debug info, `cargo fuzz
# --dev`: about half the CPU time of the default optimised build, and runs
# ~10 times fewer inputs a second; scripts/test.sh uses it for its
# 10-second smoke run. Leave it unset for real fuzzing).
set -u
secs=${1:-60}
shift || true
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/fuzz" || exit 2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target-fuzz}
flags=(--sanitizer "${FUZZ_SANITIZER:-address}")
if [ "${FUZZ_DEV:-0}" = 1 ]; then
    flags+=(--dev)
    export CARGO_PROFILE_DEV_DEBUG=0
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
if cargo +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    echo "fuzz.sh: no nightly toolchain; trying stable with RUSTC_BOOTSTRAP=1" >&2
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi

if [ "$secs" = --build-only ]; then
    exec cargo "${toolchain[@]}" fuzz build "${flags[@]}"
fi
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

failed=()
for t in "${targets[@]}"; do
    echo "=== $t: ${secs}s"
    mkdir -p "corpus/$t"
    args=(-max_total_time="$secs" -print_final_stats=1)
    if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
        args+=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
    fi
    # Seed the corpus with the kept regression inputs.
    if [ -d "regressions/$t" ]; then
        cp -n "regressions/$t"/* "corpus/$t"/ 2>/dev/null || true
    fi
    if ! cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$t" "corpus/$t" -- "${args[@]}"; then
        failed+=("$t")
    fi
done

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "fuzz.sh: no crash in ${#targets[@]} targets (${secs}s each)"
    exit 0
fi
echo "fuzz.sh: crashes (or build failures) in: ${failed[*]}"
for t in "${failed[@]}"; do
    ls -1 "artifacts/$t" 2>/dev/null | sed "s|^|  artifacts/$t/|"
done
echo "copy a crash input to fuzz/regressions/<target>/ to keep it as a stable test"
exit 1
