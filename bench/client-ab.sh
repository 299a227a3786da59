#!/usr/bin/env bash
# A client change, before and after: the `sluice-bench` of BASE (built in a git worktree,
# so the client library of that revision) and of the working tree take turns, ROUNDS
# times, each against a fresh single broker of the working tree, so only the client
# differs. Loads as in bench/broker-ab.sh (1,000-byte records, acks=all). Prints a
# Markdown table of each run's MB/s, p50/p99 latency and the client process's CPU time
# per MB (user + system), and the medians: at full speed one producer is limited by its
# application's thread, so the client's CPU per MB is what a client change moves first.
#
#   bench/client-ab.sh                                   # BASE=HEAD, 3 rounds of 300k
#   BASE=<rev> ROUNDS=6 SLUICE_BENCH_RECORDS=1000000 bench/client-ab.sh
#   OLD_BENCH=/path/to/sluice-bench bench/client-ab.sh   # skip building BASE
#   BROKER_FLAGS="--durability replicated" LOADS=unlimited bench/client-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-300000}
ROUNDS=${ROUNDS:-3}
BASE=${BASE:-HEAD}

cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$PWD/target/client-ab
mkdir -p "$WORK"
source bench/lib.sh
OLD=${OLD_BENCH:-}
if [[ -z $OLD ]]; then
  build_base "$BASE" sluice-bench
  OLD=$WORK/base-target/release/sluice-bench
fi
cleanup() { stop_brokers; rm -rf "$WORK"/data-*; }
trap cleanup EXIT

declare -A LOAD_FLAGS=(
  [unlimited]="--producers 1 --partitions 1"
  [fixed-100k]="--producers 1 --partitions 1 --throughput 100000 --linger-ms 0"
  [8-producers]="--producers 8 --partitions 8"
)
read -r -a ORDER <<<"${LOADS:-unlimited fixed-100k}"
declare -A mbs p50 p99 cpums
TIMEFORMAT='%U %S'
for load in "${ORDER[@]}"; do
  for round in $(seq 1 "$ROUNDS"); do
    for side in base new; do
      bench=$BIN/sluice-bench
      [[ $side == base ]] && bench=$OLD
      clear_data "$WORK"/data-*
      port=$(free_port)
      # shellcheck disable=SC2086 # the flags are words
      "$BIN/sluice-broker" --listen "127.0.0.1:$port" --kafka-listen off --http-listen off \
        --data-dir "$WORK/data-$side" ${BROKER_FLAGS:-} 2>"$WORK/broker-$side.log" &
      PIDS+=($!)
      export SLUICE_BOOTSTRAP="127.0.0.1:$port"
      wait_active 1
      # `time` reports the client's user and system CPU seconds on stderr's last line.
      # shellcheck disable=SC2086 # the flags are words
      { time "$bench" produce --topic ab --num-records "$N" --record-size 1000 --acks all \
        ${LOAD_FLAGS[$load]} --format json >"$WORK/out" 2>/dev/null; } 2>"$WORK/time"
      stop_brokers
      out=$(tail -1 "$WORK/out")
      m=$(echo "$out" | json 'round(d["mb_per_sec"], 1)')
      l=$(echo "$out" | json '" ".join(str(round(d["latency_ms"][k], 2)) for k in ("p50", "p99"))')
      read -r a b <<<"$l"
      read -r user sys <<<"$(tail -1 "$WORK/time")"
      cpu=$(python3 -c "print(round(1000 * ($user + $sys) / ($N * 1000 / 1e6), 2))")
      echo "== $load round $round $side: $m MB/s, p50/p99 $a/$b ms, client $cpu CPU ms/MB" >&2
      mbs[$load-$side]+="$m "
      p50[$load-$side]+="$a "
      p99[$load-$side]+="$b "
      cpums[$load-$side]+="$cpu "
    done
  done
done
echo "| load | client | runs (MB/s) | median MB/s | median latency ms p50 / p99 | client CPU ms per MB: runs, median |"
echo "|---|---|---|---|---|---|"
for load in "${ORDER[@]}"; do
  for side in base new; do
    label="base ($BASE)"
    [[ $side == base && -n ${OLD_BENCH:-} ]] && label="base ($OLD_BENCH)"
    [[ $side == new ]] && label="working tree"
    echo "| $load | $label | ${mbs[$load-$side]}| $(median "${mbs[$load-$side]}") | $(median "${p50[$load-$side]}") / $(median "${p99[$load-$side]}") | ${cpums[$load-$side]}: $(median "${cpums[$load-$side]}") |"
  done
done
echo
echo "$ROUNDS alternating rounds of $N records of 1,000 bytes; one broker of the working tree (flags: ${BROKER_FLAGS:-none}), acks=all."
