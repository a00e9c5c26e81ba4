//! `plait execute`: run the program once and print the segment plan and aggregation tree.

use std::{path::Path, time::Instant};

use anyhow::Result;
use clap::Args;
use plait_core::{AggTree, JobId};
use plait_prover::{openvm::checkpoint_raw_size, ProverBackend};

use super::openvm_backend;
use crate::program_arg::ProgramArgs;

#[derive(Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    program: ProgramArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Run the program to its end without cutting segments, recording boundaries or
    /// checkpoints: plain execution, to compare planning with.
    #[arg(long, conflicts_with_all = ["checkpoints", "json"])]
    plain: bool,
    /// Also save every segment's start-state checkpoint (as a job would, but in memory only)
    /// and report their sizes, raw and compressed.
    #[arg(long)]
    checkpoints: bool,
}

/// Sizes of the checkpoints an execution produced.
#[derive(Default)]
struct CheckpointSizes {
    count: u64,
    compressed: u64,
    raw: u64,
    largest_compressed: u64,
}

pub async fn run(args: ExecuteArgs, cache: &Path) -> Result<()> {
    let (program, input) = args.program.load(cache)?;
    let params = args.program.params()?;
    let backend = openvm_backend(cache);
    let keys = {
        let (backend, program) = (backend.clone(), program.clone());
        tokio::task::spawn_blocking(move || {
            let keys = backend.prepare_keys(&params)?;
            let started = Instant::now();
            backend.prepare_program(&program, &params)?;
            anyhow::Ok(format!(
                "{keys}\nprogram loaded in {:.2} s",
                started.elapsed().as_secs_f64()
            ))
        })
        .await??
    };
    if args.plain {
        let started = Instant::now();
        let outcome =
            tokio::task::spawn_blocking(move || backend.run(&program, &input, &params)).await??;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("{keys}");
        println!(
            "ran       {} instructions in {seconds:.2} s ({:.1}M instructions/s; plain execution)",
            outcome.instructions,
            outcome.instructions as f64 / seconds / 1e6
        );
        println!("public    {}", hex::encode(&outcome.public_values));
        return Ok(());
    }
    let started = Instant::now();
    let with_checkpoints = args.checkpoints;
    let (plan, sizes) = {
        let (program, input) = (program.clone(), input.clone());
        tokio::task::spawn_blocking(move || {
            let mut sizes = CheckpointSizes::default();
            let job = with_checkpoints.then_some(JobId(0));
            let plan = backend.execute_streaming(&program, &input, &params, job, &mut |cut| {
                if let Some(blob) = cut.checkpoint {
                    sizes.count += 1;
                    sizes.compressed += blob.len() as u64;
                    sizes.largest_compressed = sizes.largest_compressed.max(blob.len() as u64);
                    sizes.raw += checkpoint_raw_size(&blob).unwrap_or(0);
                }
                Ok(())
            })?;
            anyhow::Ok((plan, sizes))
        })
        .await??
    };
    let seconds = started.elapsed().as_secs_f64();
    let tree = AggTree::plan(plan.segments.len() as u32, params.tree)?;
    if args.json {
        let layers: Vec<(String, usize)> = tree
            .layers
            .iter()
            .map(|l| (l[0].layer.to_string(), l.len()))
            .collect();
        let out = serde_json::json!({
            "program-sha256": program.digest,
            "segment-height": params.segment_height,
            "total-instructions": plan.total_insns(),
            "segments": plan.segments.iter().map(|s| serde_json::json!({
                "index": s.index,
                "instret-start": s.instret_start,
                "instructions": s.num_insns,
                "memory-estimate-bytes": s.memory_estimate_bytes,
                "trace-size": s.trace_size,
            })).collect::<Vec<_>>(),
            "aggregation-layers": layers,
            "public-values": hex::encode(&plan.public_values),
            "execute-seconds": seconds,
            "max-instructions": params.max_instructions,
            "checkpoints": with_checkpoints.then(|| serde_json::json!({
                "count": sizes.count,
                "compressed-bytes": sizes.compressed,
                "raw-bytes": sizes.raw,
                "largest-compressed-bytes": sizes.largest_compressed,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    eprintln!("{keys}");
    println!("program   sha256 {}", program.digest);
    println!(
        "executed  {} instructions in {seconds:.2} s (planning, incl. boundary states{})",
        plan.total_insns(),
        if with_checkpoints {
            " and checkpoints"
        } else {
            ""
        }
    );
    println!(
        "limit     {:.4}% of the instruction limit ({})",
        100.0 * plan.total_insns() as f64 / params.max_instructions as f64,
        params.max_instructions
    );
    if with_checkpoints && sizes.count > 0 {
        println!(
            "checkpoints {} : {:.1} KiB per segment compressed ({:.1} KiB raw), largest {:.1} KiB",
            sizes.count,
            sizes.compressed as f64 / sizes.count as f64 / 1024.0,
            sizes.raw as f64 / sizes.count as f64 / 1024.0,
            sizes.largest_compressed as f64 / 1024.0
        );
    }
    println!(
        "segments  {} at segment height {}",
        plan.segments.len(),
        params.segment_height
    );
    println!(
        "  {:>5}  {:>12}  {:>12}  {:>14}  {:>12}  {:>12}",
        "index", "start", "instructions", "est. memory", "main cells", "logup cells"
    );
    for s in &plan.segments {
        let size = s.trace_size.unwrap_or_default();
        println!(
            "  {:>5}  {:>12}  {:>12}  {:>10.2} GiB  {:>11.1}M  {:>11.1}M",
            s.index,
            s.instret_start,
            s.num_insns,
            s.memory_estimate_bytes as f64 / (1u64 << 30) as f64,
            size.main_cells as f64 / 1e6,
            size.logup_cells as f64 / 1e6,
        );
    }
    println!(
        "tree      {} aggregation nodes (leaf takes {}, internal takes {})",
        tree.num_nodes(),
        params.tree.num_children_leaf,
        params.tree.num_children_internal
    );
    for layer in &tree.layers {
        println!(
            "  {:<22} {} node(s)",
            layer[0].layer.to_string(),
            layer.len()
        );
    }
    println!("public    {}", hex::encode(&plan.public_values));
    Ok(())
}
