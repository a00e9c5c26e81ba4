#!/usr/bin/env bash
# Retrains and requantizes the zkML models (digits MLP, Fashion-MNIST CNN and ViT) into zkml/data/ (deterministic: fixed seeds, pinned
# versions), in a virtualenv under target/. The committed files are what this produces.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/zkml-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q scikit-learn==1.5.2 numpy==2.4.6
fi
"$venv/bin/python" zkml/train.py
# The Fashion-MNIST CNN trains with Debian's PyTorch and numpy, on Debian's copy of the data.
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
for p in python3-torch python3-numpy dataset-fashion-mnist; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$p" >/dev/null
done
/usr/bin/python3 zkml/train_fashion.py
/usr/bin/python3 zkml/train_fashion_vit.py
