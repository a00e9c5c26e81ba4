//! `plait reprove`: proves again, on a chosen device, a task whose proof a job kept
//! (`plait prove --keep-task-proofs DIR`), and says whether the new proof is byte for byte the
//! kept one. The GPU check uses it to compare OpenVM's GPU and CPU provers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use plait_core::{DeviceChoice, SegmentPlan, TaskGraph, TaskId, TaskKind};
use plait_prover::{openvm::OpenVmBackend, ProofBlob, ProverBackend, SegmentStart};

use crate::{exit::BadInput, program_arg::ProgramArgs};

#[derive(Args)]
pub struct ReproveArgs {
    #[command(flatten)]
    program: ProgramArgs,
    /// The folder the job kept its task proofs in.
    #[arg(long)]
    kept: PathBuf,
    /// The tasks to prove again (`task-N` file numbers).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    tasks: Vec<u32>,
    /// What to prove them on.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

pub async fn run(args: ReproveArgs, cache: &Path) -> Result<()> {
    let (program, input) = args.program.load(cache)?;
    let params = args.program.params()?;
    let read = |name: &str| {
        let path = args.kept.join(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let plan: SegmentPlan = serde_json::from_slice(&read("plan.json")?)
        .map_err(|e| BadInput(format!("plan.json: {e}")))?;
    let graph = TaskGraph::new(plan.segments.len() as u32, params.tree)?;
    let backend =
        OpenVmBackend::on_device(cache, args.device).map_err(|e| BadInput(e.to_string()))?;
    eprintln!("proving on {}", backend.device().describe());
    let mut differ = 0;
    for &n in &args.tasks {
        let task = TaskId(n);
        let kept = ProofBlob(read(&format!("{task}.proof"))?);
        let kind = graph
            .kind(task)
            .map_err(|_| BadInput(format!("the job has no {task}")))?;
        let started = std::time::Instant::now();
        let proof = match kind {
            TaskKind::ProveSegment { segment } => {
                let spec = plan.segments[segment as usize].clone();
                let last = segment as usize + 1 == plan.segments.len();
                // Nothing else runs in this command: proving on its thread blocks no one.
                backend
                    .prove_segment(
                        &program,
                        &params,
                        &spec,
                        last,
                        SegmentStart::Reexecute(&input),
                    )?
                    .0
            }
            TaskKind::Aggregate { layer, .. } => {
                let children = graph
                    .children(task)?
                    .iter()
                    .map(|c| read(&format!("{c}.proof")).map(ProofBlob))
                    .collect::<Result<Vec<_>>>()?;
                backend.aggregate(&params, layer, &children)?
            }
        };
        let same = proof == kept;
        differ += usize::from(!same);
        let first_difference = proof.0.iter().zip(&kept.0).position(|(a, b)| a != b);
        println!(
            "{task}: proven again in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            if same {
                format!("byte for byte the kept proof ({} bytes)", kept.0.len())
            } else {
                format!(
                    "differs from the kept proof ({} bytes against {}, first at byte {:?})",
                    proof.0.len(),
                    kept.0.len(),
                    first_difference
                )
            }
        );
    }
    if differ > 0 {
        anyhow::bail!("{differ} of {} proofs differ", args.tasks.len());
    }
    Ok(())
}
