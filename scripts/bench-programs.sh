#!/usr/bin/env bash
# Coordinator memory after many distinct program uploads (1,000 of 1 MiB by default), and after
# a restart on the same store. Extra arguments go to the benchmark (e.g. --plait OTHER-BUILD).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p plait-cli --bin plait --example bench_programs
exec target/release/examples/bench_programs "$@"
