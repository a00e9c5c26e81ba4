#!/usr/bin/env bash
# Gathers what scripts/gpu-check.sh needs on a GPU machine that has no Rust toolchain and no
# network, into target/gpu-check/ (at most 60 MiB, checked): the GPU build of plait
# (scripts/build-gpu.sh makes it, with the CPU build it carries; gzipped), the guest ELFs the
# check proves and calibrates with (built here by the CPU build), Fashion-MNIST's test set
# (Debian's dataset-fashion-mnist), this machine's CPU profile if `plait calibrate` made one,
# and the check script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=target/gpu-check
gpu_plait=target/cuda/plait
[ -x "$gpu_plait" ] || { echo "no $gpu_plait: run scripts/build-gpu.sh first" >&2; exit 1; }
cargo build --release --quiet --bin plait
rm -rf "$bundle"
mkdir -p "$bundle/fashion-mnist"
gzip -c "$gpu_plait" >"$bundle/plait.gz"
for guest in fib sha-chain mem-walk; do  # fib for the check's job, all three to calibrate
  cp "$(target/release/plait build-guest "guests/$guest")" "$bundle/$guest.elf"
done
cp "$(target/release/plait build-guest guests/zkml)" "$bundle/zkml.elf"
cp /usr/share/datasets/fashion-mnist/t10k-*-ubyte.gz "$bundle/fashion-mnist/"
cache="${PLAIT_CACHE_DIR:-$HOME/.cache/plait}"
for vm in "" "-rv32im-sha2"; do
  if [ -f "$cache/device-profile$vm.json" ]; then
    cp "$cache/device-profile$vm.json" "$bundle/cpu-profile$vm.json"
  fi
done
cp scripts/gpu-check.sh "$bundle/"
du -sh "$bundle"
size_mib=$(du -sm "$bundle" | cut -f1)
if [ "$size_mib" -gt 60 ]; then
  echo "the bundle is $size_mib MiB, over the 60 MiB a device check may take" >&2
  exit 1
fi
ls -la "$bundle"
