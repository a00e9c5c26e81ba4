#!/usr/bin/env bash
# What OpenVM's SHA-2 extension costs the pool: keygen time and key sizes, and proving time per
# layer, for the same RV32IM program (fib) under the rv32im and the rv32im-sha2 VM configs,
# alternating in one session (figures drift on shared machines). Each run has a fresh cache,
# so keygen is measured; proving uses one worker, so tasks do not share the cores.
#
#   scripts/bench-vm-configs.sh [FIB_N] [SEGMENT_HEIGHT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-150000}"
h="${2:-19}"
rounds="${3:-1}"
out="$(mktemp -d)"
plait="${PLAIT:-./target/release/plait}"
if [ -z "${PLAIT:-}" ]; then cargo build --release --bin plait -q; fi
elf="$($plait build-guest guests/fib)"
for r in $(seq "$rounds"); do
  for vm in rv32im rv32im-sha2; do
    export PLAIT_CACHE_DIR="$out/cache-$vm-$r"
    $plait keygen --segment-height "$h" --vm-config "$vm" >/dev/null
    cp "$PLAIT_CACHE_DIR"/keys/*/meta.json "$out/keys-$vm-$r.json"
    $plait prove "$elf" --input "$n" --segment-height "$h" --vm-config "$vm" --workers 1 \
      -o "$out/$vm-$r.proof" --timings-json >"$out/timings-$vm-$r.json" 2>"$out/prove-$vm-$r.log"
    $plait verify "$out/$vm-$r.proof" --program "$elf" >/dev/null
    rm -rf "$PLAIT_CACHE_DIR"
  done
done

python3 - "$out" "$n" "$h" "$rounds" <<'PY'
import collections, json, sys
out, n, h, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
print(f"fib n={n}, segment height {h}, {rounds} round(s), one worker")
print(f"{'config':<12} {'round':>5} {'app keygen s':>12} {'agg keygen s':>12} {'keys KB':>8} {'app.pk KB':>9}   proving s per task, by layer")
for r in range(1, rounds + 1):
    for vm in ("rv32im", "rv32im-sha2"):
        keys = json.load(open(f"{out}/keys-{vm}-{r}.json"))
        sizes = dict(keys["files"])
        layers = collections.defaultdict(list)
        for t in json.load(open(f"{out}/timings-{vm}-{r}.json")):
            layers[t["phase"]].append(t["meta"]["proving_seconds"])
        per_layer = ", ".join(f"{p} {sum(v)/len(v):.1f}" + (f" (x{len(v)})" if len(v) > 1 else "")
                              for p, v in layers.items())
        print(f"{vm:<12} {r:>5} {keys['app_keygen_seconds']:>12.1f} {keys['agg_keygen_seconds']:>12.1f} "
              f"{sum(sizes.values())/1e3:>8.0f} {sizes['app.pk']/1e3:>9.0f}   {per_layer}")
PY
