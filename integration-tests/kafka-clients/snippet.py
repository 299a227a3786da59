"""The kafka-python snippet of the Kafka-listener issue's README, as a user would paste it,
made to terminate: the bootstrap and topic come from argv, the consumer starts from the
earliest offset and stops after consumer_timeout_ms without a record. The topic is not
created beforehand: the broker creates it on the clients' first Metadata request
(--auto-create-topics, default true).

    python snippet.py BOOTSTRAP TOPIC

Lines marked `# added` are not in the README: they collect what was printed and check it.
"""

import sys

import common

bootstrap, topic = sys.argv[1], sys.argv[2]
common._state["scenario"] = "snippet"
common.signal.signal(common.signal.SIGALRM, common._on_alarm)  # added
common.signal.setitimer(common.signal.ITIMER_REAL, 90)  # added
try:  # added
    common.step("the README snippet")  # added
    from kafka import KafkaProducer, KafkaConsumer
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap,
                             consumer_timeout_ms=10000, auto_offset_reset='earliest')
    future = producer.send(topic, value=b'Hello, World!')  # `future =` added
    received = []  # added
    for message in consumer:
        print(message)
        received.append(message)  # added
    common.step("check what the snippet printed")  # added
    acked = future.get(timeout=10)  # added
    values = [m.value.decode("utf-8", "replace") for m in received]  # added
    common.check(values == ["Hello, World!"], "the consumer printed other records",  # added
                 values=values)  # added
    common.check((received[0].partition, received[0].offset) ==  # added
                 (acked.partition, acked.offset),  # added
                 "the record was read at another place than acknowledged",  # added
                 acked=[acked.partition, acked.offset],  # added
                 read=[received[0].partition, received[0].offset])  # added
    common.finish(values=values, partition=acked.partition, offset=acked.offset)  # added
except Exception as e:  # added
    common.traceback.print_exc()  # added
    common.fail(f"{type(e).__name__}: {e}")  # added
