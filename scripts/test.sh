#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests that start a real Tansu
# (Kafka-protocol) broker and the real `sluice` binary. Installs Tansu first when absent.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_FEATURES="dynostore,libsql,postgres"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"

if [ -z "${TANSU_BIN:-}" ]; then
  if command -v tansu >/dev/null 2>&1; then
    TANSU_BIN="$(command -v tansu)"
  elif [ -x "$cargo_bin/tansu" ]; then
    TANSU_BIN="$cargo_bin/tansu"
  else
    echo "Tansu broker not found: building it once (cargo install tansu, about 12 minutes)..."
    cargo install tansu --locked --features "$TANSU_FEATURES"
    TANSU_BIN="$cargo_bin/tansu"
  fi
fi
if [ ! -x "$TANSU_BIN" ]; then
  echo "error: Tansu broker not executable at $TANSU_BIN" >&2
  exit 1
fi
export TANSU_BIN

cargo test --workspace --locked "$@"
