# Shell helpers of the bench scripts (sourced). They expect BIN (the directory of the
# sluice binaries) and WORK (a scratch directory for broker data and logs).

PIDS=()
stop_brokers() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
# Evaluates a Python expression over `d`, the JSON document on stdin (or its last line).
json() {
  python3 -c "import json,sys
s=sys.stdin.read().strip()
try: d=json.loads(s)
except ValueError: d=json.loads(s.splitlines()[-1])
print($1)"
}
# CPU seconds (user + system) process $1 has used so far.
cpu_seconds() { python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split(); print((int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'))" "$1"; }
# The disk's own bandwidth under directory $1, in MB/s: dd writes 1 GiB sequentially with
# one fdatasync at the end.
disk_mbs() {
  local line bytes secs
  line=$(dd if=/dev/zero of="$1/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)
  rm -f "$1/dd.bin"
  bytes=$(echo "$line" | awk '{ print $1 }')
  secs=$(echo "$line" | awk -F, '{ print $(NF-1) }' | awk '{ print $1 }')
  python3 -c "print(round($bytes / $secs / 1e6, 1))"
}
# Deletes the given data directories, if any is there, and lets the disk settle: what was
# unwritten goes to the disk now (`sync`), and on this VM's ext4 (mounted with `discard`)
# the disk stays slow for a few seconds after a large delete: a run started at once had
# fsync p999 13-24 ms at 100,000 records/s, after a 5 s pause 1.8-3.9 (BENCHMARKS.md).
# SETTLE_SECONDS (5) sets the pause.
clear_data() {
  local dir any=
  for dir in "$@"; do [[ -e $dir ]] && any=1; done
  [[ -n $any ]] || return 0
  rm -rf "$@"
  sync
  sleep "${SETTLE_SECONDS:-5}"
}
# The median of the space-separated numbers in $1, to 2 decimals.
# Bytes of record batches in the given segment files: a running broker's active segment
# may end in a runway of zeros written ahead (storage/src/segment.rs), which is no data.
batch_bytes() {
  python3 - "$@" <<'PY'
import struct, sys
total = 0
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    at = 0
    while at + 12 <= len(data):
        (n,) = struct.unpack(">i", data[at + 8:at + 12])
        if n <= 0 or at + 12 + n > len(data):
            break
        at += 12 + n
    total += at
print(total)
PY
}
# The median of the numbers among the words of $1 ("-" when there are none).
median() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:] if x != '-']; print(round(statistics.median(v), 2) if v else '-')" $1; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# Waits until `sluice cluster describe` shows $1 active brokers.
wait_active() {
  local n
  for _ in $(seq 1 300); do
    n=$("$BIN/sluice" cluster describe --format json 2>/dev/null | json 'sum(b["state"] == "active" for b in d["brokers"])' 2>/dev/null || echo 0)
    [[ $n == "$1" ]] && return 0
    sleep 0.1
  done
  echo "the brokers did not become active; see $WORK/*.log" >&2
  exit 1
}
# Starts one broker ($BIN/sluice-broker, data in $WORK/data, log in $WORK/broker.log) with
# its native and Kafka listeners on free 127.0.0.1 ports; exports SLUICE_BOOTSTRAP, sets
# KAFKA to the Kafka listener's address, and waits until both serve.
start_kafka_broker() {
  export SLUICE_BOOTSTRAP=127.0.0.1:$(free_port)
  KAFKA=127.0.0.1:$(free_port)
  "$BIN/sluice-broker" --listen "$SLUICE_BOOTSTRAP" --kafka-listen "$KAFKA" --data-dir "$WORK/data" \
    2>"$WORK/broker.log" &
  PIDS+=($!)
  wait_active 1
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; h,p=sys.argv[1].split(':'); socket.create_connection((h,int(p)),1)" "$KAFKA" \
      2>/dev/null && return 0
    sleep 0.1
  done
}
# Starts brokers 1, 2 and 3 on free 127.0.0.1 ports (data in $WORK/data-N, logs in
# $WORK/broker-N.log), exports SLUICE_BOOTSTRAP naming all three, and waits until they
# are active. Optional: the broker binary (default $BIN/sluice-broker), then extra flags.
start_three_brokers() {
  local ports voters id broker=${1:-$BIN/sluice-broker}
  shift || true
  ports=("$(free_port)" "$(free_port)" "$(free_port)")
  voters="1@127.0.0.1:${ports[0]},2@127.0.0.1:${ports[1]},3@127.0.0.1:${ports[2]}"
  for id in 1 2 3; do
    "$broker" --node-id $id --voters "$voters" --listen "127.0.0.1:${ports[$((id - 1))]}" \
      --data-dir "$WORK/data-$id" "$@" 2>"$WORK/broker-$id.log" &
    PIDS+=($!)
  done
  export SLUICE_BOOTSTRAP="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
  wait_active 3
}
# Builds package $2 (its binary has the same name) of revision $1 in a throwaway git
# worktree, into $WORK/base-target/release; kept between runs while the revision is the
# same.
build_base() {
  local rev tree=$WORK/base-tree
  rev=$(git rev-parse "$1")
  if [[ ! -x $WORK/base-target/release/$2 || $(cat "$WORK/base-rev" 2>/dev/null) != "$rev" ]]; then
    git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
    git worktree add --detach "$tree" "$rev" >&2
    (cd "$tree" && CARGO_TARGET_DIR=$WORK/base-target cargo build --release -q -p "$2")
    git worktree remove --force "$tree"
    echo "$rev" >"$WORK/base-rev"
  fi
}
