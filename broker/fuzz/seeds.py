"""Writes fuzzing seeds for kafka_request: a request header for every served api and
version (api key, version, correlation id, null client id, and once with the flexible
header's empty tag list) followed by zeros. The served apis and versions are read from
broker/src/kafka/codec.rs's SERVED, so the seeds follow what the listener serves.
Usage: python3 seeds.py CORPUS_DIR"""
import os
import re
import struct
import sys

# Kafka's api keys by name (kafka-protocol's ApiKey variants).
KEYS = {
    "Produce": 0, "Fetch": 1, "ListOffsets": 2, "Metadata": 3, "OffsetCommit": 8,
    "OffsetFetch": 9, "FindCoordinator": 10, "JoinGroup": 11, "Heartbeat": 12,
    "LeaveGroup": 13, "SyncGroup": 14, "DescribeGroups": 15, "ListGroups": 16,
    "SaslHandshake": 17, "ApiVersions": 18, "CreateTopics": 19, "DeleteTopics": 20,
    "DeleteRecords": 21, "InitProducerId": 22, "OffsetForLeaderEpoch": 23,
    "AddPartitionsToTxn": 24, "AddOffsetsToTxn": 25, "EndTxn": 26, "WriteTxnMarkers": 27,
    "TxnOffsetCommit": 28, "DescribeAcls": 29, "CreateAcls": 30, "DeleteAcls": 31,
    "DescribeConfigs": 32, "AlterConfigs": 33, "DescribeLogDirs": 35,
    "SaslAuthenticate": 36, "CreatePartitions": 37, "DeleteGroups": 42, "ElectLeaders": 43,
    "IncrementalAlterConfigs": 44, "AlterPartitionReassignments": 45,
    "ListPartitionReassignments": 46, "OffsetDelete": 47, "DescribeClientQuotas": 48,
    "AlterClientQuotas": 49, "DescribeUserScramCredentials": 50,
    "AlterUserScramCredentials": 51, "DescribeQuorum": 55, "DescribeCluster": 60,
    "DescribeProducers": 61, "DescribeTransactions": 65, "ListTransactions": 66,
}

codec = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "kafka", "codec.rs")
source = open(codec).read()
served = source[source.index("pub const SERVED"):]
served = served[:served.index("];")]
SERVED = [(KEYS[name], int(low), int(high))
          for name, low, high in re.findall(r"\(ApiKey::(\w+), (\d+), (\d+)\)", served)]
assert len(SERVED) >= 48, SERVED

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for key, low, high in SERVED:
    for version in range(low, high + 1):
        for tags in (b"", b"\x00"):
            header = struct.pack(">hhih", key, version, 1, -1) + tags
            name = f"{key}-v{version}{'-tags' if tags else ''}"
            with open(os.path.join(out, name), "wb") as f:
                f.write(header + bytes(48))
