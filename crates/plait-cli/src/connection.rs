//! The CLI's connection to a running coordinator: its URL and token, an HTTP client that
//! trusts `--ca-cert`, and refusals turned into errors that name the problem.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use plait_api::{ApiErrorBody, JobStatusResponse};

use crate::exit::BadInput;

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

pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
