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
        let Scratch {
            values, next, map, ..
        } = scratch;
        values.clear();
        values.extend(image.iter().map(|&p| p as i32));
        let mut side = CNN_IMAGE_SIDE;
        for layer in &self.layers {
            match layer.kind {
                Kind::Conv { kernel } => {
                    conv_pool(layer, kernel, values, side, map, next);
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

/// A valid convolution (stride 1) of `values` (`inputs` maps of `side`²), then a 2×2
/// max-pool of the accumulators into `out`: `outputs` maps of ((side − kernel + 1) / 2)².
/// `map` holds one convolved map at a time.
fn conv_pool(
    layer: &Layer,
    kernel: usize,
    values: &[i32],
    side: usize,
    map: &mut Vec<i32>,
    out: &mut Vec<i32>,
) {
    let convolved = side - kernel + 1;
    let pooled = convolved / 2;
    let taps = layer.inputs * kernel * kernel;
    out.clear();
    out.reserve(layer.outputs * pooled * pooled);
    map.clear();
    map.resize(convolved * convolved, 0);
    // A slice, not the Vec: the inner loop keeps its pointer and length in registers.
    let map = map.as_mut_slice();
    for (o, filter) in layer.weights.chunks_exact(taps).enumerate() {
        map.fill(layer.biases[o]);
        for (c, channel) in filter.chunks_exact(kernel * kernel).enumerate() {
            let input = &values[c * side * side..(c + 1) * side * side];
            for (dy, row) in channel.chunks_exact(kernel).enumerate() {
                for (dx, &w) in row.iter().enumerate() {
                    let w = w as i8 as i32;
                    if w == 0 {
                        continue;
                    }
                    for y in 0..convolved {
                        let from = &input[(y + dy) * side + dx..][..convolved];
                        let to = &mut map[y * convolved..][..convolved];
                        for (acc, &a) in to.iter_mut().zip(from) {
                            *acc += w * a;
                        }
                    }
                }
            }
        }
        for y in 0..pooled {
            for x in 0..pooled {
                let at = |dy: usize, dx: usize| map[(2 * y + dy) * convolved + 2 * x + dx];
                out.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
}
