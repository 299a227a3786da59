#!/usr/bin/env bash
# Batch compression (issue 23): for each codec and two kinds of values, produce throughput
# and latency (sluice-bench produce --compression), the bytes the topic takes on disk, and
# consume throughput, on one broker with its defaults. Prints a Markdown table on stdout.
#
#   bench/compression.sh                          # 200k records of 1 KiB per cell
#   SLUICE_BENCH_RECORDS=1000000 bench/compression.sh
#
# Values: `json`, JSON lines of click events (field names repeat, values from small
# vocabularies: compressible as real event streams are), and `random`, incompressible bytes.
# "MB/s" counts record payload before compression (what the application sent), so the
# codecs are compared on the same work. Bytes on disk are the topic's .log files after the
# run (the broker stores batches as the producer compressed them).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-200000}
SIZE=${SLUICE_BENCH_RECORD_SIZE:-1024}
PARTITIONS=6

cargo build --release -q -p sluice-broker -p sluice-client -p sluice-bench --bins
BIN=$PWD/target/release
WORK=$PWD/target/bench-compression
rm -rf "$WORK" && mkdir -p "$WORK"
source bench/lib.sh
cleanup() { stop_brokers; rm -rf "$WORK"/data; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

export SLUICE_BOOTSTRAP=127.0.0.1:$(free_port)
"$BIN/sluice-broker" --listen "$SLUICE_BOOTSTRAP" --kafka-listen off --data-dir "$WORK/data" 2>"$WORK/broker.log" &
PIDS+=($!)
wait_active 1

bench() { "$BIN/sluice-bench" "$@" --format json 2>/dev/null | tail -1; }
disk_bytes() { batch_bytes "$WORK"/data/topics/"$1"-*/*.log; }
mib() { python3 -c "print(round($1 / 1048576, 1))"; }

load=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
for payload in json random; do
  none_bytes=
  # CODEC or CODEC:LEVEL; the defaults (gzip 6, zstd 3) and each codec's fastest level.
  for spec in none gzip gzip:1 snappy lz4 zstd zstd:1; do
    codec=${spec%%:*}
    level=()
    [[ $spec == *:* ]] && level=(--compression-level "${spec#*:}")
    topic="c-$payload-${spec/:/-}"
    log "produce $N $payload records with $spec"
    out=$(bench produce --topic "$topic" --partitions $PARTITIONS --num-records "$N" \
      --record-size "$SIZE" --payload "$payload" --compression "$codec" "${level[@]}")
    mbs=$(echo "$out" | json 'round(d["mb_per_sec"], 1)')
    rps=$(echo "$out" | json 'round(d["records_per_sec"])')
    lat=$(echo "$out" | json '"%.1f / %.1f" % (d["latency_ms"]["p50"], d["latency_ms"]["p99"])')
    bytes=$(disk_bytes "$topic")
    none_bytes=${none_bytes:-$bytes}
    ratio=$(python3 -c "print(round($none_bytes / $bytes, 2))")
    log "consume $N records with $spec"
    cons=$(bench consume --topic "$topic" --num-records "$N" | json 'round(d["mb_per_sec"], 1)')
    "$BIN/sluice" topic delete "$topic" >/dev/null
    rows+=("| $payload | $spec | $mbs | $rps | $lat | $(mib "$bytes") | ${ratio}x | $cons |")
  done
done
stop_brokers

cat <<DOC
$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(date -u +%Y-%m-%d), load average before the run: $load; one broker (fsync), $PARTITIONS partitions, one idempotent acks=all producer with default batching (1 MiB, 5 ms linger), $N records of $SIZE bytes per cell.

| values | codec[:level] | produce MB/s (uncompressed) | records/s | latency ms p50 / p99 | on disk MiB | smaller than none | consume MB/s |
|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")
DOC
