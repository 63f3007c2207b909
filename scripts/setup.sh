#!/usr/bin/env bash
# Install what building and testing dipc needs from Debian, idempotently.
# Called by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail

pkgs=(gcc libc6-dev make pkg-config libibverbs-dev librdmacm-dev libclang-dev ibverbs-providers perftest redis-server)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { "${sudo_cmd[@]}" apt-get update -qq && "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
fi
command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }

# cargo-fuzz for the short fuzz run of scripts/test.sh (once; a few minutes
# to build). Not fatal: without it the test command says the fuzz run is
# skipped.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz" >&2
  cargo install --locked --quiet cargo-fuzz </dev/null ||
    echo "setup: cargo-fuzz could not be installed; the fuzz run will be skipped" >&2
fi
