#!/usr/bin/env bash
# Runs Sluice's benchmark scenarios against a release build and a Tansu broker, and
# prints the median, minimum and maximum of each figure over the runs.
#
#   scripts/bench.sh                 every scenario, 3 runs each (about 10 minutes on 2 cores)
#   scripts/bench.sh fanout          one scenario: fanout, multiplexed, latency, memory, accept,
#                                    slow, stalled, reconnect or decode
#   scripts/bench.sh smoke           every scenario at a tiny scale, once; fails when the
#                                    harness misbehaves (for CI; no figure is checked)
#   RUNS=1 scripts/bench.sh latency  fewer runs
#   SLUICE_BIN=path scripts/bench.sh another build of the gateway
#
# Results are appended as JSON lines to $RESULTS (default target/bench/<time>.jsonl).
# Extra arguments after the scenario name go to every sluice-bench command, e.g.
#   scripts/bench.sh stalled --gateway-arg=--max-queued-bytes=268435456
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
shift || true
runs="${RUNS:-3}"
# A stuck run must end by itself: no scenario below needs more than this.
limit="${BENCH_TIMEOUT:-300}"

source scripts/tansu.sh
target="${CARGO_TARGET_DIR:-target}"

# SLUICE_BIN measures another build of the gateway; by default, this checkout's.
if [ -n "${SLUICE_BIN:-}" ]; then
  cargo build --release --locked -p sluice-bench
else
  cargo build --release --locked -p sluice -p sluice-bench
  export SLUICE_BIN="$target/release/sluice"
fi
bench="$target/release/sluice-bench"

mkdir -p "$target/bench"
results="${RESULTS:-$target/bench/$(date +%Y%m%dT%H%M%S)-$what.jsonl}"

# run NAME ARGS...: one sluice-bench command, bounded in time.
run() {
  echo "+ sluice-bench $*" >&2
  timeout --kill-after=10 "$limit" "$bench" "$@" --json "$results" "${extra[@]}"
}
extra=("$@")

fanout() {
  run fanout --clients 1000 --keys 10 --records 100000 --duration 10 --drain 20
  run fanout --clients 100 --all --records 100000 --duration 10 --drain 20
  # The same 1,000 clients on 20-field Avro values the gateway decodes: beside the first.
  run fanout --clients 1000 --keys 10 --records 100000 --duration 10 --drain 20 --avro
}
# Single-core decode throughput, Avro and Protobuf (no broker, no gateway).
decode() { "$bench" decode --seconds 5 --json "$results"; }
latency() {
  # The broker path alone (one client, 100 records/s): the floor under every figure below.
  run latency --clients 1 --keys 1 --rates 100 --duration 8
  # Fan-out 100 (as in fanout), then 1000: the same delivered rates from a tenth of the
  # records, which keeps the broker's per-record cost out of the gateway's figures.
  run latency --clients 1000 --keys 10 --rates 10000,50000,100000 --duration 8
  run latency --clients 1000 --keys 1 --rates 10000,50000,100000 --duration 8
}
memory() {
  run memory --connections 10000,19000
  # Multiplexed connections holding 10 subscriptions each (1 pattern, 9 exact keys).
  run memory --connections 10000 --subscriptions 10
}
# 1,000 multiplexed connections × 10 subscriptions (patterns and exact keys): set beside
# fanout's single-key figure of the same build.
multiplexed() { run multiplexed --clients 1000 --subscriptions 10 --records 100000 --duration 10 --drain 20; }
accept() { run accept --connections 10000 --connect-concurrency 100; }
# A queue small enough that the slow clients overflow it within the run.
slow() { run slow --clients 1000 --keys 10 --slow-fraction 0.1 --rate 50000 --duration 6 --records 100000 --queue-capacity 1024; }
# The review's 20 stalled clients on 20 keys, then 50; 24 MiB per key, past a client's
# 16 MiB byte bound and the little its socket takes.
stalled() {
  run stalled --stalled 20 --fast 4 --size 4096 --mib-per-key 24
  run stalled --stalled 50 --fast 4 --size 4096 --mib-per-key 24
}
# Every client resumes after a load balancer's reload: 1,000 then 10,000 of them, to show
# what grows with their number and what must not (the gateway's connections to the
# broker). First from memory (the gateway's default replay buffer holds what they missed),
# then with a replay buffer of 64 KiB, so the shared Kafka reader serves them. The
# tombstone after the missed records works around Tansu's high watermark, which stops at
# the start of the last batch (see BENCHMARKS.md, scenario 7). Last, from memory again
# with 150,000 older records in the replay buffer besides: what a resume costs depends on
# what the buffer holds, not only on what the client missed.
reconnect() {
  run reconnect --clients 1000
  run reconnect --clients 10000
  run reconnect --clients 1000 --replay-buffer-bytes 65536 --end-with-tombstone
  run reconnect --clients 10000 --replay-buffer-bytes 65536 --end-with-tombstone
  run reconnect --clients 1000 --prefill 15000
}

smoke() {
  local s=(--strict)
  run fanout --clients 20 --keys 2 --records 2000 --duration 5 --drain 5 --slow-consumer disconnect "${s[@]}"
  run fanout --clients 4 --all --records 2000 --duration 5 --drain 5 --slow-consumer disconnect "${s[@]}"
  run fanout --clients 20 --keys 2 --records 2000 --duration 5 --drain 5 --slow-consumer disconnect --avro "${s[@]}"
  "$bench" decode --seconds 0.2
  run latency --clients 20 --keys 2 --rates 1000,2000 --duration 1 --warmup 0.5 --drain 5 "${s[@]}"
  run memory --connections 100,200 --settle 0.2 "${s[@]}"
  run memory --connections 100 --subscriptions 10 --settle 0.2 "${s[@]}"
  run multiplexed --clients 20 --subscriptions 10 --records 2000 --duration 5 --drain 5 "${s[@]}"
  run accept --connections 300 "${s[@]}"
  run slow --clients 20 --keys 2 --rate 1000 --duration 1 --records 2000 --drain 5 "${s[@]}"
  run stalled --stalled 3 --fast 2 --mib-per-key 2 --drain 5 --settle 1 "${s[@]}"
  run reconnect --clients 20 --behind 50 --live 2 --idle 5 "${s[@]}"
  run reconnect --clients 20 --behind 50 --live 2 --idle 5 --replay-buffer-bytes 16384 --end-with-tombstone "${s[@]}"
}

started=$(date +%s)
case "$what" in
  smoke)
    runs=1
    smoke
    ;;
  all)
    for i in $(seq "$runs"); do
      echo "== run $i of $runs" >&2
      fanout
      multiplexed
      latency
      memory
      accept
      slow
      stalled
      reconnect
      decode
    done
    ;;
  fanout | multiplexed | latency | memory | accept | slow | stalled | reconnect | decode)
    for i in $(seq "$runs"); do
      echo "== run $i of $runs" >&2
      "$what"
    done
    ;;
  *)
    echo "usage: $0 [all|smoke|fanout|multiplexed|latency|memory|accept|slow|stalled|reconnect|decode] [sluice-bench arguments...]" >&2
    exit 2
    ;;
esac

echo
echo "Results: $results ($(($(date +%s) - started)) s)"
echo
"$bench" summary "$results"
