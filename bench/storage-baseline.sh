#!/usr/bin/env bash
# Measures the disk's own sequential write bandwidth with dd (fdatasync at the end, as the
# storage issue asks) on the same filesystem the criterion benches write to, then runs the
# storage and protocol criterion benches. Paste the results into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/tmp
f=target/tmp/dd-baseline
echo "== dd: 2 GiB sequential write, one fdatasync at the end"
dd if=/dev/zero of="$f" bs=1M count=2048 conv=fdatasync 2>&1 | tail -1
echo "== dd: 16 KiB writes, each synced (oflag=dsync): the disk's fsync-per-write ceiling"
dd if=/dev/zero of="$f" bs=16k count=2000 oflag=dsync 2>&1 | tail -1
rm -f "$f"
echo "== criterion: storage"
cargo bench -p sluice-bench --bench storage 2>&1 | grep -E '^[a-z_]+/|time:|thrpt:|appends per fsync'
echo "== criterion: protocol"
cargo bench -p sluice-bench --bench protocol 2>&1 | grep -E '^[a-z_]+/|time:|thrpt:'
