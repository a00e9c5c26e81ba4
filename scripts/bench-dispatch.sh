#!/usr/bin/env bash
# Dispatch overhead of the pool with the dev backend: 100 workers, 10,000 tasks by default.
# Prints ready -> leased delay (p50, p99), coordinator CPU per task and store size per job.
# Extra arguments go to the benchmark (e.g. --workers 50 --tasks 2000 --task-ms 20).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p plait-cli --bin plait --example bench_dispatch
exec target/release/examples/bench_dispatch "$@"
