#!/usr/bin/env python3
"""Trains Plait's zkML flagship model and quantizes it for the guest.

Data: scikit-learn's bundled handwritten digits (1,797 8x8 images, pixels 0..16), shipped
inside the scikit-learn package, so no download. Split 80/20, stratified, fixed seed.
Model: an MLP 64 -> 320 -> 224 -> 10 with ReLU (scikit-learn's MLPClassifier, fixed seed).

Quantization (the guest has no FPU): int8 weights with one scale per layer, int32 biases,
int32 accumulators, and ReLU activations requantized to 0..127 by an integer multiply and a
rounding shift. Inputs are the raw integer pixels. The arithmetic is exactly what
`zkml/model/src/lib.rs` does; this script runs the same integer arithmetic in numpy to report
the quantized accuracy.

Writes zkml/data/digits-mlp.bin (the model), zkml/data/digits-test.bin (the held-out images and
labels) and zkml/data/report.json (accuracies, disagreements, sizes).
Usage: python3 zkml/train.py  (needs scikit-learn==1.5.2, numpy; scripts/train-zkml.sh sets
up a virtualenv).
"""
import hashlib
import json
import pathlib
import struct

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 7
HIDDEN = (320, 224)
ACT_MAX = 127  # activations are requantized to 0..ACT_MAX
SHIFT = 24  # requantization multiplier precision (bits)
OUT = pathlib.Path(__file__).resolve().parent / "data"


def quantize(mlp, x_calibration):
    """Returns [(w_q int8[out,in], b_q int32[out], multiplier, shift)] per layer."""
    layers = []
    s_in = 1.0  # pixels are used as they are
    a = x_calibration.astype(np.float64)
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        last = i == len(mlp.coefs_) - 1
        s_w = np.abs(w).max() / 127.0
        w_q = np.clip(np.round(w.T / s_w), -127, 127).astype(np.int8)
        b_q = np.round(b / (s_in * s_w)).astype(np.int64)
        a = a @ w + b  # float activations, for the scale of the next layer
        if last:
            layers.append((w_q, b_q, 0, 0))
            break
        a = np.maximum(a, 0)
        s_out = np.percentile(a, 99.99) / ACT_MAX
        multiplier = int(round(s_in * s_w / s_out * (1 << SHIFT)))
        layers.append((w_q, b_q, multiplier, SHIFT))
        s_in = s_out
    return layers


def quantized_logits(layers, x):
    a = x.astype(np.int64)
    for w_q, b_q, multiplier, shift in layers:
        acc = a @ w_q.T.astype(np.int64) + b_q
        if shift == 0:
            return acc
        rounded = (np.maximum(acc, 0) * multiplier + (1 << (shift - 1))) >> shift
        a = np.minimum(rounded, ACT_MAX)
    raise AssertionError("no output layer")


def write_model(layers, path):
    blob = bytearray(b"PLAITMLP")
    blob += struct.pack("<II", 1, len(layers))
    for w_q, b_q, multiplier, shift in layers:
        out_dim, in_dim = w_q.shape
        blob += struct.pack("<IIIi", in_dim, out_dim, shift, multiplier)
        blob += w_q.astype("<i1").tobytes()
        blob += b_q.astype("<i4").tobytes()
    path.write_bytes(bytes(blob))
    return bytes(blob)


def main():
    digits = load_digits()
    x = digits.data.astype(np.int64)  # 0..16
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y
    )
    mlp = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=400, random_state=SEED)
    mlp.fit(x_train / 1.0, y_train)
    float_pred = mlp.predict(x_test / 1.0)
    layers = quantize(mlp, x_train)
    q_pred = quantized_logits(layers, x_test).argmax(axis=1)

    OUT.mkdir(exist_ok=True)
    model = write_model(layers, OUT / "digits-mlp.bin")
    test = bytearray(b"PLAITDIG")
    test += struct.pack("<I", len(y_test))
    for image, label in zip(x_test, y_test):
        test += bytes(image.astype(np.uint8)) + bytes([label])
    (OUT / "digits-test.bin").write_bytes(bytes(test))
    report = {
        "data": "scikit-learn load_digits: 1797 8x8 images; 80/20 stratified split, seed 7",
        "model": f"MLP 64-{HIDDEN[0]}-{HIDDEN[1]}-10, ReLU",
        "parameters": int(sum(w.size + b.size for w, b in zip(mlp.coefs_, mlp.intercepts_))),
        "train_images": len(y_train),
        "test_images": len(y_test),
        "float_test_accuracy": float((float_pred == y_test).mean()),
        "quantized_test_accuracy": float((q_pred == y_test).mean()),
        "predictions_differing_float_vs_quantized": int((float_pred != q_pred).sum()),
        "model_bytes": len(model),
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "quantized_predictions": [int(p) for p in q_pred],
        "scikit_learn": __import__("sklearn").__version__,
        "numpy": np.__version__,
    }
    (OUT / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "quantized_predictions"}, indent=1))


if __name__ == "__main__":
    main()
