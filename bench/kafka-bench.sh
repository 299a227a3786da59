#!/usr/bin/env bash
# Throughput through the Kafka-protocol listener, measured with librdkafka (the rdkafka
# crate on Debian's librdkafka 2.0.2: integration-tests/examples/kafka-perf.rs, in the
# spirit of rdkafka_performance, which Debian does not ship), next to sluice-bench's
# native numbers on the same broker in the same run.
#
#   bench/kafka-bench.sh                        # 500k records per cell
#   SLUICE_BENCH_RECORDS=2000000 bench/kafka-bench.sh
#
# One broker (fsync durability, its defaults) with both listeners on free 127.0.0.1
# ports, data under target/kafka-bench/; 1 KiB records over 6 partitions, one producer
# each side (sluice-bench --producers 1; one librdkafka producer, linger.ms 5, batch.size
# 1 MB, no compression): acks 1, then acks all with idempotence; then each side consumes
# its acks=all topic from the start. Needs librdkafka-dev (integration-tests/kafka-clients/
# install.sh). Prints one Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-500000}
SIZE=1024
PARTITIONS=6

cargo build --release --bins -q
cargo build --release -q -p sluice-integration-tests --features rdkafka --example kafka-perf
BIN=$PWD/target/release
PERF=$BIN/examples/kafka-perf
if ! "$BIN/sluice-broker" --help | grep -q -- --kafka-listen; then
  echo "sluice-broker has no --kafka-listen: the Kafka listener has not landed, nothing to measure" >&2
  exit 1
fi
WORK=$PWD/target/kafka-bench
rm -rf "$WORK" && mkdir -p "$WORK"
source bench/lib.sh
cleanup() { stop_brokers; rm -rf "$WORK"/data; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

start_kafka_broker

native() { "$BIN/sluice-bench" "$@" --format json 2>/dev/null | tail -1; }
kafka() { "$PERF" "$@" --bootstrap "$KAFKA" | tail -1; }
row() { # path workload json
  echo "$3" | json "'| $1 | $2 | %.1f | %d | %s |' % (d['mb_per_sec'], d['records_per_sec'], '-' if not (d.get('latency_ms') or {}).get('max') else '%.1f / %.1f / %.1f' % (d['latency_ms']['p50'], d['latency_ms']['p99'], d['latency_ms']['p999']))"
}

rows=()
for acks in 1 all; do
  idem=false label="produce acks=$acks"
  if [[ $acks == all ]]; then
    idem=true label="produce acks=all, idempotent"
  fi
  log "native $label"
  out=$(native produce --topic "n-$acks" --partitions $PARTITIONS --num-records "$N" --record-size $SIZE \
    --acks "$acks" --producers 1 --enable-idempotence "$idem")
  rows+=("$(row "sluice-bench (native)" "$label" "$out")")
  log "kafka $label"
  "$BIN/sluice" topic create "k-$acks" --partitions $PARTITIONS >/dev/null
  out=$(kafka produce --topic "k-$acks" --num-records "$N" --record-size $SIZE --acks "$acks" \
    --enable-idempotence "$idem")
  rows+=("$(row "librdkafka (Kafka listener)" "$label" "$out")")
done
log "native consume"
rows+=("$(row "sluice-bench (native)" "consume from the start" "$(native consume --topic n-all --num-records "$N")")")
log "kafka consume"
rows+=("$(row "librdkafka (Kafka listener)" "consume from the start" "$(kafka consume --topic k-all --num-records "$N")")")

cat <<DOC
Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); $(date -u +%Y-%m-%d).
One broker, fsync durability, $PARTITIONS partitions, $SIZE-byte records, $N records per run, one producer.

| client (listener) | workload | MB/s | records/s | latency ms p50 / p99 / p999 |
|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")
DOC
