//! The zkML models: quantized classifiers with integer-only inference (the guest has no FPU),
//! run by the guest (`guests/zkml`) and by the host (`plait demo zkml`) alike, so the host's
//! reference answer is the guest's, bit for bit. Three kinds, told apart by the model file's
//! header: an MLP over 8×8 digit images (this file), and over 28×28 Fashion-MNIST images a CNN
//! (`cnn`) and a vision transformer (`vit`).
//!
//! MLP model file (`zkml/train.py` writes it), little-endian: `PLAITMLP`, version u32 (1), layer
//! count u32, then per layer: inputs u32, outputs u32, shift u32, multiplier i32, weights
//! `i8[outputs × inputs]` (row-major), biases `i32[outputs]`. Hidden layers apply ReLU and
//! requantize to `0..=127` as `(acc · multiplier + 2^(shift−1)) >> shift`; the last layer
//! (shift 0) gives the logits.
//!
//! What a proof reveals (OpenVM's 32 bytes of public values) is the [`claim`]: one SHA-256
//! over the model's hash, the images' hash, and every class and logit. A verifier who is told
//! the model, the images and the answer recomputes it; any other model, image or answer gives
//! another claim.

#![no_std]
extern crate alloc;

mod cnn;
mod vit;
pub use cnn::{CnnModel, CNN_IMAGE_PIXELS, CNN_IMAGE_SIDE};
pub use vit::{VitModel, VIT_IMAGE_PIXELS, VIT_IMAGE_SIDE};

use alloc::vec::Vec;
use core::fmt;

#[cfg(feature = "openvm-sha2")]
use openvm_sha2::{Digest, Sha256};
#[cfg(not(feature = "openvm-sha2"))]
use sha2::{Digest, Sha256};

pub const IMAGE_SIDE: usize = 8;
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Pixels are the data set's gray levels, 0 (white) to 16 (black).
pub const PIXEL_MAX: u8 = 16;
pub const CLASSES: usize = 10;
/// Hidden activations are requantized to `0..=ACT_MAX`.
pub const ACT_MAX: i64 = 127;

const MAGIC: &[u8; 8] = b"PLAITMLP";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    NotAModel,
    UnsupportedVersion(u32),
    Truncated,
    TrailingBytes(usize),
    Shape(&'static str),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAModel => write!(f, "not a Plait model file of this kind (wrong header)"),
            Self::UnsupportedVersion(v) => {
                write!(f, "model format version {v}, expected {VERSION}")
            }
            Self::Truncated => write!(f, "model file is truncated"),
            Self::TrailingBytes(n) => write!(f, "model file has {n} bytes after its last layer"),
            Self::Shape(what) => write!(f, "model shape: {what}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// An image of the wrong size: `pixels` expected.
    WrongSize {
        pixels: usize,
        got: usize,
    },
    /// A batch whose length is not a whole number of `pixels`-pixel images.
    PartialImage {
        pixels: usize,
        got: usize,
    },
    PixelOutOfRange {
        index: usize,
        value: u8,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Images are square: the side follows from the pixel count.
        let side = |pixels: &usize| (1..=*pixels).find(|s| s * s >= *pixels).unwrap_or(0);
        match self {
            Self::WrongSize { pixels, got } => write!(
                f,
                "an image is {s}×{s} = {pixels} pixels, got {got}",
                s = side(pixels)
            ),
            Self::PartialImage { pixels, got } => write!(
                f,
                "an image is {s}×{s} = {pixels} pixels; {got} bytes are not a whole number \
                 of images",
                s = side(pixels)
            ),
            Self::PixelOutOfRange { index, value } => write!(
                f,
                "pixel {index} is {value}; pixels are gray levels 0..={PIXEL_MAX}"
            ),
        }
    }
}

struct Layer<'a> {
    outputs: usize,
    shift: u32,
    multiplier: i64,
    /// i8 weights, row-major, read in place.
    weights: &'a [u8],
    biases: Vec<i32>,
}

/// A parsed model, borrowing its weights from the file's bytes.
pub struct Model<'a> {
    layers: Vec<Layer<'a>>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        if self.0.len() < n {
            return Err(ModelError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    /// A model file's header: `magic`, then format version 1.
    fn header(&mut self, magic: &[u8; 8]) -> Result<(), ModelError> {
        if self.take(8).ok() != Some(magic.as_slice()) {
            return Err(ModelError::NotAModel);
        }
        match self.u32()? {
            VERSION => Ok(()),
            other => Err(ModelError::UnsupportedVersion(other)),
        }
    }
    /// The number of layers: 1 to 16.
    fn layer_count(&mut self) -> Result<usize, ModelError> {
        match self.u32()? as usize {
            count @ 1..=16 => Ok(count),
            _ => Err(ModelError::Shape("between 1 and 16 layers")),
        }
    }
    /// Checks that nothing follows the last layer.
    fn finish(&self) -> Result<(), ModelError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(ModelError::TrailingBytes(n)),
        }
    }
    /// A layer's `count` biases (i32 LE).
    fn biases(&mut self, count: usize) -> Result<Vec<i32>, ModelError> {
        Ok(self
            .take(count * 4)?
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect())
    }
}

/// Hidden layers requantize (a positive multiplier and a shift), the last layer does not
/// (shift 0): it gives the logits.
fn check_requantization(last: bool, shift: u32, multiplier: i64) -> Result<(), ModelError> {
    if last != (shift == 0) || shift > 40 || (!last && multiplier <= 0) {
        return Err(ModelError::Shape(
            "hidden layers requantize, the last does not",
        ));
    }
    Ok(())
}

/// ReLU, then `(acc · multiplier + 2^(shift−1)) >> shift`, capped at [`ACT_MAX`].
fn requantize(acc: i32, multiplier: i64, shift: u32) -> i32 {
    let scaled = (acc.max(0) as i64 * multiplier + (1i64 << (shift - 1))) >> shift;
    scaled.min(ACT_MAX) as i32
}

/// A dense layer's accumulators into `out`: `biases[o] + Σ weights[o][i] · values[i]` (weights
/// i8, row-major, `values.len()` per row). Callers bound the sums within i32 for their models.
fn dense(weights: &[u8], biases: &[i32], values: &[i32], out: &mut Vec<i32>) {
    out.clear();
    out.extend(
        weights
            .chunks_exact(values.len())
            .zip(biases)
            .map(|(row, &bias)| bias + dot(row, values)),
    );
}

/// Σ w·a over one row of int8 weights. Four pairs per loop step, into four sums: the guest pays
/// for every instruction, and this spends the loop's bookkeeping (pointers, compare, branch)
/// once per four multiply-accumulates instead of once per one. Integer addition is exact in
/// any order, so the sum is the same bit for bit.
#[inline(always)]
fn dot(row: &[u8], values: &[i32]) -> i32 {
    let (row_quads, row_rest) = row.as_chunks::<4>();
    let (value_quads, value_rest) = values.as_chunks::<4>();
    let mut sums = [0i32; 4];
    for (w, a) in row_quads.iter().zip(value_quads) {
        for k in 0..4 {
            sums[k] += w[k] as i8 as i32 * a[k];
        }
    }
    let rest: i32 = row_rest
        .iter()
        .zip(value_rest)
        .map(|(&w, &a)| w as i8 as i32 * a)
        .sum();
    sums.iter().sum::<i32>() + rest
}

/// The buffers an inference works in, kept from one image of a batch to the next. OpenVM's
/// guest allocator never frees, so buffers allocated per image would grow the guest's heap
/// with the batch (and every segment boundary compares the heap's pages); reused, the heap
/// stays the size of one image's work.
#[derive(Default)]
pub struct Scratch {
    /// A layer's input, then (swapped) its output.
    values: Vec<i32>,
    next: Vec<i32>,
    vit: vit::Buffers,
}

/// Requantizes a hidden layer's accumulators in place (the last layer, shift 0, keeps them).
fn requantize_all(accumulators: &mut [i32], multiplier: i64, shift: u32) {
    if shift != 0 {
        for acc in accumulators {
            *acc = requantize(*acc, multiplier, shift);
        }
    }
}

/// The logits a model's last layer left in `values`.
fn as_logits(values: &[i32]) -> [i32; CLASSES] {
    values.try_into().expect("the last layer has 10 outputs")
}

impl<'a> Model<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let mut r = Reader(bytes);
        r.header(MAGIC)?;
        let count = r.layer_count()?;
        let mut layers = Vec::with_capacity(count);
        for i in 0..count {
            let inputs = r.u32()? as usize;
            let outputs = r.u32()? as usize;
            let shift = r.u32()?;
            let multiplier = r.u32()? as i32 as i64;
            let expected_inputs = layers.last().map_or(IMAGE_PIXELS, |l: &Layer| l.outputs);
            if inputs != expected_inputs || outputs == 0 || outputs > 4096 {
                return Err(ModelError::Shape(
                    "each layer takes the previous layer's outputs",
                ));
            }
            check_requantization(i + 1 == count, shift, multiplier)?;
            let weights = r.take(inputs * outputs)?;
            let biases = r.biases(outputs)?;
            layers.push(Layer {
                outputs,
                shift,
                multiplier,
                weights,
                biases,
            });
        }
        if layers.last().map(|l| l.outputs) != Some(CLASSES) {
            return Err(ModelError::Shape("the last layer has 10 outputs"));
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

    /// Integer inference on one image, working in `scratch`.
    pub fn logits_with(
        &self,
        image: &[u8],
        scratch: &mut Scratch,
    ) -> Result<[i32; CLASSES], ImageError> {
        check_image(image)?;
        let Scratch { values, next, .. } = scratch;
        values.clear();
        values.extend(image.iter().map(|&p| p as i32));
        for layer in &self.layers {
            // |acc| ≤ 320 · 127 · 127 + |bias|: far inside i32 for this model's widths.
            dense(layer.weights, &layer.biases, values, next);
            requantize_all(next, layer.multiplier, layer.shift);
            core::mem::swap(values, next);
        }
        Ok(as_logits(values))
    }
}

/// Checks a digits image: 64 gray levels 0..=16.
pub fn check_image(image: &[u8]) -> Result<(), ImageError> {
    if image.len() != IMAGE_PIXELS {
        return Err(ImageError::WrongSize {
            pixels: IMAGE_PIXELS,
            got: image.len(),
        });
    }
    match image.iter().position(|&p| p > PIXEL_MAX) {
        Some(index) => Err(ImageError::PixelOutOfRange {
            index,
            value: image[index],
        }),
        None => Ok(()),
    }
}

/// The predicted class: the first largest logit.
pub fn predict(logits: &[i32; CLASSES]) -> u8 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u8
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// One image's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inference {
    pub class: u8,
    pub logits: [i32; CLASSES],
}

/// The 32 bytes a proof reveals: SHA-256 of `plait-zkml-v1`, the model's SHA-256, the images'
/// SHA-256 (all images' pixels, concatenated), the image count (u32 LE), and per image its
/// class (u8) and logits (i32 LE each).
pub fn claim(model_sha256: &[u8; 32], images_sha256: &[u8; 32], answers: &[Inference]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"plait-zkml-v1");
    h.update(model_sha256);
    h.update(images_sha256);
    // Slices: OpenVM's guest hasher takes `&[u8]` where `sha2`'s takes `impl AsRef<[u8]>`.
    h.update((answers.len() as u32).to_le_bytes().as_slice());
    for a in answers {
        h.update([a.class].as_slice());
        for l in a.logits {
            h.update(l.to_le_bytes().as_slice());
        }
    }
    h.finalize().into()
}

/// Any of the three models, as its file's header says.
pub enum Classifier<'a> {
    Mlp(Model<'a>),
    Cnn(CnnModel<'a>),
    Vit(VitModel<'a>),
}

impl<'a> Classifier<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        if bytes.starts_with(cnn::MAGIC) {
            CnnModel::parse(bytes).map(Self::Cnn)
        } else if bytes.starts_with(vit::MAGIC) {
            VitModel::parse(bytes).map(Self::Vit)
        } else {
            Model::parse(bytes).map(Self::Mlp)
        }
    }

    /// `"MLP"`, `"CNN"` or `"ViT"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mlp(_) => "MLP",
            Self::Cnn(_) => "CNN",
            Self::Vit(_) => "ViT",
        }
    }

    /// Pixels per image: 8×8 for the MLP, 28×28 for the others.
    pub fn image_pixels(&self) -> usize {
        match self {
            Self::Mlp(_) => IMAGE_PIXELS,
            Self::Cnn(_) => CNN_IMAGE_PIXELS,
            Self::Vit(_) => VIT_IMAGE_PIXELS,
        }
    }

    /// The largest gray level: 16 for the digits, 255 for Fashion-MNIST.
    pub fn pixel_max(&self) -> u8 {
        match self {
            Self::Mlp(_) => PIXEL_MAX,
            _ => u8::MAX,
        }
    }

    pub fn parameters(&self) -> usize {
        match self {
            Self::Mlp(m) => m.parameters(),
            Self::Cnn(m) => m.parameters(),
            Self::Vit(m) => m.parameters(),
        }
    }

    /// Integer inference on one image.
    pub fn logits(&self, image: &[u8]) -> Result<[i32; CLASSES], ImageError> {
        self.logits_with(image, &mut Scratch::default())
    }

    /// [`Self::logits`], working in `scratch`: a batch passes the same one for every image.
    pub fn logits_with(
        &self,
        image: &[u8],
        scratch: &mut Scratch,
    ) -> Result<[i32; CLASSES], ImageError> {
        let wrong_size = || ImageError::WrongSize {
            pixels: self.image_pixels(),
            got: image.len(),
        };
        match self {
            Self::Mlp(m) => m.logits_with(image, scratch),
            Self::Cnn(m) => Ok(m.logits_with(image.try_into().map_err(|_| wrong_size())?, scratch)),
            Self::Vit(m) => Ok(m.logits_with(image.try_into().map_err(|_| wrong_size())?, scratch)),
        }
    }
}

/// Runs the model on `images` (concatenated images: 64 bytes each for the digits MLP, 784 for
/// the Fashion-MNIST models, as the model file's header says) and returns every answer and the
/// claim. This is the guest's whole computation.
pub fn infer_batch(
    model_bytes: &[u8],
    images: &[u8],
) -> Result<(Vec<Inference>, [u8; 32]), BatchError> {
    let model = Classifier::parse(model_bytes).map_err(BatchError::Model)?;
    let pixels = model.image_pixels();
    if images.is_empty() || !images.len().is_multiple_of(pixels) {
        let got = images.len();
        return Err(BatchError::Image(
            0,
            ImageError::PartialImage { pixels, got },
        ));
    }
    // Nothing is allocated per image (see [`Scratch`]).
    let mut scratch = Scratch::default();
    let mut answers = Vec::with_capacity(images.len() / pixels);
    for (i, image) in images.chunks_exact(pixels).enumerate() {
        let logits = model
            .logits_with(image, &mut scratch)
            .map_err(|e| BatchError::Image(i, e))?;
        answers.push(Inference {
            class: predict(&logits),
            logits,
        });
    }
    let claim = claim(&sha256(model_bytes), &sha256(images), &answers);
    Ok((answers, claim))
}

/// Reads a test-set file (`zkml/train.py` writes it): `PLAITDIG`, count u32, then per image
/// its 64 pixels and its label.
pub fn parse_test_set(bytes: &[u8]) -> Result<Vec<([u8; IMAGE_PIXELS], u8)>, ModelError> {
    if bytes.get(..8) != Some(b"PLAITDIG".as_slice()) {
        return Err(ModelError::NotAModel);
    }
    let count = u32::from_le_bytes(
        bytes
            .get(8..12)
            .ok_or(ModelError::Truncated)?
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    let body = &bytes[12..];
    if body.len() != count * (IMAGE_PIXELS + 1) {
        return Err(ModelError::Truncated);
    }
    Ok(body
        .chunks_exact(IMAGE_PIXELS + 1)
        .map(|c| {
            (
                c[..IMAGE_PIXELS].try_into().expect("64 pixels"),
                c[IMAGE_PIXELS],
            )
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    Model(ModelError),
    Image(usize, ImageError),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(e) => write!(f, "{e}"),
            Self::Image(i, e) => write!(f, "image {i}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-layer model 64 → 10 whose logit k is the sum of row k's pixels times k+1.
    fn tiny_model() -> Vec<u8> {
        let mut m = Vec::from(*MAGIC);
        m.extend(1u32.to_le_bytes());
        m.extend(1u32.to_le_bytes());
        for v in [64u32, 10, 0, 0] {
            m.extend(v.to_le_bytes());
        }
        for k in 0..10u8 {
            m.extend((0..64).map(|i| if i / 8 == k as usize % 8 { k + 1 } else { 0 }));
        }
        for _ in 0..10 {
            m.extend(0i32.to_le_bytes());
        }
        m
    }

    #[test]
    fn computes_logits_and_refuses_bad_models_and_images() {
        let bytes = tiny_model();
        let model = Model::parse(&bytes).unwrap();
        let mut image = [0u8; 64];
        image[8..16].fill(2); // row 1: logit 1 = 8·2·2 = 32, logit 9 (row 1 too) = 8·2·10
        let logits = model.logits_with(&image, &mut Scratch::default()).unwrap();
        assert_eq!(logits[1], 32);
        assert_eq!(logits[9], 160);
        assert_eq!(predict(&logits), 9);
        assert_eq!(
            model.logits_with(&[0; 63], &mut Scratch::default()),
            Err(ImageError::WrongSize {
                pixels: 64,
                got: 63
            })
        );
        image[5] = 17;
        assert_eq!(
            model.logits_with(&image, &mut Scratch::default()),
            Err(ImageError::PixelOutOfRange {
                index: 5,
                value: 17
            })
        );
        assert_eq!(Model::parse(b"ELF...").err(), Some(ModelError::NotAModel));
        assert_eq!(
            Model::parse(&bytes[..100]).err(),
            Some(ModelError::Truncated)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Model::parse(&longer).err(),
            Some(ModelError::TrailingBytes(1))
        );
    }

    #[test]
    fn the_claim_binds_model_images_and_answers() {
        let answer = Inference {
            class: 3,
            logits: [1; 10],
        };
        let base = claim(&[1; 32], &[2; 32], &[answer]);
        assert_ne!(base, claim(&[9; 32], &[2; 32], &[answer]));
        assert_ne!(base, claim(&[1; 32], &[9; 32], &[answer]));
        assert_ne!(
            base,
            claim(&[1; 32], &[2; 32], &[Inference { class: 4, ..answer }])
        );
        assert_ne!(base, claim(&[1; 32], &[2; 32], &[answer, answer]));
    }
}
