#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests that start a real Tansu
# (Kafka-protocol) broker and the real `sluice` binary. Installs Tansu first when absent.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/tansu.sh

# One closing line for the whole suite, summed over every test binary.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
