#!/usr/bin/env bash
# Gate benchmark (crates/plait-cli/examples/bench_gate.rs): proves a fib job on this machine
# keeping every task's proof (or reuses DIR from an earlier run), then times the coordinator's
# checks of them, one at a time and on every core at once.
#   scripts/bench-gate.sh [FIB_INPUT] [SEGMENT_HEIGHT] [DIR]     (defaults: 300000 19 target/gate-proofs)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-300000}"
height="${2:-19}"
dir="${3:-target/gate-proofs-$n-h$height}"
cargo build --release --quiet --bin plait --example bench_gate
elf=$(target/release/plait build-guest guests/fib)
if [ ! -f "$dir/plan.json" ]; then
  target/release/plait prove "$elf" --input "$n" --segment-height "$height" --workers 1 \
    -o "$dir.proof" --keep-task-proofs "$dir"
fi
target/release/examples/bench_gate --proofs "$dir" --program "$elf" --input "$n" \
  --segment-height "$height"
