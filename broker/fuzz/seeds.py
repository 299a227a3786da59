"""Writes fuzzing seeds for kafka_request: a request header for every served api and
version (api key, version, correlation id, null client id, and once with the flexible
header's empty tag list) followed by zeros. Usage: python3 seeds.py CORPUS_DIR"""
import os
import struct
import sys

# (api key, min, max) as in broker/src/kafka/codec.rs SERVED.
SERVED = [(18, 0, 4), (3, 0, 13), (0, 3, 11), (1, 4, 12), (2, 1, 6), (23, 2, 4), (10, 0, 5),
          (11, 0, 9), (14, 0, 5), (12, 0, 4), (13, 0, 5), (9, 1, 9), (8, 2, 9), (15, 0, 6),
          (16, 0, 5), (42, 0, 2), (19, 2, 7), (20, 1, 5), (32, 1, 4), (44, 0, 1), (22, 0, 5),
          (60, 0, 2)]

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for key, low, high in SERVED:
    for version in range(low, high + 1):
        for tags in (b"", b"\x00"):
            header = struct.pack(">hhih", key, version, 1, -1) + tags
            name = f"{key}-v{version}{'-tags' if tags else ''}"
            with open(os.path.join(out, name), "wb") as f:
                f.write(header + bytes(48))
