//! `plait workers`: the operator's view of a coordinator's workers: list them, issue and
//! revoke per-worker credentials (a closed pool's way in), ban and unban, and see or forget
//! the memory needs learned from their measurements.

use anyhow::Result;
use clap::{Args, Subcommand};
use plait_api::{
    BanWorkerRequest, IssueWorkerRequest, IssueWorkerResponse, MemoryNeedRecord, WorkerRecord,
};

use crate::connection::Connection;

#[derive(Args)]
pub struct WorkersArgs {
    #[command(subcommand)]
    command: WorkersCommand,
    #[command(flatten)]
    operator: OperatorArgs,
}

/// How the operator's commands (`plait workers`, `plait clients`) reach the coordinator.
#[derive(Args)]
pub struct OperatorArgs {
    /// The coordinator's base URL.
    #[arg(
        long,
        global = true,
        env = "PLAIT_COORDINATOR",
        default_value = "http://127.0.0.1:7878"
    )]
    coordinator: String,
    /// The operator token (`plait serve --operator-token`).
    #[arg(long, global = true, env = "PLAIT_OPERATOR_TOKEN", default_value = "")]
    operator_token: String,
    /// CA certificate (PEM) to trust for an https:// coordinator, besides the system's.
    #[arg(long, global = true, env = "PLAIT_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

impl OperatorArgs {
    pub fn connection(&self) -> Connection {
        Connection::with_ca(
            &self.coordinator,
            &self.operator_token,
            self.ca_cert.as_deref(),
        )
    }
}

#[derive(Subcommand)]
enum WorkersCommand {
    /// List every worker identity: origin, liveness, memory, leases, rejections, ban.
    List,
    /// Issue a credential for a new worker (printed once; the coordinator keeps its hash).
    Issue { worker_id: String },
    /// Revoke a worker's credential: its calls are refused from now on.
    Revoke { worker_id: String },
    /// Ban a worker: it gets no more work and its calls are refused.
    Ban {
        worker_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a worker's ban (and clear its rejection count).
    Unban { worker_id: String },
    /// List the memory needs learned from workers' measured peaks (tasks go only to workers
    /// with that much memory).
    Needs,
    /// Forget every learned memory need: tasks go by the operator's profiles or the backend's
    /// estimate until workers report again.
    ResetNeeds,
}

pub async fn run(args: WorkersArgs) -> Result<()> {
    let c = args.operator.connection();
    let http = c.http()?;
    let json = args.operator.json;
    match args.command {
        WorkersCommand::List => {
            let workers: Vec<WorkerRecord> = c
                .send(http.get(c.url("/admin/workers")))
                .await?
                .json()
                .await?;
            if json {
                return crate::connection::print_json(&workers);
            }
            println!(
                "{:<32} {:<10} {:<5} {:>8} {:<28} {:>6} {:>10}  ban",
                "worker", "origin", "live", "memory", "proves on", "leases", "rejections"
            );
            for w in workers {
                let device = w.proves_on.as_ref().map_or("-".into(), |d| d.describe());
                println!(
                    "{:<32} {:<10} {:<5} {:>7.1}G {device:<28} {:>6} {:>10}  {}",
                    w.worker_id,
                    w.origin,
                    if w.live { "yes" } else { "no" },
                    w.memory_bytes as f64 / (1u64 << 30) as f64,
                    w.leases,
                    w.rejections,
                    w.ban
                        .map(|b| format!("by {}: {}", b.by, b.reason))
                        .unwrap_or_default()
                );
            }
        }
        WorkersCommand::Issue { worker_id } => {
            let issued: IssueWorkerResponse = c
                .send(
                    http.post(c.url("/admin/workers"))
                        .json(&IssueWorkerRequest { worker_id }),
                )
                .await?
                .json()
                .await?;
            if json {
                return crate::connection::print_json(&issued);
            }
            eprintln!(
                "worker {}: start it with `plait worker --token <this token>` (shown once)",
                issued.worker_id
            );
            println!("{}", issued.token);
        }
        WorkersCommand::Revoke { worker_id } => {
            c.send(http.delete(c.url(&format!("/admin/workers/{worker_id}"))))
                .await?;
            eprintln!("worker {worker_id}: credential revoked");
        }
        WorkersCommand::Ban { worker_id, reason } => {
            c.send(
                http.post(c.url(&format!("/admin/workers/{worker_id}/ban")))
                    .json(&BanWorkerRequest { reason }),
            )
            .await?;
            eprintln!("worker {worker_id}: banned");
        }
        WorkersCommand::Unban { worker_id } => {
            c.send(http.post(c.url(&format!("/admin/workers/{worker_id}/unban"))))
                .await?;
            eprintln!("worker {worker_id}: ban lifted");
        }
        WorkersCommand::Needs => {
            let needs: Vec<MemoryNeedRecord> = c
                .send(http.get(c.url("/admin/memory-needs")))
                .await?
                .json()
                .await?;
            if json {
                return crate::connection::print_json(&needs);
            }
            println!(
                "{:<14} {:>6} {:<22} {:>10}  from",
                "vm config", "height", "phase", "need"
            );
            for n in needs {
                println!(
                    "{:<14} {:>6} {:<22} {:>9.2}G  {}",
                    n.key_set.vm_config.name(),
                    n.key_set.segment_height,
                    n.phase,
                    n.need_bytes as f64 / (1u64 << 30) as f64,
                    match n.reporters {
                        0 => "stored before a restart".to_string(),
                        k => format!("{k} workers' peaks"),
                    }
                );
            }
        }
        WorkersCommand::ResetNeeds => {
            c.send(http.delete(c.url("/admin/memory-needs"))).await?;
            eprintln!("learned memory needs forgotten");
        }
    }
    Ok(())
}
