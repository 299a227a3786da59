"""kcat (the librdkafka command-line client, Debian's kcat on librdkafka 2.0.2) against the
Kafka listener. This script only drives the kcat binary and checks what it prints; it
needs no Python package, so any python3 runs it.

    python kcat_driver.py SCENARIO --bootstrap B --topic T [--group G] [-n N] [-m M]

Scenarios:
  produce-consume  `kcat -P -K:` N keyed lines into T (created beforehand) with librdkafka's
                   Java-compatible partitioner (murmur2_random), then `kcat -C -e -J` from
                   the beginning to the end: every line once, its key on the partition
                   Java's murmur2 gives it.
  metadata         `kcat -L -J`: the brokers (id, host:port) and topics, T among them with
                   a leader for every partition; the summary lists them for the test.
  group            N lines, `kcat -G G T -c N` (balanced consumer, from the earliest offset)
                   prints the N; M more lines; `kcat -G G T -c M` prints exactly the M new
                   ones (it resumed at what the first run committed when it closed).
KCAT (environment) names the binary, `kcat` by default. The last line of stdout is the
JSON summary (common.py).
"""

import json
import os
import subprocess

import common
from common import check, finish, step

KCAT = os.environ.get("KCAT", "kcat")


def kcat(args, *flags, stdin=None, timeout_s=60):
    """Runs kcat against the bootstrap with `flags`; returns its stdout, or fails with its
    exit status and stderr."""
    command = [KCAT, "-b", args.bootstrap, *flags]
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise common.Failed(f"{' '.join(command)} did not finish in {timeout_s}s; "
                            f"stderr: {(e.stderr or b'').decode(errors='replace')[-2000:]}")
    stderr = done.stderr.decode(errors="replace")
    if stderr:
        print(stderr, file=common.sys.stderr, end="")
    check(done.returncode == 0, f"{' '.join(command)} exited {done.returncode}",
          stderr=stderr[-2000:])
    return done.stdout.decode(errors="replace")


def metadata_json(args, *flags):
    return json.loads(kcat(args, "-L", "-J", *flags))


def partition_count(args, topic):
    """T's partition count, from kcat's own metadata."""
    for t in metadata_json(args, "-t", topic)["topics"]:
        if t["topic"] == topic and not t.get("error"):
            return len(t["partitions"])
    raise common.Failed(f"kcat -L does not show topic {topic}")


def produce_lines(args, topic, lines):
    """`kcat -P -K:`: one keyed record per line."""
    kcat(args, "-P", "-t", topic, "-K:", "-X", "topic.partitioner=murmur2_random",
         "-X", "topic.request.required.acks=-1", stdin="".join(f"{line}\n" for line in lines).encode())


def produce_consume(args):
    topic, n = args.topic, args.n
    common.check_murmur2_vectors()
    step(f"kcat -P: {n} keyed lines")
    lines = [f"key-{i}:value-{i}" for i in range(n)]
    produce_lines(args, topic, lines)
    n_partitions = partition_count(args, topic)
    step("kcat -C -e: from the beginning to the end")
    out = kcat(args, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    read = sorted(f"{r['key']}:{r['payload']}" for r in records)
    check(read == sorted(lines), "kcat -C did not read every line exactly once",
          read=len(read), distinct=len(set(read)), expected=n)
    misplaced = [[r["key"], r["partition"], common.java_partition(r["key"].encode(), n_partitions)]
                 for r in records
                 if r["partition"] != common.java_partition(r["key"].encode(), n_partitions)]
    check(not misplaced, "keys on other partitions than Java's murmur2 gives",
          count=len(misplaced), first=misplaced[:5])
    finish(records=len(records), partitions=n_partitions,
           partitions_used=sorted({r["partition"] for r in records}))


def metadata(args):
    topic = args.topic
    step("kcat -L -J")
    document = metadata_json(args)
    brokers = sorted(({"id": b["id"], "name": b["name"]} for b in document["brokers"]),
                     key=lambda b: b["id"])
    topics = {t["topic"]: t for t in document["topics"]}
    check(topic in topics, "the topic is not listed", topics=sorted(topics))
    partitions = topics[topic]["partitions"]
    leaders = [p["leader"] for p in partitions]
    broker_ids = {b["id"] for b in brokers}
    check(partitions and all(leader in broker_ids for leader in leaders),
          "a partition's leader is not a listed broker", leaders=leaders,
          brokers=sorted(broker_ids))
    finish(brokers=brokers, controllerid=document.get("controllerid"),
           topics=sorted(topics), partitions=len(partitions),
           replicas=[sorted(r["id"] for r in p.get("replicas", [])) for p in partitions])


def group_run(args, count):
    """`kcat -G GROUP TOPIC -c COUNT`: a balanced consumer that exits after COUNT records
    (and commits what it printed as it closes); returns the values printed."""
    out = kcat(args, "-G", args.group, args.topic, "-c", str(count), "-q", "-f", "%s\\n",
               "-X", "auto.offset.reset=earliest")
    return out.splitlines()


def group(args):
    topic, n, m = args.topic, args.n, args.m
    step(f"kcat -P: {n} lines")
    produce_lines(args, topic, [f"k{i}:a{i}" for i in range(n)])
    step(f"kcat -G {args.group}: the first {n}")
    first = group_run(args, n)
    check(sorted(first) == sorted(f"a{i}" for i in range(n)),
          "the first run did not print each of the first lines once",
          read=len(first), distinct=len(set(first)))
    step(f"kcat -P: {m} more")
    produce_lines(args, topic, [f"k{i}:b{i}" for i in range(m)])
    step(f"kcat -G {args.group}: resumes with the {m} new ones")
    second = group_run(args, m)
    expected = sorted(f"b{i}" for i in range(m))
    check(sorted(second) == expected, "the second run did not print exactly the new lines",
          unexpected=sorted(set(second) - set(expected))[:5],
          missing=sorted(set(expected) - set(second))[:5])
    finish(first=len(first), second=len(second))


SCENARIOS = {"produce-consume": produce_consume, "metadata": metadata, "group": group}

if __name__ == "__main__":
    common.run(SCENARIOS, common.arguments(__doc__, SCENARIOS))
