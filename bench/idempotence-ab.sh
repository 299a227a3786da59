#!/usr/bin/env bash
# What idempotent producers cost: one broker (fsync durability), acks=all, 4 producers,
# 6 partitions, 1 KiB records; runs with idempotence on and off alternate ROUNDS times
# (on, off, on, off, ...) so drift on this shared machine hits both alike, and prints each
# run's MB/s and the medians as a Markdown table.
#
#   bench/idempotence-ab.sh                      # 5 rounds of 2M records per run
#   ROUNDS=9 SLUICE_BENCH_RECORDS=5000000 bench/idempotence-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-2000000}
ROUNDS=${ROUNDS:-5}

cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$PWD/target/bench-ab
rm -rf "$WORK" && mkdir -p "$WORK"
source bench/lib.sh
cleanup() { stop_brokers; rm -rf "$WORK"; }
trap cleanup EXIT
export SLUICE_BOOTSTRAP=127.0.0.1:$(free_port)
"$BIN/sluice-broker" --listen "$SLUICE_BOOTSTRAP" --data-dir "$WORK/data" 2>"$WORK/broker.log" &
PIDS+=($!)
wait_active 1

declare -A runs=([true]="" [false]="")
for round in $(seq 1 "$ROUNDS"); do
  for idem in true false; do
    topic="ab-$round-$idem"
    mbs=$("$BIN/sluice-bench" produce --topic "$topic" --partitions 6 --num-records "$N" --record-size 1024 \
      --acks all --producers 4 --enable-idempotence "$idem" --format json 2>/dev/null | tail -1 |
      json 'round(d["mb_per_sec"], 1)')
    "$BIN/sluice" topic delete "$topic" >/dev/null
    echo "== round $round idempotence=$idem: $mbs MB/s" >&2
    runs[$idem]+="$mbs "
  done
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
on=$(median "${runs[true]}")
off=$(median "${runs[false]}")
cat <<DOC
| idempotence | runs (MB/s) | median MB/s |
|---|---|---|
| on | ${runs[true]}| $on |
| off | ${runs[false]}| $off |

Median on / off: $(python3 -c "print(round($on / $off, 2))") ($ROUNDS alternating rounds of $N records, acks=all, 4 producers, one broker).
DOC
