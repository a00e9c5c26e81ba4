#!/usr/bin/env python3
"""Trains the zkML CNN on Fashion-MNIST and quantizes it for the guest.

Data: Debian's dataset-fashion-mnist package (60,000 training and 10,000 test images, 28x28
gray levels 0..255, 10 classes), read from /usr/share/datasets/fashion-mnist/: nothing is
downloaded. scripts/install-deps.sh installs it.

Model (LeNet-5 class): conv 5x5 1->16, max-pool 2, ReLU; conv 5x5 16->32, max-pool 2, ReLU;
dense 512->128, ReLU; dense 128->10. Trained with PyTorch (Debian's python3-torch), fixed
seeds, deterministic algorithms, one thread.

Quantization (the guest has no FPU): int8 weights with one scale per layer, int32 biases and
accumulators; after each hidden layer, max-pool (on the accumulators), ReLU, and requantize to
0..127 by an integer multiply and a rounding shift. Inputs are the raw pixels 0..255. The
integer arithmetic here (quantized_logits) is exactly what zkml/model/src/cnn.rs does; a host
test checks the two agree on all 10,000 test images through report["logits_sha256"].

Writes zkml/data/fashion-cnn.bin (the model) and zkml/data/fashion-cnn-report.json.
Usage: /usr/bin/python3 zkml/train_fashion.py  (scripts/train-zkml.sh runs it).
"""
import gzip
import hashlib
import json
import pathlib
import struct
import sys

import numpy as np
import torch
from torch import nn

SEED = 7
EPOCHS = 12
BATCH = 128
ACT_MAX = 127  # hidden activations are requantized to 0..ACT_MAX
SHIFT = 24  # requantization multiplier precision (bits)
DATA = pathlib.Path("/usr/share/datasets/fashion-mnist")
OUT = pathlib.Path(__file__).resolve().parent / "data"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(name):
    path = DATA / name
    if not path.exists():
        sys.exit(f"{path} is missing: install Debian's dataset-fashion-mnist "
                 "(scripts/install-deps.sh does)")
    data = gzip.decompress(path.read_bytes())
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2051:  # images
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)
    return np.frombuffer(data, np.uint8, offset=8)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.fc1 = nn.Linear(512, 128)
        self.fc2 = nn.Linear(128, 10)
        self.pool = nn.MaxPool2d(2)

    def hidden(self, x):
        """The float activations after each hidden layer, and the logits."""
        a1 = torch.relu(self.pool(self.conv1(x)))
        a2 = torch.relu(self.pool(self.conv2(a1)))
        a3 = torch.relu(self.fc1(a2.flatten(1)))
        return [a1, a2, a3], self.fc2(a3)

    def forward(self, x):
        return self.hidden(x)[1]


def reproducibly():
    """Fixed seeds, deterministic algorithms, one thread: the same model on every run."""
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def fit(model, x, y, epochs, optimizer, schedule=None):
    """Minibatch training on cross-entropy, in an order drawn from a seeded generator."""
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), BATCH):
            batch = order[start:start + BATCH]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(y):.4f}", file=sys.stderr)


def train(x_train, y_train):
    reproducibly()
    model = Cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.tensor(x_train, dtype=torch.float32).unsqueeze(1) / 255.0
    y = torch.tensor(y_train, dtype=torch.int64)
    fit(model, x, y, EPOCHS, optimizer)
    return model


def quantize(model, x_calibration):
    """Per layer: (kind, int8 weights, int32 biases, multiplier, shift)."""
    with torch.no_grad():
        x = torch.tensor(x_calibration, dtype=torch.float32).unsqueeze(1) / 255.0
        activations, _ = model.hidden(x)
    layers = []
    s_in = 1.0 / 255.0  # the scale of the raw pixels
    params = [model.conv1, model.conv2, model.fc1, model.fc2]
    for i, layer in enumerate(params):
        w = layer.weight.detach().double().numpy()
        b = layer.bias.detach().double().numpy()
        s_w = np.abs(w).max() / 127.0
        w_q = np.clip(np.round(w / s_w), -127, 127).astype(np.int8)
        b_q = np.round(b / (s_in * s_w)).astype(np.int64)
        kind = "conv" if i < 2 else "dense"
        if i == len(params) - 1:
            layers.append((kind, w_q, b_q, 0, 0))
            break
        s_out = np.percentile(activations[i].double().numpy(), 99.99) / ACT_MAX
        multiplier = int(round(s_in * s_w / s_out * (1 << SHIFT)))
        layers.append((kind, w_q, b_q, multiplier, SHIFT))
        s_in = s_out
    return layers


def conv_valid(a, w):
    """a: int64[n, c, h, w]; w: int8[o, c, k, k]. Valid convolution, stride 1: int64[n, o, h-k+1, w-k+1]."""
    n, c, h, wd = a.shape
    o, _, k, _ = w.shape
    oh, ow = h - k + 1, wd - k + 1
    cols = np.empty((n, c, k, k, oh, ow), np.int64)
    for dy in range(k):
        for dx in range(k):
            cols[:, :, dy, dx] = a[:, :, dy:dy + oh, dx:dx + ow]
    return np.einsum("nckluv,ockl->nouv", cols, w.astype(np.int64), optimize=True)


def requantize(acc, multiplier, shift):
    rounded = (np.maximum(acc, 0) * multiplier + (1 << (shift - 1))) >> shift
    return np.minimum(rounded, ACT_MAX)


def quantized_logits(layers, images):
    a = images.astype(np.int64)[:, None]  # [n, 1, 28, 28]
    for kind, w_q, b_q, multiplier, shift in layers:
        if kind == "conv":
            acc = conv_valid(a, w_q) + b_q[None, :, None, None]
            n, o, h, w = acc.shape
            pooled = acc.reshape(n, o, h // 2, 2, w // 2, 2).max(axis=(3, 5))
            a = requantize(pooled, multiplier, shift)
        else:
            a = a.reshape(len(a), -1)
            acc = a @ w_q.T.astype(np.int64) + b_q
            if shift == 0:
                return acc
            a = requantize(acc, multiplier, shift)
    raise AssertionError("no output layer")


def write_model(layers, path):
    """Little-endian: PLAITCNN, version 1, image side, layer count; per layer: kind (0 conv,
    1 dense), inputs, outputs, kernel side (0 for dense), shift, multiplier, weights int8
    (conv: [out][in][k][k], dense: [out][in]), biases int32[out]."""
    blob = bytearray(b"PLAITCNN")
    blob += struct.pack("<III", 1, 28, len(layers))
    for kind, w_q, b_q, multiplier, shift in layers:
        out_dim, in_dim = w_q.shape[:2]
        kernel = w_q.shape[2] if kind == "conv" else 0
        blob += struct.pack("<IIIIIi", 0 if kind == "conv" else 1, in_dim, out_dim, kernel,
                            shift, multiplier)
        blob += w_q.astype("<i1").tobytes()
        blob += b_q.astype("<i4").tobytes()
    path.write_bytes(bytes(blob))
    return bytes(blob)


def main():
    x_train = read_idx("train-images-idx3-ubyte.gz")
    y_train = read_idx("train-labels-idx1-ubyte.gz")
    x_test = read_idx("t10k-images-idx3-ubyte.gz")
    y_test = read_idx("t10k-labels-idx1-ubyte.gz")
    model = train(x_train, y_train)
    with torch.no_grad():
        x = torch.tensor(x_test, dtype=torch.float32).unsqueeze(1) / 255.0
        float_pred = model(x).argmax(dim=1).numpy()
    layers = quantize(model, x_train[:10000])
    logits = np.concatenate([quantized_logits(layers, x_test[i:i + 500])
                             for i in range(0, len(x_test), 500)])
    q_pred = logits.argmax(axis=1)
    OUT.mkdir(exist_ok=True)
    blob = write_model(layers, OUT / "fashion-cnn.bin")
    report = {
        "data": "Fashion-MNIST from Debian's dataset-fashion-mnist: 60000 training, 10000 test images",
        "model": "CNN: conv5x5 1-16, pool2, ReLU; conv5x5 16-32, pool2, ReLU; dense 512-128, ReLU; dense 128-10",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "epochs": EPOCHS,
        "test_images": len(y_test),
        "float_test_accuracy": float((float_pred == y_test).mean()),
        "quantized_test_accuracy": float((q_pred == y_test).mean()),
        "predictions_differing_float_vs_quantized": int((float_pred != q_pred).sum()),
        "model_bytes": len(blob),
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        # Every test image's logits, as little-endian i32s in test-set order: the host's
        # integer inference must reproduce this hash.
        "logits_sha256": hashlib.sha256(logits.astype("<i4").tobytes()).hexdigest(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    (OUT / "fashion-cnn-report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
