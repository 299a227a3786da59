"""What the Kafka-client scripts share: a deadline for the whole run, the JSON summary on
the last line of stdout, and an independent murmur2.

Every script is run by tests/kafka_clients.rs with the venv's python (see README.md in
this directory). Its contract: the last line of stdout is one JSON object with
"ok": true and what it checked, or "ok": false with "error" and "step"; the exit status
is 0 only with "ok": true. Every wait has a deadline: a SIGALRM watchdog ends the run
with a failure naming the step it was in, so a script never outlives --timeout-s.
"""

import argparse
import json
import os
import signal
import sys
import time
import traceback

_state = {"scenario": None, "step": "start"}


def _pin_kafka_python_api_version():
    """With SLUICE_KAFKA_PYTHON_API_VERSION=2.3, kafka-python skips its newest ApiVersions
    request (v4) for that version's. Only for checking these scripts against librdkafka's
    mock cluster (mock_cluster.py), which answers ApiVersions v3+ with an error that
    kafka-python 3.0 cannot decode; the tests against sluice never set it."""
    pinned = os.environ.get("SLUICE_KAFKA_PYTHON_API_VERSION")
    if not pinned:
        return
    version = tuple(int(x) for x in pinned.split("."))
    import kafka

    for cls in (kafka.KafkaProducer, kafka.KafkaConsumer, kafka.KafkaAdminClient):
        cls.DEFAULT_CONFIG["api_version"] = version


_pin_kafka_python_api_version()

# SLUICE_KAFKA_CLIENT_LOG=INFO (or DEBUG) shows the Python clients' own logs on stderr.
if os.environ.get("SLUICE_KAFKA_CLIENT_LOG"):
    import logging

    logging.basicConfig(level=os.environ["SLUICE_KAFKA_CLIENT_LOG"].upper(), stream=sys.stderr)


class Failed(Exception):
    """A check that did not hold; the message says what was expected and what was seen."""


def step(name):
    """Names the step the run is in, for the failure message if it goes wrong there."""
    _state["step"] = name
    print(f"-- {name}", file=sys.stderr, flush=True)


def _emit(summary, code):
    sys.stdout.flush()
    print(json.dumps(summary, sort_keys=True), flush=True)
    # os._exit: client libraries keep background threads that could hold up a normal
    # exit (kafka-python's sender, librdkafka's brokers) after a failure.
    os._exit(code)


def finish(**fields):
    """Prints the success summary and exits 0."""
    _emit({"ok": True, "scenario": _state["scenario"], **fields}, 0)


def fail(message, **fields):
    """Prints the failure summary and exits 1."""
    print(f"FAILED in step {_state['step']}: {message}", file=sys.stderr, flush=True)
    _emit(
        {
            "ok": False,
            "scenario": _state["scenario"],
            "step": _state["step"],
            "error": message,
            **fields,
        },
        1,
    )


def check(condition, message, **fields):
    """Fails the run with `message` unless `condition` holds."""
    if not condition:
        raise Failed(message if not fields else f"{message}: {json.dumps(fields)[:2000]}")


def _on_alarm(_signum, _frame):
    fail(f"timed out (the run's deadline passed) in step {_state['step']}")


def arguments(description, scenarios):
    """Parses `SCENARIO --bootstrap B --topic T [--group G] [-n N] [-m M] [--timeout-s S]`
    and arms the watchdog."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("scenario", choices=sorted(scenarios))
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default=None)
    parser.add_argument("-n", type=int, default=100, help="records in the first round")
    parser.add_argument("-m", type=int, default=50, help="records in the second round")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--codec", default=None, help="gzip, snappy, lz4 or zstd")
    parser.add_argument("--ssl-ca", default=None, help="CA file: connect over TLS (SSL)")
    parser.add_argument("--timeout-s", type=float, default=90.0)
    args = parser.parse_args()
    _state["scenario"] = args.scenario
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout_s)
    return args


def run(scenarios, args):
    """Runs the chosen scenario; any exception becomes the failure summary."""
    try:
        scenarios[args.scenario](args)
    except Failed as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 - every failure must end in the JSON summary
        traceback.print_exc(file=sys.stderr)
        fail(f"{type(e).__name__}: {e}")
    fail("the scenario returned without a summary")


def poll_until(what, timeout_s, condition, interval_s=0.1):
    """Calls `condition()` until it returns a true value (returned), or fails after
    `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failed(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def json_value(source, seq):
    """The value of record `seq` written by `source` in the compression scenarios: a JSON
    event, compressible as real ones are. tests/kafka_clients.rs writes sluice's the same
    way ("from": "sluice")."""
    return json.dumps({
        "from": source,
        "seq": seq,
        "user": f"user-{seq % 97}",
        "event": "page_view",
        "note": "the customer viewed an item from a recommended list",
    }).encode()


def check_compressed_mix(values, source, n, m):
    """`values` (read from the start of the topic) are exactly the n records `source`
    wrote and the m sluice wrote before it, each once."""
    decoded = [json.loads(v) for v in values]
    check(len(decoded) == n + m, "wrong record count", read=len(decoded), expected=n + m)
    ours = sorted(d["seq"] for d in decoded if d["from"] == source)
    sluice = sorted(d["seq"] for d in decoded if d["from"] == "sluice")
    check(ours == list(range(n)), f"{source}'s own records did not come back once each",
          read=len(ours))
    check(sluice == list(range(m)), "sluice's compressed records did not come back once each",
          read=len(sluice))


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 as org.apache.kafka.common.utils.Utils.murmur2 computes it (seed
    0x9747b28c), returning the Java int (signed 32 bits). Written from the Java code, not
    taken from a client, so it checks the clients' partitioners independently."""
    mask = 0xFFFFFFFF
    m = 0x5BD1E995
    r = 24
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & mask
        k ^= k >> r  # Java's >>> on an int: k is already unsigned here
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length % 4
    base = length & ~3
    # Java's switch falls through: case 3, then 2, then 1.
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


# Kafka's UtilsTest.testMurmur2: the vectors the Java client's own test checks.
MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def java_partition(key: bytes, n_partitions: int) -> int:
    """The partition the Java client's default partitioner gives a keyed record:
    toPositive(murmur2(key)) % n, toPositive being `& 0x7fffffff`."""
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def check_murmur2_vectors():
    """Fails unless our murmur2 gives the Java client's test vectors."""
    for data, expected in MURMUR2_VECTORS:
        check(
            murmur2(data) == expected,
            f"our murmur2({data!r}) = {murmur2(data)}, Kafka's UtilsTest says {expected}",
        )
