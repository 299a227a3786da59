#!/usr/bin/env bash
# sluice side by side with the peers a user could pick instead that install on a fresh
# machine from a package registry: today NATS JetStream (Debian's `nats-server`, driven by
# bench/peers/nats_pub.c over Debian's C client `libnats-dev`). Apache Kafka and Redpanda
# do not install that way here; BENCHMARKS.md quotes their figures with how they were
# measured. Apache Iggy installs from no registry either, but builds from its source with
# crates from crates.io (BENCHMARKS.md says how); given IGGY_BIN, the directory of its
# `iggy-server` and `iggy-bench`, it runs beside the others, with and without its fsync.
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
#   IGGY_BIN=/path/to/iggy/target/release bench/compare.sh   # Iggy too
#   LOADS=fixed bench/compare.sh                      # one load only (max, fixed)
#   ONLY="sluice-fsync nats" bench/compare.sh         # some systems only
#   IGGY_SAVE_EVERY_BATCH=1 IGGY_BIN=... bench/compare.sh   # its bench patched to save each batch
#   ONLY="sluice-replicated-calls" bench/compare.sh   # sluice in calls of IGGY_BATCH records
#
# Iggy is driven by its own `iggy-bench pinned-producer` (one stream, one partition, one
# producer), which sends batches and waits for each: IGGY_BATCH messages (1,000) as fast
# as it goes, 100 at the fixed rate; its latency is a batch's, send to acknowledgement.
# sluice then also runs in that shape (the `-calls` systems): its producer handed the
# same number of records per `send_all` call, latency a call's.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-300000}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-100000}
NATS_PENDING=${NATS_PENDING:-4096}
IGGY_BIN=${IGGY_BIN:-}
read -r -a LOADS <<<"${LOADS:-max fixed}"
IGGY_BATCH=${IGGY_BATCH:-1000}

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
  elif [[ $system == iggy-* ]]; then
    iggy_run "$system" "$load" "$port"
  else
    local durability=${system#sluice-} calls=1
    if [[ $durability == *-calls ]]; then
      durability=${durability%-calls}
      calls=$IGGY_BATCH
      [[ $load == fixed ]] && calls=100
    fi
    "$BIN/sluice-broker" --listen "127.0.0.1:$port" --kafka-listen off --http-listen off \
      --data-dir "$WORK/data-$system" --durability "$durability" 2>"$WORK/$system.log" &
    PIDS+=($!)
    SLUICE_BOOTSTRAP="127.0.0.1:$port" wait_active 1
    [[ $load == fixed ]] && rate_flags=(--throughput "$RATE" --linger-ms 0)
    SLUICE_BOOTSTRAP="127.0.0.1:$port" "$BIN/sluice-bench" produce --topic bench \
      --num-records "$N" --record-size 1000 --acks all --producers 1 --partitions 1 \
      --records-per-call "$calls" "${rate_flags[@]}" --format json 2>/dev/null | tail -1
  fi
  stop_brokers
  # What a system left unwritten in the page cache (no fsync, or its data deleted) goes
  # to the disk now, not in the next system's run: a flush of a gigabyte queues every
  # fsync behind it for ~0.4 s here; and the delete's own stall passes (`clear_data`).
  clear_data "$WORK/data-$system"
}

# One run of Iggy ($1: iggy-fsync or iggy-nofsync) under load $2 on port $3: prints a
# summary line in sluice-bench's JSON from iggy-bench's "Producers Results" line.
iggy_run() {
  local system=$1 load=$2 port=$3 batch=$IGGY_BATCH fsync=() rate=() out
  [[ $system == iggy-fsync ]] && fsync=(--enforce-fsync)
  if [[ $load == fixed ]]; then
    batch=100
    rate=(--rate-limit "$((RATE * 1000))B")
  fi
  IGGY_ROOT_USERNAME=iggy IGGY_ROOT_PASSWORD=iggy IGGY_SYSTEM_PATH="$WORK/data-$system" \
    IGGY_TCP_ADDRESS="127.0.0.1:$port" IGGY_HTTP_ENABLED=false IGGY_QUIC_ENABLED=false \
    IGGY_WEBSOCKET_ENABLED=false "$IGGY_BIN/iggy-server" >"$WORK/$system.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  out=$("$IGGY_BIN/iggy-bench" --message-size 1000 --messages-per-batch "$batch" \
    --message-batches "$((N / batch))" "${rate[@]}" "${fsync[@]}" \
    pinned-producer --streams 1 --producers 1 tcp --server-address "127.0.0.1:$port" 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g' | grep 'Producers Results' | tail -1)
  # (Its MB are 10^6 bytes of message payload, as sluice-bench's.)
  echo "$out" | python3 -c "import json,re,sys
s=sys.stdin.read()
def f(k):
    m = re.search(k + r': ([0-9.]+)', s)
    if not m:
        sys.exit('iggy-bench printed no summary; see $WORK/$system.log')
    return float(m.group(1))
print(json.dumps({'mb_per_sec': f('Total throughput'), 'latency_ms': {'p50': f('p50 latency'), 'p99': f('p99 latency'), 'p999': f('p999 latency')}}))"
}

SYSTEMS=(sluice-fsync sluice-replicated nats)
# Beside Iggy, sluice also in the shape of Iggy's bench: records handed over in calls of
# IGGY_BATCH (100 at the fixed rate), `sluice-bench --records-per-call`.
if [[ -n $IGGY_BIN ]]; then SYSTEMS+=(sluice-fsync-calls sluice-replicated-calls iggy-fsync iggy-nofsync); fi
if [[ -n ${ONLY:-} ]]; then read -r -a SYSTEMS <<<"$ONLY"; fi
declare -A label=(
  [sluice-fsync]="sluice | fsync before the ack (its default)"
  [sluice-replicated]="sluice | \`replicated\`: no fsync before the ack"
  [sluice-fsync-calls]="sluice, records in calls of $IGGY_BATCH (100 at the fixed rate) | fsync before the ack (its default)"
  [sluice-replicated-calls]="sluice, records in calls of $IGGY_BATCH (100 at the fixed rate) | \`replicated\`: no fsync before the ack"
  [nats]="NATS JetStream $(nats-server --version | awk '{ print $NF }') | no fsync before the ack (its default)"
  [iggy-fsync]="Apache Iggy (built from source) | fsync every write, but a write only every 1,024 messages or 1 MiB, acknowledged from memory before (\`--enforce-fsync\`)"
  [iggy-nofsync]="Apache Iggy (built from source) | no fsync (its default)"
)
# An iggy-bench whose fsync topic also sets messages_required_to_save = 1 (BENCHMARKS.md
# shows the one-line change): each batch is written and fsynced before its ack.
if [[ -n ${IGGY_SAVE_EVERY_BATCH:-} ]]; then
  label[iggy-fsync]="Apache Iggy (built from source) | fsync before the ack (\`--enforce-fsync\`, each batch saved)"
fi
for system in "${SYSTEMS[@]}"; do
  if [[ -z ${label[$system]:-} ]]; then
    echo "no system $system; ONLY takes: ${!label[*]}" >&2
    exit 1
  fi
  if [[ $system == iggy-* && -z $IGGY_BIN ]]; then
    echo "$system needs IGGY_BIN, the directory of iggy-server and iggy-bench" >&2
    exit 1
  fi
done
dd=$(disk_mbs "$WORK")
sync
declare -A mbs p50 p99 p999
for load in "${LOADS[@]}"; do
  for round in $(seq 1 "$ROUNDS"); do
    # Each round starts one system further on, so that no system always runs first.
    for i in "${!SYSTEMS[@]}"; do
      system=${SYSTEMS[$(((i + round - 1) % ${#SYSTEMS[@]}))]}
      out=$(run "$system" "$load")
      if [[ -z $out ]]; then
        echo "$system gave no summary in $load round $round; see $WORK/$system.log" >&2
        exit 1
      fi
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
for load in "${LOADS[@]}"; do
  name="as fast as it goes"
  [[ $load == fixed ]] && name="$RATE records/s"
  for system in "${SYSTEMS[@]}"; do
    k=$load-$system
    echo "| ${label[$system]} | $name | ${mbs[$k]}| $(median "${mbs[$k]}") | $(median "${p50[$k]}") / $(median "${p99[$k]}") / $(median "${p999[$k]}") |"
  done
done
echo
echo "$ROUNDS alternating rounds (each starting one system further on) of $N records of 1,000 bytes, one producer, one partition; dd (1 GiB, fdatasync) in the same run: $dd MB/s. NATS: $NATS_PENDING publishes awaiting an ack at most; sluice: its producer defaults (5 batches in flight, linger 5 ms unless a rate is set, then 0)."
if [[ -n $IGGY_BIN ]]; then
  echo "Iggy: iggy-bench pinned-producer, batches of $IGGY_BATCH messages as fast as it goes and of 100 at the fixed rate, each awaited before the next; its latency is a batch's, from its send."
fi
