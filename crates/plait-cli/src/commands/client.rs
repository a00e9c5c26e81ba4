//! Client commands for a running coordinator: submit, list, status, events, fetch, pause,
//! resume, cancel, retry, programs. Each prints JSON with `--json`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Args;
use plait_api::{
    ApiErrorBody, JobEventBody, JobStatusResponse, SubmitJobRequest, SubmitJobResponse,
    UploadProgramResponse,
};
use plait_core::planner::Goal;

use crate::{
    exit::{BadInput, ProvingFailed},
    program_arg::ProgramArgs,
};

#[derive(Args, Clone)]
pub struct Connection {
    /// The coordinator's base URL.
    #[arg(
        long,
        env = "PLAIT_COORDINATOR",
        default_value = "http://127.0.0.1:7878"
    )]
    coordinator: String,
    /// The client token.
    #[arg(long, env = "PLAIT_CLIENT_TOKEN")]
    token: String,
    /// CA certificate (PEM) to trust for an https:// coordinator, besides the system's.
    #[arg(long, env = "PLAIT_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

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

/// Refusals for the request's own fault (4xx) are bad input (exit code 3).
async fn checked(response: reqwest::Response) -> Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let message = match response.json::<ApiErrorBody>().await {
        Ok(body) => format!(
            "coordinator refused ({status} {}): {}",
            body.code, body.message
        ),
        Err(_) => format!("coordinator refused ({status})"),
    };
    if status.is_client_error() {
        Err(BadInput(message).into())
    } else {
        bail!(message)
    }
}

impl Connection {
    pub fn new(coordinator: &str, token: &str) -> Self {
        Self {
            coordinator: coordinator.into(),
            token: token.into(),
            ca_cert: None,
        }
    }

    pub fn with_ca(coordinator: &str, token: &str, ca_cert: Option<&Path>) -> Self {
        Self {
            ca_cert: ca_cert.map(Path::to_path_buf),
            ..Self::new(coordinator, token)
        }
    }

    /// An HTTP client that trusts `--ca-cert` besides the system's roots.
    pub fn http(&self) -> Result<reqwest::Client> {
        plait_worker::http_client(self.ca_cert.as_deref()).map_err(|e| match e {
            e @ plait_worker::ClientError::CaCert { .. } => BadInput(e.to_string()).into(),
            e => e.into(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.coordinator.trim_end_matches('/'))
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request
            .header("authorization", format!("Bearer {}", self.token))
            .send()
            .await
            .with_context(|| format!("reaching the coordinator at {}", self.coordinator))?;
        checked(response).await
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self
            .send(self.http()?.get(self.url(path)))
            .await?
            .json()
            .await?)
    }
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

pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
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

/// Every job of the connection's client, oldest first, read a page at a time.
pub async fn all_jobs(connection: &Connection) -> Result<Vec<JobStatusResponse>> {
    let limit = plait_api::JobsQuery::MAX_LIMIT;
    let mut jobs: Vec<JobStatusResponse> = Vec::new();
    loop {
        let mut path = format!("/jobs?limit={limit}");
        if let Some(oldest) = jobs.last() {
            path += &format!("&before={}", oldest.job_id.0);
        }
        let page: Vec<JobStatusResponse> = connection.get_json(&path).await?;
        // Each page must go on below the last: a coordinator that sent the same page again
        // would otherwise keep this loop asking forever.
        let below = jobs.last().map_or(u64::MAX, |oldest| oldest.job_id.0);
        if page.windows(2).any(|w| w[1].job_id.0 >= w[0].job_id.0)
            || page.first().is_some_and(|first| first.job_id.0 >= below)
        {
            bail!("the coordinator's job list is not in descending order of job number");
        }
        let last_page = page.len() < limit;
        jobs.extend(page);
        if last_page {
            jobs.reverse();
            return Ok(jobs);
        }
    }
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
