#!/usr/bin/env bash
# sluice side by side with the peers a user could pick instead that install on a fresh
# machine from a package registry: today NATS JetStream (Debian's `nats-server`, driven by
# bench/peers/nats_pub.c over Debian's C client `libnats-dev`). Apache Kafka, Redpanda and
# Apache Iggy do not install that way here; BENCHMARKS.md quotes their figures with how
# they were measured.
#
# One producer, one partition (a one-subject stream for NATS), 1,000-byte incompressible
# records, acknowledged by the server, in two loads: as fast as it goes, and a fixed
# RATE records/s (linger 0 for sluice), open loop with latency from each record's due
# time. Each system runs as a fresh single node in its default durability, and sluice
# also in `replicated` (no fsync before the ack, NATS's default too). Systems alternate
# within each round; the table gives every run's MB/s, the medians, and the disk's own
# bandwidth (dd) from the same run.
#
#   bench/compare.sh                                  # 3 rounds of 300,000 records
#   ROUNDS=5 SLUICE_BENCH_RECORDS=1000000 RATE=100000 bench/compare.sh
#   NATS_PENDING=256 bench/compare.sh                 # NATS publishes awaiting an ack
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-300000}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-100000}
NATS_PENDING=${NATS_PENDING:-4096}

need=()
command -v nats-server >/dev/null || need+=(nats-server)
[[ -f /usr/include/nats/nats.h ]] || need+=(libnats-dev)
command -v cc >/dev/null || need+=(gcc)
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  else
    echo "compare.sh needs the Debian packages: ${need[*]} (apt-get install ${need[*]}), then rerun" >&2
    exit 1
  fi
fi

cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$PWD/target/compare
mkdir -p "$WORK"
source bench/lib.sh
cc -O2 -Wall -o "$WORK/nats_pub" bench/peers/nats_pub.c -lnats
cleanup() { stop_brokers; rm -rf "$WORK"/data-*; }
trap cleanup EXIT

# One run of system $1 under load $2: prints the summary JSON line.
run() {
  local system=$1 load=$2 port rate_flags=()
  port=$(free_port)
  rm -rf "$WORK/data-$system"
  if [[ $system == nats ]]; then
    nats-server -js -sd "$WORK/data-$system" -a 127.0.0.1 -p "$port" 2>"$WORK/$system.log" &
    PIDS+=($!)
    for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    local rate=0
    [[ $load == fixed ]] && rate=$RATE
    "$WORK/nats_pub" "nats://127.0.0.1:$port" bench "$N" 1000 "$rate" "$NATS_PENDING"
  else
    local durability=${system#sluice-}
    "$BIN/sluice-broker" --listen "127.0.0.1:$port" --kafka-listen off --http-listen off \
      --data-dir "$WORK/data-$system" --durability "$durability" 2>"$WORK/$system.log" &
    PIDS+=($!)
    SLUICE_BOOTSTRAP="127.0.0.1:$port" wait_active 1
    [[ $load == fixed ]] && rate_flags=(--throughput "$RATE" --linger-ms 0)
    SLUICE_BOOTSTRAP="127.0.0.1:$port" "$BIN/sluice-bench" produce --topic bench \
      --num-records "$N" --record-size 1000 --acks all --producers 1 --partitions 1 \
      "${rate_flags[@]}" --format json 2>/dev/null | tail -1
  fi
  stop_brokers
}

SYSTEMS=(sluice-fsync sluice-replicated nats)
declare -A label=(
  [sluice-fsync]="sluice | fsync before the ack (its default)"
  [sluice-replicated]="sluice | \`replicated\`: no fsync before the ack"
  [nats]="NATS JetStream $(nats-server --version | awk '{ print $NF }') | no fsync before the ack (its default)"
)
dd=$(disk_mbs "$WORK")
declare -A mbs p50 p99 p999
for load in max fixed; do
  for round in $(seq 1 "$ROUNDS"); do
    for system in "${SYSTEMS[@]}"; do
      out=$(run "$system" "$load")
      read -r m a b c <<<"$(echo "$out" | json '" ".join(str(round(x, 2)) for x in (d["mb_per_sec"], d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["latency_ms"]["p999"]))')"
      echo "== $load round $round $system: $m MB/s, p50/p99/p999 $a/$b/$c ms" >&2
      mbs[$load-$system]+="$m "
      p50[$load-$system]+="$a "
      p99[$load-$system]+="$b "
      p999[$load-$system]+="$c "
    done
  done
done

echo "| system | durability | load | runs (MB/s) | median MB/s | median latency ms p50 / p99 / p999 |"
echo "|---|---|---|---|---|---|"
for load in max fixed; do
  name="as fast as it goes"
  [[ $load == fixed ]] && name="$RATE records/s"
  for system in "${SYSTEMS[@]}"; do
    k=$load-$system
    echo "| ${label[$system]} | $name | ${mbs[$k]}| $(median "${mbs[$k]}") | $(median "${p50[$k]}") / $(median "${p99[$k]}") / $(median "${p999[$k]}") |"
  done
done
echo
echo "$ROUNDS alternating rounds of $N records of 1,000 bytes, one producer, one partition; dd (1 GiB, fdatasync) in the same run: $dd MB/s. NATS: $NATS_PENDING publishes awaiting an ack at most; sluice: its producer defaults (5 batches in flight, linger 5 ms unless a rate is set, then 0)."
