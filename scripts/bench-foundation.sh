#!/usr/bin/env bash
# Benchmark for the foundation issue: the same multi-segment program proven by OpenVM's
# single-process Sdk::prove and by Plait with 1 and 2 local worker processes. Prints wall time,
# CPU time and peak RSS per process, and the ratios. Keys are generated (and cached) first so
# that no run pays for keygen.
#
#   scripts/bench-foundation.sh [FIB_N] [SEGMENT_HEIGHT]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-150000}"
h="${2:-19}"
out="$(mktemp -d)"
# PLAIT=path/to/plait benchmarks a prebuilt binary.
plait="${PLAIT:-./target/release/plait}"
if [ -z "${PLAIT:-}" ]; then cargo build --release --bin plait -q; fi
$plait keygen --segment-height "$h"
elf="$($plait build-guest guests/fib)"
$plait execute "$elf" --input "$n" --segment-height "$h" | sed -n 1,4p

$plait bench-sdk-prove "$elf" --input "$n" --segment-height "$h" --summary-json "$out/sdk.json"
for w in 1 2; do
  $plait prove "$elf" --input "$n" --segment-height "$h" --workers "$w" \
    -o "$out/plait-$w.proof" --summary-json "$out/plait-$w.json"
  $plait verify "$out/plait-$w.proof" --program "$elf" >/dev/null
done

python3 - "$out" "$n" "$h" <<'PY'
import json, sys
out, n, h = sys.argv[1], sys.argv[2], sys.argv[3]
runs = [("Sdk::prove (1 process)", "sdk"), ("plait, 1 worker", "plait-1"), ("plait, 2 workers", "plait-2")]
data = {key: json.load(open(f"{out}/{key}.json")) for _, key in runs}
base = data["sdk"]
base_cpu = sum(p["cpu_seconds"] for p in base["processes"])
print(f"\nfib n={n}, segment height {h}")
print(f"{'run':<24}{'wall s':>9}{'cpu s':>9}{'wall/sdk':>10}{'cpu/sdk':>9}   peak RSS per process")
for label, key in runs:
    d = data[key]
    cpu = sum(p["cpu_seconds"] for p in d["processes"])
    rss = ", ".join(f"{p['name']} {p['peak_rss_bytes']/2**30:.2f} GiB" for p in d["processes"])
    print(f"{label:<24}{d['wall_seconds']:>9.1f}{cpu:>9.1f}{d['wall_seconds']/base['wall_seconds']:>10.2f}{cpu/base_cpu:>9.2f}   {rss}")
PY
