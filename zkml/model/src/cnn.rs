//! The Fashion-MNIST CNN: integer-only inference over 28×28 gray-level images, shared bit for
//! bit by the guest and the host, and by `zkml/train_fashion.py`'s own integer arithmetic.
//!
//! Model file (`zkml/train_fashion.py` writes it), little-endian: `PLAITCNN`, version u32 (1),
//! image side u32 (28), layer count u32, then per layer: kind u32 (0 convolution, 1 dense),
//! inputs u32 (channels, or values), outputs u32, kernel side u32 (0 for dense), shift u32,
//! multiplier i32, weights i8 (convolution `[out][in][k][k]`, dense `[out][in]`), biases
//! i32[outputs]. A convolution is valid (no padding), stride 1, followed by a 2×2 max-pool on
//! the accumulators; every hidden layer then applies ReLU and requantizes to `0..=127` as
//! `(acc · multiplier + 2^(shift−1)) >> shift`. The last layer (dense, shift 0) gives the
//! logits. Dense layers after convolutions read the feature maps flattened channel-major.

use alloc::vec::Vec;

use crate::{
    as_logits, check_requantization, dense, requantize_all, ModelError, Reader, Scratch, ACT_MAX,
    CLASSES,
};

pub const CNN_IMAGE_SIDE: usize = 28;
pub const CNN_IMAGE_PIXELS: usize = CNN_IMAGE_SIDE * CNN_IMAGE_SIDE;

pub(crate) const MAGIC: &[u8; 8] = b"PLAITCNN";

/// The largest convolution kernel side (each side is compiled apart: see [`conv_pool`]).
const MAX_KERNEL: usize = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Conv { kernel: usize },
    Dense,
}

struct Layer<'a> {
    kind: Kind,
    inputs: usize,
    outputs: usize,
    shift: u32,
    multiplier: i64,
    weights: &'a [u8],
    biases: Vec<i32>,
}

/// A parsed CNN, borrowing its weights from the file's bytes.
pub struct CnnModel<'a> {
    layers: Vec<Layer<'a>>,
}

impl<'a> CnnModel<'a> {
    /// Parses and checks a model: shapes chain from a 28×28 image to 10 logits, and no
    /// accumulator can leave `i32` on any input (so `i32` arithmetic here equals the
    /// training script's `int64`).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let mut r = Reader(bytes);
        r.header(MAGIC)?;
        if r.u32()? as usize != CNN_IMAGE_SIDE {
            return Err(ModelError::Shape("the image side is 28"));
        }
        let count = r.layer_count()?;
        // What flows between layers: (channels, side) of feature maps, or a vector's length.
        let (mut channels, mut side, mut flat) = (1usize, CNN_IMAGE_SIDE, None::<usize>);
        let mut input_max = 255i64;
        let mut layers = Vec::with_capacity(count);
        for i in 0..count {
            let kind = r.u32()?;
            let inputs = r.u32()? as usize;
            let outputs = r.u32()? as usize;
            let kernel = r.u32()? as usize;
            let shift = r.u32()?;
            let multiplier = r.u32()? as i32 as i64;
            if outputs == 0 || outputs > 4096 {
                return Err(ModelError::Shape("1 to 4096 outputs per layer"));
            }
            let (kind, taps) = match kind {
                0 => {
                    if flat.is_some() || inputs != channels || kernel == 0 || kernel > side {
                        return Err(ModelError::Shape(
                            "a convolution takes the previous feature maps",
                        ));
                    }
                    if kernel > MAX_KERNEL {
                        return Err(ModelError::Shape("a convolution's kernel side is 1 to 7"));
                    }
                    let convolved = side - kernel + 1;
                    if convolved % 2 != 0 {
                        return Err(ModelError::Shape("a convolution's output pools by 2"));
                    }
                    (channels, side) = (outputs, convolved / 2);
                    (Kind::Conv { kernel }, inputs * kernel * kernel)
                }
                1 => {
                    let expected = flat.unwrap_or(channels * side * side);
                    if inputs != expected || kernel != 0 {
                        return Err(ModelError::Shape(
                            "a dense layer takes the previous layer's outputs",
                        ));
                    }
                    flat = Some(outputs);
                    (Kind::Dense, inputs)
                }
                _ => return Err(ModelError::Shape("layer kinds are 0 (conv) or 1 (dense)")),
            };
            check_requantization(i + 1 == count, shift, multiplier)?;
            let weights = r.take(outputs * taps)?;
            let biases = r.biases(outputs)?;
            let largest_bias = biases.iter().map(|b| (*b as i64).abs()).max().unwrap_or(0);
            if taps as i64 * input_max * 128 + largest_bias >= i32::MAX as i64 {
                return Err(ModelError::Shape("an accumulator could overflow i32"));
            }
            input_max = ACT_MAX;
            layers.push(Layer {
                kind,
                inputs,
                outputs,
                shift,
                multiplier,
                weights,
                biases,
            });
        }
        if flat != Some(CLASSES) {
            return Err(ModelError::Shape("the last layer is dense with 10 outputs"));
        }
        r.finish()?;
        Ok(Self { layers })
    }

    /// Number of weights and biases.
    pub fn parameters(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weights.len() + l.biases.len())
            .sum()
    }

    /// Integer inference on one image (28×28 gray levels, row-major), working in `scratch`.
    pub fn logits_with(
        &self,
        image: &[u8; CNN_IMAGE_PIXELS],
        scratch: &mut Scratch,
    ) -> [i32; CLASSES] {
        let Scratch { values, next, .. } = scratch;
        values.clear();
        values.extend(image.iter().map(|&p| p as i32));
        let mut side = CNN_IMAGE_SIDE;
        for layer in &self.layers {
            match layer.kind {
                Kind::Conv { kernel } => {
                    let conv_pool = match kernel {
                        1 => conv_pool::<1>,
                        2 => conv_pool::<2>,
                        3 => conv_pool::<3>,
                        4 => conv_pool::<4>,
                        5 => conv_pool::<5>,
                        6 => conv_pool::<6>,
                        7 => conv_pool::<7>,
                        _ => unreachable!("parse allows kernel sides 1 to {MAX_KERNEL}"),
                    };
                    conv_pool(layer, values, side, next);
                    side = (side - kernel + 1) / 2;
                }
                Kind::Dense => dense(layer.weights, &layer.biases, values, next),
            }
            requantize_all(next, layer.multiplier, layer.shift);
            core::mem::swap(values, next);
        }
        as_logits(values)
    }
}

/// A valid convolution (stride 1) of `values` (`inputs` maps of `side`²) with `K`×`K`
/// filters, then a 2×2 max-pool of the accumulators into `out`: `outputs` maps of
/// ((side − K + 1) / 2)². Each pooled value is computed straight from its four windows, so no
/// convolved map is stored.
///
/// Why it is shaped so: the guest pays for every instruction. The four windows of a pool are
/// accumulated together in registers, so each weight is loaded once for four
/// multiply-accumulates, and with `K` a constant the loop over a kernel row unrolls into loads
/// at fixed offsets. For `K` = 5 the guest build spends 88 instructions on one kernel row of
/// the four windows (20 multiply-accumulates, counted in its disassembly), where a loop over a
/// stored map (load, load, multiply, add, store, loop) spent about ten on each.
fn conv_pool<const K: usize>(layer: &Layer, values: &[i32], side: usize, out: &mut Vec<i32>) {
    let pooled = (side - K + 1) / 2;
    out.clear();
    out.reserve(layer.outputs * pooled * pooled);
    let taps = layer.inputs * K * K;
    for (filter, &bias) in layer.weights.chunks_exact(taps).zip(&layer.biases) {
        for y in (0..2 * pooled).step_by(2) {
            for x in (0..2 * pooled).step_by(2) {
                let pool = pool_windows::<K>(filter, values, side, y * side + x);
                out.push(bias + pool.into_iter().max().expect("four windows"));
            }
        }
    }
}

/// The four convolution outputs (before the bias) of one 2×2 pool: `filter` over every input
/// map, with the pool's top-left window corner at offset `corner` in each map. Windows are
/// ordered top-left, top-right, bottom-left, bottom-right.
#[inline(always)]
fn pool_windows<const K: usize>(
    filter: &[u8],
    values: &[i32],
    side: usize,
    corner: usize,
) -> [i32; 4] {
    let mut acc = [0i32; 4];
    for (channel, input) in filter
        .chunks_exact(K * K)
        .zip(values.chunks_exact(side * side))
    {
        for dy in 0..K {
            let weights: &[u8; K] = channel[dy * K..][..K].try_into().expect("K taps");
            // The window rows at dy of the top and bottom windows: K + 1 pixels each covers
            // the left and right windows.
            let top = &input[corner + dy * side..][..K + 1];
            let bottom = &input[corner + (dy + 1) * side..][..K + 1];
            for dx in 0..K {
                let w = weights[dx] as i8 as i32;
                acc[0] += w * top[dx];
                acc[1] += w * top[dx + 1];
                acc[2] += w * bottom[dx];
                acc[3] += w * bottom[dx + 1];
            }
        }
    }
    acc
}
