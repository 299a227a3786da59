#!/usr/bin/env bash
# Leader failover as a distribution: for each case (SIGKILL, SIGSTOP or a network cut of a
# partition leader that is the active controller, another voter, or a broker-only node),
# TRIALS trials of the time from the failure to the first acknowledged acks=all record sent
# after it, and the acknowledged records lost (must be 0). See
# integration-tests/src/bin/failover-bench.rs for how each trial runs.
#
#   bench/failover.sh                                  # 20 trials of every case
#   TRIALS=5 CASES=kill-controller,kill-voter bench/failover.sh
#
# Real brokers on 127.0.0.1-4 with their default settings (release build); about 10 s
# per trial. Prints one Markdown table on stdout, a line per trial on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${TRIALS:-20}
CASES=${CASES:-kill-controller,kill-voter,kill-broker,stop-controller,stop-voter,stop-broker,cut-controller,cut-voter,cut-broker}
cargo build --release -q --bins
echo "# failover-bench, $(date -u +%Y-%m-%d), $(nproc) cores, $(git rev-parse --short HEAD)"
target/release/failover-bench --trials "$TRIALS" --cases "$CASES"
