//! `plait execute`: run the program once and print the segment plan and aggregation tree.

use std::{path::Path, time::Instant};

use anyhow::Result;
use clap::Args;
use plait_core::AggTree;
use plait_prover::ProverBackend;

use super::openvm_backend;
use crate::program_arg::ProgramArgs;

#[derive(Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    program: ProgramArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ExecuteArgs, cache: &Path) -> Result<()> {
    let (program, input) = args.program.load(cache)?;
    let params = args.program.params.params();
    let backend = openvm_backend(cache);
    let keys = {
        let backend = backend.clone();
        tokio::task::spawn_blocking(move || backend.prepare_keys(&params)).await??
    };
    let started = Instant::now();
    let plan = {
        let (program, input) = (program.clone(), input.clone());
        tokio::task::spawn_blocking(move || backend.execute(&program, &input, &params)).await??
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
            })).collect::<Vec<_>>(),
            "aggregation-layers": layers,
            "public-values": hex::encode(&plan.public_values),
            "execute-seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    eprintln!("{keys}");
    println!("program   sha256 {}", program.digest);
    println!(
        "executed  {} instructions in {seconds:.2} s (planning, incl. boundary states)",
        plan.total_insns()
    );
    println!(
        "segments  {} at segment height {}",
        plan.segments.len(),
        params.segment_height
    );
    println!(
        "  {:>5}  {:>12}  {:>12}  {:>14}",
        "index", "start", "instructions", "est. memory"
    );
    for s in &plan.segments {
        println!(
            "  {:>5}  {:>12}  {:>12}  {:>10.2} GiB",
            s.index,
            s.instret_start,
            s.num_insns,
            s.memory_estimate_bytes as f64 / (1u64 << 30) as f64
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
