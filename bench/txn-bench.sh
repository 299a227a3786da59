#!/usr/bin/env bash
# What transactions cost (issue 26): a Kafka transactional producer that commits every
# 100 ms against the same producer idempotent only, alternating rounds in one run.
#
#   bench/txn-bench.sh                                   # 3 rounds of 500k records each
#   ROUNDS=5 SLUICE_BENCH_RECORDS=1000000 TXN_MS=100 bench/txn-bench.sh
#
# One broker (fsync durability, its defaults) with its Kafka listener on a free 127.0.0.1
# port, data under target/txn-bench/; 1 KiB records over 6 partitions, one confluent-kafka
# producer (bench/peers/txn_bench.py: librdkafka 2.16 from the Kafka-clients venv,
# linger.ms 5, batch.size 1 MB, acks all, idempotent, no compression), and the same with
# sluice's own client (`sluice-bench produce`, `--transaction-ms` for the transactional
# rounds, its defaults otherwise: linger 5 ms, 1 MiB batches) on the native listener. The
# transactional rounds' time includes every commit (each waits for its records, then
# EndTxn, which answers once the markers are written). Debian's librdkafka 2.0.2 (kafka-perf) is not
# used: on a first try its transactional deliveries waited about a second (20,000 records
# in one transaction: p50 0.99 s) where confluent-kafka's 2.16 took 0.09 s against the
# same debug broker. Needs the
# venv (integration-tests/kafka-clients/install.sh). Prints one Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-500000}
ROUNDS=${ROUNDS:-3}
TXN_MS=${TXN_MS:-100}
SIZE=1024
PARTITIONS=6

cargo build --release --bins -q
BIN=$PWD/target/release
PYTHON=${SLUICE_KAFKA_VENV:-$PWD/target/kafka-venv}/bin/python
[[ -x $PYTHON ]] || { echo "no Kafka-clients venv at $PYTHON: run integration-tests/kafka-clients/install.sh" >&2; exit 1; }
WORK=$PWD/target/txn-bench
rm -rf "$WORK" && mkdir -p "$WORK"
source bench/lib.sh
cleanup() { stop_brokers; rm -rf "$WORK"/data; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

start_kafka_broker

declare -A mbs latency commits cpu
for round in $(seq 1 "$ROUNDS"); do
  for kind in sluice-idempotent sluice-transactional; do
    topic="$kind-$round"
    "$BIN/sluice" topic create "$topic" --partitions $PARTITIONS >/dev/null
    txn=()
    [[ $kind == sluice-transactional ]] && txn=(--transaction-ms "$TXN_MS")
    log "round $round: $kind"
    before=$(cpu_seconds "${PIDS[0]}")
    out=$("$BIN/sluice-bench" produce --topic "$topic" --num-records "$N" --record-size $SIZE \
      "${txn[@]}" --format json 2>/dev/null | tail -1)
    after=$(cpu_seconds "${PIDS[0]}")
    mbs[$kind]+="$(echo "$out" | json "'%.1f' % d['mb_per_sec']") "
    latency[$kind]+="$(echo "$out" | json "'%.1f/%.1f' % (d['latency_ms']['p50'], d['latency_ms']['p99'])") "
    seconds=$(echo "$out" | json "d['seconds']")
    commits[$kind]+="$([[ -n ${txn[*]} ]] && python3 -c "print(int($seconds * 1000 / $TXN_MS) + 1)" || echo 0) "
    cpu[$kind]+="$(python3 -c "print(round(($after - $before) * 1000 / ($N * $SIZE / 1e6), 2))") "
  done
  for kind in idempotent transactional; do
    topic="$kind-$round"
    "$BIN/sluice" topic create "$topic" --partitions $PARTITIONS >/dev/null
    txn=0
    [[ $kind == transactional ]] && txn=$TXN_MS
    log "round $round: $kind"
    before=$(cpu_seconds "${PIDS[0]}")
    out=$("$PYTHON" bench/peers/txn_bench.py "$KAFKA" "$topic" "$N" $SIZE $txn | tail -1)
    after=$(cpu_seconds "${PIDS[0]}")
    mbs[$kind]+="$(echo "$out" | json "'%.1f' % d['mb_per_sec']") "
    latency[$kind]+="$(echo "$out" | json "'%.1f/%.1f' % (d['latency_ms']['p50'], d['latency_ms']['p99'])") "
    commits[$kind]+="$(echo "$out" | json "d['commits']") "
    cpu[$kind]+="$(python3 -c "print(round(($after - $before) * 1000 / ($N * $SIZE / 1e6), 2))") "
  done
done

row() { # kind label
  echo "| $2 | ${mbs[$1]}| $(median "${mbs[$1]}") | ${latency[$1]}| ${commits[$1]}| ${cpu[$1]}|"
}
cat <<DOC
Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); $(date -u +%Y-%m-%d).
One broker, fsync durability, $PARTITIONS partitions, $SIZE-byte records, $N records per round, one producer, acks=all (sluice's commits per run: one per $TXN_MS ms of the run, approximately).

| producer | runs (MB/s) | median MB/s | latency ms p50/p99 per run | commits per run | broker CPU ms per MB |
|---|---|---|---|---|---|
$(row sluice-idempotent "sluice-bench, idempotent")
$(row sluice-transactional "sluice-bench, transactional, a commit every $TXN_MS ms")
$(row idempotent "confluent-kafka, idempotent")
$(row transactional "confluent-kafka, transactional, a commit every $TXN_MS ms")
DOC
