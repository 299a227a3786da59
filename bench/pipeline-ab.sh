#!/usr/bin/env bash
# What pipelining the idempotent producer's batches buys (up to five in flight per
# partition, against one before): the `sluice-bench` of BASE (a revision from before the
# pipeline, built in a git worktree) and of the working tree take turns against the same
# three brokers (the working tree's), ROUNDS times, on one partition with replication
# factor 3, acks=all, one producer, 1 KiB records: the case where a batch's round trip
# (replication and fsync) is what a producer waits for. Two batch sizes: the default
# (1 MiB) and 16 KiB (Kafka's default `batch.size`). Prints a Markdown table of each
# run's MB/s and p99 latency and the medians.
#
#   bench/pipeline-ab.sh                             # BASE=0c3cf08, 3 rounds of 300k records
#   BASE=<rev> ROUNDS=5 SLUICE_BENCH_RECORDS=1000000 bench/pipeline-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-300000}
ROUNDS=${ROUNDS:-3}
BASE=${BASE:-0c3cf08}

cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$PWD/target/pipeline-ab
mkdir -p "$WORK"
source bench/lib.sh
build_base "$BASE" sluice-bench
OLD=$WORK/base-target/release/sluice-bench
cleanup() { stop_brokers; rm -rf "$WORK"/data-*; }
trap cleanup EXIT
start_three_brokers

declare -A mbs p99
for batch in 1048576 16384; do
  for round in $(seq 1 "$ROUNDS"); do
    for side in base new; do
      bench=$BIN/sluice-bench
      [[ $side == base ]] && bench=$OLD
      topic="pipe-$batch-$round-$side"
      out=$("$bench" produce --topic "$topic" --partitions 1 --replication-factor 3 --num-records "$N" \
        --record-size 1024 --acks all --producers 1 --batch-bytes "$batch" --format json 2>/dev/null | tail -1)
      "$BIN/sluice" topic delete "$topic" >/dev/null
      m=$(echo "$out" | json 'round(d["mb_per_sec"], 1)')
      p=$(echo "$out" | json 'round(d["latency_ms"]["p99"], 1)')
      echo "== batch $batch round $round $side: $m MB/s, p99 $p ms" >&2
      mbs[$batch-$side]+="$m "
      p99[$batch-$side]+="$p "
    done
  done
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
echo "| batch bytes | producer | runs (MB/s) | median MB/s | runs p99 (ms) | median p99 ms |"
echo "|---|---|---|---|---|---|"
for batch in 1048576 16384; do
  for side in base new; do
    label="one in flight ($BASE)"
    [[ $side == new ]] && label="five in flight"
    echo "| $batch | $label | ${mbs[$batch-$side]}| $(median "${mbs[$batch-$side]}") | ${p99[$batch-$side]}| $(median "${p99[$batch-$side]}") |"
  done
done
echo
for batch in 1048576 16384; do
  echo "Batch $batch: median MB/s five / one in flight = $(python3 -c "print(round($(median "${mbs[$batch-new]}") / $(median "${mbs[$batch-base]}"), 2))")."
done
echo
echo "$ROUNDS alternating rounds of $N records; one partition, replication factor 3, acks=all, one producer, three brokers on this machine."
