"""librdkafka's in-process mock Kafka cluster (from the confluent-kafka wheel), for checking
these scripts against an implementation that is not sluice:

    python mock_cluster.py [BROKERS] &   # prints its bootstrap, then serves for 15 minutes
    SLUICE_KAFKA_PYTHON_API_VERSION=2.3 python kafka_python_client.py headers --bootstrap ...

The mock keeps everything in memory and supports produce, fetch, groups, idempotence and
auto-created topics (4 partitions), not every admin request. A development aid only: no
test runs it.
"""

import sys
import time

from confluent_kafka import Producer

brokers = int(sys.argv[1]) if len(sys.argv) > 1 else 1
holder = Producer({"test.mock.num.brokers": brokers})
metadata = holder.list_topics(timeout=10)
print(",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values()), flush=True)
time.sleep(900)
