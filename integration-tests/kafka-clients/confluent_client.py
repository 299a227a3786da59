"""confluent-kafka (librdkafka, the C client most non-Java clients wrap) against the Kafka
listener.

    python confluent_client.py SCENARIO --bootstrap B --topic T [--group G] [-n N] [-m M]

Scenarios:
  idempotent   an idempotent producer (enable.idempotence, acks=all) sends N keyed records
               to T (created beforehand); every delivery report is OK and at a distinct
               offset; a group consumer then reads each record exactly once, at its
               reported offset, in send order within each partition.
  admin        AdminClient: create T (3 partitions) and T-2 (1), list_topics shows them
               with their partitions and leaders, creating T again fails with
               TOPIC_ALREADY_EXISTS, delete T, T gone and T-2 still there.
  group-resume N records, consumer 1 of group G reads them, commits synchronously, closes;
               M more; consumer 2 of G reads exactly the M (no gap, no duplicate).
  compression  --codec C: N records compressed with C (librdkafka's compression.type,
               linger 20 ms) to T, which already holds M records that sluice's producer
               compressed with C; T read from the start by a group consumer gives back
               exactly both sets (sluice's batches decoded by librdkafka).
  transactions a transactional producer (transactional.id T-tx) commits N records, aborts M,
               commits N more; a read_committed group consumer (G) reads exactly the 2N
               committed ones, a read_uncommitted one all 2N+M; a second producer with the
               same transactional.id fences the first, whose next transaction fails.
  exactly-once consume-transform-produce: N records in T; a processor (read_committed
               consumer of group G, transactional producer) writes each as "out-<value>"
               to T-out with its input offsets in the same transaction
               (send_offsets_to_transaction), aborting and rewinding every fourth one;
               halfway it leaves a transaction open (outputs and offsets written) and
               stops; a second instance with the same transactional.id takes over and
               finishes. A read_committed reader of T-out then reads exactly one output per
               input, the aborted outputs are in the log, and G's committed offsets are
               T's ends.
The last line of stdout is the JSON summary (common.py).
"""

import time

import common
from common import Failed, check, finish, poll_until, step

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                  NewPartitions, NewTopic, ResourceType)


def producer(args, **config):
    return Producer({"bootstrap.servers": args.bootstrap, "acks": "all", **config})


def consumer(args, group, **config):
    return Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **config,
    })


def produce_all(prod, topic, records):
    """Produces every (key, value) and waits for every delivery report; returns the
    reports [(error, partition, offset, value)] in send order."""
    reports = [None] * len(records)

    def on_delivery(index):
        def report(err, msg):
            reports[index] = (err, msg.partition(), msg.offset(), msg.value())
        return report

    for i, (key, value) in enumerate(records):
        while True:
            try:
                prod.produce(topic, key=key, value=value, on_delivery=on_delivery(i))
                break
            except BufferError:
                prod.poll(0.1)  # the local queue is full: serve delivery reports first
        prod.poll(0)
    left = prod.flush(60)
    check(left == 0, "the producer did not flush", undelivered=left)
    return reports


def read_n(cons, n, timeout_s, what):
    """Polls until n records have arrived; returns them in arrival order."""
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        if time.monotonic() >= deadline:
            raise Failed(f"timed out after {timeout_s}s with {len(got)} of {n} records ({what})")
        msg = cons.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise Failed(f"consumer error ({what}): {msg.error()}")
        got.append(msg)
    return got


def idempotent(args):
    topic, n = args.topic, args.n
    step(f"idempotent produce of {n} records")
    prod = producer(args, **{"enable.idempotence": True, "linger.ms": 5})
    records = [(f"k{i % 37}".encode(), f"v{i}".encode()) for i in range(n)]
    reports = produce_all(prod, topic, records)
    failed = [[i, str(r[0])] for i, r in enumerate(reports) if r is None or r[0] is not None]
    check(not failed, "delivery reports with errors", count=len(failed), first=failed[:5])
    places = {(p, o) for _, p, o, _ in reports}
    check(len(places) == n, "two records acknowledged at the same offset",
          distinct=len(places))
    step(f"a group consumer reads the {n}")
    cons = consumer(args, args.group)
    cons.subscribe([topic])
    got = read_n(cons, n, 60, "reading back")
    step("drain: nothing more")
    extra = cons.poll(1.0)
    check(extra is None or extra.error() is not None, "more records than were produced",
          extra=None if extra is None else [extra.partition(), extra.offset()])
    cons.close()
    acked_at = {v: (p, o) for _, p, o, v in reports}
    values = [m.value() for m in got]
    check(len(set(values)) == n == len(values), "not every record read exactly once",
          read=len(values), distinct=len(set(values)))
    moved = [[m.value().decode(), acked_at.get(m.value()), (m.partition(), m.offset())]
             for m in got if acked_at.get(m.value()) != (m.partition(), m.offset())]
    check(not moved, "records read at another partition/offset than reported", first=moved[:5])
    # Within a partition, the records must be read in the order they were sent.
    out_of_order = []
    last = {}
    for m in got:
        index = int(m.value()[1:])
        if index < last.get(m.partition(), -1):
            out_of_order.append([m.partition(), m.offset(), index, last[m.partition()]])
        last[m.partition()] = index
    check(not out_of_order, "records out of send order within a partition",
          first=out_of_order[:5])
    finish(records=n, partitions=sorted({p for _, p, _, _ in reports}))


def admin(args):
    t1, t2 = args.topic, args.topic + "-2"
    client = AdminClient({"bootstrap.servers": args.bootstrap})
    step("create_topics")
    futures = client.create_topics([NewTopic(t1, num_partitions=3, replication_factor=1),
                                    NewTopic(t2, num_partitions=1, replication_factor=1)],
                                   operation_timeout=30, request_timeout=30)
    for name, future in futures.items():
        future.result(timeout=30)
    step("list_topics shows both with leaders")

    def described():
        topics = client.list_topics(timeout=10).topics
        wanted = {name: topics.get(name) for name in (t1, t2)}
        if any(t is None or t.error is not None or not t.partitions for t in wanted.values()):
            return None
        if any(p.leader < 0 for t in wanted.values() for p in t.partitions.values()):
            return None
        return wanted

    topics = poll_until("both topics with leaders", 30, described)
    partitions = {name: len(t.partitions) for name, t in topics.items()}
    check(partitions == {t1: 3, t2: 1}, "wrong partition counts", partitions=partitions)
    step("create_topics again: TOPIC_ALREADY_EXISTS")
    again = client.create_topics([NewTopic(t1, num_partitions=3, replication_factor=1)],
                                 request_timeout=30)[t1]
    try:
        again.result(timeout=30)
        raise Failed("creating an existing topic succeeded")
    except Exception as e:  # confluent_kafka.KafkaException wrapping a KafkaError
        error = e.args[0] if e.args else None
        check(isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS,
              "creating an existing topic failed with another error", error=str(e))
    step("incremental_alter_configs sets retention.ms, describe_configs shows it")
    resource = ConfigResource(ResourceType.TOPIC, t2, incremental_configs=[
        ConfigEntry("retention.ms", "3600000",
                    incremental_operation=AlterConfigOpType.SET)])
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=30)

    def retention():
        futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, t2)])
        entries = list(futures.values())[0].result(timeout=30)
        return entries["retention.ms"]

    entry = retention()
    check(entry.value == "3600000", "retention.ms after the alter", value=entry.value)
    step("incremental_alter_configs deletes it: back to the broker default")
    resource = ConfigResource(ResourceType.TOPIC, t2, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    default = retention()
    check(default.value != "3600000" and default.is_default,
          "retention.ms after deleting it", value=default.value, source=str(default.source))
    step("create_partitions grows a topic from 1 to 2 partitions")
    for future in client.create_partitions([NewPartitions(t2, 2)], operation_timeout=30,
                                           request_timeout=30).values():
        future.result(timeout=30)

    def two_partitions():
        topic = client.list_topics(timeout=10).topics.get(t2)
        return 2 if topic is not None and len(topic.partitions) == 2 else None

    grown = poll_until("two partitions listed", 30, two_partitions)
    step("delete_topics")
    for name, future in client.delete_topics([t1], operation_timeout=30,
                                             request_timeout=30).items():
        future.result(timeout=30)
    poll_until(f"{t1} gone", 30, lambda: t1 not in client.list_topics(timeout=10).topics)
    remaining = sorted(t for t in client.list_topics(timeout=10).topics if t in (t1, t2))
    check(remaining == [t2], "after deleting one topic", remaining=remaining)
    finish(created=[t1, t2], partitions=partitions, remaining=remaining,
           altered_retention_ms=entry.value, default_retention_ms=default.value, grown=grown)


def group_resume(args):
    topic, group, n, m = args.topic, args.group, args.n, args.m
    prod = producer(args)
    step(f"produce {n} records")
    first = produce_all(prod, topic, [(f"k{i}".encode(), f"a{i}".encode()) for i in range(n)])
    check(all(r[0] is None for r in first), "delivery failed", reports=[str(r[0]) for r in first
                                                                         if r[0]][:5])
    step(f"consumer 1 of {group} reads {n}, commits, closes")
    c1 = consumer(args, group)
    c1.subscribe([topic])
    got1 = read_n(c1, n, 60, "consumer 1")
    values1 = sorted(msg.value().decode() for msg in got1)
    check(values1 == sorted(f"a{i}" for i in range(n)), "consumer 1 read other records",
          read=len(values1))
    committed = c1.commit(asynchronous=False)
    commit_errors = [str(tp.error) for tp in committed or [] if tp.error]
    check(not commit_errors, "the commit failed", errors=commit_errors)
    c1.close()
    step(f"produce {m} more")
    second = produce_all(prod, topic, [(f"k{i}".encode(), f"b{i}".encode()) for i in range(m)])
    check(all(r[0] is None for r in second), "delivery failed")
    ends = {}
    for _, p, o, _ in first + second:
        ends[p] = max(ends.get(p, 0), o + 1)
    step(f"consumer 2 of {group} reads exactly the {m}")
    c2 = consumer(args, group)
    c2.subscribe([topic])
    got2 = read_n(c2, m, 60, "consumer 2")
    values2 = sorted(msg.value().decode() for msg in got2)
    expected2 = sorted(f"b{i}" for i in range(m))
    check(values2 == expected2, "consumer 2 did not read exactly the new records",
          unexpected=sorted(set(values2) - set(expected2))[:5],
          missing=sorted(set(expected2) - set(values2))[:5], read=len(values2))
    extra = c2.poll(1.0)
    check(extra is None or extra.error() is not None, "consumer 2 read more than the new ones",
          extra=None if extra is None else [extra.partition(), extra.offset()])
    # librdkafka knows a position only for the partitions it has read from since joining.
    read_from = {p for _, p, _, _ in second}
    positions = {tp.partition: tp.offset for tp in
                 c2.position([TopicPartition(topic, p) for p in read_from])}
    expected_ends = {p: ends[p] for p in read_from}
    check(positions == expected_ends, "consumer 2 is not at the log end",
          positions=positions, ends=expected_ends)
    c2.close()
    finish(first=n, second=m, second_read=len(got2), partitions=sorted(ends))


def compression(args):
    codec, n, m = args.codec, args.n, args.m
    step(f"produce {n} records compressed with {codec}")
    prod = producer(args, **{"compression.type": codec, "linger.ms": 20})
    reports = produce_all(prod, args.topic,
                          [(f"k{i}".encode(), common.json_value("confluent", i)) for i in range(n)])
    failed = [str(r[0]) for r in reports if r[0]]
    check(not failed, "delivery failed", reports=failed[:5])
    step(f"read T from the start: {m} of sluice's and {n} of ours")
    cons = consumer(args, args.group or f"{args.topic}-readers")
    cons.subscribe([args.topic])
    got = read_n(cons, n + m, 60, "reading T back")
    cons.close()
    common.check_compressed_mix([msg.value() for msg in got], "confluent", n, m)
    finish(records=len(got), codec=codec)


def transactions(args):
    topic, n, m = args.topic, args.n, args.m
    txn_id = f"{topic}-tx"

    def transaction(prod, prefix, count, commit):
        prod.begin_transaction()
        for i in range(count):
            while True:
                try:
                    prod.produce(topic, key=f"k{i}".encode(), value=f"{prefix}{i}".encode())
                    break
                except BufferError:
                    prod.poll(0.1)
        if commit:
            prod.commit_transaction(30)
        else:
            # Sent first, so the aborted records are in the log (abort alone would drop
            # the ones still queued) and read_committed readers must skip them.
            left = prod.flush(30)
            check(left == 0, "the aborted transaction's records were not all sent", left=left)
            prod.abort_transaction(30)

    step(f"init_transactions for {txn_id}")
    prod = producer(args, **{"transactional.id": txn_id, "linger.ms": 5})
    prod.init_transactions(30)
    step(f"commit {n}, abort {m}, commit {n}")
    transaction(prod, "c", n, True)
    transaction(prod, "a", m, False)
    transaction(prod, "d", n, True)

    step("a read_committed consumer reads exactly the committed records")
    cons = consumer(args, args.group, **{"isolation.level": "read_committed"})
    cons.subscribe([topic])
    got = [msg.value().decode() for msg in read_n(cons, 2 * n, 60, "read_committed")]
    extra = cons.poll(2.0)
    check(extra is None or extra.error() is not None, "read_committed read more than committed",
          extra=None if extra is None else extra.value())
    cons.close()
    expected = {f"c{i}" for i in range(n)} | {f"d{i}" for i in range(n)}
    check(sorted(got) == sorted(expected), "read_committed did not read exactly the committed",
          aborted_seen=[v for v in got if v.startswith("a")][:5], read=len(got))

    step("a read_uncommitted consumer reads the aborted records too")
    cons = consumer(args, args.group + "-uncommitted", **{"isolation.level": "read_uncommitted"})
    cons.subscribe([topic])
    everything = [msg.value().decode() for msg in read_n(cons, 2 * n + m, 60, "read_uncommitted")]
    cons.close()
    check(sum(v.startswith("a") for v in everything) == m, "the aborted records were not written",
          read=len(everything))

    step("a second instance fences the first")
    second = producer(args, **{"transactional.id": txn_id})
    second.init_transactions(30)
    fenced = None
    try:
        transaction(prod, "z", 1, True)
    except KafkaException as e:
        fenced = e.args[0]
    check(fenced is not None, "the fenced producer committed a transaction")
    check(fenced.fatal() or fenced.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                              KafkaError.INVALID_PRODUCER_EPOCH),
          "the fenced producer's error is not a fencing", error=str(fenced))
    transaction(second, "e", 1, True)
    finish(committed=len(got), everything=len(everything), fenced=fenced.name())


def exactly_once(args):
    source, sink, n = args.topic, f"{args.topic}-out", args.n
    txn_id = f"{source}-eos"
    step(f"{n} input records")
    reports = produce_all(producer(args), source,
                          [(f"k{i}".encode(), f"v{i}".encode()) for i in range(n)])
    check(all(r is not None and r[0] is None for r in reports), "the input was not all written")
    ends = {}
    for _, p, o, _ in reports:
        ends[p] = max(ends.get(p, 0), o + 1)

    def processor():
        prod = producer(args, **{"transactional.id": txn_id, "linger.ms": 5})
        prod.init_transactions(30)
        cons = consumer(args, args.group, **{"isolation.level": "read_committed"})
        cons.subscribe([source])
        return prod, cons

    def batch(cons):
        msgs = []
        for m in cons.consume(50, 1.0):
            if m.error() is None:
                msgs.append(m)
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise Failed(f"consumer error: {m.error()}")
        return msgs

    def transform(prod, cons, msgs, outcome):
        """One transaction: the outputs of msgs, and the consumer's positions."""
        prod.begin_transaction()
        for m in msgs:
            while True:
                try:
                    prod.produce(sink, key=m.key(), value=b"out-" + m.value())
                    break
                except BufferError:
                    prod.poll(0.1)
        prod.send_offsets_to_transaction(cons.position(cons.assignment()),
                                         cons.consumer_group_metadata(), 30)
        if outcome == "commit":
            prod.commit_transaction(30)
            return
        left = prod.flush(30)
        check(left == 0, "the outputs were not all sent", left=left)
        if outcome == "abort":
            prod.abort_transaction(30)
            # Back to the committed offsets: the aborted inputs are processed again.
            for tp in cons.committed(cons.assignment(), timeout=10):
                if tp.offset < 0:
                    tp.offset = OFFSET_BEGINNING
                cons.seek(tp)

    step("the first instance: every fourth transaction aborted, one left open halfway")
    prod, cons = processor()
    done, aborted, transactions = 0, 0, 0
    deadline = time.monotonic() + 90
    while done < n // 2:
        check(time.monotonic() < deadline, "the first instance stalled", done=done)
        msgs = batch(cons)
        if not msgs:
            continue
        transactions += 1
        if transactions % 4 == 2:
            transform(prod, cons, msgs, "abort")
            aborted += len(msgs)
        else:
            transform(prod, cons, msgs, "commit")
            done += len(msgs)
    left_open = []
    while not left_open:
        check(time.monotonic() < deadline, "nothing left for the open transaction")
        left_open = batch(cons)
    transform(prod, cons, left_open, "open")
    cons.close()

    step("a second instance takes over (fencing the first) and finishes")
    second, cons = processor()

    def caught_up():
        assigned = cons.assignment()
        if not assigned:
            return False
        behind = [tp for tp in cons.position(assigned)
                  if tp.offset < ends.get(tp.partition, 0)]
        if not behind:
            return True
        # A partition the first instance finished has no position here (nothing was read
        # from it): the group's committed offset says where it stands.
        committed = cons.committed(behind, timeout=10)
        return all(tp.offset >= ends[tp.partition] for tp in committed)

    deadline = time.monotonic() + 90
    while not caught_up():
        check(time.monotonic() < deadline, "the second instance stalled")
        msgs = batch(cons)
        if msgs:
            transform(second, cons, msgs, "commit")
    cons.close()

    step("exactly one committed output per input")
    reader = consumer(args, args.group + "-check", **{"isolation.level": "read_committed"})
    reader.subscribe([sink])
    outputs = [m.value().decode() for m in read_n(reader, n, 60, "the outputs")]
    extra = reader.poll(2.0)
    check(extra is None or extra.error() is not None, "more outputs than inputs",
          extra=None if extra is None else extra.value())
    reader.close()
    expected = sorted(f"out-v{i}" for i in range(n))
    duplicates = sorted({v for v in outputs if outputs.count(v) > 1})
    check(sorted(outputs) == expected, "not exactly one output per input",
          duplicates=duplicates[:5], missing=sorted(set(expected) - set(outputs))[:5])

    step("the aborted and abandoned outputs are in the log, skipped")
    everything = consumer(args, args.group + "-all", **{"isolation.level": "read_uncommitted"})
    everything.subscribe([sink])
    written = len(read_n(everything, n + aborted + len(left_open), 60, "every output"))
    everything.close()

    step("the group's committed offsets are the input's ends")
    check_cons = consumer(args, args.group)
    committed = check_cons.committed([TopicPartition(source, p) for p in ends], timeout=10)
    check_cons.close()
    wrong = [[tp.partition, tp.offset, ends[tp.partition]] for tp in committed
             if tp.offset != ends[tp.partition]]
    check(not wrong, "committed offsets are not the input's ends", wrong=wrong)
    finish(outputs=len(outputs), written=written, aborted=aborted, left_open=len(left_open))


SCENARIOS = {"idempotent": idempotent, "admin": admin, "group-resume": group_resume,
             "compression": compression, "transactions": transactions,
             "exactly-once": exactly_once}

if __name__ == "__main__":
    common.run(SCENARIOS, common.arguments(__doc__, SCENARIOS))
