#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests that start a real Tansu
# (Kafka-protocol) broker and the real `sluice` binary. Installs Tansu first when absent.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/tansu.sh

cargo test --workspace --locked "$@"
