//! The client's error tree, and typed errors read from `google.rpc.Status`.
//!
//! ```text
//! Error
//! ├── Rpc(RpcError)                 a status the server (or transport) returned;
//! │                                 code, ErrorInfo reason, BadRequest violations
//! ├── UnknownEvent(UnknownEventError) an event of a oneof case this client lacks
//! ├── RetriesExhausted { .. }       the watch saw no progress within its budget
//! └── Decode(prost::DecodeError)    bytes that are not a RunEvent
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

use crate::v1::ErrorReason;

/// The `domain` of every `google.rpc.ErrorInfo` runwire sends.
pub const ERROR_DOMAIN: &str = "runwire.v1";

/// Everything this client can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The call failed with a status that is not worth retrying (or was not
    /// retried): `NOT_FOUND`, `INVALID_ARGUMENT`, `UNAUTHENTICATED`, ...
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The server sent an event whose oneof case this client does not know.
    #[error(transparent)]
    UnknownEvent(#[from] UnknownEventError),
    /// The watch kept failing with retryable errors and received nothing for
    /// longer than its budget (`WatchOptions::give_up_after`).
    #[error(
        "gave up watching run {run_id:?} after {elapsed:?} without progress (resuming after seq {after_seq}): {last}"
    )]
    RetriesExhausted {
        /// The watched run.
        run_id: String,
        /// The `after_seq` the next attempt would have used.
        after_seq: i64,
        /// Time since the last progress.
        elapsed: Duration,
        /// The last retryable error.
        last: RpcError,
    },
    /// Bytes that do not decode as the expected message.
    #[error("cannot decode RunEvent: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// An event whose `oneof event` case is not in this client's catalog: the
/// server is newer than the client. With prost an unknown field number
/// decodes to `event: None`, which a runwire server never sends otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event at seq {seq} of run {run_id:?}: its type is not in this client's catalog; upgrade the client")]
pub struct UnknownEventError {
    /// The event's run.
    pub run_id: String,
    /// The event's position in the stream.
    pub seq: i64,
}

/// One `google.rpc.BadRequest` field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Proto field path of the bad field, for example `flow.nodes[2].timeout`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// A gRPC status with its runwire details decoded: the `ErrorInfo` reason
/// and any `BadRequest` field violations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError(Box<RpcErrorInner>);

// Boxed so that `Result<_, Error>` stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RpcErrorInner {
    code: Code,
    message: String,
    reason: Option<String>,
    domain: Option<String>,
    metadata: HashMap<String, String>,
    field_violations: Vec<FieldViolation>,
    retryable: bool,
}

impl RpcError {
    /// Reads a status and its `grpc-status-details-bin` details.
    pub fn from_status(status: &tonic::Status) -> Self {
        let info = status.get_details_error_info();
        let field_violations = status
            .get_details_bad_request()
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|v| FieldViolation { field: v.field, description: v.description })
                    .collect()
            })
            .unwrap_or_default();
        let from_runwire = info.as_ref().is_some_and(|i| i.domain == ERROR_DOMAIN);
        let retryable = match status.code() {
            // Connection refused or reset, or a draining server
            // (SERVER_DRAINING): another replica, or this one restarted,
            // will answer.
            Code::Unavailable => true,
            // A runwire server puts an ErrorInfo on every status it sends, so
            // these codes without one come from the transport: an h2 stream
            // or connection dying under the call, as when the server process
            // is killed mid-stream.
            Code::Internal | Code::Unknown | Code::Cancelled => !from_runwire,
            _ => false,
        };
        let (reason, domain, metadata) = match info {
            Some(i) => (Some(i.reason), Some(i.domain), i.metadata),
            None => (None, None, HashMap::new()),
        };
        Self(Box::new(RpcErrorInner {
            code: status.code(),
            message: status.message().to_owned(),
            reason,
            domain,
            metadata,
            field_violations,
            retryable,
        }))
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.0.code
    }

    /// The status message, for people.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The typed reason when the status carries a runwire `ErrorInfo` whose
    /// reason this client knows.
    pub fn reason(&self) -> Option<ErrorReason> {
        if self.0.domain.as_deref() != Some(ERROR_DOMAIN) {
            return None;
        }
        ErrorReason::from_str_name(&format!("ERROR_REASON_{}", self.0.reason.as_deref()?))
    }

    /// The raw `ErrorInfo.reason`, for example `RUN_NOT_FOUND`, whatever its
    /// domain.
    pub fn reason_name(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }

    /// The `ErrorInfo.domain`; `runwire.v1` for runwire's own errors.
    pub fn domain(&self) -> Option<&str> {
        self.0.domain.as_deref()
    }

    /// The `ErrorInfo.metadata`.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.0.metadata
    }

    /// The `BadRequest` field violations; empty unless `INVALID_ARGUMENT`.
    pub fn field_violations(&self) -> &[FieldViolation] {
        &self.0.field_violations
    }

    /// Whether a watch retries after this error: `UNAVAILABLE`, or an
    /// `INTERNAL`, `UNKNOWN` or `CANCELLED` the runwire server did not send.
    pub fn is_retryable(&self) -> bool {
        self.0.retryable
    }
}

impl From<tonic::Status> for RpcError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Rpc(RpcError::from_status(&status))
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.code)?;
        if let Some(reason) = &self.0.reason {
            write!(f, " ({reason})")?;
        }
        write!(f, ": {}", self.0.message)?;
        for v in &self.0.field_violations {
            write!(f, "; {}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for RpcError {}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    fn runwire_status(code: Code, reason: &str, details: ErrorDetails) -> tonic::Status {
        let mut details = details;
        details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
        tonic::Status::with_error_details(code, "boom", details)
    }

    #[test]
    fn test_rpc_error_reads_reason_and_field_violations() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("flow.nodes[2].timeout", "must be positive, got -1s");
        details.add_bad_request_violation("flow.name", "must not be empty");
        let err = RpcError::from(runwire_status(Code::InvalidArgument, "FLOW_INVALID", details));

        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.reason(), Some(ErrorReason::FlowInvalid));
        assert_eq!(err.reason_name(), Some("FLOW_INVALID"));
        assert_eq!(err.domain(), Some(ERROR_DOMAIN));
        assert_eq!(
            err.field_violations(),
            [
                FieldViolation {
                    field: "flow.nodes[2].timeout".into(),
                    description: "must be positive, got -1s".into(),
                },
                FieldViolation { field: "flow.name".into(), description: "must not be empty".into() },
            ]
        );
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "InvalidArgument (FLOW_INVALID): boom; flow.nodes[2].timeout: must be positive, got -1s; \
             flow.name: must not be empty"
        );
    }

    #[test]
    fn test_rpc_error_reason_is_none_for_other_domains_and_unknown_reasons() {
        let mut details = ErrorDetails::new();
        details.set_error_info("RUN_NOT_FOUND", "example.com", HashMap::new());
        let foreign = RpcError::from(tonic::Status::with_error_details(Code::NotFound, "x", details));
        assert_eq!(foreign.reason(), None);
        assert_eq!(foreign.reason_name(), Some("RUN_NOT_FOUND"));

        let newer = RpcError::from(runwire_status(Code::NotFound, "SOMETHING_NEW", ErrorDetails::new()));
        assert_eq!(newer.reason(), None);
        assert_eq!(newer.reason_name(), Some("SOMETHING_NEW"));
    }

    #[test]
    fn test_rpc_error_retryable_codes() {
        let bare = |code| RpcError::from(tonic::Status::new(code, "x"));
        assert!(bare(Code::Unavailable).is_retryable());
        assert!(bare(Code::Internal).is_retryable(), "an h2 stream dying under the call");
        assert!(bare(Code::Unknown).is_retryable());
        assert!(bare(Code::Cancelled).is_retryable());
        assert!(!bare(Code::NotFound).is_retryable());
        assert!(!bare(Code::InvalidArgument).is_retryable());
        assert!(!bare(Code::DeadlineExceeded).is_retryable());

        let draining = RpcError::from(runwire_status(Code::Unavailable, "SERVER_DRAINING", ErrorDetails::new()));
        assert!(draining.is_retryable());
        assert_eq!(draining.reason(), Some(ErrorReason::ServerDraining));
        let fault = RpcError::from(runwire_status(Code::Internal, "INTERNAL", ErrorDetails::new()));
        assert!(!fault.is_retryable(), "a server-side fault the server reported itself");
    }
}
