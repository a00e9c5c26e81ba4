//! The worker's HTTP client for the coordinator's worker API.

use std::time::Duration;

use plait_api::{
    ApiErrorBody, ClaimTaskRequest, ClaimTaskResponse, ReportFailureRequest, SubmitResultResponse,
    TaskAssignment, TaskMeta, TASK_META_HEADER,
};
use plait_core::{JobId, TaskId};
use plait_prover::{ProofBlob, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("coordinator refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}

impl ClientError {
    /// Whether retrying cannot help: the coordinator will never give this worker work.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Refused { code, .. }
            if matches!(code.as_str(), "incompatible-worker" | "unauthorized" | "worker-banned"))
    }

    /// Whether the same request may succeed later: no answer, or a server-side failure.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Refused { status, .. } => *status >= 500,
        }
    }
}

const CLAIM_TIMEOUT: Duration = Duration::from_secs(60);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl CoordinatorClient {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                // Long enough for an upload and the coordinator's proof check; calls that must
                // not hang through a network outage set shorter ones.
                .timeout(Duration::from_secs(600))
                .connect_timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client builds"),
            base: format!("{}/v1/worker", base.trim_end_matches('/')),
            auth: format!("Bearer {token}"),
        }
    }

    async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body: Option<ApiErrorBody> = response.json().await.ok();
        let (code, message) = body
            .map(|b| (b.code, b.message))
            .unwrap_or_else(|| ("unknown".into(), "no error body".into()));
        Err(ClientError::Refused {
            status,
            code,
            message,
        })
    }

    pub async fn claim(
        &self,
        request: &ClaimTaskRequest,
    ) -> Result<Option<TaskAssignment>, ClientError> {
        let response = self
            .http
            .post(format!("{}/claim", self.base))
            .header("authorization", &self.auth)
            // The coordinator answers a long poll within seconds; a claim stuck longer is on
            // a dead connection.
            .timeout(CLAIM_TIMEOUT)
            .json(request)
            .send()
            .await?;
        let body: ClaimTaskResponse = Self::checked(response).await?.json().await?;
        Ok(body.task)
    }

    pub async fn program(&self, sha256: &str) -> Result<Vec<u8>, ClientError> {
        self.get_bytes(&format!("{}/programs/{sha256}", self.base))
            .await
    }

    pub async fn proof(&self, job: JobId, task: TaskId) -> Result<Vec<u8>, ClientError> {
        self.get_bytes(&format!(
            "{}/jobs/{}/tasks/{}/proof",
            self.base, job.0, task.0
        ))
        .await
    }

    pub async fn checkpoint(&self, job: JobId, sha256: &str) -> Result<Vec<u8>, ClientError> {
        self.get_bytes(&format!(
            "{}/jobs/{}/checkpoints/{sha256}",
            self.base, job.0
        ))
        .await
    }

    async fn get_bytes(&self, url: &str) -> Result<Vec<u8>, ClientError> {
        let response = self
            .http
            .get(url)
            .header("authorization", &self.auth)
            .send()
            .await?;
        Ok(Self::checked(response).await?.bytes().await?.to_vec())
    }

    fn attempt_url(&self, job: JobId, task: TaskId, attempt: u32, what: &str) -> String {
        format!(
            "{}/jobs/{}/tasks/{}/attempts/{attempt}/{what}",
            self.base, job.0, task.0
        )
    }

    pub async fn heartbeat(
        &self,
        job: JobId,
        task: TaskId,
        attempt: u32,
    ) -> Result<(), ClientError> {
        let response = self
            .http
            .post(self.attempt_url(job, task, attempt, "heartbeat"))
            .header("authorization", &self.auth)
            // A heartbeat lost in an outage is retried at the next beat.
            .timeout(HEARTBEAT_TIMEOUT)
            .send()
            .await?;
        Self::checked(response).await?;
        Ok(())
    }

    pub async fn submit(
        &self,
        job: JobId,
        task: TaskId,
        attempt: u32,
        proof: ProofBlob,
        meta: &TaskMeta,
    ) -> Result<Verdict, ClientError> {
        let response = self
            .http
            .post(self.attempt_url(job, task, attempt, "result"))
            .header("authorization", &self.auth)
            .header(
                TASK_META_HEADER,
                serde_json::to_string(meta).expect("meta serializes"),
            )
            .header("content-type", "application/octet-stream")
            .body(proof.0)
            .send()
            .await?;
        let body: SubmitResultResponse = Self::checked(response).await?.json().await?;
        Ok(body.verdict)
    }

    pub async fn report_failure(
        &self,
        job: JobId,
        task: TaskId,
        attempt: u32,
        reason: &str,
    ) -> Result<(), ClientError> {
        let response = self
            .http
            .post(self.attempt_url(job, task, attempt, "failure"))
            .header("authorization", &self.auth)
            .json(&ReportFailureRequest {
                reason: reason.to_string(),
            })
            .send()
            .await?;
        Self::checked(response).await?;
        Ok(())
    }
}
