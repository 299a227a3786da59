"""kafka-python (pure Python, its own protocol code) against the Kafka listener.

    python kafka_python_client.py SCENARIO --bootstrap B --topic T [--group G] [-n N] [-m M]

Scenarios:
  admin        KafkaAdminClient: create T (3 partitions) and T-2 (1), list, describe,
               create T again (TopicAlreadyExists), delete T, T gone and T-2 still there.
  partitioner  1000 keyed records to T (created beforehand, any partition count): each
               record's partition is the one Java's murmur2 partitioner gives its key
               (our murmur2, checked against Kafka's test vectors), the one kafka-python's
               DefaultPartitioner chose, and the one it is read back from, at the
               acknowledged offset.
  headers      records with headers (repeated keys, empty and binary values, none at all)
               and a tombstone (null value) come back with the same headers in order.
  group-resume N records, consumer 1 of group G reads them, commits, closes; M more; consumer
               2 of G reads exactly the M (no gap, no duplicate) and ends at the log end.
  compression  --codec C: N records compressed with C (linger 20 ms, so batches hold many)
               to T, which already holds M records that sluice's producer compressed with
               C; T read from the start gives back exactly both sets (sluice's batches
               decoded by kafka-python's codecs).
  compacted    T (created beforehand: one partition, cleanup.policy=compact, small segments,
               delete.retention.ms=0): a record without a key is refused with
               INVALID_RECORD; N rounds of M keys, then a tombstone for key 0 and a round
               of other keys to roll the segments; read from the start, once the broker's
               cleaner has run, T holds each key's last value (key 0 not at all) at
               increasing offsets with gaps, fewer records than were written.
  group-split  two members of G on T (created beforehand with --partitions P): each gets a
               non-empty share, the shares are disjoint and cover every partition, and a
               record produced to each partition afterwards reaches the member owning it.
  delete-offsets  T (created beforehand, two partitions), group G: a member reads and
               commits both partitions; deleting the offsets of T-0 while it consumes T is
               GroupSubscribedToTopicError; once it left, they go and T-1's stay; an unknown
               group is GroupIdNotFoundError.
  delete-records  T (created beforehand, one partition): 20 records; delete_records below
               offset 8: the low watermark is 8 and a consumer from the beginning starts
               there; below -1 (the high watermark): 20; below 25 (past it):
               OffsetOutOfRangeError.
  txn-tools    the operators' view of transactions (KIP-664, kafka-transactions.sh) on T
               (created beforehand, one partition): a transactional producer leaves 3
               records open; list_transactions (every filter), describe_transactions and
               describe_producers show it; an unknown id is TransactionalIdNotFoundError;
               a commit marker from a client is refused; abort_transaction writes the abort marker (a read_committed consumer then
               reads past the 3 and sees none); the producer's own commit afterwards
               changes nothing; its next transaction's 2 records are read; no transaction
               is hanging.
  throttle     client quotas enforced on T (created beforehand, one partition): a producer
               with client id slow-p (producer_byte_rate 50 KB/s) sending 600 KB is told
               to wait (throttle_time_ms) and gets every record acknowledged; one
               without a quota is never throttled; a consumer slow-c (consumer_byte_rate
               100 KB/s) reading the 1.2 MB back is throttled and reads every record.
  reassign     T (created beforehand: one partition on broker 1 of three): 100 records;
               alter_partition_reassignments moves T-0 to brokers 2 and 3, listed until it
               completes; the records are read back from there; cancelling with no move
               under way and moving to an unknown broker are refused;
               describe_metadata_quorum shows the three voters, their leader and its
               high watermark.
The last line of stdout is the JSON summary (common.py).
"""

import time

import common
from common import Failed, check, finish, poll_until, step

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions
from kafka.errors import (GroupIdNotFoundError, InvalidPartitionsError,
                          InvalidReplicationAssignmentError, OffsetOutOfRangeError,
                          TopicAlreadyExistsError)
from kafka.partitioner.default import murmur2 as kafka_python_murmur2


def producer(args, **config):
    return KafkaProducer(bootstrap_servers=args.bootstrap.split(","), acks="all", **config)


def consumer(args, **config):
    return KafkaConsumer(
        bootstrap_servers=args.bootstrap.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **config,
    )


def produce_all(prod, topic, records):
    """Sends every (key, value, headers) and waits for each acknowledgement; returns the
    RecordMetadata of each, in order."""
    futures = [prod.send(topic, key=k, value=v, headers=h) for k, v, h in records]
    prod.flush(timeout=30)
    return [f.get(timeout=30) for f in futures]


def read_n(cons, n, timeout_s, what):
    """Polls until n records have arrived; returns them in arrival order."""
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        if time.monotonic() >= deadline:
            raise Failed(f"timed out after {timeout_s}s with {len(got)} of {n} records ({what})")
        for records in cons.poll(timeout_ms=500).values():
            got.extend(records)
    return got


def read_assigned_from_start(args, topic, n):
    """Reads n records of topic from the beginning of every partition, without a group."""
    cons = consumer(args)
    partitions = poll_until(f"partitions of {topic}", 30, lambda: cons.partitions_for_topic(topic))
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    cons.assign(tps)
    cons.seek_to_beginning(*tps)
    got = read_n(cons, n, 60, f"reading {topic} back")
    cons.close()
    return got


def compression(args):
    from kafka import codec as kafka_codec

    codec, n, m = args.codec, args.n, args.m
    available = {"gzip": kafka_codec.has_gzip, "snappy": kafka_codec.has_snappy,
                 "lz4": kafka_codec.has_lz4, "zstd": kafka_codec.has_zstd}
    check(codec in available and available[codec](),
          f"kafka-python cannot use {codec}: install the venv's codec packages (install.sh)")
    step(f"produce {n} records compressed with {codec}")
    prod = producer(args, compression_type=codec, linger_ms=20, batch_size=256 * 1024)
    records = [(f"k{i}".encode(), common.json_value("kafka-python", i), []) for i in range(n)]
    produce_all(prod, args.topic, records)
    prod.close(timeout=10)
    step(f"read T from the start: {m} of sluice's and {n} of ours")
    got = read_assigned_from_start(args, args.topic, n + m)
    common.check_compressed_mix([r.value for r in got], "kafka-python", n, m)
    finish(records=len(got), codec=codec)


def config_view(config):
    """A described config or synonym as [source, type, value]."""
    return [config.get("config_source", config.get("source")), config.get("config_type"),
            config["value"]]


def quota_request(client, request):
    async def send():
        return await client._manager.send(request)
    return client._manager.run(send)


def describe_quotas(client, entity_type, match_type, match=None, strict=False):
    """[(entity, {key: value})] of the quotas a filter selects, sorted."""
    from kafka.protocol.admin.client_quotas import DescribeClientQuotasRequest
    component = DescribeClientQuotasRequest.ComponentData(
        entity_type=entity_type, match_type=match_type, match=match)
    response = quota_request(client, DescribeClientQuotasRequest(
        components=[component], strict=strict))
    check(response.error_code == 0, "DescribeClientQuotas", error=response.error_code)
    return sorted(
        (sorted((e.entity_type, e.entity_name) for e in entry.entity),
         {v.key: v.value for v in entry.values})
        for entry in response.entries)


def alter_quotas(client, entity, ops):
    """Each entry's error code: entity [(type, name)], ops [(key, value or None)]."""
    from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest
    entry = AlterClientQuotasRequest.EntryData
    request = AlterClientQuotasRequest(entries=[entry(
        entity=[entry.EntityData(entity_type=t, entity_name=n) for t, n in entity],
        ops=[entry.OpData(key=k, value=v or 0.0, remove=v is None) for k, v in ops])],
        validate_only=False)
    return [e.error_code for e in quota_request(client, request).entries]


def client_quotas(client):
    answers = {"none": describe_quotas(client, "client-id", 2)}
    answers["set"] = alter_quotas(client, [("client-id", "noisy")],
                                  [("producer_byte_rate", 1024.0)])
    answers["set_default_user"] = alter_quotas(client, [("user", None)],
                                               [("consumer_byte_rate", 2048.0)])
    answers["by_client"] = describe_quotas(client, "client-id", 0, "noisy")
    answers["default_user"] = describe_quotas(client, "user", 1)
    answers["percentage"] = alter_quotas(client, [("user", "app")],
                                         [("request_percentage", 50.0)])
    answers["fraction"] = alter_quotas(client, [("user", "app")],
                                       [("producer_byte_rate", 10.5)])
    answers["ip"] = alter_quotas(client, [("ip", "10.0.0.1")],
                                 [("producer_byte_rate", 100.0)])
    alter_quotas(client, [("client-id", "noisy")], [("producer_byte_rate", None)])
    alter_quotas(client, [("user", None)], [("consumer_byte_rate", None)])
    answers["removed"] = describe_quotas(client, "user", 2) + describe_quotas(
        client, "client-id", 2)
    want = {
        "none": [], "set": [0], "set_default_user": [0],
        "by_client": [([("client-id", "noisy")], {"producer_byte_rate": 1024.0})],
        "default_user": [([("user", None)], {"consumer_byte_rate": 2048.0})],
        "percentage": [42], "fraction": [42], "ip": [42], "removed": [],
    }
    check(answers == want, "client quotas", got=str(answers))
    return {k: v for k, v in answers.items() if isinstance(v, list) and v and
            isinstance(v[0], int)}


def throttle_time_max(metrics):
    """The largest throttle time a client's connections reported (ms)."""
    return max([v for group in metrics.values() for k, v in group.items()
                if k == "throttle-time-max" and v == v] or [0.0])


def throttle(args):
    topic = args.topic
    client = KafkaAdminClient(bootstrap_servers=args.bootstrap.split(","))
    step("quotas: producer_byte_rate 50 KB/s for client id slow-p, consumer_byte_rate "
         "100 KB/s for slow-c")
    codes = alter_quotas(client, [("client-id", "slow-p")], [("producer_byte_rate", 50000.0)])
    codes += alter_quotas(client, [("client-id", "slow-c")], [("consumer_byte_rate", 100000.0)])
    check(codes == [0, 0], "setting the quotas", codes=codes)
    value = b"x" * 10000
    records = [(None, value, None)] * 60
    step("a producer without a quota sends 600 KB: never throttled")
    fast = producer(args, client_id="fast-p", batch_size=16384, linger_ms=0)
    produce_all(fast, topic, records)
    fast_throttle = throttle_time_max(fast.metrics())
    fast.close()
    step("client id slow-p sends 600 KB: throttled, and every record is acknowledged")
    slow = producer(args, client_id="slow-p", batch_size=16384, linger_ms=0)
    acked = produce_all(slow, topic, records)
    slow_throttle = throttle_time_max(slow.metrics())
    slow.close()
    step("client id slow-c reads all 1.2 MB: throttled, and every record arrives")
    cons = consumer(args, client_id="slow-c", fetch_max_bytes=1 << 20)
    tp = TopicPartition(topic, 0)
    cons.assign([tp])
    cons.seek_to_beginning(tp)
    got = read_n(cons, 120, 120, "reading everything back")
    consumer_throttle = throttle_time_max(cons.metrics())
    cons.close()
    client.close()
    check(fast_throttle == 0 and slow_throttle > 0 and consumer_throttle > 0
          and len(acked) == 60 and len(got) == 120, "throttling",
          fast=fast_throttle, slow=slow_throttle, consumer=consumer_throttle)
    finish(fast_throttled=fast_throttle > 0, slow_throttled=slow_throttle > 0,
           consumer_throttled=consumer_throttle > 0, acked=len(acked), read=len(got))


def admin(args):
    t1, t2 = args.topic, args.topic + "-2"
    step("connect the admin client")
    client = KafkaAdminClient(bootstrap_servers=args.bootstrap.split(","))
    step("create_topics")
    client.create_topics(
        {t1: {"num_partitions": 3, "replication_factor": 1},
         t2: {"num_partitions": 1, "replication_factor": 1}})
    step("list_topics shows both")
    poll_until("both topics listed", 30, lambda: {t1, t2} <= set(client.list_topics()))
    step("describe_topics")
    described = {t["name"]: t for t in client.describe_topics([t1, t2])}
    partitions = {name: len(t["partitions"]) for name, t in described.items()}
    check(partitions == {t1: 3, t2: 1}, "describe_topics: wrong partition counts",
          partitions=partitions)
    leaders = [p["leader_id"] for t in described.values() for p in t["partitions"]]
    check(all(leader >= 0 for leader in leaders), "a partition has no leader", leaders=leaders)
    step("create_topics with a replica assignment: where it says; an absent broker refused")
    t3 = args.topic + "-3"
    client.create_topics({t3: {"assignments": {0: [1], 1: [1]}}})
    placed = [(p["partition_index"], p["replica_nodes"]) for p in
              client.describe_topics([t3])[0]["partitions"]]
    placed.sort()
    check(placed == [(0, [1]), (1, [1])], "the placed topic's replicas", placed=placed)
    try:
        client.create_topics({t3 + "x": {"assignments": {0: [7]}}})
        raise Failed("placing a replica on an absent broker succeeded")
    except InvalidReplicationAssignmentError as e:
        check("broker 7" in str(e), "the refusal does not name the broker", error=str(e))
    client.delete_topics([t3])
    step("create_topics again: TopicAlreadyExists")
    try:
        client.create_topics({t1: {"num_partitions": 3, "replication_factor": 1}})
        raise Failed("creating an existing topic succeeded")
    except TopicAlreadyExistsError:
        pass
    # AlterConfigs, the non-incremental form (kafka-python falls back to it for brokers
    # before 2.3; Sarama's AlterConfig sends it): the configs given replace the topic's own.
    topic_configs = lambda: client.describe_configs(  # noqa: E731
        [ConfigResource(ConfigResourceType.TOPIC, t2)], config_filter="all")["topic"][t2]
    step("alter_configs (AlterConfigs) sets retention.ms and segment.ms")
    client.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t2,
                        configs={"retention.ms": "7200000", "segment.ms": "3600000"})],
        incremental=False)
    altered = {k: topic_configs()[k]["value"] for k in ("retention.ms", "segment.ms")}
    check(altered == {"retention.ms": "7200000", "segment.ms": "3600000"},
          "alter_configs did not set both", altered=altered)
    step("reset_configs (AlterConfigs without retention.ms): retention.ms back to its default")
    client.reset_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t2, configs=["retention.ms"])],
        incremental=False)
    reset = {k: topic_configs()[k]["value"] for k in ("retention.ms", "segment.ms")}
    check(reset == {"retention.ms": "604800000", "segment.ms": "3600000"},
          "AlterConfigs did not replace the topic's configs", reset=reset)
    step("describe_configs with synonyms: the topic's value, then the broker config's")
    described = client.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t2, configs=["segment.ms", "retention.ms"])],
        include_synonyms=True, config_filter="all")["topic"][t2]
    synonyms = {k: [config_view(c) for c in [v] + v["synonyms"]] for k, v in described.items()}
    want_synonyms = {
        "segment.ms": [["DYNAMIC_TOPIC_CONFIG", "LONG", "3600000"],
                       ["DYNAMIC_TOPIC_CONFIG", None, "3600000"],
                       ["DEFAULT_CONFIG", None, "604800000"]],
        "retention.ms": [["DEFAULT_CONFIG", "LONG", "604800000"],
                         ["DEFAULT_CONFIG", None, "604800000"]],
    }
    check(synonyms == want_synonyms, "describe_configs with synonyms", got=synonyms)
    step("describe_configs of the broker: its settings under Kafka's names")
    broker_configs = client.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")["broker"]["1"]
    broker_view = {k: broker_configs[k]["value"]
                   for k in ("num.partitions", "log.retention.ms", "broker.id")}
    check(broker_view == {"num.partitions": "1", "log.retention.ms": "604800000",
                          "broker.id": "1"},
          "describe_configs of the broker", broker=broker_view)
    step("alter_configs of a broker: refused with InvalidRequestError")
    result = client.alter_configs(
        [ConfigResource(ConfigResourceType.BROKER, "1", configs={"log.retention.ms": "1"})],
        incremental=False, raise_on_unknown=False)
    # kafka-python gives each resource's outcome as a string: the error's, or its success
    broker_result = str(result["broker"]["1"])
    check("InvalidRequestError" in broker_result and "flags" in broker_result,
          "altering a broker's configs was not refused", result=broker_result)
    step("create_partitions grows a topic from 1 to 3 partitions")
    client.create_partitions({t2: NewPartitions(total_count=3)})
    grown = len(client.describe_topics([t2])[0]["partitions"])
    check(grown == 3, "describe_topics after create_partitions", partitions=grown)
    step("create_partitions with validate_only changes nothing")
    client.create_partitions({t2: NewPartitions(total_count=5)}, validate_only=True)
    unchanged = len(client.describe_topics([t2])[0]["partitions"])
    check(unchanged == 3, "validate_only added partitions", partitions=unchanged)
    step("create_partitions to fewer: InvalidPartitionsError")
    try:
        client.create_partitions({t2: NewPartitions(total_count=2)})
        raise Failed("shrinking a topic succeeded")
    except InvalidPartitionsError as e:
        check("cannot have fewer" in str(e), "the refusal does not say why", error=str(e))
    step("describe_log_dirs: the broker's data directory holds T-2's three partitions")
    log_dirs = [d for b in client.describe_log_dirs() for d in b["log_dirs"]]
    in_dir = sorted(p["partition_index"] for d in log_dirs for t in d["topics"]
                    if t["name"] == t2 for p in t["partitions"])
    check(len(log_dirs) == 1 and in_dir == [0, 1, 2] and log_dirs[0]["total_bytes"] > 0,
          "describe_log_dirs", log_dirs=log_dirs)
    step("elect_leaders: each partition's preferred replica leads already")
    elected = client.elect_leaders(0, {t2: [0, 1, 2]})
    election_codes = sorted({p.error_code for r in elected.replica_election_results
                             for p in r.partition_result})
    check(election_codes == [84], "preferred election codes (ELECTION_NOT_NEEDED)",
          codes=election_codes)
    unclean = client.elect_leaders(1, {t2: [0]}, raise_errors=False)
    unclean_codes = [p.error_code for r in unclean.replica_election_results
                     for p in r.partition_result]
    check(unclean_codes == [42], "an unclean election is refused (INVALID_REQUEST)",
          codes=unclean_codes)
    step("list_partition_reassignments: none")
    reassignments = client.list_partition_reassignments()
    check(reassignments == {}, "reassignments in progress", reassignments=str(reassignments))
    step("client quotas: set, described by filter, refused where sluice cannot, removed")
    quota_answers = client_quotas(client)
    step("delete_topics")
    client.delete_topics([t1])
    poll_until(f"{t1} gone from list_topics", 30, lambda: t1 not in client.list_topics())
    remaining = sorted(t for t in client.list_topics() if t in (t1, t2))
    check(remaining == [t2], "after deleting one topic", remaining=remaining)
    client.close()
    finish(created=[t1, t2], partitions=partitions, remaining=remaining, altered=altered,
           reset=reset, broker=broker_view, grown=grown, log_dir_partitions=in_dir,
           quotas=quota_answers)


def partitioner(args):
    topic = args.topic
    common.check_murmur2_vectors()
    step("produce 1000 keyed records")
    prod = producer(args)
    n_partitions = len(poll_until("partitions", 30, lambda: prod.partitions_for(topic)))
    keys = [f"key-{i}".encode() for i in range(1000)]
    acked = produce_all(prod, topic, [(k, b"v-" + k, None) for k in keys])
    prod.close()
    step("compare with murmur2")
    wrong_java = []
    wrong_kafka_python = []
    for key, meta in zip(keys, acked):
        expected = common.java_partition(key, n_partitions)
        if meta.partition != expected:
            wrong_java.append([key.decode(), meta.partition, expected])
        theirs = (kafka_python_murmur2(key) & 0x7FFFFFFF) % n_partitions
        if theirs != expected:
            wrong_kafka_python.append([key.decode(), theirs, expected])
    check(not wrong_kafka_python, "kafka-python's murmur2 disagrees with ours",
          first=wrong_kafka_python[:5])
    check(not wrong_java, "the producer did not put keys where Java's partitioner does",
          count=len(wrong_java), first=wrong_java[:5])
    step("read every record back")
    got = read_assigned_from_start(args, topic, len(keys))
    read_at = {r.key: (r.partition, r.offset) for r in got}
    moved = [[k.decode(), [m.partition, m.offset], read_at.get(k)]
             for k, m in zip(keys, acked) if read_at.get(k) != (m.partition, m.offset)]
    check(len(got) == len(keys), "read another number of records", read=len(got))
    check(not moved, "records read at another partition/offset than acknowledged",
          count=len(moved), first=moved[:5])
    used = sorted({m.partition for m in acked})
    finish(records=len(keys), partitions=n_partitions, partitions_used=used)


HEADERS = [
    [("trace-id", b"abc-123"), ("empty", b""), ("dup", b"first"), ("dup", b"second")],
    [("binary", bytes(range(256)))],
    [],
    [("utf8-\u00e9", "\u2603".encode())],
]


def headers(args):
    topic = args.topic
    step("produce records with headers")
    prod = producer(args)
    records = [(f"k{i}".encode(), f"v{i}".encode(), h) for i, h in enumerate(HEADERS)]
    records.append((b"tombstone", None, [("deleted", b"yes")]))
    produce_all(prod, topic, records)
    prod.close()
    step("read them back")
    got = read_assigned_from_start(args, topic, len(records))
    sent = {k: (v, list(h)) for k, v, h in records}
    read = {r.key: (r.value, [(k, bytes(v) if v is not None else None) for k, v in r.headers])
            for r in got}
    mismatched = [{"key": repr(k), "sent": repr(sent[k]), "read": repr(read.get(k))}
                  for k in sent if read.get(k) != sent[k]]
    check(len(got) == len(records), "read another number of records", read=len(got))
    check(not mismatched, "headers, key or value changed in the round trip",
          mismatched=mismatched)
    finish(records=len(records), headers=sum(len(h) for _, _, h in records))


def group_resume(args):
    topic, group, n, m = args.topic, args.group, args.n, args.m
    step(f"produce {n} records")
    prod = producer(args)
    first = produce_all(prod, topic, [(f"k{i}".encode(), f"a{i}".encode(), None)
                                      for i in range(n)])
    step(f"consumer 1 of {group} reads {n}")
    c1 = consumer(args, group_id=group)
    c1.subscribe([topic])
    got1 = read_n(c1, n, 60, "consumer 1")
    values1 = sorted(r.value.decode() for r in got1)
    check(values1 == sorted(f"a{i}" for i in range(n)), "consumer 1 read other records",
          extra=sorted(set(values1) - {f"a{i}" for i in range(n)})[:5])
    step("consumer 1 commits and closes")
    c1.commit()
    ends = {}
    for meta in first:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    committed = {tp.partition: c1.committed(tp) for tp in c1.assignment()}
    c1.close(autocommit=False)
    for partition, end in ends.items():
        check(committed.get(partition) == end, "the committed offset is not the log end",
              partition=partition, committed=committed.get(partition), end=end)
    step(f"produce {m} more")
    second = produce_all(prod, topic, [(f"k{i}".encode(), f"b{i}".encode(), None)
                                       for i in range(m)])
    prod.close()
    for meta in second:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    step(f"consumer 2 of {group} reads exactly the {m}")
    c2 = consumer(args, group_id=group)
    c2.subscribe([topic])
    got2 = read_n(c2, m, 60, "consumer 2")
    values2 = sorted(r.value.decode() for r in got2)
    expected2 = sorted(f"b{i}" for i in range(m))
    check(values2 == expected2, "consumer 2 did not read exactly the new records",
          unexpected=sorted(set(values2) - set(expected2))[:5],
          missing=sorted(set(expected2) - set(values2))[:5], read=len(values2))
    step("consumer 2 is at the log end and reads nothing more")
    more = [r for rs in c2.poll(timeout_ms=1000).values() for r in rs]
    check(not more, "consumer 2 read more than the new records",
          more=[[r.partition, r.offset, r.value.decode()] for r in more[:5]])
    positions = {tp.partition: c2.position(tp) for tp in c2.assignment()}
    for partition, end in ends.items():
        check(positions.get(partition) == end, "consumer 2's position is not the log end",
              partition=partition, position=positions.get(partition), end=end)
    c2.close(autocommit=False)
    finish(first=n, second=m, second_read=len(got2), partitions=sorted(ends))


def group_split(args):
    topic, group, n_partitions = args.topic, args.group, args.partitions
    step("two members join")
    members = [consumer(args, group_id=group, client_id=f"member-{i}") for i in range(2)]
    for member in members:
        member.subscribe([topic])
    everything = set(range(n_partitions))

    def split():
        for member in members:
            member.poll(timeout_ms=200)
        shares = [{tp.partition for tp in member.assignment()} for member in members]
        if all(shares) and not (shares[0] & shares[1]) and (shares[0] | shares[1]) == everything:
            return shares
        return None

    shares = poll_until("a disjoint split covering every partition", 60, split, interval_s=0)
    step("a record to each partition reaches its owner")
    prod = producer(args)
    for p in range(n_partitions):
        prod.send(topic, value=f"p{p}".encode(), partition=p).get(timeout=30)
    prod.close()
    received = [[], []]
    deadline = time.monotonic() + 60
    while sum(map(len, received)) < n_partitions:
        check(time.monotonic() < deadline, "records did not arrive",
              received=[[r.partition for r in rs] for rs in received])
        for i, member in enumerate(members):
            for records in member.poll(timeout_ms=200).values():
                received[i].extend(records)
    for i, records in enumerate(received):
        wrong = [r.partition for r in records if r.partition not in shares[i]]
        check(not wrong, f"member {i} received records of partitions it does not own",
              share=sorted(shares[i]), partitions=wrong)
    for member in members:
        member.close(autocommit=False)
    finish(shares=[sorted(s) for s in shares], partitions=n_partitions)


def compacted(args):
    from kafka.errors import InvalidRecordError

    topic, rounds, keys = args.topic, args.n, args.m
    step("a record without a key is refused")
    # kafka-python's idempotent producer treats any non-retriable error as fatal (Java's
    # bumps its epoch and goes on): a producer of its own for the refused record.
    refused = producer(args)
    try:
        refused.send(topic, value=b"no key").get(timeout=30)
        raise Failed("a record without a key was accepted by a compacted topic")
    except InvalidRecordError:
        pass
    refused.close()
    prod = producer(args, linger_ms=5, batch_size=2048)  # batches well below segment.bytes
    step(f"{rounds} rounds of {keys} keys, a tombstone for key-0, a round of fillers")
    records = [(f"key-{k}".encode(), f"key-{k} round {r} {'x' * 100}".encode(), [])
               for r in range(rounds) for k in range(keys)]
    records.append((b"key-0", None, []))
    records += [(f"filler-{i}".encode(), b"f" * 100, []) for i in range(keys)]
    sent = produce_all(prod, topic, records)
    prod.close()
    expected = {f"key-{k}".encode(): f"key-{k} round {rounds - 1} {'x' * 100}".encode()
                for k in range(1, keys)}

    def compacted_view():
        cons = consumer(args)
        tp = TopicPartition(topic, 0)
        cons.assign([tp])
        cons.seek_to_beginning(tp)
        end = cons.end_offsets([tp])[tp]
        got = []
        deadline = time.monotonic() + 30
        while cons.position(tp) < end and time.monotonic() < deadline:
            for batch in cons.poll(timeout_ms=500).values():
                got.extend(batch)
        cons.close()
        latest = {r.key: r.value for r in got if not r.key.startswith(b"filler-")}
        if b"key-0" in latest or len(got) >= len(records) - keys:
            return None  # not cleaned yet
        return got, latest

    step("read T from the start once the cleaner has run")
    got, latest = poll_until("the cleaner to compact T", 90, compacted_view, interval_s=0.5)
    offsets = [r.offset for r in got]
    check(offsets == sorted(set(offsets)), "offsets are not increasing", offsets=offsets)
    check(latest == expected, "the latest value of some key is wrong",
          wrong=sorted(k.decode() for k in expected if latest.get(k) != expected[k]))
    acked = {m.offset for m in sent}
    check(set(offsets) <= acked, "a record at an offset that was never acknowledged")
    finish(records=len(got), written=len(records), gaps=offsets[-1] + 1 - len(got))


def delete_offsets(args):
    topic, group = args.topic, args.group
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    step("produce a record to each partition")
    prod = producer(args)
    for p in (0, 1):
        prod.send(topic, value=b"v", partition=p).get(timeout=30)
    prod.close()
    step(f"a member of {group} reads both and commits")
    member = consumer(args, group_id=group)
    member.subscribe([topic])
    read_n(member, 2, 60, "the member")
    member.commit()
    client = KafkaAdminClient(bootstrap_servers=args.bootstrap.split(","))
    step("delete_group_offsets while the member consumes the topic")
    while_subscribed = client.delete_group_offsets(group, [tp0])[tp0].__name__
    check(while_subscribed == "GroupSubscribedToTopicError", "deleting a subscribed topic's offsets",
          error=while_subscribed)
    member.close(autocommit=False)
    step("delete_group_offsets once it left")
    after = client.delete_group_offsets(group, [tp0])[tp0].__name__
    committed = sorted(tp.partition for tp in client.list_group_offsets(group)[group])
    check(after == "NoError" and committed == [1], "after deleting T-0's offset",
          error=after, committed=committed)
    step("an unknown group: GroupIdNotFoundError")
    try:
        client.delete_group_offsets(group + "-nosuch", [tp0])
        raise Failed("deleting the offsets of an unknown group succeeded")
    except GroupIdNotFoundError:
        pass
    client.close()
    finish(while_subscribed=while_subscribed, after=after, committed=committed)


def delete_records(args):
    topic = args.topic
    tp = TopicPartition(topic, 0)
    step("produce 20 records")
    prod = producer(args)
    acked = produce_all(prod, topic, [(None, f"v{i}".encode(), None) for i in range(20)])
    prod.close()
    check([m.offset for m in acked] == list(range(20)), "offsets of the 20 records",
          offsets=[m.offset for m in acked])
    client = KafkaAdminClient(bootstrap_servers=args.bootstrap.split(","))
    step("delete_records below 8")
    low = [client.delete_records({tp: 8}, timeout_ms=30000)[tp]["low_watermark"]]
    check(low == [8], "the low watermark after deleting below 8", low=low)
    step("a consumer from the beginning starts at 8")
    cons = consumer(args)
    cons.assign([tp])
    beginning = cons.beginning_offsets([tp])[tp]
    cons.seek_to_beginning(tp)
    got = read_n(cons, 12, 30, "reading what is left")
    cons.close()
    first = got[0].offset
    check(beginning == 8 and first == 8 and [r.value for r in got][-1] == b"v19",
          "what is left after deleting below 8", beginning=beginning, first=first)
    step("delete_records below the high watermark (-1)")
    low.append(client.delete_records({tp: -1}, timeout_ms=30000)[tp]["low_watermark"])
    check(low[1] == 20, "the low watermark after deleting everything", low=low)
    step("delete_records past the high watermark: OffsetOutOfRangeError")
    try:
        client.delete_records({tp: 25}, timeout_ms=30000)
        raise Failed("deleting past the high watermark succeeded")
    except OffsetOutOfRangeError:
        pass
    client.close()
    finish(low_watermarks=low, beginning=beginning, first_offset=first)


def reassign(args):
    topic = args.topic
    tp = TopicPartition(topic, 0)
    step("produce 100 records to T-0 (on broker 1)")
    prod = producer(args)
    produce_all(prod, topic, [(None, f"v{i}".encode(), None) for i in range(100)])
    prod.close()
    client = KafkaAdminClient(bootstrap_servers=args.bootstrap.split(","))
    step("alter_partition_reassignments: T-0 to brokers 2 and 3")
    began = client.alter_partition_reassignments({tp: [2, 3]})
    check(began == {tp: None}, "the move began", result=str(began))
    poll_until("the move completes", 60,
               lambda: tp not in client.list_partition_reassignments())
    described = client.describe_topics([topic])[0]["partitions"][0]
    replicas = sorted(described["replica_nodes"] if "replica_nodes" in described
                      else described["replicas"])
    check(replicas == [2, 3], "T-0's replicas after the move", partition=str(described))
    step("read the 100 records from the new replicas")
    cons = consumer(args)
    cons.assign([tp])
    cons.seek_to_beginning(tp)
    got = [r.value for r in read_n(cons, 100, 30, "reading T-0 back")]
    cons.close()
    check(got == [f"v{i}".encode() for i in range(100)], "the records after the move")
    step("refusals: nothing to cancel, a broker that does not exist")
    errors = {
        "cancel": client.alter_partition_reassignments({tp: None})[tp].__name__,
        "unknown_broker": client.alter_partition_reassignments({tp: [2, 9]})[tp].__name__,
    }
    check(errors == {"cancel": "NoReassignmentInProgressError",
                     "unknown_broker": "InvalidReplicationAssignmentError"},
          "refused moves", errors=errors)
    step("describe_metadata_quorum: the controller quorum of the three brokers")
    quorum = client.describe_metadata_quorum()
    partition = quorum["topics"][0]["partitions"][0]
    voters = sorted(v["replica_id"] for v in partition["current_voters"])
    ends = [v["log_end_offset"] for v in partition["current_voters"]]
    check(quorum["topics"][0]["topic_name"] == "__cluster_metadata"
          and partition["error"] is None and partition["leader_id"] in voters
          and partition["high_watermark"] > 0 and voters == [1, 2, 3]
          and max(ends) >= partition["high_watermark"]
          and sorted(n["node_id"] for n in quorum.get("nodes", [])) == [1, 2, 3],
          "the quorum", quorum=str(quorum))
    client.close()
    finish(replicas=replicas, read=len(got), errors=errors, voters=voters)


def txn_tools(args):
    from kafka.admin import AbortTransactionSpec

    topic = args.topic
    tp = TopicPartition(topic, 0)
    txn_id = topic + "-txn"
    client = KafkaAdminClient(bootstrap_servers=args.bootstrap.split(","))
    step("a transactional producer leaves 3 records open")
    prod = producer(args, transactional_id=txn_id)
    prod.init_transactions()
    prod.begin_transaction()
    produce_all(prod, topic, [(None, f"open{i}".encode(), None) for i in range(3)])

    step("list_transactions, with each filter")
    listed = {t.transactional_id: t for ts in client.list_transactions().values() for t in ts}
    check(txn_id in listed and listed[txn_id].state.value == "Ongoing", "the listing",
          listed=str(listed))
    pid = listed[txn_id].producer_id

    def ids(**filters):
        return sorted(t.transactional_id
                      for ts in client.list_transactions(**filters).values() for t in ts)

    filtered = {
        "ongoing": ids(state_filters=["Ongoing"]),
        "committed": ids(state_filters=["CompleteCommit"]),
        "unknown_state": ids(state_filters=["NoSuchState"]),
        "pid": ids(producer_id_filters=[pid]),
        "other_pid": ids(producer_id_filters=[pid + 1000]),
        "open_10min": ids(duration_filter_ms=600000),
        "open_0ms": ids(duration_filter_ms=0),
    }
    want = {"ongoing": [txn_id], "committed": [], "unknown_state": [], "pid": [txn_id],
            "other_pid": [], "open_10min": [], "open_0ms": [txn_id]}
    check(filtered == want, "filtered listings", got=filtered, want=want)

    step("describe_transactions")
    desc = client.describe_transactions([txn_id])[txn_id]
    check(desc.state.value == "Ongoing" and desc.producer_id == pid
          and desc.topic_partitions == {tp} and desc.transaction_start_time_ms > 0
          and desc.transaction_timeout_ms > 0, "the description", desc=str(desc))
    step("an unknown id: TransactionalIdNotFoundError")
    try:
        client.describe_transactions([txn_id + "-nosuch"])
        raise Failed("describing an unknown transactional id succeeded")
    except Exception as e:  # noqa: BLE001 - the class is what is checked
        check(type(e).__name__ == "TransactionalIdNotFoundError", "the unknown id's error",
              error=repr(e))

    step("describe_producers")
    producers = client.describe_producers([tp])[tp].active_producers
    mine = [p for p in producers if p.producer_id == pid]
    check(len(mine) == 1 and mine[0].current_transaction_start_offset == 0
          and mine[0].last_sequence == 2 and mine[0].producer_epoch == desc.producer_epoch,
          "the producer's state", producers=str(producers))

    step("a commit marker from a client is refused (INVALID_REQUEST) and changes nothing")
    from kafka.protocol.producer.transaction import WriteTxnMarkersRequest
    marker = WriteTxnMarkersRequest.WritableTxnMarker
    commit = WriteTxnMarkersRequest(markers=[marker(
        producer_id=pid, producer_epoch=mine[0].producer_epoch, transaction_result=True,
        topics=[marker.WritableTxnMarkerTopic(name=topic, partition_indexes=[0])],
        coordinator_epoch=mine[0].coordinator_epoch)])

    async def send_commit():
        leader = next(iter(await client._async_get_leader_for_partitions([tp])))
        return await client._manager.send(commit, node_id=leader)

    refused = client._manager.run(send_commit).markers[0].topics[0].partitions[0].error_code
    still = [p for p in client.describe_producers([tp])[tp].active_producers
             if p.producer_id == pid]
    check(refused == 42 and still and still[0].current_transaction_start_offset == 0,
          "a client's commit marker", error_code=refused, producers=str(still))

    step("abort_transaction (an operator's abort marker)")
    client.abort_transaction(AbortTransactionSpec(
        topic_partition=tp, producer_id=pid, producer_epoch=mine[0].producer_epoch,
        coordinator_epoch=mine[0].coordinator_epoch))
    after = [p for p in client.describe_producers([tp])[tp].active_producers
             if p.producer_id == pid]
    check(after and after[0].current_transaction_start_offset == -1,
          "the producer's state after the abort", producers=str(after))

    step("read_committed sees none of the 3")
    cons = consumer(args, isolation_level="read_committed")
    cons.assign([tp])
    end = cons.end_offsets([tp])[tp]
    cons.seek_to_beginning(tp)
    early = [r.value for recs in cons.poll(timeout_ms=2000).values() for r in recs]
    check(end >= 4 and early == [], "read_committed after the abort", end=end, early=early)

    step("the producer's commit changes nothing; its next transaction is read")
    prod.commit_transaction()
    prod.begin_transaction()
    produce_all(prod, topic, [(None, f"next{i}".encode(), None) for i in range(2)])
    prod.commit_transaction()
    prod.close()
    got = [r.value for r in read_n(cons, 2, 30, "the next transaction")]
    more = [r.value for recs in cons.poll(timeout_ms=1000).values() for r in recs]
    cons.close()
    check(got == [b"next0", b"next1"] and more == [], "what read_committed reads",
          got=got, more=more)
    state = client.describe_transactions([txn_id])[txn_id].state.value
    hanging = client.find_hanging_transactions()
    check(state == "CompleteCommit" and hanging == [], "after the commit", state=state,
          hanging=hanging)
    client.close()
    finish(filtered=filtered, read=[g.decode() for g in got], state=state)


SCENARIOS = {
    "reassign": reassign,
    "txn-tools": txn_tools,
    "throttle": throttle,
    "delete-offsets": delete_offsets,
    "delete-records": delete_records,
    "compacted": compacted,
    "admin": admin,
    "partitioner": partitioner,
    "headers": headers,
    "group-resume": group_resume,
    "group-split": group_split,
    "compression": compression,
}

if __name__ == "__main__":
    common.run(SCENARIOS, common.arguments(__doc__, SCENARIOS))
