#!/usr/bin/env python3
"""Trains the zkML vision transformer on Fashion-MNIST and quantizes it to integers.

Data: as zkml/train_fashion.py (Debian's dataset-fashion-mnist).

Model: the 28x28 image cut into 16 patches of 7x7; a patch embedding (49 -> 64) plus a learned
position embedding; 2 transformer blocks (pre-norm: layer normalisation, 4-head self-attention
with a residual, layer normalisation, an MLP 64 -> 128 -> 64 with ReLU and a residual); a final
layer normalisation, the mean over the 16 tokens, and a class head (64 -> 10).

Integer inference (quantized_logits; what the guest is to run), no floating point:
- the residual stream is int32 at one scale; linear layers have int8 weights (one scale per
  layer) and int32 accumulators, requantized by an integer multiply and a rounding shift;
- layer normalisation: mean and variance by integer sums (64 = 2^6 values), the standard
  deviation by an integer square root, the normalised value rounded to int8 at scale 1/32; its
  gain and bias are folded into the linear layer that follows;
- softmax: the score differences to the row's maximum index a 256-entry table of
  exp(-k/16) * 2^15; the weighted sum of values is divided (rounding) by the sum of weights;
- the head reads the sum over tokens of the final normalised values.
The integer arithmetic here (quantized_logits) is exactly what zkml/model/src/vit.rs does; a
host test checks the two agree on all 10,000 test images through report["logits_sha256"].

Writes zkml/data/fashion-vit.bin (the model) and zkml/data/fashion-vit-report.json.
Usage: /usr/bin/python3 zkml/train_fashion_vit.py [--float-model PATH]
  (scripts/train-zkml.sh runs it). With --float-model, the trained float model is saved to
  PATH, or loaded from it if it exists, so that quantization can be redone without training
  again; the committed files come from a run that trained.
"""
import argparse
import hashlib
import json
import pathlib
import struct
import sys

import numpy as np
import torch
from torch import nn

import train_fashion as data

SEED = 7
EPOCHS = 15
D = 64  # model width (a power of two: layer normalisation divides by shifting)
HEADS = 4
HIDDEN = 128
PATCH = 7
TOKENS = 16
SHIFT = 24
LN_BITS = 5  # normalised values are int8 at scale 2^-LN_BITS
EXP_UNITS = 16  # the softmax table steps by 1/EXP_UNITS
EXP_TABLE = np.array([round((1 << 15) * np.exp(-k / EXP_UNITS)) for k in range(256)], np.int64)
OUT = pathlib.Path(__file__).resolve().parent / "data"


def patches(x):
    """x: [n, 28, 28] -> [n, 16, 49], row-major patches, row-major pixels within each."""
    n = x.shape[0]
    return x.reshape(n, 4, PATCH, 4, PATCH).transpose(0, 1, 3, 2, 4).reshape(n, TOKENS, PATCH * PATCH)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(D)
        self.q = nn.Linear(D, D)
        self.k = nn.Linear(D, D)
        self.v = nn.Linear(D, D)
        self.o = nn.Linear(D, D)
        self.ln2 = nn.LayerNorm(D)
        self.fc1 = nn.Linear(D, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, D)

    def forward(self, x):
        n, t, _ = x.shape
        h = self.ln1(x)
        split = lambda y: y.view(n, t, HEADS, D // HEADS).transpose(1, 2)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        scores = q @ k.transpose(-1, -2) / (D // HEADS) ** 0.5
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, D)
        x = x + self.o(attended)
        return x + self.fc2(torch.relu(self.fc1(self.ln2(x))))


class Vit(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(PATCH * PATCH, D)
        self.position = nn.Parameter(torch.zeros(TOKENS, D))
        self.blocks = nn.ModuleList([Block(), Block()])
        self.ln = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)

    def forward(self, p):
        x = self.embed(p) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x).mean(1))


def train(x_train, y_train):
    data.reproducibly()
    model = Vit()
    nn.init.normal_(model.position, std=0.02)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = EPOCHS * ((len(y_train) + data.BATCH - 1) // data.BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    x = torch.tensor(patches(x_train), dtype=torch.float32) / 255.0
    y = torch.tensor(y_train, dtype=torch.int64)
    data.fit(model, x, y, EPOCHS, optimizer, schedule)
    return model


# ---- integer arithmetic (shared, operation for operation, with the Rust implementation) ----

def div_round(n, d):
    """n / d rounded half away from zero, d > 0 (numpy floors; Rust truncates: spell it out)."""
    n = np.asarray(n, np.int64)
    magnitude = (2 * np.abs(n) + d) // (2 * d)
    return np.where(n < 0, -magnitude, magnitude)


def requantize(acc, multiplier, shift):
    return (acc * multiplier + (1 << (shift - 1))) >> shift


def isqrt(v):
    """Floor of the square root of each (non-negative int64) value, exactly."""
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > v, r - 1, r)
    return np.where((r + 1) * (r + 1) <= v, r + 1, r)


def layer_norm(r):
    """r: int [.., D] -> int8-range normalised values at scale 2^-LN_BITS."""
    mean = r.sum(-1, keepdims=True) >> 6  # floor(sum / 64)
    c = r - mean
    std = np.maximum(isqrt((c * c).sum(-1, keepdims=True) >> 6), 1)
    return np.clip(div_round(c << LN_BITS, std), -127, 127)


def linear(a, layer):
    w, b = layer
    return a @ w.T.astype(np.int64) + b


class Quantized:
    """Integer parameters, and the multipliers between scales."""


def fold_ln(ln, lin):
    """W·(g*x + beta) + b = (W*g)·x + (W·beta + b): LN's affine folded into the next linear."""
    g = ln.weight.detach().double().numpy()
    beta = ln.bias.detach().double().numpy()
    w = lin.weight.detach().double().numpy()
    b = lin.bias.detach().double().numpy()
    return w * g[None, :], w @ beta + b


def q_weights(w):
    s = np.abs(w).max() / 127.0
    return np.clip(np.round(w / s), -127, 127).astype(np.int8), s


def multiplier(ratio):
    return int(round(ratio * (1 << SHIFT)))


def quantize(model, x_calibration):
    """Chooses every scale from float activations on calibration images; returns Quantized."""
    q = Quantized()
    with torch.no_grad():
        p = torch.tensor(patches(x_calibration), dtype=torch.float32) / 255.0
        x = model.embed(p) + model.position
        residuals, queries, keys, values, hiddens, attended = [x], [], [], [], [], []
        for block in model.blocks:
            n, t, _ = x.shape
            h = block.ln1(x)
            queries.append(block.q(h)); keys.append(block.k(h)); values.append(block.v(h))
            split = lambda y: y.view(n, t, HEADS, D // HEADS).transpose(1, 2)
            scores = split(block.q(h)) @ split(block.k(h)).transpose(-1, -2) / (D // HEADS) ** 0.5
            a = (scores.softmax(-1) @ split(block.v(h))).transpose(1, 2).reshape(n, t, D)
            attended.append(a)
            x = x + block.o(a)
            residuals.append(x)
            hiddens.append(torch.relu(block.fc1(block.ln2(x))))
            x = x + block.fc2(hiddens[-1])
            residuals.append(x)
    pct = lambda ts: float(np.percentile(np.abs(torch.cat([t.flatten() for t in ts]).numpy()), 99.99))
    s_r = pct(residuals) / 8000.0  # the residual stream's scale: about 14 bits used
    s_ln = 2.0 ** -LN_BITS
    q.s_r = s_r
    # Patch embedding and positions, straight onto the residual scale.
    w, s_w = q_weights(model.embed.weight.detach().double().numpy())
    s_acc = s_w / 255.0
    q.embed = (w, np.round(model.embed.bias.detach().double().numpy() / s_acc).astype(np.int64))
    q.position = np.round(model.position.detach().double().numpy() / s_acc).astype(np.int64)
    q.embed_m = multiplier(s_acc / s_r)
    q.blocks = []
    for i, block in enumerate(model.blocks):
        qb = Quantized()
        s_qkv = {}
        for name, act in (("q", queries[i]), ("k", keys[i]), ("v", values[i])):
            w, b = fold_ln(block.ln1, getattr(block, name))
            wq, s_w = q_weights(w)
            s_out = pct([act]) / 127.0
            setattr(qb, name, (wq, np.round(b / (s_ln * s_w)).astype(np.int64)))
            setattr(qb, name + "_m", multiplier(s_ln * s_w / s_out))
            s_qkv[name] = s_out
        # Score differences (int, scale s_q*s_k/sqrt(dh)) to table steps of 1/EXP_UNITS.
        qb.exp_m = multiplier(s_qkv["q"] * s_qkv["k"] / (D // HEADS) ** 0.5 * EXP_UNITS)
        # The attended values come out at V's scale.
        wq, s_w = q_weights(block.o.weight.detach().double().numpy())
        qb.o = (wq, np.round(block.o.bias.detach().double().numpy() / (s_qkv["v"] * s_w)).astype(np.int64))
        qb.o_m = multiplier(s_qkv["v"] * s_w / s_r)
        w, b = fold_ln(block.ln2, block.fc1)
        wq, s_w = q_weights(w)
        s_h = pct([hiddens[i]]) / 127.0
        qb.fc1 = (wq, np.round(b / (s_ln * s_w)).astype(np.int64))
        qb.fc1_m = multiplier(s_ln * s_w / s_h)
        wq, s_w = q_weights(block.fc2.weight.detach().double().numpy())
        qb.fc2 = (wq, np.round(block.fc2.bias.detach().double().numpy() / (s_h * s_w)).astype(np.int64))
        qb.fc2_m = multiplier(s_h * s_w / s_r)
        q.blocks.append(qb)
    # Head over the sum of the 16 final normalised tokens (the mean, times 16).
    w, b = fold_ln(model.ln, model.head)
    wq, s_w = q_weights(w)
    q.head = (wq, np.round(TOKENS * b / (s_ln * s_w)).astype(np.int64))
    return q


def quantized_logits(q, images):
    """images: uint8 [n, 28, 28] -> int64 logits [n, 10]."""
    p = patches(images).astype(np.int64)
    r = requantize(linear(p, q.embed) + q.position, q.embed_m, SHIFT)
    n = len(r)
    for qb in q.blocks:
        h = layer_norm(r)
        qkv = [np.clip(requantize(linear(h, getattr(qb, k)), getattr(qb, k + "_m"), SHIFT), -127, 127)
               for k in ("q", "k", "v")]
        split = lambda y: y.reshape(n, TOKENS, HEADS, D // HEADS).transpose(0, 2, 1, 3)
        qh, kh, vh = (split(y) for y in qkv)
        scores = qh @ kh.transpose(0, 1, 3, 2)  # [n, heads, 16, 16]
        steps = requantize(scores.max(-1, keepdims=True) - scores, qb.exp_m, SHIFT)
        weights = EXP_TABLE[np.minimum(steps, 255)]
        attended = div_round(weights @ vh, weights.sum(-1, keepdims=True))
        attended = attended.transpose(0, 2, 1, 3).reshape(n, TOKENS, D)
        r = r + requantize(linear(attended, qb.o), qb.o_m, SHIFT)
        hidden = np.clip(requantize(np.maximum(linear(layer_norm(r), qb.fc1), 0), qb.fc1_m, SHIFT), 0, 127)
        r = r + requantize(linear(hidden, qb.fc2), qb.fc2_m, SHIFT)
    return linear(layer_norm(r).sum(1), q.head)


def write_model(q, path):
    """Little-endian: PLAITVIT, version 1; u32s: image side 28, patch side 7, width, heads,
    hidden width, block count, LN_BITS; the softmax table (256 u32, non-increasing); the patch
    embedding (a linear record) and the positions (i32 [tokens][width]); per block the linear
    records q, k, v, then the softmax step's shift u32 and multiplier i32, then the linear
    records o, fc1, fc2; the head's linear record (shift 0). A linear record: inputs u32,
    outputs u32, shift u32, multiplier i32, weights i8 [outputs][inputs], biases i32[outputs].
    """
    blob = bytearray(b"PLAITVIT")
    blob += struct.pack("<8I", 1, 28, PATCH, D, HEADS, HIDDEN, len(q.blocks), LN_BITS)
    blob += EXP_TABLE.astype("<u4").tobytes()

    def linear_record(layer, multiplier, shift):
        w, b = layer
        assert np.abs(b).max() < 2**31
        out_dim, in_dim = w.shape
        nonlocal blob
        blob += struct.pack("<IIIi", in_dim, out_dim, shift, multiplier)
        blob += w.astype("<i1").tobytes() + b.astype("<i4").tobytes()

    linear_record(q.embed, q.embed_m, SHIFT)
    blob += q.position.astype("<i4").tobytes()
    for qb in q.blocks:
        for name in ("q", "k", "v"):
            linear_record(getattr(qb, name), getattr(qb, name + "_m"), SHIFT)
        blob += struct.pack("<Ii", SHIFT, qb.exp_m)
        linear_record(qb.o, qb.o_m, SHIFT)
        linear_record(qb.fc1, qb.fc1_m, SHIFT)
        linear_record(qb.fc2, qb.fc2_m, SHIFT)
    linear_record(q.head, 0, 0)
    path.write_bytes(bytes(blob))
    return bytes(blob)


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--float-model", type=pathlib.Path)
    args = args.parse_args()
    x_train = data.read_idx("train-images-idx3-ubyte.gz")
    y_train = data.read_idx("train-labels-idx1-ubyte.gz")
    x_test = data.read_idx("t10k-images-idx3-ubyte.gz")
    y_test = data.read_idx("t10k-labels-idx1-ubyte.gz")
    if args.float_model and args.float_model.exists():
        data.reproducibly()
        model = Vit()
        model.load_state_dict(torch.load(args.float_model))
    else:
        model = train(x_train, y_train)
        if args.float_model:
            torch.save(model.state_dict(), args.float_model)
    model.eval()
    with torch.no_grad():
        p = torch.tensor(patches(x_test), dtype=torch.float32) / 255.0
        float_pred = model(p).argmax(dim=1).numpy()
    q = quantize(model, x_train[:5000])
    logits = np.concatenate([quantized_logits(q, x_test[i:i + 500]) for i in range(0, len(x_test), 500)])
    q_pred = logits.argmax(axis=1)
    OUT.mkdir(exist_ok=True)
    blob = write_model(q, OUT / "fashion-vit.bin")
    report = {
        "data": "Fashion-MNIST from Debian's dataset-fashion-mnist: 60000 training, 10000 test images",
        "model": "ViT: 16 patches 7x7, width 64, 2 blocks of 4-head attention and MLP 64-128-64, mean pool, head",
        "parameters": int(sum(t.numel() for t in model.parameters())),
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
        "largest_logit": int(np.abs(logits).max()),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    (OUT / "fashion-vit-report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
