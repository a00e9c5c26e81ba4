#!/usr/bin/env bash
# Scale benchmark (issue: large jobs). Prints two tables:
# 1. fib at 26, 258 and 2,580 segments (segment height 19, real OpenVM backend, no proving):
#    plain execution against planning (boundaries and checkpoints), checkpoint bytes per
#    segment, and through `plait serve`: submission to first lease and to the end of execution,
#    the coordinator's peak RSS and CPU, store and blob bytes per segment;
# 2. one 10,000-segment dev-backend job on 100 dev workers, with proofs padded to the size of
#    real ones: tasks per second, ready -> leased p50/p99, the coordinator's peak RSS.
# Extra arguments go to the first benchmark (e.g. --inputs 1500000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -p plait-cli --bin plait --example bench_scale --example bench_dispatch
cache="${PLAIT_CACHE_DIR:-$HOME/.cache/plait}"
elf=$(target/release/plait build-guest guests/fib)
target/release/examples/bench_scale --elf "$elf" --cache-dir "$cache" \
  --plait target/release/plait "$@"
# Real proofs at height 19 (`plait prove --timings-json`, proof_bytes): a full segment 1.25 MB,
# leaf 0.56 MB, internal-for-leaf 0.42 MB, internal-recursive 0.31 MB, wrap 0.27 MB. Every dev
# proof is padded to the largest, 1.25 MB.
target/release/examples/bench_dispatch --workers 100 --tasks 13000 \
  --instructions-per-job 80000 --jobs-in-flight 1 --task-ms 50 --proof-bytes 1245824
