#!/usr/bin/env bash
# Retrains and requantizes the zkML model into zkml/data/ (deterministic: fixed seeds, pinned
# versions), in a virtualenv under target/. The committed files are what this produces.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/zkml-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q scikit-learn==1.5.2 numpy==2.4.6
fi
"$venv/bin/python" zkml/train.py
