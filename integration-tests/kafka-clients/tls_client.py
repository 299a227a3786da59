"""confluent-kafka (librdkafka) against a Kafka listener that serves TLS.

    python tls_client.py round-trip --bootstrap B --topic T --ssl-ca CA_FILE [-n N]

Scenarios:
  round-trip  an acks=all producer over SSL (security.protocol=SSL, ssl.ca.location =
              CA_FILE) sends N records to T (created beforehand); every delivery report is
              OK; a group consumer over SSL reads each of them back exactly once, from
              the earliest offset.
The last line of stdout is the JSON summary (common.py).
"""

import common
from common import check, finish, poll_until, step

from confluent_kafka import Consumer, Producer


def round_trip(args):
    ssl = {"security.protocol": "SSL", "ssl.ca.location": args.ssl_ca}
    step(f"produce {args.n} records over SSL")
    prod = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", **ssl})
    errors = []
    values = [f"tls-{i}".encode() for i in range(args.n)]

    def report(err, _msg):
        if err:
            errors.append(str(err))

    for value in values:
        prod.produce(args.topic, value=value, on_delivery=report)
    check(prod.flush(30) == 0, "every record delivered within 30 s")
    check(not errors, "every delivery report is OK", errors=errors[:5])

    step("consume them over SSL")
    cons = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"{args.topic}-tls",
                     "auto.offset.reset": "earliest", **ssl})
    cons.subscribe([args.topic])
    read = []

    def all_read():
        msg = cons.poll(0.5)
        if msg is not None and msg.error() is None:
            read.append(msg.value())
        return len(read) >= len(values)

    poll_until("every record read back", 60, all_read)
    cons.close()
    # Two partitions: order holds within each, so compare the sets (and count duplicates).
    check(sorted(read) == sorted(values), "every record comes back exactly once",
          first=[v.decode() for v in read[:5]])
    finish(records=len(read))


SCENARIOS = {"round-trip": round_trip}

if __name__ == "__main__":
    common.run(SCENARIOS, common.arguments(__doc__, SCENARIOS))
