#!/usr/bin/env bash
# No false failover: three brokers (all voters, RF 3, min.insync.replicas 2, fsync
# durability: the defaults) under sluice-bench at its maximum rate for SOAK_SECONDS
# (default 300), then checks that no leadership moved, no ISR changed, no broker was
# fenced and no controller election happened, and prints the distribution of the gaps
# between consecutive heartbeats as the active controller received them: what the
# broker session timeout (default 1 s) must cover, measured under load.
#
#   bench/failover-soak.sh                  # 5 minutes, about 6 minutes in all
#   SOAK_SECONDS=60 bench/failover-soak.sh
#
# Logs under target/failover-soak/; the data (retention keeps it to a few GB per broker) is
# deleted at the end. Exits non-zero if
# anything moved.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS=${SOAK_SECONDS:-300}
cargo build --release -q --bins
BIN=$PWD/target/release
WORK=$PWD/target/failover-soak
rm -rf "$WORK" && mkdir -p "$WORK"
source bench/lib.sh
# The brokers' data (over 10 GB after 5 minutes) goes when the script ends; their logs stay.
trap 'stop_brokers; rm -rf "$WORK"/data-*' EXIT

ports=("$(free_port)" "$(free_port)" "$(free_port)")
voters="1@127.0.0.1:${ports[0]},2@127.0.0.1:${ports[1]},3@127.0.0.1:${ports[2]}"
for id in 1 2 3; do
  RUST_LOG=info,sluice_broker::cluster::controller=debug \
    "$BIN/sluice-broker" --node-id $id --voters "$voters" --listen "127.0.0.1:${ports[$((id - 1))]}" \
    --data-dir "$WORK/data-$id" --kafka-listen off --retention-check-interval-ms 5000 \
    2>"$WORK/broker-$id.log" &
  PIDS+=($!)
done
export SLUICE_BOOTSTRAP="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
wait_active 3
"$BIN/sluice" topic create soak -p 6 -r 3 -c min.insync.replicas=2 \
  -c segment.bytes=268435456 -c retention.bytes=536870912 >/dev/null
state() { "$BIN/sluice" topic describe soak --format json | json '[(p["partition"], p["leader"], p["leader_epoch"], p["isr"]) for p in d["partitions"]]'; }
sleep 3 # the ISRs fill
before=$(state)
marks() { cat "$WORK"/broker-*.log | grep -c -E "$1" || true; }
FENCES="session expired|no broker serves|stopped answering the quorum"
isr_before=$(marks "ISR is now")
fenced_before=$(marks "$FENCES")
elections_before=$(marks "is the active controller")
echo "# failover-soak, $(date -u +%Y-%m-%d), $(nproc) cores, $(git rev-parse --short HEAD), ${SOAK_SECONDS} s"
end=$((SECONDS + SOAK_SECONDS))
rounds=0
records=0
while ((SECONDS < end)); do
  out=$("$BIN/sluice-bench" produce --topic soak --num-records 1000000 --record-size 1024 \
    --acks all --producers 2 --format json 2>/dev/null)
  rounds=$((rounds + 1))
  records=$((records + 1000000))
  echo "round $rounds: $(echo "$out" | json '"%.0f MB/s, p99 %s ms" % (d["mb_per_sec"], d["latency_ms"]["p99"])')" >&2
done
after=$(state)
isr=$(($(marks "ISR is now") - isr_before))
fenced=$(($(marks "$FENCES") - fenced_before))
elections=$(($(marks "is the active controller") - elections_before))
# The controller logs one line of gap quantiles per 30 s; print the worst of each.
cat "$WORK"/broker-*.log | grep 'heartbeat gaps' | python3 -c "
import re, sys
rows = [dict((k, int(v)) for k, v in re.findall(r'(\w+)=(\d+)', line)) for line in sys.stdin]
rows = [r for r in rows if 'heartbeats' in r]
if rows:
    n = sum(r['heartbeats'] for r in rows)
    worst = lambda k: max(r[k] for r in rows)
    print(f'heartbeat gaps at the controller ({n} heartbeats, worst 30 s period): p50 {worst(\"p50_ms\")} ms, p99 {worst(\"p99_ms\")} ms, p999 {worst(\"p999_ms\")} ms, max {worst(\"max_ms\")} ms')
"
echo "records produced: $records in $rounds rounds"
echo "ISR changes: $isr, fences or suspicions: $fenced, controller changes (lines, one per node): $elections"
if [[ $before == "$after" && $isr == 0 && $fenced == 0 && $elections == 0 ]]; then
  echo "no false failover: leaders, leader epochs and ISRs as before: $after"
else
  echo "FALSE FAILOVER: before $before, after $after" >&2
  exit 1
fi
