//! Client commands for a running coordinator: submit, list, status, events, fetch, pause,
//! resume, cancel, retry, programs. Each prints JSON with `--json`.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use plait_api::{
    JobEventBody, JobStatusResponse, SubmitJobRequest, SubmitJobResponse, UploadProgramResponse,
};
use plait_core::planner::Goal;

use crate::{
    connection::{print_json, Connection},
    exit::{BadInput, ProvingFailed},
    program_arg::ProgramArgs,
};

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    program: ProgramArgs,
    #[command(flatten)]
    connection: Connection,
    /// `auto`: the coordinator chooses the segment height for `--goal` from its device
    /// profiles (instead of `--segment-height`).
    #[arg(long, value_name = "auto")]
    segment_size: Option<String>,
    /// Within this client's share of the pool, jobs of higher priority are served first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// What `--segment-size auto` optimizes: latency, cost or deadline=SECONDS.
    #[arg(long, default_value = "latency")]
    goal: Goal,
    /// Wait for the job and write its proof here.
    #[arg(long, value_name = "PROOF")]
    wait: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

/// A command about one job.
#[derive(Args)]
pub struct JobArgs {
    /// The job's number (as `submit` printed it; `job-7` or `7`).
    #[arg(value_parser = parse_job)]
    job: u64,
    #[command(flatten)]
    connection: Connection,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Where to write the proof.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    /// The most jobs to list, newest first (the coordinator sends at most 1,000 at a time).
    #[arg(long, default_value_t = plait_api::JobsQuery::DEFAULT_LIMIT)]
    limit: usize,
    /// Only jobs older than this one (job-N or N): the next page.
    #[arg(long, value_parser = parse_job)]
    before: Option<u64>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ProgramsArgs {
    #[command(subcommand)]
    command: ProgramsCommand,
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum ProgramsCommand {
    /// The programs this client keeps on the coordinator, with their sizes (its quota counts
    /// them).
    List,
    /// Stop keeping a program (its jobs run on); the coordinator drops it once no client
    /// keeps it and no job names it.
    Delete {
        /// The program's SHA-256 (as `plait programs list` shows it).
        sha256: String,
    },
}

pub async fn programs(args: ProgramsArgs) -> Result<()> {
    let c = &args.connection;
    match args.command {
        ProgramsCommand::List => {
            let programs: Vec<plait_api::ProgramRecord> = c.get_json("/programs").await?;
            if args.json {
                return print_json(&programs);
            }
            for p in &programs {
                println!("{}  {:>12} bytes", p.program_sha256, p.bytes);
            }
            let total: u64 = programs.iter().map(|p| p.bytes).sum();
            eprintln!("{} programs, {total} bytes", programs.len());
        }
        ProgramsCommand::Delete { sha256 } => {
            let http = c.http()?;
            c.send(http.delete(c.url(&format!("/programs/{sha256}"))))
                .await?;
            eprintln!("program {sha256}: deleted");
        }
    }
    Ok(())
}

fn parse_job(text: &str) -> Result<u64, String> {
    text.trim_start_matches("job-")
        .parse()
        .map_err(|_| format!("{text:?} is not a job id (expected job-N or N)"))
}

async fn fetch_status(c: &Connection, job: u64) -> Result<JobStatusResponse> {
    c.get_json(&format!("/jobs/{job}")).await
}

async fn download_proof(c: &Connection, job: u64, output: &std::path::Path) -> Result<()> {
    let http = c.http()?;
    let proof = c
        .send(http.get(c.url(&format!("/jobs/{job}/proof"))))
        .await?
        .bytes()
        .await?;
    std::fs::write(output, &proof).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("proof of job-{job} written to {}", output.display());
    Ok(())
}

pub async fn submit(args: SubmitArgs, cache: &std::path::Path) -> Result<()> {
    let auto = match args.segment_size.as_deref() {
        None => None,
        Some("auto") => Some(args.goal),
        Some(other) => {
            return Err(BadInput(format!(
                "--segment-size {other:?}: only `auto` (or use --segment-height)"
            ))
            .into())
        }
    };
    let (program, input) = args.program.load(cache)?;
    let c = &args.connection;
    let http = c.http()?;
    let uploaded: UploadProgramResponse = c
        .send(
            http.post(c.url("/programs"))
                .body(program.bytes.as_ref().clone()),
        )
        .await
        .context("uploading the program")?
        .json()
        .await?;
    let request = SubmitJobRequest {
        program_sha256: uploaded.program_sha256,
        input,
        params: args.program.params()?,
        auto_segment_height: auto,
        priority: args.priority,
    };
    let submitted: SubmitJobResponse = c
        .send(http.post(c.url("/jobs")).json(&request))
        .await
        .context("submitting the job")?
        .json()
        .await?;
    if args.json {
        println!("{}", serde_json::to_string(&submitted)?);
    } else {
        println!(
            "{} submitted at segment height {}; its program executes while it is proven",
            submitted.job_id, submitted.segment_height
        );
    }
    let Some(output) = args.wait else {
        return Ok(());
    };
    loop {
        let status = fetch_status(c, submitted.job_id.0).await?;
        match status.state.as_str() {
            "succeeded" => break,
            "failed" | "cancelled" => {
                let message = format!(
                    "{} {}: {}",
                    submitted.job_id,
                    status.state,
                    status.failure.as_deref().unwrap_or_default()
                );
                // A program that fails to execute is bad input, not a proving failure.
                return Err(if status.execution_failed {
                    BadInput(message).into()
                } else {
                    ProvingFailed(message).into()
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    download_proof(c, submitted.job_id.0, &output).await
}

fn print_status(status: &JobStatusResponse) {
    println!(
        "{}: {} after {:.1} s{}",
        status.job_id,
        status.state,
        status.elapsed_seconds,
        status
            .failure
            .as_ref()
            .map(|f| format!(" ({})", plait_core::text::printable(f)))
            .unwrap_or_default()
    );
    for (phase, done, total) in &status.phases {
        println!("  {phase:<22} {done}/{total}");
    }
    if let Some(waiting) = &status.waiting_for_memory {
        println!("  waiting: {waiting}");
    }
    if status.executing {
        println!("  executing: {} instructions so far", status.instructions);
    } else if status.instructions > 0 {
        println!(
            "  {} instructions; workers re-executed {} to reach their segments ({:.2}× the \
             program executed in all)",
            status.instructions,
            status.reexecuted_instructions,
            (status.instructions + status.reexecuted_instructions) as f64
                / status.instructions as f64
        );
    }
    if let Some(p) = &status.prediction {
        println!(
            "  segment height {}; predicted on {} worker(s){}",
            status.segment_height,
            p.workers,
            p.reason
                .as_ref()
                .map(|r| format!(
                    ", chosen for {}: {r}",
                    p.goal.map_or(String::new(), |g| g.to_string())
                ))
                .unwrap_or_default()
        );
        for line in super::planner::prediction_table(p, status.measured.as_ref()).lines() {
            println!("  {line}");
        }
    }
}

pub async fn status(args: JobArgs) -> Result<()> {
    let status = fetch_status(&args.connection, args.job).await?;
    if args.json {
        return print_json(&status);
    }
    print_status(&status);
    Ok(())
}

pub async fn list(args: ListArgs) -> Result<()> {
    let mut path = format!("/jobs?limit={}", args.limit);
    if let Some(before) = args.before {
        path += &format!("&before={before}");
    }
    let jobs: Vec<JobStatusResponse> = args.connection.get_json(&path).await?;
    if args.json {
        return print_json(&jobs);
    }
    for status in &jobs {
        print_status(status);
    }
    Ok(())
}

pub async fn events(args: JobArgs) -> Result<()> {
    let events: Vec<JobEventBody> = args
        .connection
        .get_json(&format!("/jobs/{}/events", args.job))
        .await?;
    if args.json {
        return print_json(&events);
    }
    for e in events {
        // Escaped again here: a store written before reasons were escaped may still hold
        // line breaks or terminal escapes a worker sent.
        let message = plait_core::text::printable(&e.message);
        println!("[{:>8.1} s] {message}", e.at_seconds);
    }
    Ok(())
}

pub async fn fetch(args: FetchArgs) -> Result<()> {
    download_proof(&args.job.connection, args.job.job, &args.output).await
}

/// `pause`, `resume`, `cancel`, `retry`.
pub async fn act(args: JobArgs, action: &str) -> Result<()> {
    let c = &args.connection;
    let http = c.http()?;
    let status: JobStatusResponse = c
        .send(http.post(c.url(&format!("/jobs/{}/{action}", args.job))))
        .await?
        .json()
        .await?;
    if args.json {
        return print_json(&status);
    }
    print_status(&status);
    Ok(())
}
