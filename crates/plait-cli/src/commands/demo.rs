//! `plait demo zkml`: the flagship. Proves that the committed digits model classified an image
//! (or a batch), through the embedded pool, and checks the proof.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use plait_prover::ProverBackend;
use plait_zkml_model::{self as model, Inference, IMAGE_PIXELS, IMAGE_SIDE, PIXEL_MAX};

use super::{openvm_backend, prove};
use crate::{
    exit::BadInput,
    program_arg::{ParamArgs, ProgramArgs},
};

/// The model `zkml/train.py` trained, and its held-out test images, as committed in the repo.
const MODEL: &[u8] = include_bytes!("../../../../zkml/data/digits-mlp.bin");
const TEST_SET: &[u8] = include_bytes!("../../../../zkml/data/digits-test.bin");
const REPORT: &str = include_str!("../../../../zkml/data/report.json");

#[derive(Subcommand)]
pub enum DemoCommand {
    /// Prove a digit classification by the committed MLP (zkML), through the local pool.
    Zkml(ZkmlArgs),
}

#[derive(Args)]
pub struct ZkmlArgs {
    /// Which held-out test image to classify (0 to 359; the model gets 0, 22, 236 and 326
    /// wrong).
    #[arg(long, default_value_t = 1)]
    image: usize,
    /// Classify this many consecutive test images, from `--image`, in one job.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Classify your own image instead: 64 gray levels 0..=16 (8 rows of 8), as whitespace- or
    /// comma-separated numbers, or as 64 raw bytes.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["image", "batch"])]
    image_file: Option<PathBuf>,
    /// The model file (default: the committed model). It must match the committed hash.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The model hash the proof must commit to (default: the committed model's).
    #[arg(long, value_name = "HEX")]
    model_sha256: Option<String>,
    /// The zkml guest (a package directory or ELF).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/zkml"))]
    guest: PathBuf,
    /// Local worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[command(flatten)]
    params: ParamArgs,
    /// Where to write the proof.
    #[arg(short, long, default_value = "zkml.proof")]
    output: PathBuf,
    /// Where to write the image(s) as a PNG (each image 16× enlarged, side by side).
    #[arg(long, default_value = "zkml.png")]
    png: PathBuf,
    /// Only execute (the host reference and the guest must agree); do not prove.
    #[arg(long)]
    no_prove: bool,
}

pub async fn run(command: DemoCommand, cache: &Path) -> Result<()> {
    match command {
        DemoCommand::Zkml(args) => zkml(args, cache).await,
    }
}

/// The committed model's SHA-256, from `zkml/data/report.json`.
fn committed_model_sha256() -> String {
    let report: serde_json::Value = serde_json::from_str(REPORT).expect("report.json parses");
    report["model_sha256"]
        .as_str()
        .expect("report.json names the model hash")
        .to_string()
}

/// Test images and labels from the committed test set.
fn test_set() -> Vec<([u8; IMAGE_PIXELS], u8)> {
    model::parse_test_set(TEST_SET).expect("the committed test set parses")
}

/// Reads a user's image: 64 numbers as text, or 64 raw bytes; checks shape and range.
fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput(format!("cannot read image {}: {e}", path.display())))?;
    let pixels = match std::str::from_utf8(&bytes) {
        Ok(text) if text.chars().any(|c| c.is_ascii_digit()) => text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<u8>().map_err(|_| {
                    BadInput(format!(
                        "image {}: {t:?} is not a gray level 0..={PIXEL_MAX}",
                        path.display()
                    ))
                })
            })
            .collect::<Result<Vec<u8>, _>>()?,
        _ => bytes,
    };
    model::check_image(&pixels).map_err(|e| BadInput(format!("image {}: {e}", path.display())))?;
    Ok(pixels)
}

/// The image in the terminal: two characters per pixel, darker for higher gray levels.
fn render(image: &[u8]) -> String {
    const SHADES: [&str; 5] = ["  ", "░░", "▒▒", "▓▓", "██"];
    image
        .chunks(IMAGE_SIDE)
        .map(|row| {
            let cells: String = row
                .iter()
                .map(|&p| SHADES[(p as usize * 4).div_ceil(PIXEL_MAX as usize)])
                .collect();
            format!("    |{cells}|\n")
        })
        .collect()
}

/// Writes the images side by side, each 16× enlarged, black on white, as a grayscale PNG.
fn write_png(images: &[Vec<u8>], path: &Path) -> Result<()> {
    const SCALE: usize = 16;
    let (w, h) = (IMAGE_SIDE * SCALE * images.len(), IMAGE_SIDE * SCALE);
    let mut pixels = vec![0u8; w * h];
    for (n, image) in images.iter().enumerate() {
        for y in 0..h {
            for x in 0..IMAGE_SIDE * SCALE {
                let level = image[(y / SCALE) * IMAGE_SIDE + x / SCALE] as u32;
                pixels[y * w + n * IMAGE_SIDE * SCALE + x] =
                    (255 - level * 255 / PIXEL_MAX as u32) as u8;
            }
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(())
}

async fn zkml(args: ZkmlArgs, cache: &Path) -> Result<()> {
    let started = Instant::now();
    // The model: the committed one, or a file that must hash to the committed hash.
    let expected = args
        .model_sha256
        .clone()
        .unwrap_or_else(committed_model_sha256);
    let model_bytes = match &args.model {
        None => MODEL.to_vec(),
        Some(path) => std::fs::read(path)
            .map_err(|e| BadInput(format!("cannot read model {}: {e}", path.display())))?,
    };
    let model_sha256 = hex::encode(model::sha256(&model_bytes));
    if model_sha256 != expected {
        return Err(BadInput(format!(
            "the model file hashes to {model_sha256}, but the committed model is {expected}: \
             refusing to prove with a model other than the committed one"
        ))
        .into());
    }
    let parsed = model::Model::parse(&model_bytes).map_err(|e| BadInput(format!("model: {e}")))?;

    // The images, with their labels where they come from the test set.
    let (images, labels): (Vec<Vec<u8>>, Vec<Option<u8>>) = match &args.image_file {
        Some(path) => (vec![read_image_file(path)?], vec![None]),
        None => {
            let set = test_set();
            if args.batch == 0 || args.image + args.batch > set.len() {
                return Err(BadInput(format!(
                    "the test set has images 0..{}; asked for {} from {}",
                    set.len(),
                    args.batch,
                    args.image
                ))
                .into());
            }
            set[args.image..args.image + args.batch]
                .iter()
                .map(|(image, label)| (image.to_vec(), Some(*label)))
                .unzip()
        }
    };
    let all_pixels: Vec<u8> = images.concat();

    // The host's reference answer: the same code the guest runs.
    let (answers, claim) =
        model::infer_batch(&model_bytes, &all_pixels).map_err(|e| BadInput(e.to_string()))?;
    eprintln!(
        "model     MLP {:?}, {} parameters, sha256 {model_sha256}",
        parsed.widths(),
        parsed.parameters()
    );
    eprintln!(
        "images    {} (sha256 {})",
        images.len(),
        hex::encode(model::sha256(&all_pixels))
    );
    for ((image, label), Inference { class, logits }) in images.iter().zip(&labels).zip(&answers) {
        eprint!("{}", render(image));
        eprintln!(
            "    predicted {class}{}   logits {logits:?}",
            label.map_or(String::new(), |l| format!(" (label {l})"))
        );
    }
    write_png(&images, &args.png)?;
    eprintln!("image written to {}", args.png.display());
    eprintln!(
        "claim     {} (what the proof must reveal)",
        hex::encode(claim)
    );

    // Prove through the pool. The guest reads the model and the images from its input.
    let scratch = tempfile::tempdir()?;
    let model_path = scratch.path().join("model.bin");
    let images_path = scratch.path().join("images.bin");
    std::fs::write(&model_path, &model_bytes)?;
    std::fs::write(&images_path, &all_pixels)?;
    let program = ProgramArgs {
        program: args.guest.clone(),
        inputs: vec![
            format!("file:{}", model_path.display()),
            format!("file:{}", images_path.display()),
        ],
        params: args.params.clone(),
    };
    if args.no_prove {
        let (program_image, input) = program.load(cache)?;
        let backend = openvm_backend(cache);
        let params = args.params.params();
        let run = tokio::task::spawn_blocking(move || backend.run(&program_image, &input, &params))
            .await??;
        anyhow::ensure!(
            run.public_values == claim,
            "the guest revealed {}, the host computed {}",
            hex::encode(&run.public_values),
            hex::encode(claim)
        );
        eprintln!(
            "guest executed {} instructions and revealed the same claim; not proving (--no-prove)",
            run.instructions
        );
        return Ok(());
    }
    prove::run(
        prove::ProveArgs::new(program.clone(), args.workers, args.output.clone()),
        cache,
    )
    .await?;

    // Check the proof: it verifies for the guest, and reveals exactly the host's claim.
    let (program_image, _) = program.load(cache)?;
    let proof = std::fs::read(&args.output)?;
    let backend = openvm_backend(cache);
    let verify_started = Instant::now();
    let verified =
        tokio::task::spawn_blocking(move || backend.verify_final(&program_image, &proof)).await??;
    anyhow::ensure!(
        verified.public_values == claim,
        "the proof reveals {}, not the host's claim {}",
        hex::encode(&verified.public_values),
        hex::encode(claim)
    );
    eprintln!(
        "proof {} verified in {:.0} ms; it reveals the claim, so it proves that the model \
         {model_sha256} classified these images as {:?}; {:.1} s in all",
        args.output.display(),
        verify_started.elapsed().as_secs_f64() * 1e3,
        answers.iter().map(|a| a.class).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
