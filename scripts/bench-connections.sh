#!/usr/bin/env bash
# Slow connections against `plait serve --dev` with its default limits: how many half-open
# connections it holds before closing new ones at once, and a job's time with 5,000 slow
# connections kept open. Extra arguments go to the benchmark (e.g. --connections 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p plait-cli --bin plait --example bench_connections
exec target/release/examples/bench_connections "$@"
