#!/usr/bin/env bash
# Log compaction (issue 23): what the log cleaner costs producers, and what it saves on disk.
# The same keyed workload (a table of KEYS rows updated over and over, 1 KiB values, at a
# fixed rate) goes to a fresh one-broker cluster in three settings, alternating, ROUNDS
# times each:
#   delete     cleanup.policy=delete: no cleaner work, the baseline
#   compact    cleanup.policy=compact with the cleaner's default I/O budget (32 MiB/s)
#   unlimited  cleanup.policy=compact, --log-cleaner-io-bytes-per-sec 0 (no budget)
# For each: acknowledgement latency (p50 / p99 / p999), the topic's bytes on disk at the
# end against the bytes written, the cleaner runs the broker logged and the longest time a
# swap held the log, and broker CPU ms per MB produced. Prints a Markdown table on stdout.
#
#   bench/compaction.sh
#   SLUICE_BENCH_RECORDS=1200000 SLUICE_BENCH_RATE=40000 bench/compaction.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-400000}
RATE=${SLUICE_BENCH_RATE:-20000}
KEYS=${SLUICE_BENCH_KEYS:-10000}
ROUNDS=${SLUICE_BENCH_ROUNDS:-3}
SIZE=1024
SEGMENT=$((16 << 20))

cargo build --release -q -p sluice-broker -p sluice-client -p sluice-bench --bins
BIN=$PWD/target/release
WORK=$PWD/target/bench-compaction
rm -rf "$WORK" && mkdir -p "$WORK"
source bench/lib.sh
cleanup() { stop_brokers; rm -rf "$WORK"/data; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

declare -A p50 p99 p999 disk cpu runs swap
run() { # SETTING ROUND
  local setting=$1 policy=compact extra=()
  case $setting in
    delete) policy=delete ;;
    unlimited) extra=(--log-cleaner-io-bytes-per-sec 0) ;;
  esac
  rm -rf "$WORK/data"
  export SLUICE_BOOTSTRAP=127.0.0.1:$(free_port)
  "$BIN/sluice-broker" --listen "$SLUICE_BOOTSTRAP" --kafka-listen off --http-listen off \
    --data-dir "$WORK/data" --log-cleaner-interval-ms 1000 "${extra[@]}" 2>"$WORK/broker.log" &
  local pid=$!
  PIDS+=($pid)
  wait_active 1
  local cpu0 out
  cpu0=$(cpu_seconds "$pid")
  log "$setting round $2: $N records of $SIZE bytes over $KEYS keys at $RATE/s"
  out=$("$BIN/sluice-bench" produce --topic table --partitions 1 --num-records "$N" \
    --record-size "$SIZE" --keys "$KEYS" --throughput "$RATE" --format json \
    --topic-config cleanup.policy=$policy --topic-config segment.bytes=$SEGMENT \
    2>/dev/null | tail -1)
  local cpu1 key="$setting/$2"
  cpu1=$(cpu_seconds "$pid")
  p50[$key]=$(echo "$out" | json 'd["latency_ms"]["p50"]')
  p99[$key]=$(echo "$out" | json 'd["latency_ms"]["p99"]')
  p999[$key]=$(echo "$out" | json 'd["latency_ms"]["p999"]')
  disk[$key]=$(batch_bytes "$WORK"/data/topics/table-0/*.log)
  cpu[$key]=$(python3 -c "print(($cpu1 - $cpu0) * 1000 / ($N * $SIZE / 1e6))")
  runs[$key]=$(grep -c "log cleaner: " "$WORK/broker.log" || true)
  swap[$key]=$({ grep -o "swapped in [0-9.]* ms" "$WORK/broker.log" || true; } | awk '{ if ($3 > m) m = $3 } END { print m + 0 }')
  stop_brokers
}

load=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
  for setting in delete compact unlimited; do run "$setting" "$round"; done
done

median() { python3 -c "import statistics,sys; print(round(statistics.median(map(float, sys.argv[1:])), ${2:-2}))" "${@:3}"; }
row() { # SETTING
  local s=$1 keys=() r
  for r in $(seq 1 "$ROUNDS"); do keys+=("$s/$r"); done
  vals() { local -n a=$1; for k in "${keys[@]}"; do echo -n "${a[$k]} "; done; }
  # shellcheck disable=SC2046
  echo "| $s | $(median x 2 $(vals p50)) | $(median x 2 $(vals p99)) | $(median x 2 $(vals p999)) | $(python3 -c "print(round($(median x 0 $(vals disk)) / 1048576, 1))") | $(median x 0 $(vals runs)) | $(median x 1 $(vals swap)) | $(median x 2 $(vals cpu)) |"
}

cat <<DOC
$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(date -u +%Y-%m-%d), load average before the run: $load; one broker (fsync), one partition, segment.bytes $((SEGMENT >> 20)) MiB, one idempotent acks=all producer at $RATE records/s of $SIZE bytes over $KEYS keys ($((N * SIZE / 1000000)) MB written, a table of $((KEYS * SIZE / 1000000)) MB); medians of $ROUNDS alternating rounds.

| setting | latency ms p50 | p99 | p999 | on disk at the end, MiB | cleaner runs | longest swap, ms | broker CPU ms/MB |
|---|---|---|---|---|---|---|---|
$(row delete)
$(row compact)
$(row unlimited)
DOC
