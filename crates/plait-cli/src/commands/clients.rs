//! `plait clients`: the operator issues, lists and revokes client credentials. Each client
//! sees only its own jobs, within its limits, and shares the pool with the others by weight.

use anyhow::Result;
use clap::{Args, Subcommand};
use plait_api::{ClientLimits, ClientRecord, IssueClientRequest, IssueClientResponse};

use super::workers::OperatorArgs;

#[derive(Args)]
pub struct ClientsArgs {
    #[command(subcommand)]
    command: ClientsCommand,
    #[command(flatten)]
    operator: OperatorArgs,
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// List the clients: limits, weight, jobs in flight and leases held now.
    List,
    /// Issue a credential for a new client (printed once; the coordinator keeps its hash).
    Issue {
        client_id: String,
        /// Jobs it may have in flight at once (default: no limit).
        #[arg(long)]
        max_jobs: Option<u32>,
        /// Instructions one of its jobs may execute at most (default: no limit).
        #[arg(long)]
        max_instructions: Option<u64>,
        /// Bytes of programs it may keep on the coordinator (default: no limit).
        #[arg(long)]
        max_program_bytes: Option<u64>,
        /// Bytes of input one of its jobs may carry (default: no limit beyond the upload limit).
        #[arg(long)]
        max_input_bytes: Option<u64>,
        /// Its share of the pool against other clients' (1 to 1000).
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Revoke a client's credential: its calls are refused from now on (its jobs run on).
    Revoke { client_id: String },
}

pub async fn run(args: ClientsArgs) -> Result<()> {
    let c = args.operator.connection();
    let http = c.http()?;
    match args.command {
        ClientsCommand::List => {
            let clients: Vec<ClientRecord> = c
                .send(http.get(c.url("/admin/clients")))
                .await?
                .json()
                .await?;
            if args.operator.json {
                return crate::connection::print_json(&clients);
            }
            println!(
                "{:<24} {:>6} {:>9} {:>16} {:>8} {:>6} {:>14} {:>14} {:>15}",
                "client",
                "weight",
                "max jobs",
                "max instructions",
                "in flight",
                "leases",
                "program bytes",
                "max prog bytes",
                "max input bytes"
            );
            let or_none = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for client in clients {
                println!(
                    "{:<24} {:>6} {:>9} {:>16} {:>8} {:>6} {:>14} {:>14} {:>15}",
                    client.client_id,
                    client.limits.weight,
                    or_none(client.limits.max_jobs_in_flight.map(|n| n.to_string())),
                    or_none(client.limits.max_instructions.map(|n| n.to_string())),
                    client.jobs_in_flight,
                    client.leases,
                    client.program_bytes,
                    or_none(client.limits.max_program_bytes.map(|n| n.to_string())),
                    or_none(client.limits.max_input_bytes.map(|n| n.to_string())),
                );
            }
        }
        ClientsCommand::Issue {
            client_id,
            max_jobs,
            max_instructions,
            max_program_bytes,
            max_input_bytes,
            weight,
        } => {
            let request = IssueClientRequest {
                client_id,
                limits: ClientLimits {
                    max_jobs_in_flight: max_jobs,
                    max_instructions,
                    max_program_bytes,
                    max_input_bytes,
                    weight,
                },
            };
            let issued: IssueClientResponse = c
                .send(http.post(c.url("/admin/clients")).json(&request))
                .await?
                .json()
                .await?;
            if args.operator.json {
                return crate::connection::print_json(&issued);
            }
            eprintln!(
                "client {}: it submits with `plait submit --token <this token>` (shown once)",
                issued.client_id
            );
            println!("{}", issued.token);
        }
        ClientsCommand::Revoke { client_id } => {
            c.send(http.delete(c.url(&format!("/admin/clients/{client_id}"))))
                .await?;
            eprintln!("client {client_id}: credential revoked");
        }
    }
    Ok(())
}
