//! Errors as the API answers them: an HTTP status, a stable code (`docs/api.md`) and a message.

use crate::CoordinatorError;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use plait_api::ApiErrorBody;

/// An error answer: an HTTP status and a stable code.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            code: self.code.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        let (status, code) = match &e {
            CoordinatorError::UnknownJob(_) => (StatusCode::NOT_FOUND, "unknown-job"),
            CoordinatorError::UnknownTask(..) => (StatusCode::NOT_FOUND, "unknown-task"),
            CoordinatorError::UnknownCheckpoint(..) => {
                (StatusCode::NOT_FOUND, "unknown-checkpoint")
            }
            CoordinatorError::StaleLease { .. } => (StatusCode::CONFLICT, "stale-lease"),
            CoordinatorError::NotLeaseHolder { .. } | CoordinatorError::NotLeased(_) => {
                (StatusCode::FORBIDDEN, "not-lease-holder")
            }
            CoordinatorError::IncompatibleWorker { .. } => {
                (StatusCode::CONFLICT, "incompatible-worker")
            }
            CoordinatorError::Backend(plait_prover::BackendError::InvalidProgram(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-program")
            }
            CoordinatorError::Backend(_) | CoordinatorError::Tree(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-job")
            }
            CoordinatorError::WorkerBanned { .. } => (StatusCode::FORBIDDEN, "worker-banned"),
            CoordinatorError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            CoordinatorError::UnknownWorker(_) => (StatusCode::NOT_FOUND, "unknown-worker"),
            CoordinatorError::WorkerExists(_) => (StatusCode::CONFLICT, "worker-exists"),
            CoordinatorError::ClientExists(_) => (StatusCode::CONFLICT, "client-exists"),
            CoordinatorError::UnknownClient(_) => (StatusCode::NOT_FOUND, "unknown-client"),
            CoordinatorError::TooManyJobs { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-jobs")
            }
            CoordinatorError::OverInstructionLimit { .. } => {
                (StatusCode::FORBIDDEN, "over-instruction-limit")
            }
            CoordinatorError::OverInputLimit { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "over-input-limit")
            }
            CoordinatorError::OverProgramQuota { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "over-program-quota")
            }
            CoordinatorError::UnknownProgram(_) => (StatusCode::NOT_FOUND, "unknown-program"),
            CoordinatorError::RegistrationClosed => (StatusCode::FORBIDDEN, "registration-closed"),
            CoordinatorError::PoolFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "pool-full"),
            CoordinatorError::Panicked(_) | CoordinatorError::Halted => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            CoordinatorError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
            CoordinatorError::CannotCheck(_) => (StatusCode::SERVICE_UNAVAILABLE, "cannot-check"),
            CoordinatorError::InvalidState(_) => (StatusCode::CONFLICT, "invalid-state"),
            CoordinatorError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            CoordinatorError::CannotPlan(_) => (StatusCode::UNPROCESSABLE_ENTITY, "cannot-plan"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
