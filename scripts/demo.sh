#!/usr/bin/env bash
# The main job on the embedded default: proves a multi-segment Fibonacci run with two local
# worker processes, then verifies the proof. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bin plait
./target/release/plait prove guests/fib --input 150000 --segment-height 19 --workers 2 -o fib.proof
./target/release/plait verify fib.proof --program guests/fib
