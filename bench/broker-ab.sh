#!/usr/bin/env bash
# A broker change, before and after: the `sluice-broker` of BASE (built in a git worktree)
# and of the working tree take turns, ROUNDS times, each as a fresh single node (fsync
# on, the default) measured by the working tree's `sluice-bench`, so only the broker
# differs. Three loads of 1,000-byte records, acks=all: as fast as one producer goes; a
# fixed 100,000 records/s (100 MB/s) with linger 0, where latency is the broker's
# pipeline and not queueing; and 8 producers on 8 partitions. Prints a Markdown table of
# each run's MB/s and p50/p99/p999 latency, and the medians. More loads on request run
# three brokers of each side with one partition of replication factor 3: as fast as it
# goes (rf3-unlimited), and at 150,000 or 200,000 records/s with linger 0 (rf3-150k,
# rf3-200k: about half that on a 2-core machine, on slower and faster days). The
# `consume` load produces the records first, unmeasured, then reads them all back from
# the start with one consumer: its MB/s and CPU are the fetch path's (no latency);
# `kafka-consume` does the same with a librdkafka consumer through the Kafka listener
# (integration-tests' kafka-perf example; needs librdkafka-dev).
#
#   bench/broker-ab.sh                       # BASE=HEAD, 3 rounds of 300k records
#   BASE=<rev> ROUNDS=5 SLUICE_BENCH_RECORDS=1000000 bench/broker-ab.sh
#   OLD_BROKER=/path/to/sluice-broker bench/broker-ab.sh   # skip building BASE
#   LOADS=fixed-100k ROUNDS=7 bench/broker-ab.sh            # some of the loads only
#   LOADS="rf3-unlimited rf3-150k" ROUNDS=5 bench/broker-ab.sh     # three brokers, RF 3
#   OLD_BROKER=target/release/sluice-broker OLD_FLAGS="--http-listen off" bench/broker-ab.sh
#                              # one binary, two configurations (here: metrics off vs on)
#
# Besides MB/s and latency it reports the broker's CPU time per MB produced (user +
# system, from /proc; all three brokers' for the RF 3 loads), which a machine shared with
# other work disturbs far less than
# throughput: the cost of a change that does not touch the disk shows there first.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-300000}
ROUNDS=${ROUNDS:-3}
BASE=${BASE:-HEAD}

cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$PWD/target/broker-ab
mkdir -p "$WORK"
source bench/lib.sh
OLD=${OLD_BROKER:-}
if [[ -z $OLD ]]; then
  build_base "$BASE" sluice-broker
  OLD=$WORK/base-target/release/sluice-broker
fi
cleanup() { stop_brokers; rm -rf "$WORK"/data-*; }
trap cleanup EXIT

# load name -> sluice-bench produce flags
declare -A LOAD_FLAGS=(
  [unlimited]="--producers 1 --partitions 1"
  [fixed-100k]="--producers 1 --partitions 1 --throughput 100000 --linger-ms 0"
  [8-producers]="--producers 8 --partitions 8"
  [rf3-unlimited]="--producers 1 --partitions 1 --replication-factor 3"
  [rf3-150k]="--producers 1 --partitions 1 --replication-factor 3 --throughput 150000 --linger-ms 0"
  [rf3-200k]="--producers 1 --partitions 1 --replication-factor 3 --throughput 200000 --linger-ms 0"
  [consume]="--producers 1 --partitions 1"
  [kafka-consume]="--producers 1 --partitions 1"
)
read -r -a ORDER <<<"${LOADS:-unlimited fixed-100k 8-producers}"
if [[ " ${ORDER[*]} " == *" kafka-consume "* ]]; then
  cargo build --release -q -p sluice-integration-tests --features rdkafka --example kafka-perf
fi
declare -A mbs p50 p99 p999 cpums
for load in "${ORDER[@]}"; do
  for round in $(seq 1 "$ROUNDS"); do
    for side in base new; do
      broker=$BIN/sluice-broker
      [[ $side == base ]] && broker=$OLD
      flags=${NEW_FLAGS:-}
      [[ $side == base ]] && flags=${OLD_FLAGS:-}
      clear_data "$WORK"/data-*
      if [[ $load == rf3-* ]]; then
        # shellcheck disable=SC2086 # the flags are words
        start_three_brokers "$broker" $flags
      else
        port=$(free_port)
        kafka=()  # a broker from before the Kafka listener has no such flag
        "$broker" --help | grep -q -- --kafka-listen && kafka=(--kafka-listen off)
        if [[ $load == kafka-consume ]]; then
          kafka_address=127.0.0.1:$(free_port)
          kafka=(--kafka-listen "$kafka_address")
        fi
        # shellcheck disable=SC2086 # the flags are words
        "$broker" --listen "127.0.0.1:$port" "${kafka[@]}" --data-dir "$WORK/data-$side" $flags \
          2>"$WORK/broker-$side.log" &
        PIDS+=($!)
        export SLUICE_BOOTSTRAP="127.0.0.1:$port"
        wait_active 1
      fi
      # shellcheck disable=SC2086 # the flags are words
      out=$("$BIN/sluice-bench" produce --topic "ab" --num-records "$N" --record-size 1000 \
        --acks all ${LOAD_FLAGS[$load]} --format json 2>/dev/null | tail -1)
      cpu_before=0
      if [[ $load == consume ]]; then
        cpu_before=$(cpu_seconds "${PIDS[0]}")
        out=$("$BIN/sluice-bench" consume --topic "ab" --num-records "$N" --format json \
          2>/dev/null | tail -1)
      elif [[ $load == kafka-consume ]]; then
        cpu_before=$(cpu_seconds "${PIDS[0]}")
        out=$("$BIN/examples/kafka-perf" consume --topic "ab" --num-records "$N" \
          --bootstrap "$kafka_address" | tail -1)
      fi
      cpu_secs=$(python3 -c "print(-$cpu_before)")
      for pid in "${PIDS[@]}"; do
        cpu_secs=$(python3 -c "print($cpu_secs + $(cpu_seconds "$pid"))")
      done
      stop_brokers
      m=$(echo "$out" | json 'round(d["mb_per_sec"], 1)')
      l=$(echo "$out" | json '" ".join(str(round(v, 2)) if v is not None else "-" for v in ((d.get("latency_ms") or {}).get(k) for k in ("p50", "p99", "p999")))')
      read -r a b c <<<"$l"
      cpu=$(python3 -c "print(round(1000 * $cpu_secs / ($N * 1000 / 1e6), 2))")
      echo "== $load round $round $side: $m MB/s, p50/p99/p999 $a/$b/$c ms, $cpu CPU ms/MB" >&2
      cpums[$load-$side]+="$cpu "
      mbs[$load-$side]+="$m "
      p50[$load-$side]+="$a "
      p99[$load-$side]+="$b "
      p999[$load-$side]+="$c "
    done
  done
done
echo "| load | broker | runs (MB/s) | median MB/s | median latency ms p50 / p99 / p999 | broker CPU ms per MB: runs, median |"
echo "|---|---|---|---|---|---|"
for load in "${ORDER[@]}"; do
  for side in base new; do
    label="base ($BASE)"
    [[ $side == new ]] && label="working tree"
    [[ $side == base && -n ${OLD_BROKER:-} ]] && label="base ($OLD_BROKER)"
    [[ $side == base && -n ${OLD_FLAGS:-} ]] && label+=" $OLD_FLAGS"
    [[ $side == new && -n ${NEW_FLAGS:-} ]] && label+=" $NEW_FLAGS"
    echo "| $load | $label | ${mbs[$load-$side]}| $(median "${mbs[$load-$side]}") | $(median "${p50[$load-$side]}") / $(median "${p99[$load-$side]}") / $(median "${p999[$load-$side]}") | ${cpums[$load-$side]}: $(median "${cpums[$load-$side]}") |"
  done
done
echo
echo "$ROUNDS alternating rounds of $N records of 1,000 bytes; one broker (three for the rf3 loads; fsync unless the flags say otherwise), acks=all; the working tree's sluice-bench for both."
