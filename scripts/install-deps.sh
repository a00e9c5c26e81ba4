#!/usr/bin/env bash
# Installs the Debian packages Plait needs on a fresh machine: a C toolchain for OpenVM's
# native dependencies, and the guest toolchain (Debian's Rust with its standard library source,
# and LLVM's linker) that builds guests for riscv32im-risc0-zkvm-elf; PostgreSQL for the
# cluster store and its tests; Fashion-MNIST (the zkML models' data set, read by its tests);
# Chromium, the headless browser the dashboard test drives.
set -euo pipefail

packages=(build-essential pkg-config rustc-web cargo-web rust-web-src lld postgresql
  dataset-fashion-mnist chromium)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
