"""aiokafka (asyncio, its own pure-Python protocol code; what FastStream and many asyncio
services use) against the Kafka listener.

    python aiokafka_client.py SCENARIO --bootstrap B --topic T [--group G] [-n N] [-m M]

Scenarios:
  codecs       for each codec (none, gzip, snappy, lz4, zstd) an idempotent producer sends
               N keyed records to T (created beforehand), every acknowledgement at a
               distinct offset; a group consumer (G) reads all of them from the start,
               each once (no duplicate within half a second after the last) and in
               offset order per partition, and commits; the
               admin client then shows G's committed offsets at T's ends and G Empty.
  transactions a transactional producer commits N records (with offsets for group G-offs
               on T's partition 0 at M, send_offsets_to_transaction), aborts M, commits N
               more; a read_committed consumer reads exactly the 2N committed ones, a
               read_uncommitted one all 2N+M; G-offs's committed offset is M.
The last line of stdout is the JSON summary (common.py).
"""

import asyncio

import common
from common import check, finish, step

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


async def read_all(args, group, count, **config):
    """Reads T from the start in `group` until `count` records came (30 s at most), then
    half a second more, so that a duplicate shows as one too many; commits and stops.
    Returns the records and the end offsets of the partitions it was assigned."""
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **config)
    await consumer.start()
    records = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        quiet_until = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            if len(records) >= count and quiet_until is None:
                quiet_until = loop.time() + 0.5
            if quiet_until is not None and loop.time() >= quiet_until:
                break
        await consumer.commit()
        ends = {tp.partition: o
                for tp, o in (await consumer.end_offsets(list(consumer.assignment()))).items()}
    finally:
        await consumer.stop()
    return records, ends


def check_order(records):
    last = {}
    for r in records:
        before = last.get(r.partition)
        check(before is None or r.offset > before, "offsets out of order",
              partition=r.partition, offset=r.offset, before=before)
        last[r.partition] = r.offset


async def codecs(args):
    n = args.n
    offsets = set()
    for codec in CODECS:
        step(f"produce {n} records, idempotent, compression {codec}")
        producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, enable_idempotence=True,
                                    compression_type=codec, linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(args.topic, key=f"{codec}-{i}".encode(),
                                           value=f"v-{codec}-{i}".encode(),
                                           headers=[("codec", str(codec).encode())])
                       for i in range(n)]
            for meta in await asyncio.gather(*futures):
                check((meta.partition, meta.offset) not in offsets, "an offset acknowledged twice",
                      partition=meta.partition, offset=meta.offset)
                offsets.add((meta.partition, meta.offset))
        finally:
            await producer.stop()

    step("read everything in a group")
    total = n * len(CODECS)
    records, ends = await read_all(args, args.group, total)
    values = [r.value.decode() for r in records]
    check(len(values) == total and len(set(values)) == total, "not each record exactly once",
          records=len(values), distinct=len(set(values)), expected=total)
    for r in records:
        codec = r.key.decode().rsplit("-", 1)[0]
        check(dict(r.headers).get("codec") == codec.encode(), "a header did not survive",
              key=r.key.decode(), headers=str(r.headers))
    check_order(records)

    step("the group's committed offsets and state")
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    try:
        committed = {tp.partition: meta.offset
                     for tp, meta in (await admin.list_consumer_group_offsets(args.group)).items()}
        check(committed == ends, "committed offsets are not the ends", committed=committed,
              ends=ends)
        described = await admin.describe_consumer_groups([args.group])
        state = described[0].groups[0][2]
        check(state == "Empty", "the group is not Empty after its member left", state=state)
    finally:
        await admin.close()
    finish(records=len(records), codecs=[str(c) for c in CODECS],
           partitions=sorted({r.partition for r in records}), group_state=state)


async def transactions(args):
    n, m = args.n, args.m
    offsets_group = f"{args.group}-offs"
    step("commit N, abort M, commit N")
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap,
                                transactional_id=f"{args.topic}-tx")
    await producer.start()
    try:
        for round_, (prefix, count, commit) in enumerate(
                [("first", n, True), ("aborted", m, False), ("second", n, True)]):
            await producer.begin_transaction()
            for i in range(count):
                await producer.send(args.topic, key=f"{prefix}-{i % 5}".encode(),
                                    value=f"{prefix}-{i}".encode())
            if round_ == 0:
                await producer.send_offsets_to_transaction(
                    {TopicPartition(args.topic, 0): m}, offsets_group)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()

    step("read_committed")
    committed, _ = await read_all(args, args.group, 2 * n, isolation_level="read_committed")
    values = [r.value.decode() for r in committed]
    check(len(values) == 2 * n and not any(v.startswith("aborted") for v in values),
          "read_committed did not see exactly the committed records", records=len(values),
          aborted=sum(v.startswith("aborted") for v in values))
    check_order(committed)

    step("read_uncommitted")
    everything, _ = await read_all(args, f"{args.group}-all", 2 * n + m,
                                isolation_level="read_uncommitted")
    check(len(everything) == 2 * n + m, "read_uncommitted did not see every record",
          records=len(everything), expected=2 * n + m)

    step("the offsets committed in the transaction")
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(offsets_group)
    finally:
        await admin.close()
    got = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == args.topic}
    check(got == {0: m}, "the transaction's offsets are not committed", offsets=got)
    finish(committed=len(committed), everything=len(everything), offsets=got[0])


def run_async(scenario):
    """The scenario on an event loop; a cancellation (aiokafka's own tasks cancelled under a
    call) becomes an ordinary failure, so it still ends in the JSON summary."""
    def run(args):
        try:
            asyncio.run(scenario(args))
        except asyncio.CancelledError as e:
            raise RuntimeError(f"cancelled: {e!r}") from e
    return run


SCENARIOS = {"codecs": run_async(codecs), "transactions": run_async(transactions)}

if __name__ == "__main__":
    common.run(SCENARIOS, common.arguments(__doc__, SCENARIOS))
