#!/usr/bin/env bash
# The cost of TLS on produce: one broker binary, started plain and with TLS on its native
# listener in alternating rounds (ROUNDS times each), each run a fresh single node (fsync,
# the default) measured by `sluice-bench produce` (plain, or with --tls-ca-file). Two
# loads of 1,000-byte records, acks=all: one producer as fast as it goes, and 8 producers
# on 8 partitions. Reports per run MB/s, p50/p99 latency, and the broker's CPU seconds per
# MB produced (user + system, from /proc: on a shared machine less disturbed by other
# work than the wall clock), and the medians. The test CA and certificate are made with
# openssl in the scratch directory (ECDSA P-256, what `openssl req -newkey ec` makes).
#
#   bench/tls-ab.sh                                  # 3 rounds of 300k records
#   ROUNDS=5 SLUICE_BENCH_RECORDS=1000000 bench/tls-ab.sh
#   LOADS=8-producers bench/tls-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SLUICE_BENCH_RECORDS:-300000}
ROUNDS=${ROUNDS:-3}

cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$PWD/target/tls-ab
mkdir -p "$WORK"
source bench/lib.sh
cleanup() { stop_brokers; rm -rf "$WORK"/data-*; }
trap cleanup EXIT

pki=$WORK/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=sluice bench CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=broker-1" \
  -keyout "$pki/broker.key" -out "$pki/broker.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$pki/san.ext"
openssl x509 -req -in "$pki/broker.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 2 -extfile "$pki/san.ext" -out "$pki/broker.pem" 2>/dev/null

declare -A LOAD_FLAGS=(
  [unlimited]="--producers 1 --partitions 1"
  [8-producers]="--producers 8 --partitions 8"
)
read -r -a ORDER <<<"${LOADS:-unlimited 8-producers}"
load_avg=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A mbs p50 p99 cpu
for load in "${ORDER[@]}"; do
  for round in $(seq 1 "$ROUNDS"); do
    for side in plain tls; do
      port=$(free_port)
      rm -rf "$WORK/data-$side"
      broker_tls=() client_tls=()
      if [[ $side == tls ]]; then
        broker_tls=(--tls-cert-file "$pki/broker.pem" --tls-key-file "$pki/broker.key")
        client_tls=(--tls-ca-file "$pki/ca.pem")
      fi
      "$BIN/sluice-broker" --listen "127.0.0.1:$port" --kafka-listen off --http-listen off \
        --data-dir "$WORK/data-$side" "${broker_tls[@]}" 2>"$WORK/broker-$side.log" &
      pid=$!
      PIDS+=("$pid")
      export SLUICE_BOOTSTRAP="127.0.0.1:$port"
      if [[ $side == tls ]]; then export SLUICE_TLS_CA_FILE=$pki/ca.pem; else unset SLUICE_TLS_CA_FILE; fi
      wait_active 1
      before=$(cpu_seconds "$pid")
      # shellcheck disable=SC2086 # the flags are words
      out=$("$BIN/sluice-bench" produce --topic "ab" --num-records "$N" --record-size 1000 \
        --acks all ${LOAD_FLAGS[$load]} "${client_tls[@]}" --format json 2>/dev/null | tail -1)
      after=$(cpu_seconds "$pid")
      stop_brokers
      m=$(echo "$out" | json 'round(d["mb_per_sec"], 1)')
      l=$(echo "$out" | json '" ".join(str(round(d["latency_ms"][k], 2)) for k in ("p50", "p99"))')
      c=$(echo "$out" | python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(round(($after - $before) / (d['bytes'] / 1e6) * 1000, 3))")
      read -r a b <<<"$l"
      echo "== $load round $round $side: $m MB/s, p50/p99 $a/$b ms, broker CPU $c ms/MB" >&2
      mbs[$load-$side]+="$m "
      p50[$load-$side]+="$a "
      p99[$load-$side]+="$b "
      cpu[$load-$side]+="$c "
    done
  done
done
unset SLUICE_TLS_CA_FILE
median() { python3 -c "import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 3))" $1; }
echo "| load | native listener | runs (MB/s) | median MB/s | median latency ms p50 / p99 | broker CPU ms per MB (runs) | median |"
echo "|---|---|---|---|---|---|---|"
for load in "${ORDER[@]}"; do
  for side in plain tls; do
    echo "| $load | $side | ${mbs[$load-$side]}| $(median "${mbs[$load-$side]}") | $(median "${p50[$load-$side]}") / $(median "${p99[$load-$side]}") | ${cpu[$load-$side]}| $(median "${cpu[$load-$side]}") |"
  done
done
echo
echo "$ROUNDS alternating rounds of $N records of 1,000 bytes; one broker (fsync), acks=all; $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(date -u +%Y-%m-%d), load average before the run: $load_avg."
