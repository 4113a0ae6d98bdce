#!/usr/bin/env bash
# Checks the admin API against its own OpenAPI document with schemathesis: every operation,
# every check (status codes, content types, headers, response schemas, valid data accepted,
# invalid data refused, wrong methods, missing authentication), a bounded number of cases.
# Exits non-zero on any failure.
#
#   scripts/schemathesis.sh                       the release build, 200 cases per operation and phase
#   MAX_EXAMPLES=100 scripts/schemathesis.sh      more cases
#   SEED=123 scripts/schemathesis.sh              other cases (the default seed keeps CI repeatable)
#   SLUICE_BIN=target/debug/sluice scripts/schemathesis.sh   another build of the gateway
#
# The gateway runs on the embedded stream with demo data, on a free port of 127.0.0.1, with
# three clients connected (two on sensor-1, one on /*) that read whatever they are sent and
# reconnect when an operation disconnects them, so the client list, messages, broadcasts and
# disconnects meet real clients. schemathesis is installed from PyPI, at the version below,
# into a virtualenv under the target directory.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${SCHEMATHESIS_VERSION:-4.32.5}"
websockets_version="17.4"
examples="${MAX_EXAMPLES:-200}"
seed="${SEED:-20261123}"
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
venv="$target/schemathesis"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $version" \
  || ! "$venv/bin/python" -c "import websockets" 2>/dev/null; then
  echo "installing schemathesis $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$version" "websockets==$websockets_version"
fi

if [ -z "${SLUICE_BIN:-}" ]; then
  cargo build --release --locked --bin sluice
  SLUICE_BIN="$target/release/sluice"
fi
SLUICE_BIN="$(cd "$(dirname "$SLUICE_BIN")" && pwd)/$(basename "$SLUICE_BIN")"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

token="schemathesis-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
ADMIN_TOKEN="$token" WS_USERNAME=fuzz WS_PASSWORD=fuzz-password RUST_LOG=warn \
  "$SLUICE_BIN" --host 127.0.0.1 --port 0 --demo >"$work/stdout" 2>"$work/stderr" &
pids+=($!)
addr=""
for _ in $(seq 100); do
  addr="$(sed -n 's|^sluice listening on ws://\([^ ]*\).*|\1|p' "$work/stdout")"
  [ -n "$addr" ] && break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "error: sluice did not start:" >&2
  cat "$work/stderr" >&2
  exit 1
fi

# Clients that stay connected: they read everything, and come back when closed.
"$venv/bin/python" - "$addr" <<'PY' >"$work/clients.log" 2>&1 &
import asyncio, base64, sys
import websockets

addr = sys.argv[1]
auth = "Basic " + base64.b64encode(b"fuzz:fuzz-password").decode()

async def client(path):
    while True:
        try:
            async with websockets.connect(
                f"ws://{addr}{path}", additional_headers={"Authorization": auth}, max_size=None
            ) as ws:
                async for _ in ws:
                    pass
        except Exception as e:
            print(f"{path}: {e}", flush=True)
        await asyncio.sleep(0.2)

async def main():
    await asyncio.gather(*(client(p) for p in ["/sensor-1", "/sensor-1", "/*"]))

asyncio.run(main())
PY
pids+=($!)
for _ in $(seq 100); do
  clients="$(curl -sf -H "Authorization: Bearer $token" "http://$addr/api/info" | sed -n 's/.*"clients":\([0-9]*\).*/\1/p')"
  [ "${clients:-0}" -ge 3 ] && break
  sleep 0.1
done
if [ "${clients:-0}" -lt 3 ]; then
  echo "error: the clients did not connect:" >&2
  cat "$work/clients.log" >&2
  exit 1
fi

# The event stream never ends: schemathesis reads it until the request times out, so its
# cases get a short timeout of their own. No cache: each run stands on its own (the cache
# would replay earlier runs' failures), and nothing is left in the working tree.
cat >"$work/schemathesis.toml" <<'TOML'
[cache]
enabled = false

[[operations]]
include-path = "/api/events"
request-timeout = 1
TOML

echo "schemathesis $version against sluice at $addr: $examples cases per operation and phase, seed $seed" >&2
status=0
# From the scratch directory, so that whatever schemathesis writes stays out of the tree.
cd "$work"
timeout --kill-after=10 600 "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" --no-color \
  run "http://$addr/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples "$examples" \
  --seed "$seed" \
  --request-timeout 5 \
  --workers 1 ||
  status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures (exit $status); the gateway's log:" >&2
  tail -n 50 "$work/stderr" >&2
fi
exit "$status"
