#!/usr/bin/env bash
# The benchmark matrix of BENCHMARKS.md, and the machine's own limits measured in the same
# run: dd sequential write with fdatasync on the disk the broker writes to, and a loopback
# TCP copy with iperf3 (installed from Debian when missing and we are root).
#
#   bench/run.sh                 # 500k records per cell
#   SLUICE_BENCH_RECORDS=2000000 bench/run.sh
#
# Starts a single-node broker (fsync durability, its defaults) on a free 127.0.0.1 port
# with data under target/bench-run/, runs 1 KiB records over 6 partitions with acks 1 and
# all and 1 and 4 producers, first unlimited, then at half the measured rate for latency
# (acks=all also with idempotence off, to show what it costs), then a consume and an e2e
# run. Then the same produce cells on three brokers on 127.0.0.1 with replication factor
# 3. Then the codecs of bench/compression.sh. Prints one Markdown document on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-500000}
SIZE=1024
PARTITIONS=6

cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$PWD/target/bench-run
rm -rf "$WORK" && mkdir -p "$WORK"
source bench/lib.sh
cleanup() { stop_brokers; rm -rf "$WORK"/data* "$WORK/dd.bin"; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

log "machine"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
mem=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
fs=$(df -T "$WORK" | awk 'NR==2 { print $2 " on " $1 }')

log "dd: 1 GiB sequential write, fdatasync at the end, on the broker's filesystem"
dd_mbs=$(disk_mbs "$WORK")

log "loopback TCP: iperf3 for 5 s"
if ! command -v iperf3 >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3) >&2 || true
fi
tcp_mbs="not measured (iperf3 missing)"
if command -v iperf3 >/dev/null; then
  port=$(free_port)
  iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  sleep 0.5
  tcp_mbs=$(iperf3 -c 127.0.0.1 -p "$port" -t 5 -J | json 'round(d["end"]["sum_received"]["bits_per_second"] / 8 / 1e6, 1)')
fi

bench() { "$BIN/sluice-bench" "$@" --format json 2>/dev/null | tail -1; }
pct() { python3 -c "print(round(100 * $1 / $dd_mbs))"; }
latencies() { json '"%.1f / %.1f / %.1f" % (d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["latency_ms"]["p999"])'; }

# One table row: produce unlimited, then at half that rate (open loop) for latency.
# Args: acks producers idempotence replication-factor. Leaves `topic` (the unlimited
# run's) for the caller to read or delete.
cell() {
  local acks=$1 producers=$2 idem=$3 rf=$4 out mbs rps lat rate half label
  topic="t-$acks-$producers-$idem-$rf"
  log "produce rf=$rf acks=$acks producers=$producers idempotence=$idem: unlimited"
  out=$(bench produce --topic "$topic" --partitions $PARTITIONS --replication-factor "$rf" --num-records "$N" \
    --record-size $SIZE --acks "$acks" --producers "$producers" --enable-idempotence "$idem")
  mbs=$(echo "$out" | json 'round(d["mb_per_sec"], 1)')
  rps=$(echo "$out" | json 'round(d["records_per_sec"])')
  lat=$(echo "$out" | latencies)
  rate=$((rps / 2))
  log "produce rf=$rf acks=$acks producers=$producers idempotence=$idem: $rate records/s"
  out=$(bench produce --topic "$topic-half" --partitions $PARTITIONS --replication-factor "$rf" --num-records "$N" \
    --record-size $SIZE --acks "$acks" --producers "$producers" --enable-idempotence "$idem" --throughput $rate)
  "$BIN/sluice" topic delete "$topic-half" >/dev/null
  half=$(echo "$out" | latencies)
  label=$acks
  if [[ $acks == all ]]; then
    label="all, idempotence $([[ $idem == true ]] && echo on || echo off)"
  fi
  rows+=("| $label | $producers | $mbs | $(pct "$mbs")% | $rps | $lat | $rate | $half |")
}

log "one broker"
export SLUICE_BOOTSTRAP=127.0.0.1:$(free_port)
"$BIN/sluice-broker" --listen "$SLUICE_BOOTSTRAP" --data-dir "$WORK/data" 2>"$WORK/broker.log" &
PIDS+=($!)
wait_active 1

rows=()
for producers in 1 4; do
  cell 1 $producers true 1
  "$BIN/sluice" topic delete "$topic" >/dev/null
done
for producers in 1 4; do
  cell all $producers true 1
  if [[ $producers == 1 ]]; then
    log "consume $N records"
    out=$(bench consume --topic "$topic" --num-records "$N")
    consume_mbs=$(echo "$out" | json 'round(d["mb_per_sec"], 1)')
  fi
  "$BIN/sluice" topic delete "$topic" >/dev/null
  cell all $producers false 1
  "$BIN/sluice" topic delete "$topic" >/dev/null
done
single_rows=("${rows[@]}")

log "e2e at 10000 records/s"
e2e_n=$((N < 100000 ? N : 100000))
out=$(bench e2e --topic e2e --partitions $PARTITIONS --num-records "$e2e_n" --record-size $SIZE --throughput 10000)
e2e=$(echo "$out" | latencies)
stop_brokers

log "three brokers"
start_three_brokers
rows=()
for acks in 1 all; do
  for producers in 1 4; do
    cell $acks $producers true 3
    "$BIN/sluice" topic delete "$topic" >/dev/null
  done
done
cluster_rows=("${rows[@]}")
stop_brokers

header='| acks | producers | MB/s | of dd | records/s | latency ms p50 / p99 / p999 | half rate (records/s) | latency at half rate p50 / p99 / p999 |
|---|---|---|---|---|---|---|---|'
cat <<DOC
Machine: $(nproc) cores ($cpu), $mem, data on $fs; $(date -u +%Y-%m-%d).
Disk: dd 1 GiB sequential write with fdatasync: **$dd_mbs MB/s**. Loopback TCP (iperf3): **$tcp_mbs MB/s**.
Durability fsync everywhere (acknowledged = on disk), $PARTITIONS partitions, $SIZE-byte records, $N records per run.

One broker:

$header
$(printf '%s\n' "${single_rows[@]}")

Consume ($N records, from the acks=all run): **$consume_mbs MB/s** ($(pct "$consume_mbs")% of dd).
End to end at 10000 records/s ($e2e_n records): p50 / p99 / p999 = $e2e ms.

Three brokers on this machine (one disk and two cores shared by all three), replication factor 3:

$header
$(printf '%s\n' "${cluster_rows[@]}")
DOC

# The Kafka listener next to the native one on the same broker build (issue 18): needs
# librdkafka-dev (integration-tests/kafka-clients/install.sh); skipped without it.
if pkg-config --exists rdkafka 2>/dev/null; then
  echo
  echo "Kafka listener (bench/kafka-bench.sh):"
  echo
  bench/kafka-bench.sh
else
  echo "bench/kafka-bench.sh skipped: librdkafka-dev is missing (integration-tests/kafka-clients/install.sh)" >&2
fi

# Batch compression per codec (issue 23): throughput, bytes on disk, consume.
echo
echo "Compression (bench/compression.sh):"
echo
bench/compression.sh
