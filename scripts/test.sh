#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests that start a real Tansu
# (Kafka-protocol) broker and the real `sluice` binary, drive the console in headless
# Chromium, and run the example clients. Installs Tansu, the npm packages and the Python
# example's virtualenv first when absent.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/tansu.sh

# The browser tests (console, example page, client library) drive Chromium with playwright-core,
# from tests/browser; tests/examples.rs runs the Node examples with their own packages, and
# tests/clientlib.rs the client library's tests with its dev packages (ws, typescript). Without
# them those tests fail and say how to install them; they never skip. Installed when absent, or
# when the lock file is newer than what npm last installed from it.
for dir in tests/browser examples/node-websocket examples/node-ws clients/js; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    if command -v npm >/dev/null 2>&1; then
      npm ci --prefix "$dir" --no-audit --no-fund
    else
      echo "warning: npm not found: the tests that need $dir will fail (install Node.js 20+ and npm)" >&2
    fi
  fi
done

# The Python example runs in its own virtualenv, made (or brought up to date) from its pinned
# requirements; a copy of them in the virtualenv says what it holds.
venv=examples/python/.venv
if ! cmp -s examples/python/requirements.txt "$venv/requirements.txt"; then
  if python3 -m venv "$venv" && "$venv/bin/pip" install --quiet -r examples/python/requirements.txt; then
    cp examples/python/requirements.txt "$venv/requirements.txt"
  else
    echo "warning: cannot set up $venv: the Python example's tests will fail (install Python 3.10+ with venv and pip; on Debian apt-get install python3-venv)" >&2
  fi
fi

# One closing line for the whole suite, summed over every test binary.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
