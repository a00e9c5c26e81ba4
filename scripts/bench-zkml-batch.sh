#!/usr/bin/env bash
# The CNN batch of 16 (`plait demo zkml --model cnn --image 0 --batch 16`) proven on this
# machine from a fresh start, each phase timed:
# 1. the release build (with what the tests need: scripts/install-deps.sh);
# 2. `plait calibrate --vm-config rv32im-sha2 --heights 19,20` (resumes a profile already
#    there), so that the planner knows the machine;
# 3. `plait plan` on the batch: the segment height it picks for this machine's memory, with
#    its predicted latency;
# 4. the proof at that height, through the local pool, verified; its per-phase predicted and
#    measured figures, and each task's seconds and peak memory against their predictions
#    (scripts/per-task-table.py).
# Usage: scripts/bench-zkml-batch.sh [BATCH]   (default 16). 2 h 15 min on cpu-2 from a fresh
# clone at height 19; on cpu-2e, where the planner now picks height 20, its phases measured apart
# add to about 3 h 10 min (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
batch="${1:-16}"
out=$(mktemp -d)
phase() { echo "== $1 ($(date -u +%H:%M:%S))"; }
started=$(date +%s)

phase "build"
scripts/install-deps.sh >/dev/null
cargo build --release --bin plait
plait=target/release/plait
built=$(date +%s)

phase "calibrate"
$plait calibrate --vm-config rv32im-sha2 --heights 19,20
calibrated=$(date +%s)

phase "plan"
python3 - "$out" "$batch" <<'PY'
import gzip, sys
out, batch = sys.argv[1], int(sys.argv[2])
images = gzip.open('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz').read()[16:]
open(f'{out}/images.bin', 'wb').write(images[:batch * 784])
PY
$plait plan guests/zkml --input file:zkml/data/fashion-cnn.bin --input "file:$out/images.bin" \
  --vm-config rv32im-sha2 --heights 19,20,21 --workers 1 --goal latency | tee "$out/plan.txt"
height=$(sed -n 's/^recommended: --segment-height \([0-9]*\).*/\1/p' "$out/plan.txt")
planned=$(date +%s)

phase "prove at segment height $height"
$plait demo zkml --model cnn --image 0 --batch "$batch" --segment-height "$height" \
  -o "$out/zkml.proof" --png "$out/zkml.png" --timings-json >"$out/timings.json" \
  2> >(tee "$out/demo.txt" >&2)
proved=$(date +%s)
# Every task's predicted and measured seconds and peak memory, and the totals per phase.
scripts/per-task-table.py <"$out/timings.json" | tee "$out/per-task.md"

echo "== seconds: build $((built - started)), calibrate $((calibrated - built)), plan $((planned - calibrated)), proof $((proved - planned)); all $((proved - started))"
echo "== output in $out"
