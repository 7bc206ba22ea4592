//! Rust client for runwire: generated `runwire.v1` stubs (prost, tonic,
//! proto3 JSON through pbjson) and a thin layer over them.
//!
//! - [`watch`]: a run's events as a stream that resumes with `after_seq`
//!   after disconnects and server restarts, without duplicates or loss;
//! - [`watch_events`]: the events of every run a filter selects, across
//!   runs, resuming from the last cursor with the same retry rule;
//! - [`GrammarChecker`]: the stream grammar of `clients/GRAMMAR.md`;
//! - [`Error`]: typed errors from `google.rpc.Status` details, and the
//!   explicit "unknown event, upgrade the client" error.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::StreamExt;
//! use runwire_client::v1::run_service_client::RunServiceClient;
//!
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let mut events = runwire_client::watch(RunServiceClient::new(channel), "run_123", 0);
//! while let Some(event) = events.next().await {
//!     println!("{}", serde_json::to_string(&event?)?);
//! }
//! # Ok(())
//! # }
//! ```

mod error;
mod event;
mod grammar;
#[doc(hidden)]
pub mod json;
mod watch;
mod watch_events;
pub mod wkt;

/// The generated `runwire.v1` package: messages with proto3 JSON (serde)
/// impls, `run_service_client` and `run_service_server`. Never edited:
/// `make -C clients/rust gen` rewrites `src/gen/`.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    include!("gen/runwire.v1.rs");
    include!("gen/runwire.v1.serde.rs");
}

pub use error::{ERROR_DOMAIN, Error, FieldViolation, RpcError, UnknownEventError};
pub use event::{decode_event, require_known};
pub use grammar::{GrammarChecker, Rule, Violation, check_stream, is_filtered};
pub use watch::{OnRetry, RunEnd, Watch, WatchOptions, WatchRetry, watch, watch_with_filter, watch_with_options};
pub use watch_events::{EventsWatch, WatchedEvent, watch_events, watch_events_with_options};
