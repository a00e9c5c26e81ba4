//! The worker's HTTP client for the coordinator's worker API.

use std::{path::Path, time::Duration};

use plait_api::{
    ApiErrorBody, ClaimTaskRequest, ClaimTaskResponse, RegisterWorkerRequest,
    RegisterWorkerResponse, ReportFailureRequest, SubmitResultResponse, TaskAssignment, TaskMeta,
    LEASE_SECRET_HEADER, TASK_META_HEADER,
};
use plait_core::TaskId;
use plait_prover::{ProofBlob, Verdict};

/// Why a call to the coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA certificate to trust could not be read or parsed.
    #[error("CA certificate {path}: {reason}")]
    CaCert {
        /// The certificate's file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The coordinator could not be reached (or the connection broke).
    #[error("cannot reach the coordinator: {0}")]
    Transport(#[from] reqwest::Error),
    /// The coordinator answered with an error.
    #[error("coordinator refused ({status} {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's stable error code (`docs/api.md`).
        code: String,
        /// What the coordinator said.
        message: String,
    },
}

impl ClientError {
    /// Whether retrying cannot help: the coordinator will never give this worker work.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Refused { code, .. }
            if matches!(code.as_str(), "incompatible-worker" | "unauthorized" | "worker-banned"
                | "registration-closed"))
    }

    /// Whether the coordinator does not know the credential presented (a registered worker's
    /// identity is forgotten when it idles for long, or to make room in a full pool).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Refused { code, .. } if code == "unauthorized")
    }

    /// Whether the same request may succeed later: no answer, or a server-side failure.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Refused { status, .. } => *status >= 500,
            ClientError::CaCert { .. } => false,
        }
    }
}

const CLAIM_TIMEOUT: Duration = Duration::from_secs(60);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client for `http://` and `https://` coordinators that also trusts `ca_cert` (PEM),
/// for a coordinator whose certificate a private CA signed.
pub fn http_client_builder(ca_cert: Option<&Path>) -> Result<reqwest::ClientBuilder, ClientError> {
    // Idle pooled connections are dropped before a coordinator closes them (after its header
    // timeout, 20 s by default), so a request is not sent on a connection being closed.
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(5));
    if let Some(path) = ca_cert {
        let failed = |reason: String| ClientError::CaCert {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let certificates =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))?;
        if certificates.is_empty() {
            return Err(failed("holds no PEM certificate".into()));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder)
}

/// An HTTP client that trusts `ca_cert` (PEM) besides the system's roots.
pub fn http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    Ok(http_client_builder(ca_cert)?.build()?)
}

/// A worker's connection to its coordinator: the worker routes of `docs/api.md`, with its
/// credential.
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    auth: String,
    /// The pool token's header, once registering with it gave this worker a credential of
    /// its own: kept to register again if the coordinator forgets the identity.
    pool_auth: Option<String>,
}

impl CoordinatorClient {
    /// A client of the coordinator at `base`, presenting `token`.
    pub fn new(base: &str, token: &str, ca_cert: Option<&Path>) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_client_builder(ca_cert)?
                // Long enough for an upload and the coordinator's proof check; calls that must
                // not hang through a network outage set shorter ones.
                .timeout(Duration::from_secs(600))
                .build()?,
            base: format!("{}/v1/worker", base.trim_end_matches('/')),
            auth: format!("Bearer {token}"),
            pool_auth: None,
        })
    }

    /// Joins the pool: with the pool's token, gets an identity and from then on presents its
    /// own credential; with an issued credential, learns its id. Returns the worker's id.
    /// Called again after the coordinator forgot a registered identity, it presents the pool
    /// token anew and gets a new identity.
    pub async fn register(&mut self, name: &str) -> Result<String, ClientError> {
        let auth = self.pool_auth.clone().unwrap_or_else(|| self.auth.clone());
        let response = self
            .http
            .post(format!("{}/register", self.base))
            .header("authorization", &auth)
            .timeout(HEARTBEAT_TIMEOUT)
            .json(&RegisterWorkerRequest { name: name.into() })
            .send()
            .await?;
        let body: RegisterWorkerResponse = Self::checked(response).await?.json().await?;
        if let Some(credential) = body.credential {
            self.pool_auth = Some(auth);
            self.auth = format!("Bearer {credential}");
        }
        Ok(body.worker_id)
    }

    /// Whether this worker joined with the pool token, and so can register again.
    pub fn joined_with_pool_token(&self) -> bool {
        self.pool_auth.is_some()
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

    /// Asks for a task (the coordinator holds the call open for a while if none is ready).
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

    /// The leased task's program.
    pub async fn program(&self, lease: &TaskAssignment) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/jobs/{}/program", self.base, lease.job_id.0);
        self.get_bytes(&url, Some(lease)).await
    }

    /// The accepted proof of `child`, a child of the leased aggregation task.
    pub async fn child_proof(
        &self,
        lease: &TaskAssignment,
        child: TaskId,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!(
            "{}/jobs/{}/tasks/{}/proof",
            self.base, lease.job_id.0, child.0
        );
        self.get_bytes(&url, Some(lease)).await
    }

    /// The start-state checkpoint of the leased segment.
    pub async fn checkpoint(
        &self,
        lease: &TaskAssignment,
        sha256: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/jobs/{}/checkpoints/{sha256}", self.base, lease.job_id.0);
        self.get_bytes(&url, Some(lease)).await
    }

    async fn get_bytes(
        &self,
        url: &str,
        lease: Option<&TaskAssignment>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut request = self.http.get(url).header("authorization", &self.auth);
        if let Some(lease) = lease {
            request = request.header(LEASE_SECRET_HEADER, &lease.lease_secret);
        }
        let response = request.send().await?;
        Ok(Self::checked(response).await?.bytes().await?.to_vec())
    }

    /// A POST about the lease: its attempt's route, with its secret.
    fn post_attempt(&self, lease: &TaskAssignment, what: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/jobs/{}/tasks/{}/attempts/{}/{what}",
            self.base, lease.job_id.0, lease.task_id.0, lease.attempt
        );
        self.http
            .post(url)
            .header("authorization", &self.auth)
            .header(LEASE_SECRET_HEADER, &lease.lease_secret)
    }

    /// Keeps `lease` alive.
    pub async fn heartbeat(&self, lease: &TaskAssignment) -> Result<(), ClientError> {
        let response = self
            .post_attempt(lease, "heartbeat")
            // A heartbeat lost in an outage is retried at the next beat.
            .timeout(HEARTBEAT_TIMEOUT)
            .send()
            .await?;
        Self::checked(response).await?;
        Ok(())
    }

    /// Uploads the proof made for `lease`, and returns the coordinator's verdict.
    pub async fn submit(
        &self,
        lease: &TaskAssignment,
        proof: ProofBlob,
        meta: &TaskMeta,
    ) -> Result<Verdict, ClientError> {
        let response = self
            .post_attempt(lease, "result")
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

    /// Tells the coordinator that `lease`'s task failed here, and why.
    pub async fn report_failure(
        &self,
        lease: &TaskAssignment,
        reason: &str,
    ) -> Result<(), ClientError> {
        let response = self
            .post_attempt(lease, "failure")
            .json(&ReportFailureRequest {
                reason: plait_api::bounded_reason(reason).to_string(),
            })
            .send()
            .await?;
        Self::checked(response).await?;
        Ok(())
    }
}
