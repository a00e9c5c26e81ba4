//! The Fashion-MNIST vision transformer: integer-only inference over 28×28 gray-level images,
//! shared bit for bit by the guest and the host, and by `zkml/train_fashion_vit.py`'s own
//! integer arithmetic (`quantized_logits`), operation for operation.
//!
//! The image is cut into 16 patches of 7×7 (row-major, pixels row-major within a patch); a
//! linear patch embedding plus a position per token gives the residual stream (i32, one scale).
//! Each block: layer normalisation, multi-head self-attention (q, k, v, a softmax by table,
//! the output projection) added to the stream; layer normalisation, an MLP with ReLU, added to
//! the stream. The head reads the sum over tokens of the final normalised stream.
//!
//! - Layer normalisation of a token: mean and variance by integer sums over the width (a power
//!   of two, so both are floor shifts), the standard deviation by an integer square root, and
//!   `(x − mean) · 2^ln_bits / std` rounded half away from zero and clamped to ±127. Its gain
//!   and bias are folded into the linear layer that follows.
//! - Softmax: a score's difference to its row's maximum, rescaled to table steps (at most 255),
//!   indexes a table of `2^15 · exp(−step/16)`; the attended value is the weighted sum of values
//!   divided by the sum of weights, rounded half away from zero.
//! - Rescaling: `(acc · multiplier + 2^(shift−1)) >> shift`, an arithmetic (floor) shift.
//!
//! Model file (`zkml/train_fashion_vit.py` writes it), little-endian: `PLAITVIT`, version u32
//! (1); u32s image side (28), patch side (7), width, heads, hidden width, blocks, ln_bits; the
//! softmax table (256 u32); the patch embedding (a linear record) and the positions
//! (i32 `[tokens][width]`); per block the linear records q, k, v, then the softmax step's shift
//! u32 and multiplier i32, then the linear records o, fc1, fc2; the head's linear record
//! (shift 0). A linear record: inputs u32, outputs u32, shift u32, multiplier i32, weights i8
//! `[outputs][inputs]`, biases i32`[outputs]`.

use alloc::vec::Vec;

use crate::{
    as_logits, check_requantization, dense, requantize_all, ModelError, Reader, Scratch, CLASSES,
};

pub const VIT_IMAGE_SIDE: usize = 28;
pub const VIT_IMAGE_PIXELS: usize = VIT_IMAGE_SIDE * VIT_IMAGE_SIDE;
const PATCH: usize = 7;
const PATCHES_PER_SIDE: usize = VIT_IMAGE_SIDE / PATCH;
const TOKENS: usize = PATCHES_PER_SIDE * PATCHES_PER_SIDE;
const PATCH_PIXELS: usize = PATCH * PATCH;
const TABLE_STEPS: usize = 256;
/// Normalised values, queries, keys, values and hidden activations are within ±127.
const Q_MAX: i64 = 127;

pub(crate) const MAGIC: &[u8; 8] = b"PLAITVIT";

/// A linear layer: i8 weights `[outputs][inputs]` read in place, i32 biases, and the rescaling
/// of its accumulators (shift 0: none).
struct Linear<'a> {
    inputs: usize,
    shift: u32,
    multiplier: i64,
    weights: &'a [u8],
    biases: Vec<i32>,
}

impl<'a> Linear<'a> {
    fn read(
        r: &mut Reader<'a>,
        inputs: usize,
        outputs: usize,
        last: bool,
    ) -> Result<Self, ModelError> {
        if r.u32()? as usize != inputs || r.u32()? as usize != outputs {
            return Err(ModelError::Shape(
                "a linear layer's shape does not match the model's widths",
            ));
        }
        let shift = r.u32()?;
        let multiplier = r.u32()? as i32 as i64;
        check_requantization(last, shift, multiplier)?;
        Ok(Self {
            inputs,
            shift,
            multiplier,
            weights: r.take(inputs * outputs)?,
            biases: r.biases(outputs)?,
        })
    }

    /// The largest accumulator on inputs within ±`input_max`, plus `extra`; refused unless it
    /// stays well inside i32.
    fn accumulator_max(&self, input_max: i64, extra: i64) -> Result<i64, ModelError> {
        let largest_bias = self.biases.iter().map(|b| (*b as i64).abs()).max();
        let max = self.inputs as i64 * input_max * 128 + largest_bias.unwrap_or(0) + extra;
        if max >= 1 << 30 {
            return Err(ModelError::Shape("an accumulator could overflow i32"));
        }
        Ok(max)
    }

    /// The largest rescaled value of accumulators within ±`acc_max`.
    fn rescaled_max(&self, acc_max: i64) -> i64 {
        ((acc_max * self.multiplier) >> self.shift) + 1
    }

    fn accumulate(&self, values: &[i32], out: &mut Vec<i32>) {
        dense(self.weights, &self.biases, values, out)
    }

    fn rescale(&self, acc: i32) -> i64 {
        rescale(acc, self.multiplier, self.shift)
    }
}

/// `(acc · multiplier + 2^(shift−1)) >> shift`, flooring, in i64 (it fits: |acc| < 2^30 and
/// multipliers are below 2^31). Values added to the residual stream are bounded at parsing;
/// the others are clamped before they become i32.
fn rescale(acc: i32, multiplier: i64, shift: u32) -> i64 {
    (acc as i64 * multiplier + (1i64 << (shift - 1))) >> shift
}

/// Clamps to ±127, as the training script's `np.clip` does on its int64 values.
fn clamp_q(v: i64) -> i32 {
    v.clamp(-Q_MAX, Q_MAX) as i32
}

/// The transformer's buffers beyond [`Scratch`]'s (which holds the residual stream and the
/// pooled tokens).
#[derive(Default)]
pub(crate) struct Buffers {
    q: Vec<i32>,
    k: Vec<i32>,
    v: Vec<i32>,
    attended: Vec<i32>,
    /// One token's normalised values.
    normalised: Vec<i32>,
    /// One token's MLP hidden activations.
    hidden: Vec<i32>,
    /// One linear layer's accumulators.
    acc: Vec<i32>,
}

struct Block<'a> {
    q: Linear<'a>,
    k: Linear<'a>,
    v: Linear<'a>,
    step_shift: u32,
    step_multiplier: i64,
    o: Linear<'a>,
    fc1: Linear<'a>,
    fc2: Linear<'a>,
}

/// A parsed vision transformer, borrowing its weights from the file's bytes.
pub struct VitModel<'a> {
    width: usize,
    heads: usize,
    ln_bits: u32,
    table: Vec<i32>,
    embed: Linear<'a>,
    positions: Vec<i32>,
    blocks: Vec<Block<'a>>,
    head: Linear<'a>,
}

impl<'a> VitModel<'a> {
    /// Parses and checks a model: shapes chain from a 28×28 image to 10 logits, and no value can
    /// leave `i32` on any input (so `i32` arithmetic here equals the training script's `int64`).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let mut r = Reader(bytes);
        r.header(MAGIC)?;
        let mut dims = [0usize; 7];
        for d in &mut dims {
            *d = r.u32()? as usize;
        }
        let [side, patch, width, heads, hidden, block_count, ln_bits] = dims;
        if side != VIT_IMAGE_SIDE || patch != PATCH {
            return Err(ModelError::Shape("28×28 images in patches of 7×7"));
        }
        // The width is a power of two, so that mean and variance are shifts.
        if !width.is_power_of_two() || !(4..=256).contains(&width) {
            return Err(ModelError::Shape(
                "the width is a power of two from 4 to 256",
            ));
        }
        if heads == 0 || width % heads != 0 || !(1..=1024).contains(&hidden) {
            return Err(ModelError::Shape(
                "heads divide the width; hidden is 1 to 1024",
            ));
        }
        if !(1..=8).contains(&block_count) || !(1..=8).contains(&ln_bits) {
            return Err(ModelError::Shape("1 to 8 blocks; ln_bits 1 to 8"));
        }
        let mut table = alloc::vec![0i32; TABLE_STEPS];
        for entry in &mut table {
            *entry = r.u32()? as i32;
            if !(0..=1 << 15).contains(entry) {
                return Err(ModelError::Shape("softmax table entries are 0 to 2^15"));
            }
        }
        // Step 0 (the row's maximum) has weight ≥ 1, so a row's weights never sum to 0.
        if table[0] == 0 {
            return Err(ModelError::Shape("the softmax table starts above 0"));
        }
        let embed = Linear::read(&mut r, PATCH_PIXELS, width, false)?;
        let positions = r.biases(TOKENS * width)?;
        let largest_position = positions.iter().map(|p| (*p as i64).abs()).max();
        let embed_acc = embed.accumulator_max(255, largest_position.unwrap_or(0))?;
        // The residual stream's bound, as each layer adds to it.
        let mut residual_max = embed.rescaled_max(embed_acc);
        let mut blocks = Vec::with_capacity(block_count);
        for _ in 0..block_count {
            let q = Linear::read(&mut r, width, width, false)?;
            let k = Linear::read(&mut r, width, width, false)?;
            let v = Linear::read(&mut r, width, width, false)?;
            for l in [&q, &k, &v] {
                l.accumulator_max(Q_MAX, 0)?;
            }
            let step_shift = r.u32()?;
            let step_multiplier = r.u32()? as i32 as i64;
            check_requantization(false, step_shift, step_multiplier)?;
            let o = Linear::read(&mut r, width, width, false)?;
            let fc1 = Linear::read(&mut r, width, hidden, false)?;
            let fc2 = Linear::read(&mut r, hidden, width, false)?;
            fc1.accumulator_max(Q_MAX, 0)?;
            residual_max += o.rescaled_max(o.accumulator_max(Q_MAX, 0)?);
            residual_max += fc2.rescaled_max(fc2.accumulator_max(Q_MAX, 0)?);
            blocks.push(Block {
                q,
                k,
                v,
                step_shift,
                step_multiplier,
                o,
                fc1,
                fc2,
            });
        }
        // Layer normalisation shifts a stream value left by ln_bits in i64, and squares it.
        if residual_max >= 1 << 26 {
            return Err(ModelError::Shape("the residual stream could leave 2^26"));
        }
        let head = Linear::read(&mut r, width, CLASSES, true)?;
        head.accumulator_max(Q_MAX * TOKENS as i64, 0)?;
        r.finish()?;
        Ok(Self {
            width,
            heads,
            ln_bits: ln_bits as u32,
            table,
            embed,
            positions,
            blocks,
            head,
        })
    }

    /// Number of weights, biases and positions.
    pub fn parameters(&self) -> usize {
        let linear = |l: &Linear| l.weights.len() + l.biases.len();
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                [&b.q, &b.k, &b.v, &b.o, &b.fc1, &b.fc2]
                    .map(linear)
                    .iter()
                    .sum::<usize>()
            })
            .sum();
        linear(&self.embed) + self.positions.len() + blocks + linear(&self.head)
    }

    /// Integer inference on one image (28×28 gray levels, row-major), working in `scratch`.
    pub fn logits_with(
        &self,
        image: &[u8; VIT_IMAGE_PIXELS],
        scratch: &mut Scratch,
    ) -> [i32; CLASSES] {
        let width = self.width;
        let Scratch {
            values: stream,
            next: pooled,
            vit: b,
            ..
        } = scratch;
        // The residual stream, `[token][width]`.
        stream.clear();
        let mut patch = [0i32; PATCH_PIXELS];
        for token in 0..TOKENS {
            let (ty, tx) = (token / PATCHES_PER_SIDE, token % PATCHES_PER_SIDE);
            for (i, p) in patch.iter_mut().enumerate() {
                let (y, x) = (ty * PATCH + i / PATCH, tx * PATCH + i % PATCH);
                *p = image[y * VIT_IMAGE_SIDE + x] as i32;
            }
            self.embed.accumulate(&patch, &mut b.acc);
            let positions = &self.positions[token * width..][..width];
            stream.extend(
                b.acc
                    .iter()
                    .zip(positions)
                    .map(|(&a, &p)| self.embed.rescale(a + p) as i32),
            );
        }
        for block in &self.blocks {
            self.attend(block, stream, b);
            for token in stream.chunks_exact_mut(width) {
                self.layer_norm(token, &mut b.normalised);
                block.fc1.accumulate(&b.normalised, &mut b.hidden);
                requantize_all(&mut b.hidden, block.fc1.multiplier, block.fc1.shift);
                block.fc2.accumulate(&b.hidden, &mut b.acc);
                for (r, &acc) in token.iter_mut().zip(&b.acc) {
                    *r += block.fc2.rescale(acc) as i32;
                }
            }
        }
        pooled.clear();
        pooled.resize(width, 0);
        for token in stream.chunks_exact(width) {
            self.layer_norm(token, &mut b.normalised);
            for (sum, x) in pooled.iter_mut().zip(&b.normalised) {
                *sum += x;
            }
        }
        self.head.accumulate(pooled, &mut b.acc);
        as_logits(&b.acc)
    }

    /// Multi-head self-attention over the normalised stream, added to the stream.
    fn attend(&self, block: &Block, stream: &mut [i32], b: &mut Buffers) {
        let width = self.width;
        let head_width = width / self.heads;
        for out in [&mut b.q, &mut b.k, &mut b.v] {
            out.clear();
        }
        for token in stream.chunks_exact(width) {
            self.layer_norm(token, &mut b.normalised);
            for (layer, out) in [
                (&block.q, &mut b.q),
                (&block.k, &mut b.k),
                (&block.v, &mut b.v),
            ] {
                layer.accumulate(&b.normalised, &mut b.acc);
                out.extend(b.acc.iter().map(|&a| clamp_q(layer.rescale(a))));
            }
        }
        let (q, k, v) = (&b.q, &b.k, &b.v);
        let attended = &mut b.attended;
        attended.clear();
        attended.resize(stream.len(), 0);
        let mut weights = [0i32; TOKENS];
        for head in 0..self.heads {
            let dims = head * head_width..(head + 1) * head_width;
            for i in 0..TOKENS {
                let query = &q[i * width..][dims.clone()];
                let mut scores = [0i32; TOKENS];
                for (j, score) in scores.iter_mut().enumerate() {
                    let key = &k[j * width..][dims.clone()];
                    *score = query.iter().zip(key).map(|(a, b)| a * b).sum();
                }
                let max = *scores.iter().max().expect("16 tokens");
                for (w, &s) in weights.iter_mut().zip(&scores) {
                    let shift = block.step_shift;
                    let step =
                        ((max - s) as i64 * block.step_multiplier + (1 << (shift - 1))) >> shift;
                    *w = self.table[step.min(TABLE_STEPS as i64 - 1) as usize];
                }
                let total: i32 = weights.iter().sum();
                for d in dims.clone() {
                    let sum: i32 = (0..TOKENS).map(|j| weights[j] * v[j * width + d]).sum();
                    attended[i * width + d] = div_round(sum as i64, total as i64) as i32;
                }
            }
        }
        for (token, values) in stream
            .chunks_exact_mut(width)
            .zip(b.attended.chunks_exact(width))
        {
            block.o.accumulate(values, &mut b.acc);
            for (r, &acc) in token.iter_mut().zip(&b.acc) {
                *r += block.o.rescale(acc) as i32;
            }
        }
    }

    /// One token's layer normalisation into `out`: values within ±127 at scale 2^−ln_bits.
    fn layer_norm(&self, token: &[i32], out: &mut Vec<i32>) {
        let bits = self.width.trailing_zeros();
        let mean = token.iter().map(|&x| x as i64).sum::<i64>() >> bits;
        let variance = token
            .iter()
            .map(|&x| (x as i64 - mean) * (x as i64 - mean))
            .sum::<i64>()
            >> bits;
        let std = isqrt(variance as u64).max(1) as i64;
        out.clear();
        out.extend(
            token
                .iter()
                .map(|&x| clamp_q(div_round((x as i64 - mean) << self.ln_bits, std))),
        );
    }
}

/// `n / d` rounded half away from zero, for `d > 0`.
fn div_round(n: i64, d: i64) -> i64 {
    let magnitude = (2 * n.abs() + d) / (2 * d);
    if n < 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// The floor of the square root, digit by digit (exact for every u64).
fn isqrt(mut v: u64) -> u64 {
    let mut root = 0u64;
    let mut bit = 1u64 << 62;
    while bit > v {
        bit >>= 2;
    }
    while bit != 0 {
        if v >= root + bit {
            v -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_helpers_round_as_the_training_script_does() {
        assert_eq!(div_round(5, 2), 3);
        assert_eq!(div_round(-5, 2), -3);
        assert_eq!(div_round(4, 3), 1);
        assert_eq!(div_round(-4, 3), -1);
        assert_eq!(div_round(0, 7), 0);
        for v in [
            0u64,
            1,
            2,
            3,
            4,
            15,
            16,
            17,
            99,
            1 << 40,
            (1 << 40) - 1,
            u64::MAX,
        ] {
            let r = isqrt(v) as u128;
            assert!(r * r <= v as u128 && (r + 1) * (r + 1) > v as u128, "{v}");
        }
        // Rescaling floors: −1.5 rounds to −1 and −2.5 to −2, as numpy's `>>` does.
        assert_eq!(rescale(-3, 1, 1), -1);
        assert_eq!(rescale(-5, 1, 1), -2);
        assert_eq!(rescale(5, 1, 1), 3);
    }
}
