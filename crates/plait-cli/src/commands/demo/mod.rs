//! `plait demo zkml`: the flagship. Proves that a committed model classified an image (or a
//! batch) through the embedded pool, and checks the proof; or, with `--no-prove`, executes the
//! guest (its claim must equal the host's) and plans the job on pools of this machine's kind.

mod data;
mod picture;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Result;
use clap::{Args, Subcommand};
use plait_core::planner::Goal;
use plait_prover::{ProverBackend, DEFAULT_MAX_INSTRUCTIONS};
use plait_zkml_model::{self as model, Classifier};

use super::{openvm_backend, planner, prove};
use crate::{
    exit::BadInput,
    program_arg::{ParamArgs, ProgramArgs},
};
use data::{ImageFormat, ModelName};

#[derive(Subcommand)]
pub enum DemoCommand {
    /// Prove a neural network's classification (zkML), through the local pool: a CNN or a
    /// vision transformer on Fashion-MNIST, or an MLP on 8×8 digits.
    Zkml(ZkmlArgs),
}

#[derive(Args)]
pub struct ZkmlArgs {
    /// The committed model: cnn (Fashion-MNIST, the flagship), vit (Fashion-MNIST, a small
    /// vision transformer) or mlp (8×8 digits: the small, fast example).
    #[arg(long, default_value = "cnn")]
    model: String,
    /// Which held-out test image to classify (Fashion-MNIST: 0 to 9,999; digits: 0 to 359).
    #[arg(long, default_value_t = 1)]
    image: usize,
    /// Classify this many consecutive test images, from `--image`, in one job.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Classify your own image instead: an 8-bit grayscale PNG of the model's side (28×28, or
    /// 8×8 for mlp; dark ink on light), its gray levels as text (whitespace- or
    /// comma-separated; 0..=255, or 0..=16 for mlp), or its raw bytes.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["image", "batch"])]
    image_file: Option<PathBuf>,
    /// Use this model file (it must hash to the committed model).
    #[arg(long, value_name = "FILE")]
    model_file: Option<PathBuf>,
    /// The model hash the proof must commit to (default: the committed model's).
    #[arg(long, value_name = "HEX")]
    model_sha256: Option<String>,
    /// The zkml guest (a package directory or ELF).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/zkml"))]
    guest: PathBuf,
    /// Local worker processes. One by default: a worker proving a height-20 segment of the
    /// CNN under rv32im-sha2 peaked at 21.9 GiB here (OpenVM estimates 5 GiB), local
    /// workers share the machine's memory, and one worker uses every core anyway.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// What the workers prove on: auto (a GPU if there is one), gpu or cpu.
    #[arg(long, default_value = "auto")]
    device: plait_core::DeviceChoice,
    #[command(flatten)]
    params: ParamArgs,
    /// Where to write the proof.
    #[arg(short, long, default_value = "zkml.proof")]
    output: PathBuf,
    /// Where to write the image(s) as a PNG, labelled with the predictions (at most the first
    /// 256 images of a batch).
    #[arg(long, default_value = "zkml.png")]
    png: PathBuf,
    /// Only execute (the guest must reveal the host's claim) and plan; do not prove.
    #[arg(long)]
    no_prove: bool,
    /// With --no-prove: the device profile to plan with (default: the one `plait calibrate`
    /// wrote; without one, the plan shows segments but no predictions).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// With --no-prove and a profile: plot the predicted latency and work on pools of these
    /// sizes, of workers like this machine, into this SVG.
    #[arg(long, default_value = "zkml-plan.svg")]
    plot: PathBuf,
    #[arg(long, default_value = "1,10,100,1000", value_delimiter = ',')]
    plot_pool_sizes: Vec<usize>,
    /// Print every accepted task's timings (and what was predicted for it) as JSON on stdout,
    /// as `plait prove --timings-json` does.
    #[arg(long)]
    timings_json: bool,
}

pub async fn run(command: DemoCommand, cache: &Path) -> Result<()> {
    match command {
        DemoCommand::Zkml(args) => zkml(args, cache).await,
    }
}

/// The model bytes: the committed ones, or a file that must hash to the committed hash.
fn load_model(args: &ZkmlArgs, name: ModelName) -> Result<(Vec<u8>, String)> {
    let expected = args
        .model_sha256
        .clone()
        .unwrap_or_else(|| name.committed_sha256());
    let bytes = match &args.model_file {
        None => name.committed_model().to_vec(),
        Some(path) => std::fs::read(path)
            .map_err(|e| BadInput(format!("cannot read model {}: {e}", path.display())))?,
    };
    let sha256 = hex::encode(model::sha256(&bytes));
    if sha256 != expected {
        return Err(BadInput(format!(
            "the model file hashes to {sha256}, but the committed {} model is {expected}: \
             refusing to prove with a model other than the committed one",
            args.model
        ))
        .into());
    }
    Ok((bytes, sha256))
}

/// The images, with their labels where they come from the test set.
fn load_images(args: &ZkmlArgs, name: ModelName) -> Result<(Vec<u8>, Vec<Option<u8>>)> {
    let format = name.format();
    if let Some(path) = &args.image_file {
        return Ok((data::read_image_file(path, format)?, vec![None]));
    }
    let set = name.test_set()?;
    let count = set.labels.len();
    if args.batch == 0 || args.image.saturating_add(args.batch) > count {
        return Err(BadInput(format!(
            "the {} test set has images 0..{count}; asked for {} from {}",
            args.model, args.batch, args.image
        ))
        .into());
    }
    let pixels = format.pixels();
    let images = set.images[args.image * pixels..(args.image + args.batch) * pixels].to_vec();
    let labels = set.labels[args.image..args.image + args.batch]
        .iter()
        .map(|&l| Some(l))
        .collect();
    Ok((images, labels))
}

/// Prints what the host's inference said: every image (up to 4) or a table (up to 32 rows),
/// and the accuracy where labels are known.
fn print_answers(
    images: &[u8],
    labels: &[Option<u8>],
    answers: &[model::Inference],
    format: ImageFormat,
    first: usize,
) {
    let pictures = answers.len() <= 4;
    let rows = images
        .chunks_exact(format.pixels())
        .zip(labels)
        .zip(answers);
    for (n, ((image, label), answer)) in rows.take(32).enumerate() {
        if pictures {
            eprint!("{}", picture::terminal(image, format));
        }
        let truth = label.map_or(String::new(), |l| {
            let mark = if l == answer.class { "right" } else { "WRONG" };
            format!("  (true: {}: {mark})", format.classes[l as usize])
        });
        eprintln!(
            "    image {:>5}: predicted {}{truth}{}",
            first + n,
            format.classes[answer.class as usize],
            if pictures {
                format!("\n    logits {:?}", answer.logits)
            } else {
                String::new()
            }
        );
    }
    if answers.len() > 32 {
        eprintln!("    … and {} more", answers.len() - 32);
    }
    let known: Vec<_> = labels
        .iter()
        .zip(answers)
        .filter_map(|(l, a)| l.map(|l| l == a.class))
        .collect();
    if known.len() > 1 {
        let right = known.iter().filter(|&&r| r).count();
        eprintln!(
            "    {right} of {} right ({:.2}%)",
            known.len(),
            100.0 * right as f64 / known.len() as f64
        );
    }
}

async fn zkml(mut args: ZkmlArgs, cache: &Path) -> Result<()> {
    let started = Instant::now();
    let name: ModelName = args.model.parse()?;
    let format = name.format();
    let (model_bytes, model_sha256) = load_model(&args, name)?;
    let classifier =
        Classifier::parse(&model_bytes).map_err(|e| BadInput(format!("model: {e}")))?;
    if !classifier.kind().eq_ignore_ascii_case(&args.model) {
        return Err(BadInput(format!(
            "the model file holds a {} model, not a {} one",
            classifier.kind(),
            args.model
        ))
        .into());
    }
    let (images, labels) = load_images(&args, name)?;
    // The whole Fashion-MNIST test set runs past the default instruction limit (2^36); unless
    // one was given, allow twice what this batch should take.
    if args.params.max_instructions == DEFAULT_MAX_INSTRUCTIONS {
        let expected = name.instructions_per_image() * labels.len() as u64
            + 100 * model_bytes.len() as u64
            + 10_000_000;
        args.params.max_instructions = DEFAULT_MAX_INSTRUCTIONS.max(2 * expected);
    }

    // The host's reference answer: the same code the guest runs.
    let host_started = Instant::now();
    let (answers, claim) =
        model::infer_batch(&model_bytes, &images).map_err(|e| BadInput(e.to_string()))?;
    let host_seconds = host_started.elapsed().as_secs_f64();
    let report = name.report();
    eprintln!(
        "model     {} ({}), {} parameters, sha256 {model_sha256}; quantized test accuracy {:.2}%",
        classifier.kind(),
        report["model"].as_str().unwrap_or(""),
        classifier.parameters(),
        100.0 * report["quantized_test_accuracy"].as_f64().unwrap_or(0.0)
    );
    eprintln!(
        "images    {} (sha256 {}); the host classified them in {:.3} s",
        answers.len(),
        hex::encode(model::sha256(&images)),
        host_seconds
    );
    let first = if args.image_file.is_some() {
        0
    } else {
        args.image
    };
    print_answers(&images, &labels, &answers, format, first);
    let labelled: Vec<_> = images
        .chunks_exact(format.pixels())
        .zip(&labels)
        .zip(&answers)
        .take(256)
        .map(|((pixels, &label), answer)| picture::Labelled {
            pixels,
            predicted: answer.class,
            label,
        })
        .collect();
    picture::write_png_grid(&labelled, format, &args.png)?;
    eprintln!("picture   {}", args.png.display());
    eprintln!(
        "claim     {} (what the proof must reveal)",
        hex::encode(claim)
    );

    // The guest reads the model and the images from its input.
    let scratch = tempfile::tempdir()?;
    let model_path = scratch.path().join("model.bin");
    let images_path = scratch.path().join("images.bin");
    std::fs::write(&model_path, &model_bytes)?;
    std::fs::write(&images_path, &images)?;
    let program = ProgramArgs {
        program: args.guest.clone(),
        inputs: vec![
            format!("file:{}", model_path.display()),
            format!("file:{}", images_path.display()),
        ],
        params: args.params.clone(),
    };
    if args.no_prove {
        return execute_and_plan(&args, &program, claim, cache).await;
    }
    let mut prove_args = prove::ProveArgs::new(
        program.clone(),
        args.workers,
        args.device,
        args.output.clone(),
    );
    prove_args.timings_json = args.timings_json;
    prove::run(prove_args, cache).await?;

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
    let classes: Vec<&str> = answers
        .iter()
        .map(|a| format.classes[a.class as usize])
        .collect();
    eprintln!(
        "proof {} verified in {:.0} ms; it reveals the claim, so it proves that the model \
         {model_sha256} classified these images as {classes:?}; {:.1} s in all",
        args.output.display(),
        verify_started.elapsed().as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--no-prove`: one metered execution of the guest, whose claim must be the host's; its
/// instructions and segments; and, with a device profile, the planner's table for this job and
/// its predicted latency and work on pools of `--plot-pool-sizes` workers of this machine.
async fn execute_and_plan(
    args: &ZkmlArgs,
    program: &ProgramArgs,
    claim: [u8; 32],
    cache: &Path,
) -> Result<()> {
    let build_started = Instant::now();
    let (program_image, input) = program.load(cache)?;
    eprintln!(
        "guest     {} ready in {:.1} s",
        args.guest.display(),
        build_started.elapsed().as_secs_f64()
    );
    let params = program.params()?;
    let profile = args.profile.clone().unwrap_or_else(|| {
        planner::default_profile_path(cache, params.vm_config, plait_core::DeviceKind::Cpu)
    });
    let backend = openvm_backend(cache);
    let execution_started = Instant::now();
    // The planner's candidate heights and this one; the guest executes once, at the lowest,
    // and the other heights' segments are predicted from that execution.
    let mut heights = vec![19, 20, 21, params.segment_height];
    heights.sort_unstable();
    heights.dedup();
    let pool_args =
        planner::PoolArgs::local(Some(profile.clone()), 1, heights.clone(), Goal::Latency);
    let pool = match profile.exists().then(|| pool_args.pool(cache, &params)) {
        None => None,
        Some(Ok(pool)) => Some(pool),
        Some(Err(e)) if args.profile.is_some() => return Err(e),
        // The default profile is only a bonus here: one an older or newer Plait wrote, or one
        // from another VM config, must not stop the demo from executing and checking the claim.
        Some(Err(e)) => {
            eprintln!("warning   not predicting this job: {e:#}");
            None
        }
    };
    let (plan, height, planned) = if let Some(pool) = pool {
        let candidates = plait_coordinator::planning::candidates(
            backend,
            &program_image,
            &input,
            params,
            &heights,
            &pool,
            pool_args.sim_config(0.0),
        )
        .await?;
        let (candidate, plan) = candidates
            .iter()
            .find(|(c, _)| c.predicted_from.is_none())
            .expect("the lowest height is executed");
        let height = candidate.segment_height;
        (plan.clone(), height, Some((candidates, pool, pool_args)))
    } else {
        let plan = tokio::task::spawn_blocking(move || {
            backend.prepare_keys(&params)?;
            backend.execute(&program_image, &input, &params)
        })
        .await??;
        (plan, params.segment_height, None)
    };
    anyhow::ensure!(
        plan.public_values == claim,
        "the guest revealed {}, the host computed {}",
        hex::encode(&plan.public_values),
        hex::encode(claim)
    );
    eprintln!(
        "guest     executed {} instructions in {:.1} s and revealed the host's claim: {} \
         segments at segment height {}; not proving (--no-prove)",
        plan.total_insns(),
        execution_started.elapsed().as_secs_f64(),
        plan.segments.len(),
        height
    );
    match planned {
        Some((candidates, pool, pool_args)) => {
            let candidates: Vec<_> = candidates.into_iter().map(|(c, _)| c).collect();
            planner::print_table(&candidates, 1);
            planner::plot(
                &candidates,
                &pool,
                &pool_args,
                params.tree,
                &args.plot_pool_sizes,
                &args.plot,
            )?;
            eprintln!(
                "plot      {}: predicted latency and work on pools of {:?} workers like this one",
                args.plot.display(),
                args.plot_pool_sizes
            );
        }
        None => eprintln!(
            "no usable device profile at {}: run `plait calibrate --vm-config {}` to see this \
             job's predicted latency and work on pools of 1 to 1000 workers",
            profile.display(),
            params.vm_config
        ),
    }
    Ok(())
}
