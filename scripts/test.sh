#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests that start a real Tansu
# (Kafka-protocol) broker and the real `sluice` binary, and drive the console in headless
# Chromium. Installs Tansu and the browser test's npm packages first when absent.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/tansu.sh

# The console's browser test drives Chromium with playwright-core, from tests/browser. Without
# it that test fails and says how to install it; it never skips.
if [ ! -d tests/browser/node_modules ]; then
  if command -v npm >/dev/null 2>&1; then
    npm ci --prefix tests/browser --no-audit --no-fund
  else
    echo "warning: npm not found: the console's browser test will fail (install Node.js 20+ and npm)" >&2
  fi
fi

# One closing line for the whole suite, summed over every test binary.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
