//! Client commands for a running coordinator: `plait submit`, `plait status`.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Args;
use plait_api::{
    ApiErrorBody, JobStatusResponse, SubmitJobRequest, SubmitJobResponse, UploadProgramResponse,
};

use crate::{exit::ProvingFailed, program_arg::ProgramArgs};

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
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    program: ProgramArgs,
    #[command(flatten)]
    connection: Connection,
    /// Wait for the job and write its proof here.
    #[arg(long, value_name = "PROOF")]
    wait: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The job's number (as `submit` printed it).
    job: u64,
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    json: bool,
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    match response.json::<ApiErrorBody>().await {
        Ok(body) => bail!(
            "coordinator refused ({status} {}): {}",
            body.code,
            body.message
        ),
        Err(_) => bail!("coordinator refused ({status})"),
    }
}

impl Connection {
    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.coordinator.trim_end_matches('/'))
    }
    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

async fn fetch_status(
    http: &reqwest::Client,
    c: &Connection,
    job: u64,
) -> Result<JobStatusResponse> {
    let response = http
        .get(c.url(&format!("/jobs/{job}")))
        .header("authorization", c.auth())
        .send()
        .await?;
    Ok(checked(response).await?.json().await?)
}

pub async fn submit(args: SubmitArgs, cache: &std::path::Path) -> Result<()> {
    let (program, input) = args.program.load(cache)?;
    let c = &args.connection;
    let http = reqwest::Client::new();
    let response = http
        .post(c.url("/programs"))
        .header("authorization", c.auth())
        .body(program.bytes.as_ref().clone())
        .send()
        .await
        .context("uploading the program")?;
    let uploaded: UploadProgramResponse = checked(response).await?.json().await?;
    let request = SubmitJobRequest {
        program_sha256: uploaded.program_sha256,
        input,
        params: args.program.params.params(),
    };
    let response = http
        .post(c.url("/jobs"))
        .header("authorization", c.auth())
        .json(&request)
        .send()
        .await
        .context("submitting the job")?;
    let submitted: SubmitJobResponse = checked(response).await?.json().await?;
    if args.json {
        println!("{}", serde_json::to_string(&submitted)?);
    } else {
        println!(
            "{} submitted: {} segments",
            submitted.job_id, submitted.segments
        );
    }
    let Some(output) = args.wait else {
        return Ok(());
    };
    loop {
        let status = fetch_status(&http, c, submitted.job_id.0).await?;
        match status.state.as_str() {
            "succeeded" => break,
            "failed" => {
                return Err(ProvingFailed(format!(
                    "{} failed: {}",
                    submitted.job_id,
                    status.failure.unwrap_or_default()
                ))
                .into())
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let response = http
        .get(c.url(&format!("/jobs/{}/proof", submitted.job_id.0)))
        .header("authorization", c.auth())
        .send()
        .await?;
    let proof = checked(response).await?.bytes().await?;
    std::fs::write(&output, &proof).with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "proof of {} written to {}",
        submitted.job_id,
        output.display()
    );
    Ok(())
}

pub async fn status(args: StatusArgs) -> Result<()> {
    let status = fetch_status(&reqwest::Client::new(), &args.connection, args.job).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "{}: {} after {:.1} s{}",
        status.job_id,
        status.state,
        status.elapsed_seconds,
        status
            .failure
            .map(|f| format!(" ({f})"))
            .unwrap_or_default()
    );
    for (phase, done, total) in status.phases {
        println!("  {phase:<22} {done}/{total}");
    }
    Ok(())
}
