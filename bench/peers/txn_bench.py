"""One producer round for bench/txn-bench.sh: confluent-kafka (librdkafka 2.16, from the
Kafka-clients venv) sends N records of SIZE bytes to TOPIC, acks=all and idempotent,
either plainly or in transactions committed every TXN_MS milliseconds of sending (the
last one at the end). Time includes every commit. Prints one JSON line:
{"mb_per_sec", "seconds", "records", "commits", "latency_ms": {"p50", "p99"}}
(latency: produce() to delivery report).

    python txn_bench.py BOOTSTRAP TOPIC N SIZE [TXN_MS]
"""

import json
import statistics
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
txn_ms = int(sys.argv[5]) if len(sys.argv) > 5 else 0
config = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
          "linger.ms": 5, "batch.size": 1000000, "compression.type": "none"}
if txn_ms:
    config["transactional.id"] = f"txn-bench-{topic}"
latencies = []
failed = []


def report(sent):
    def on_delivery(err, _msg):
        if err is not None:
            failed.append(str(err))
        latencies.append(time.monotonic() - sent)
    return on_delivery


p = Producer(config)
if txn_ms:
    p.init_transactions(30)
value = bytes((i * 131 + 7) % 256 for i in range(size))
commits = 0
start = time.monotonic()
began = start
if txn_ms:
    p.begin_transaction()
for i in range(n):
    if txn_ms and (time.monotonic() - began) * 1000 >= txn_ms:
        p.commit_transaction(30)
        commits += 1
        p.begin_transaction()
        began = time.monotonic()
    while True:
        try:
            p.produce(topic, value=value, on_delivery=report(time.monotonic()))
            break
        except BufferError:
            p.poll(0.005)
    if i % 1000 == 0:
        p.poll(0)
if txn_ms:
    p.commit_transaction(60)
    commits += 1
else:
    p.flush(60)
seconds = time.monotonic() - start
if failed:
    sys.exit(f"{len(failed)} records failed; first: {failed[0]}")
latencies.sort()
print(json.dumps({
    "mb_per_sec": n * size / seconds / 1e6,
    "seconds": seconds,
    "records": n,
    "commits": commits,
    "latency_ms": {"p50": 1000 * statistics.median(latencies),
                   "p99": 1000 * latencies[int(len(latencies) * 0.99)]},
}))
