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
use tonic_types::{ErrorDetail, StatusExt};

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
    /// longer than its budget (`WatchOptions::give_up_after`), or the server
    /// asked for a retry (`last.retry_delay()`) later than the budget allows.
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
    /// `watch_events` kept failing with retryable errors and received
    /// nothing for longer than its budget (`WatchOptions::give_up_after`), or
    /// the server asked for a retry (`last.retry_delay()`) later than the
    /// budget allows.
    #[error("gave up watching events after {elapsed:?} without progress (resuming from cursor {cursor:?}): {last}")]
    EventsRetriesExhausted {
        /// The cursor the next attempt would have used; resume from it.
        cursor: String,
        /// Time since the last progress.
        elapsed: Duration,
        /// The last retryable error.
        last: RpcError,
    },
    /// The server skipped a seq: the events in between would be lost.
    #[error("run {run_id:?}: expected seq {expected}, received seq {received}")]
    SeqGap {
        /// The watched run.
        run_id: String,
        /// The seq that should have come next.
        expected: i64,
        /// The seq that came instead.
        received: i64,
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
    retry_delay: Option<Duration>,
    retryable: bool,
}

impl RpcError {
    /// Reads a status and its `grpc-status-details-bin` details.
    ///
    /// A status may carry several `ErrorInfo`s (a proxy can add its own):
    /// the runwire one (domain [`ERROR_DOMAIN`]) is read when present, else
    /// the first.
    pub fn from_status(status: &tonic::Status) -> Self {
        let mut infos = Vec::new();
        let mut field_violations = Vec::new();
        let mut retry_delay: Option<Duration> = None;
        for detail in status.get_error_details_vec() {
            match detail {
                ErrorDetail::ErrorInfo(info) => infos.push(info),
                // Of several, the longest; tonic-types reads a negative one as zero.
                ErrorDetail::RetryInfo(retry) => retry_delay = retry_delay.max(retry.retry_delay),
                ErrorDetail::BadRequest(bad) => field_violations.extend(
                    bad.field_violations
                        .into_iter()
                        .map(|v| FieldViolation { field: v.field, description: v.description }),
                ),
                _ => {}
            }
        }
        let runwire_info = infos.iter().position(|i| i.domain == ERROR_DOMAIN);
        let overloaded = runwire_info.is_some_and(|at| infos[at].reason == "OVERLOADED");
        let retryable = is_retryable(status.code(), runwire_info.is_some(), overloaded);
        let info = match runwire_info {
            Some(at) => Some(infos.swap_remove(at)),
            None => infos.into_iter().next(),
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
            retry_delay,
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

    /// The `google.rpc.RetryInfo` `retry_delay` the status carries: how long
    /// the server asks the caller to wait before trying again. The runwire
    /// server sends one with `RESOURCE_EXHAUSTED` `OVERLOADED`; a watch waits
    /// at least this long (up to [`WatchOptions::max_server_delay`](crate::WatchOptions::max_server_delay))
    /// before it retries.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.0.retry_delay
    }

    /// Whether a watch retries after this error: `UNAVAILABLE` always;
    /// `INTERNAL`, `UNKNOWN`, `CANCELLED`, `ABORTED` and `DEADLINE_EXCEEDED`
    /// only without a runwire `ErrorInfo` (one of another domain does not
    /// count); nothing else.
    pub fn is_retryable(&self) -> bool {
        self.0.retryable
    }
}

/// The watch retry policy, the same in every runwire client.
///
/// `UNAVAILABLE` is a draining server (`SERVER_DRAINING`) or a connection
/// refused or reset: another replica, or this one restarted, will answer.
/// A dying connection also surfaces as `INTERNAL`, `UNKNOWN`, `CANCELLED`,
/// `ABORTED` or `DEADLINE_EXCEEDED` (an h2 `RST_STREAM`, a half-written
/// response, a proxy's timeout); the runwire server puts an `ErrorInfo` of
/// domain `runwire.v1` on every status it sends itself, so these codes are
/// retried only without one: with one they are the server's answer (its
/// `INTERNAL` is a fault a retry would only repeat). An `ErrorInfo` of
/// another domain, a proxy's for example, does not block the retry. Every
/// other code is the server's considered answer and is not retried, but for
/// `RESOURCE_EXHAUSTED` with the runwire reason `OVERLOADED`: the server
/// turned the call away at its admission bound and asks for a retry.
fn is_retryable(code: Code, from_runwire: bool, overloaded: bool) -> bool {
    match code {
        Code::Unavailable => true,
        Code::ResourceExhausted => overloaded,
        Code::Internal | Code::Unknown | Code::Cancelled | Code::Aborted | Code::DeadlineExceeded => !from_runwire,
        _ => false,
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
    use tonic_types::{ErrorDetails, ErrorInfo, RetryInfo, StatusExt};

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

    fn with_infos(code: Code, domains: &[&str]) -> RpcError {
        let infos = domains.iter().map(|d| ErrorInfo::new("SOME_REASON", *d, HashMap::new()).into());
        RpcError::from(tonic::Status::with_error_details_vec(code, "x", infos))
    }

    #[test]
    fn test_rpc_error_retry_policy() {
        const RUNWIRE: &[&str] = &[ERROR_DOMAIN];
        const PROXY: &[&str] = &["proxy.example.com"];
        const BOTH: &[&str] = &["proxy.example.com", ERROR_DOMAIN];
        // (code, ErrorInfo domains on the status, retried)
        let cases: &[(Code, &[&str], bool)] = &[
            (Code::Unavailable, &[], true),
            (Code::Unavailable, RUNWIRE, true), // SERVER_DRAINING
            (Code::Unavailable, PROXY, true),
            (Code::Internal, &[], true), // an h2 stream dying under the call
            (Code::Unknown, &[], true),
            (Code::Cancelled, &[], true),
            (Code::Aborted, &[], true),
            (Code::DeadlineExceeded, &[], true), // a proxy's timeout
            (Code::Internal, RUNWIRE, false),    // a fault the server reported itself
            (Code::Unknown, RUNWIRE, false),
            (Code::Cancelled, RUNWIRE, false),
            (Code::Aborted, RUNWIRE, false),
            (Code::DeadlineExceeded, RUNWIRE, false),
            (Code::Internal, PROXY, true),
            (Code::Unknown, PROXY, true),
            (Code::Cancelled, PROXY, true),
            (Code::Aborted, PROXY, true),
            (Code::DeadlineExceeded, PROXY, true),
            (Code::Internal, BOTH, false), // the runwire one counts wherever it is
            (Code::Aborted, BOTH, false),
            (Code::DeadlineExceeded, BOTH, false),
            (Code::NotFound, &[], false),
            (Code::InvalidArgument, &[], false),
            (Code::FailedPrecondition, &[], false),
            (Code::PermissionDenied, PROXY, false),
            (Code::Unauthenticated, &[], false),
            (Code::ResourceExhausted, &[], false),
            (Code::OutOfRange, &[], false),
            (Code::Unimplemented, &[], false),
            (Code::DataLoss, &[], false),
            (Code::AlreadyExists, RUNWIRE, false),
        ];
        for (code, domains, retried) in cases {
            assert_eq!(with_infos(*code, domains).is_retryable(), *retried, "{code:?} with ErrorInfo of {domains:?}");
        }

        let draining = RpcError::from(runwire_status(Code::Unavailable, "SERVER_DRAINING", ErrorDetails::new()));
        assert!(draining.is_retryable());
        let overloaded = RpcError::from(runwire_status(Code::ResourceExhausted, "OVERLOADED", ErrorDetails::new()));
        assert!(overloaded.is_retryable(), "an admission refusal asks for a retry");
        assert_eq!(draining.reason(), Some(ErrorReason::ServerDraining));
    }

    #[test]
    fn test_rpc_error_reads_the_longest_retry_info() {
        let asking = |delays: &[u64]| {
            let details = delays.iter().map(|s| RetryInfo::new(Some(Duration::from_secs(*s))).into());
            RpcError::from(tonic::Status::with_error_details_vec(Code::ResourceExhausted, "busy", details))
        };
        assert_eq!(asking(&[]).retry_delay(), None);
        assert_eq!(asking(&[1]).retry_delay(), Some(Duration::from_secs(1)));
        assert_eq!(asking(&[1, 3, 2]).retry_delay(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn test_rpc_error_prefers_the_runwire_error_info() {
        let infos = [
            ErrorInfo::new("UPSTREAM_RESET", "proxy.example.com", HashMap::new()).into(),
            ErrorInfo::new("RUN_NOT_FOUND", ERROR_DOMAIN, HashMap::from([("run_id".into(), "r1".into())])).into(),
        ];
        let err = RpcError::from(tonic::Status::with_error_details_vec(Code::NotFound, "x", infos));
        assert_eq!(err.reason(), Some(ErrorReason::RunNotFound));
        assert_eq!(err.reason_name(), Some("RUN_NOT_FOUND"));
        assert_eq!(err.domain(), Some(ERROR_DOMAIN));
        assert_eq!(err.metadata()["run_id"], "r1");

        let foreign = with_infos(Code::Aborted, &["proxy.example.com"]);
        assert_eq!(foreign.domain(), Some("proxy.example.com"));
        assert_eq!(foreign.reason(), None);
    }
}
