#!/usr/bin/env bash
# The cluster's figures (BENCHMARKS.md, "Cluster"), against a release build, a Redis of its
# own on a free port and a Tansu broker:
#
#   1. live delivery without and with --cluster, interleaved, RUNS times each: fan-out
#      throughput (`scripts/bench.sh fanout`'s first line) and latency at 10k msg/s;
#   2. listing 10,000 clients spread over 3 replicas, and send-to-one through the holding
#      replica and through another (sluice-bench-cluster).
#
#   scripts/bench-cluster.sh            both (about 10 minutes on 2 cores)
#   scripts/bench-cluster.sh live       1 only;   scripts/bench-cluster.sh api   2 only
#   RUNS=1 scripts/bench-cluster.sh     fewer runs
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
runs="${RUNS:-3}"
limit="${BENCH_TIMEOUT:-300}"

source scripts/tansu.sh
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p sluice -p sluice-bench
export SLUICE_BIN="${SLUICE_BIN:-$target/release/sluice}"
bench="$target/release/sluice-bench"

command -v redis-server >/dev/null || { echo "error: redis-server is required (apt-get install redis-server)" >&2; exit 1; }
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis_dir="$(mktemp -d)"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" >"$redis_dir/log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$redis_dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

mkdir -p "$target/bench"
stamp="$(date +%Y%m%dT%H%M%S)"
alone="$target/bench/$stamp-live-alone.jsonl"
clustered="$target/bench/$stamp-live-cluster.jsonl"

# pair ARGS...: one scenario without, then with --cluster.
pair() {
  timeout --kill-after=10 "$limit" "$bench" "$@" --json "$alone"
  timeout --kill-after=10 "$limit" "$bench" "$@" --json "$clustered" --gateway-arg="--cluster=redis://127.0.0.1:$port/0"
}

live() {
  for i in $(seq "$runs"); do
    echo "== run $i of $runs: each scenario alone, then with --cluster" >&2
    pair fanout --clients 1000 --keys 10 --records 100000 --duration 10 --drain 20
    pair latency --clients 1000 --keys 10 --rates 10000 --duration 8
  done
  echo; echo "### without --cluster"; "$bench" summary "$alone"
  echo; echo "### with --cluster (one Redis, one replica)"; "$bench" summary "$clustered"
}

api() {
  for i in $(seq "$runs"); do
    echo "== run $i of $runs: a cluster of 3, then one gateway alone" >&2
    timeout --kill-after=10 "$limit" "$target/release/sluice-bench-cluster" --clients 10000 --walks 5 --sends 1000
    timeout --kill-after=10 "$limit" "$target/release/sluice-bench-cluster" --alone --clients 10000 --walks 5 --sends 1000
  done
}

case "$what" in
  all) live; api ;;
  live) live ;;
  api) api ;;
  *) echo "usage: $0 [all|live|api]" >&2; exit 2 ;;
esac
