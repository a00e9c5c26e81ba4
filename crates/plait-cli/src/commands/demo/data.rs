//! The demo's models and images: the committed models with their training reports, the test
//! sets (the digits' committed with the repo; Fashion-MNIST's from Debian's package), and a
//! user's own image.

use std::{
    io::Read,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context, Result};
use plait_zkml_model::{CLASSES, CNN_IMAGE_SIDE, IMAGE_SIDE, PIXEL_MAX};

use crate::exit::BadInput;

const DIGITS_MLP: &[u8] = include_bytes!("../../../../../zkml/data/digits-mlp.bin");
const DIGITS_REPORT: &str = include_str!("../../../../../zkml/data/report.json");
const DIGITS_TEST_SET: &[u8] = include_bytes!("../../../../../zkml/data/digits-test.bin");
const FASHION_CNN: &[u8] = include_bytes!("../../../../../zkml/data/fashion-cnn.bin");
const FASHION_CNN_REPORT: &str = include_str!("../../../../../zkml/data/fashion-cnn-report.json");
const FASHION_VIT: &[u8] = include_bytes!("../../../../../zkml/data/fashion-vit.bin");
const FASHION_VIT_REPORT: &str = include_str!("../../../../../zkml/data/fashion-vit-report.json");

/// Where Debian's `dataset-fashion-mnist` puts the data set.
pub const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

pub const FASHION_CLASSES: [&str; CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
pub const DIGIT_CLASSES: [&str; CLASSES] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The committed models, by the name `--model` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelName {
    /// The small, fast example: an MLP over scikit-learn's 8×8 digits.
    Mlp,
    /// The flagship: a LeNet-class CNN over Fashion-MNIST.
    Cnn,
    /// A small vision transformer over Fashion-MNIST.
    Vit,
}

impl FromStr for ModelName {
    type Err = BadInput;
    fn from_str(s: &str) -> Result<Self, BadInput> {
        match s {
            "mlp" => Ok(Self::Mlp),
            "cnn" => Ok(Self::Cnn),
            "vit" => Ok(Self::Vit),
            other => Err(BadInput(format!(
                "unknown model {other:?}: the models are cnn, vit (Fashion-MNIST) and mlp (digits)"
            ))),
        }
    }
}

/// What a model's images look like, and what its classes are called.
#[derive(Clone, Copy)]
pub struct ImageFormat {
    pub side: usize,
    pub pixel_max: u8,
    pub classes: &'static [&'static str; CLASSES],
}

impl ImageFormat {
    pub fn pixels(&self) -> usize {
        self.side * self.side
    }
}

impl ModelName {
    pub fn committed_model(self) -> &'static [u8] {
        match self {
            Self::Mlp => DIGITS_MLP,
            Self::Cnn => FASHION_CNN,
            Self::Vit => FASHION_VIT,
        }
    }

    /// The training report: accuracies and the committed model's hash.
    pub fn report(self) -> serde_json::Value {
        let text = match self {
            Self::Mlp => DIGITS_REPORT,
            Self::Cnn => FASHION_CNN_REPORT,
            Self::Vit => FASHION_VIT_REPORT,
        };
        serde_json::from_str(text).expect("the committed reports parse")
    }

    /// The committed model's SHA-256, from its training report.
    pub fn committed_sha256(self) -> String {
        self.report()["model_sha256"]
            .as_str()
            .expect("reports name the model hash")
            .to_string()
    }

    /// Guest instructions per inference, rounded up from what was measured (hashing the model
    /// comes on top).
    pub fn instructions_per_image(self) -> u64 {
        match self {
            Self::Mlp => 1_000_000,
            Self::Cnn => 12_000_000,
            Self::Vit => 20_000_000,
        }
    }

    pub fn format(self) -> ImageFormat {
        match self {
            Self::Mlp => ImageFormat {
                side: IMAGE_SIDE,
                pixel_max: PIXEL_MAX,
                classes: &DIGIT_CLASSES,
            },
            Self::Cnn | Self::Vit => ImageFormat {
                side: CNN_IMAGE_SIDE,
                pixel_max: u8::MAX,
                classes: &FASHION_CLASSES,
            },
        }
    }

    /// The held-out test set: every image's pixels, concatenated, and every label.
    pub fn test_set(self) -> Result<TestSet> {
        match self {
            Self::Mlp => {
                let set = plait_zkml_model::parse_test_set(DIGITS_TEST_SET)
                    .expect("the committed test set parses");
                Ok(TestSet {
                    images: set.iter().flat_map(|(image, _)| *image).collect(),
                    labels: set.iter().map(|(_, label)| *label).collect(),
                })
            }
            Self::Cnn | Self::Vit => {
                let images = read_idx("t10k-images-idx3-ubyte.gz", 16)?;
                let labels = read_idx("t10k-labels-idx1-ubyte.gz", 8)?;
                anyhow::ensure!(
                    images.len() == labels.len() * self.format().pixels(),
                    "{FASHION_MNIST}: {} image bytes for {} labels",
                    images.len(),
                    labels.len()
                );
                Ok(TestSet { images, labels })
            }
        }
    }
}

pub struct TestSet {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

/// A gzipped idx file of Fashion-MNIST, without its header.
fn read_idx(name: &str, header: usize) -> Result<Vec<u8>> {
    // PLAIT_FASHION_MNIST names another copy (a machine without Debian's package, such as the
    // GPU check's).
    let dir =
        std::env::var_os("PLAIT_FASHION_MNIST").map_or(PathBuf::from(FASHION_MNIST), PathBuf::from);
    let path = dir.join(name);
    let gz = std::fs::read(&path).with_context(|| {
        format!(
            "reading {}: install Debian's dataset-fashion-mnist (scripts/install-deps.sh does)",
            path.display()
        )
    })?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut bytes)
        .with_context(|| format!("{} is not a gzip file", path.display()))?;
    anyhow::ensure!(bytes.len() >= header, "{} is truncated", path.display());
    Ok(bytes.split_off(header))
}

/// Reads a user's image: a grayscale PNG of the model's side, the gray levels as text
/// (whitespace- or comma-separated), or the raw bytes; checks its size and range.
pub fn read_image_file(path: &Path, format: ImageFormat) -> Result<Vec<u8>> {
    let bad = |what: String| BadInput(format!("image {}: {what}", path.display()));
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput(format!("cannot read image {}: {e}", path.display())))?;
    let pixels = if bytes.starts_with(b"\x89PNG") {
        read_png(&bytes, format).map_err(bad)?
    } else {
        match std::str::from_utf8(&bytes) {
            Ok(text) if text.chars().any(|c| c.is_ascii_digit()) => text
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<u8>()
                        .ok()
                        .filter(|&p| p <= format.pixel_max)
                        .ok_or_else(|| {
                            bad(format!(
                                "{t:?} is not a gray level 0..={}",
                                format.pixel_max
                            ))
                        })
                })
                .collect::<Result<Vec<u8>, _>>()?,
            _ => bytes,
        }
    };
    if pixels.len() != format.pixels() {
        return Err(bad(format!(
            "an image is {s}×{s} = {} pixels, got {}",
            format.pixels(),
            pixels.len(),
            s = format.side
        ))
        .into());
    }
    if let Some(index) = pixels.iter().position(|&p| p > format.pixel_max) {
        return Err(bad(format!(
            "pixel {index} is {}; pixels are gray levels 0..={}",
            pixels[index], format.pixel_max
        ))
        .into());
    }
    Ok(pixels)
}

/// An 8-bit grayscale PNG of exactly the model's side, dark on light (as the demo writes
/// them): gray level = pixel_max · (255 − value) / 255.
fn read_png(bytes: &[u8], format: ImageFormat) -> Result<Vec<u8>, String> {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let info = reader.info();
    let (width, height) = (info.width as usize, info.height as usize);
    if (width, height) != (format.side, format.side) {
        return Err(format!(
            "the PNG is {width}×{height}; the model takes {s}×{s} images",
            s = format.side
        ));
    }
    if (info.color_type, info.bit_depth) != (png::ColorType::Grayscale, png::BitDepth::Eight) {
        return Err("the PNG must be 8-bit grayscale".into());
    }
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    buffer.truncate(frame.buffer_size());
    let max = format.pixel_max as u32;
    Ok(buffer
        .iter()
        .map(|&v| ((255 - v as u32) * max + 127) / 255)
        .map(|v| v as u8)
        .collect())
}
