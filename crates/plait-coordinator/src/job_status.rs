//! Where a job is: running, paused, or ended (cancelled, succeeded with its proof, failed).

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Its tasks are handed out and proven.
    Running,
    /// No new task is handed out; results in flight are still accepted.
    Paused,
    /// Ended by its owner; results in flight are ignored.
    Cancelled,
    /// The final proof file, verified.
    Succeeded(Vec<u8>),
    /// Can be retried, keeping every accepted proof.
    Failed(String),
}

impl JobStatus {
    /// The state's name in the API and the store: `running`, `paused`, …
    pub fn name(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Succeeded(_) => "succeeded",
            Self::Failed(_) => "failed",
        }
    }

    /// Whether the job can still change on its own (running or paused).
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    /// Whether the job's blobs (checkpoints, task proofs) are never used again, so that they
    /// can be deleted after the retention time. A failed job may be retried, so it keeps them.
    pub fn blobs_collectable(&self) -> bool {
        matches!(self, Self::Succeeded(_) | Self::Cancelled)
    }
}
