#!/usr/bin/env bash
# Runs the Autobahn TestSuite server cases that apply to Sluice against a release build,
# with kosoku (a runner for the Autobahn case files, from PyPI), and prints one line:
#
#   autobahn: N cases: N OK, N NON-STRICT, N INFORMATIONAL, N FAILED
#
# It exits non-zero when any case FAILED. Reports (HTML and JSON per case, index.json)
# go to $OUT (default target/autobahn/report).
#
#   scripts/autobahn.sh                  the cases below
#   SLUICE_BIN=path scripts/autobahn.sh  another build of the gateway
#   CASES="2.* 7.1.2" scripts/autobahn.sh  some cases only
#
# Sluice is not an echo server: it sends Kafka records, and what a client sends goes to
# a topic (or nowhere). Most of the suite expects every message to come back, so only
# the cases whose expectation holds for a server that never answers a message are run:
# it must answer pings, fail the connection on a framing or protocol violation (reserved
# bits and opcodes, fragmented or oversized control frames, continuations with nothing
# to continue, invalid UTF-8 in what the client sends) and close cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
kosoku_version="0.1.0"
venv="$target/autobahn/venv"
out="${OUT:-$target/autobahn/report}"
parallelism="${PARALLELISM:-2}"

# Run, with why:
cases=(
  # 2.x pings and pongs: pongs echo the ping's payload; 2.5 is a control frame over
  # 125 bytes (fail with 1002); unsolicited pongs get nothing.
  '2.*'
  # 3.x reserved bits set with no extension negotiated: fail with 1002. 3.2-3.4 send a
  # valid text message first and expect its echo (OK) or none (NON-STRICT): NON-STRICT
  # is the verdict a server that does not echo gets, and the failure is still checked.
  '3.*'
  # 4.x reserved opcodes: fail. 4.1.3-4.1.5 and 4.2.3-4.2.5 are NON-STRICT like 3.2.
  '4.*'
  # 5.x fragmentation errors: fragmented control frames, continuations with nothing to
  # continue, a second text opcode inside a fragmented message; 5.15 completes a message
  # first and is NON-STRICT like 3.2. (5.3-5.8 and 5.19-5.20 expect the reassembled
  # message echoed: excluded below.)
  '5.1' '5.2' '5.9' '5.10' '5.11' '5.12' '5.13' '5.14' '5.15' '5.16' '5.17' '5.18'
  # 6.x invalid UTF-8 in a text message, whole or split across frames and reads: fail
  # with 1007. 6.4.3 and 6.4.4 split one frame across reads: failing before the frame is
  # complete is OK, failing once it is complete NON-STRICT. (The valid-UTF-8 cases of 6.x
  # expect the message echoed: excluded.)
  '6.3.*' '6.4.*'
  '6.6.1' '6.6.3' '6.6.4' '6.6.6' '6.6.8' '6.6.10'
  '6.8.*' '6.10.*' '6.11.5' '6.12.*' '6.13.*' '6.14.*' '6.15.*' '6.16.*' '6.17.*'
  '6.18.*' '6.19.*' '6.20.*' '6.21.*'
  # 7.x the closing handshake: frames after a close are ignored, close payloads of
  # length 0, 1, 2, with a reason of 123 and 124 bytes, invalid UTF-8 in the reason,
  # valid and invalid close codes (1002 or a dropped connection for invalid ones).
  # 7.1.6 (a 256 KiB message, a close, a ping) is informational by design. (7.1.1 expects
  # an echo: excluded.)
  '7.1.2' '7.1.3' '7.1.4' '7.1.5' '7.1.6' '7.3.*' '7.5.*' '7.7.*' '7.9.*' '7.13.*'
)
# Not run, with why:
#   1.x    text and binary messages of every size, echoed back.
#   5.3-5.8, 5.19, 5.20  fragmented messages, reassembled and echoed.
#   6.1, 6.2, 6.5, 6.7, 6.9, 6.22, 6.23 and the valid cases of 6.6 and 6.11
#          valid UTF-8, echoed back.
#   7.1.1  a message echoed before the close.
#   9.x    throughput of large echoed messages and fragments.
#   10.x   an auto-fragmented message echoed back.
#   12.x, 13.x  permessage-deflate, which Sluice does not negotiate, on echoed messages.
if [ -n "${CASES:-}" ]; then
  read -r -a cases <<<"$CASES"
fi

# kosoku is pinned: its verdicts come from the case files it ships.
if [ ! -x "$venv/bin/kosoku" ] || ! "$venv/bin/pip" show kosoku 2>/dev/null | grep -qx "Version: $kosoku_version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$kosoku_version"
fi

if [ -z "${SLUICE_BIN:-}" ]; then
  cargo build --release --locked -p sluice
  SLUICE_BIN="$target/release/sluice"
fi

# The fuzzer sends no credentials and no Origin, and every frame the server sends counts
# as an event the case did not expect: so anonymous, no welcome frame, and no pings of
# the gateway's own. With no broker the gateway serves its embedded stream, on which
# nothing is produced. Settings in the environment must not leak in.
mkdir -p "$target/autobahn"
log="$target/autobahn/gateway.log"
stdout="$target/autobahn/gateway.out"
env -u SLUICE_CONFIG -u WS_USERNAME -u WS_PASSWORD -u SLUICE_JWT_SECRET -u input \
  -u Quix__Broker__Address -u KAFKA_BROKERS -u Quix__Sdk__Token -u SLUICE_DEMO -u PORT \
  RUST_LOG=warn "$SLUICE_BIN" --host 127.0.0.1 --port 0 --allow-anonymous --no-welcome \
  --ping-interval 0 >"$stdout" 2>"$log" &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true; wait "$gateway" 2>/dev/null || true' EXIT

url=""
for _ in $(seq 300); do
  url=$(sed -n 's/^sluice listening on \(ws:\/\/[^ ]*\).*/\1/p' "$stdout" | head -n 1)
  [ -n "$url" ] && break
  if ! kill -0 "$gateway" 2>/dev/null; then
    echo "error: the gateway exited:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "error: the gateway did not start within 30 s" >&2
  exit 1
fi

args=()
for c in "${cases[@]}"; do
  args+=(-i "$c")
done
rm -rf "$out"
echo "+ kosoku $kosoku_version against $SLUICE_BIN ($url/autobahn), ${#cases[@]} selections" >&2
# kosoku exits 1 when a case fails; the summary below decides.
"$venv/bin/kosoku" "$url/autobahn" "${args[@]}" -p "$parallelism" -o "$out" >"$target/autobahn/kosoku.log" 2>&1 || true

# One line of counts, and each failed case with what the gateway did.
"$venv/bin/python" - "$out/index.json" <<'EOF'
import json, pathlib, sys

index = pathlib.Path(sys.argv[1])
if not index.exists():
    print(f"autobahn: no report at {index}", file=sys.stderr)
    sys.exit(1)
results = next(iter(json.loads(index.read_text()).values()))
acceptable = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts = {"OK": 0, "NON-STRICT": 0, "INFORMATIONAL": 0, "FAILED": 0}
failed = []
for case, r in results.items():
    behavior, close = r["behavior"], r["behaviorClose"]
    if behavior not in acceptable or close not in acceptable:
        counts["FAILED"] += 1
        failed.append((case, r))
    elif "NON-STRICT" in (behavior, close):
        counts["NON-STRICT"] += 1
    elif "INFORMATIONAL" in (behavior, close):
        counts["INFORMATIONAL"] += 1
    else:
        counts["OK"] += 1
key = lambda c: [int(p) for p in c[0].split(".")]
for case, r in sorted(failed, key=key):
    detail = json.loads((index.parent / r["reportfile"]).read_text())
    print(
        f"FAILED {case}: {detail['description'][:100]!r}: behavior {r['behavior']} ({detail['result']}), "
        f"close {r['behaviorClose']} ({detail['resultClose']}); the gateway closed with "
        f"{detail.get('remoteCloseCode')} {detail.get('remoteCloseReason')!r}"
    )
print(
    f"autobahn: {len(results)} cases: {counts['OK']} OK, {counts['NON-STRICT']} NON-STRICT, "
    f"{counts['INFORMATIONAL']} INFORMATIONAL, {counts['FAILED']} FAILED (report: {index.parent}/index.html)"
)
sys.exit(1 if counts["FAILED"] else 0)
EOF
