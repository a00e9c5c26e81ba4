#!/usr/bin/env bash
# The GPU check: run on a Linux machine with an NVIDIA GPU (driver 580 or newer), from the
# bundle scripts/gpu-bundle.sh makes (no Rust toolchain, no network):
#   scripts/gpu-check.sh [BUNDLE]      (default: target/gpu-check, or this script's folder)
# Prints nvidia-smi; calibrates the GPU at heights 19 to 22; proves and verifies fib with 35
# segments and the CNN batch of 16 on the GPU; prints per-phase seconds, peak device memory and
# instructions per second beside the CPU profile. Into $OUT (or ./gpu-check-out) it writes four
# files: this output (gpu-check.log), the GPU's profile, fib's summary and every step's full log
# (logs.tar.gz).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bundle="${1:-}"
if [ -z "$bundle" ]; then
  if [ -f "$here/plait.gz" ]; then bundle="$here"; else bundle="$here/../target/gpu-check"; fi
fi
bundle="$(cd "$bundle" && pwd)"
out="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
work="$(mktemp -d)"
logs="$work/logs"
mkdir -p "$logs"
gunzip -c "$bundle/plait.gz" >"$work/plait" && chmod +x "$work/plait"
plait() { "$work/plait" --cache-dir "$work/cache" "$@"; }
export PLAIT_FASHION_MNIST="$bundle/fashion-mnist"
started=$(date +%s)
step() { echo; echo "== $* (at $(( $(date +%s) - started )) s)"; }
failed=0
run() {  # run NAME COMMAND...: logs to $out/NAME.log, shows its tail, remembers a failure
  local name=$1; shift
  local t0=$(date +%s)
  "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$logs/$name.log"
  echo "-- $name: exit $rc in $(( $(date +%s) - t0 )) s"
  [ $rc -eq 0 ] || failed=1
  return $rc
}

step "the machine"
nvidia-smi | tee "$out/nvidia-smi.txt"
nproc; free -g | head -2
"$work/plait" --version

step "calibrating the GPU at heights 19 to 22"
TAIL=40 run calibrate plait calibrate --device gpu --heights 19,20,21,22 \
  --guest-elfs "$bundle" --output "$out/gpu-profile.json"

step "fib: 30 million instructions, 35 segments at height 19, on the GPU"
TAIL=30 run fib plait prove "$bundle/fib.elf" --input 2000000 --segment-height 19 \
  --workers 1 --device gpu -o "$work/fib.proof" --summary-json "$out/fib-summary.json" \
  --keep-task-proofs "$work/fib-tasks" \
  && run fib-verify plait verify "$work/fib.proof" --program "$bundle/fib.elf"

step "the same proofs on the CPU? segment 0 and the first leaf proven again there"
run same-proofs plait reprove "$bundle/fib.elf" --input 2000000 --segment-height 19 \
  --kept "$work/fib-tasks" --tasks 0,35 --device cpu

step "the CNN on 16 Fashion-MNIST test images, on the GPU"
TAIL=40 run zkml plait demo zkml --model cnn --image 0 --batch 16 --guest "$bundle/zkml.elf" \
  --vm-config rv32im-sha2 --workers 1 --device gpu -o "$work/zkml.proof" --png "$work/zkml.png" \
  && run zkml-verify plait verify "$work/zkml.proof" --program "$bundle/zkml.elf"

step "the GPU's profile beside the CPU's"
for f in "$out/gpu-profile.json" "$bundle"/cpu-profile*.json; do
  [ -f "$f" ] || continue
  echo "$(basename "$f"):"
  python3 - "$f" <<'PY' 2>/dev/null || grep -E '"(segment-height|instructions|seconds|peak-device-bytes|kind)"' "$f"
import json, sys
p = json.load(open(sys.argv[1]))
print(f"  {p['device']} ({p.get('device-kind', 'cpu')}), {p['memory-bytes'] / 2**30:.1f} GiB")
for s in p["segments"]:
    print(f"  segment h{s['segment-height']}: {s['seconds']:.2f} s, "
          f"{s['instructions'] / s['seconds']:.0f} instructions/s, "
          f"host {s['peak-rss-bytes'] / 2**30:.2f} GiB, device {s.get('peak-device-bytes', 0) / 2**30:.2f} GiB")
for n in p["nodes"]:
    print(f"  {n['kind']} ({n['children']} children): {n['seconds']:.2f} s, "
          f"device {n.get('peak-device-bytes', 0) / 2**30:.2f} GiB")
PY
done

tar -C "$work" -czf "$out/logs.tar.gz" logs
rm -rf "$work"
echo
echo "gpu-check: $([ $failed -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - started )) s; logs in $out"
exit $failed
