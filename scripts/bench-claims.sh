#!/usr/bin/env bash
# Claims of workers that fit no segment: one job of 10,000 dev segments proven by 100 dev workers
# beside 900 workers of 1 byte. Prints the job's wall time, ready -> leased p50/p99 and the
# coordinator's CPU per task. Extra arguments go to the benchmark (e.g. --plait OTHER-BUILD,
# --segments 2000 --small 300 --fitting 50).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p plait-cli --bin plait --example bench_claims
exec target/release/examples/bench_claims "$@"
