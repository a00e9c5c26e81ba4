#!/usr/bin/env bash
# Planner accuracy on this machine, with real proofs:
# 1. `plait calibrate` (resumes a profile already there);
# 2. proves fib(N) with one local worker at each candidate segment height, recording predicted
#    and measured latency (T) and work (L) per job;
# 3. asks `plait plan` for its recommendation (goal: latency) and compares the recommended
#    height's measured T with the best measured T;
# 4. prints the prediction errors (`plait predictions`).
# Usage: scripts/bench-planner.sh [FIB_N] [HEIGHTS]   (defaults: 150000 19,20). About 30 min
# on 2 cores with a fresh profile.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-150000}"
heights="${2:-19,20}"
cargo build --release --bin plait
plait=target/release/plait
out=$(mktemp -d)
cache="${PLAIT_CACHE_DIR:-$HOME/.cache/plait}"
# Fresh prediction records for this run.
export PLAIT_CACHE_DIR="$cache"
mv -f "$cache/predictions.jsonl" "$out/predictions-before.jsonl" 2>/dev/null || true

$plait calibrate
for h in ${heights//,/ }; do
  echo "== proving fib($n) at segment height $h with 1 worker"
  $plait prove guests/fib --input "$n" --segment-height "$h" --workers 1 -o "$out/fib-h$h.proof" 2>&1 \
    | grep -E "segments at|predicted vs|T \(latency\)|L \(work\)|^ +L " || true
done
echo "== plait plan"
$plait plan guests/fib --input "$n" --heights "$heights" --workers 1 | tee "$out/plan.txt"
recommended=$(sed -n 's/^recommended: --segment-height \([0-9]*\).*/\1/p' "$out/plan.txt")
echo "== prediction errors"
$plait predictions
python3 - <<PY
import json, os
records = [json.loads(l) for l in open(os.path.join("$cache", "predictions.jsonl")) if l.strip()]
measured = {r["predicted"]["segment-height"]: r["measured"]["latency-seconds"] for r in records}
best_h = min(measured, key=measured.get)
rec = int("$recommended")
print(f"recommended height {rec}: measured T {measured[rec]:.0f} s; best measured: height {best_h}, {measured[best_h]:.0f} s; "
      f"recommended is {100 * (measured[rec] / measured[best_h] - 1):.1f}% above the best (target: within 10%)")
for r in records:
    p, m = r["predicted"], r["measured"]
    err = 100 * (p["latency-seconds"] / m["latency-seconds"] - 1)
    print(f"height {p['segment-height']}: predicted T {p['latency-seconds']:.0f} s, measured {m['latency-seconds']:.0f} s, error {err:+.1f}% (target: within 20%)")
PY
