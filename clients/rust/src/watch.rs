//! `watch`: a run's events as a stream that survives disconnects and restarts.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use tonic::codec::Streaming;
use tonic::transport::Channel;

use crate::error::{Error, RpcError};
use crate::event::require_known;
use crate::v1::run_event::Event;
use crate::v1::run_service_client::RunServiceClient;
use crate::v1::{RunEvent, WatchRunRequest, WatchRunResponse};

/// How a [`watch`] retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Wait before the first retry after progress; doubled per failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between retries.
    pub max_backoff: Duration,
    /// Give up with [`Error::RetriesExhausted`] when retryable failures go
    /// on this long with no progress (no stream opened, no events received).
    /// The default outlasts a server restart.
    pub give_up_after: Duration,
    /// Called before each wait for a reconnect, for logging; `None` (the
    /// default) calls nothing.
    pub on_retry: Option<OnRetry>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
            on_retry: None,
        }
    }
}

/// What [`WatchOptions::on_retry`] is told about a reconnect.
#[derive(Debug)]
#[non_exhaustive]
pub struct WatchRetry<'a> {
    /// The retryable error that ended the last call or stream.
    pub error: &'a RpcError,
    /// The wait before the next call.
    pub delay: Duration,
    /// The `after_seq` the next call asks for: the last `seq` delivered.
    pub after_seq: i64,
}

/// A callback for [`WatchOptions::on_retry`]. It runs on the task polling
/// the [`Watch`], so it should be quick and must not block. Two `OnRetry`
/// are equal when they share one callback.
#[derive(Clone)]
pub struct OnRetry(Arc<dyn Fn(&WatchRetry<'_>) + Send + Sync>);

impl OnRetry {
    /// Wraps a callback.
    pub fn new(callback: impl Fn(&WatchRetry<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(callback))
    }
}

impl std::fmt::Debug for OnRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRetry(..)")
    }
}

impl PartialEq for OnRetry {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OnRetry {}

/// The events of one run, from [`watch`]: each `Ok` event once, in `seq`
/// order, ending after RunCompleted, or with one `Err` after which the
/// stream ends.
pub struct Watch {
    inner: Pin<Box<dyn Stream<Item = Result<RunEvent, Error>> + Send>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Stream for Watch {
    type Item = Result<RunEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Watches run `run_id` from `after_seq` (0 for the whole stream) with the
/// default [`WatchOptions`].
///
/// After a retryable failure it calls `WatchRun` again with the last `seq`
/// it delivered, after a capped exponential backoff. Retried are
/// `UNAVAILABLE` (connection refused or reset, a draining or restarting
/// server); `INTERNAL`, `UNKNOWN`, `CANCELLED`, `ABORTED` and
/// `DEADLINE_EXCEEDED` when the status carries no `ErrorInfo` of domain
/// `runwire.v1` (an h2 stream dying, a proxy's timeout; a proxy's own
/// `ErrorInfo` does not count); and a stream that ends OK before
/// RunCompleted. See [`RpcError::is_retryable`]. Events at or below that
/// `seq`, which a server may resend, are dropped, so no `seq` is delivered
/// twice. Any other status ends the stream with [`Error::Rpc`]; an event of
/// an unknown oneof case ends it with [`Error::UnknownEvent`].
pub fn watch(client: RunServiceClient<Channel>, run_id: impl Into<String>, after_seq: i64) -> Watch {
    watch_with_options(client, run_id, after_seq, WatchOptions::default())
}

/// [`watch`] with explicit retry options.
pub fn watch_with_options(
    client: RunServiceClient<Channel>,
    run_id: impl Into<String>,
    after_seq: i64,
    options: WatchOptions,
) -> Watch {
    let state = Watcher {
        client,
        run_id: run_id.into(),
        last_seq: after_seq,
        backoff: options.initial_backoff,
        options,
        stream: None,
        ready: VecDeque::new(),
        failing_since: None,
        done: false,
    };
    let inner = futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    });
    Watch { inner: Box::pin(inner) }
}

struct Watcher {
    client: RunServiceClient<Channel>,
    run_id: String,
    /// The last `seq` accepted into `ready`; the next call resumes after it.
    last_seq: i64,
    options: WatchOptions,
    backoff: Duration,
    stream: Option<Streaming<WatchRunResponse>>,
    /// Accepted items not yet handed out, in order.
    ready: VecDeque<Result<RunEvent, Error>>,
    /// When the current run of retryable failures began.
    failing_since: Option<Instant>,
    /// Set once RunCompleted or a final error is in `ready`.
    done: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<RunEvent, Error>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                let request = WatchRunRequest { run_id: self.run_id.clone(), after_seq: self.last_seq };
                match self.client.watch_run(request).await {
                    Ok(response) => {
                        // The server accepted the call: the outage is over.
                        self.failing_since = None;
                        self.stream = Some(response.into_inner());
                    }
                    Err(status) => self.retry_or_fail(&status).await,
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(response)) => {
                    self.failing_since = None;
                    self.backoff = self.options.initial_backoff;
                    self.accept(response.events);
                }
                // OK before RunCompleted: not the server's protocol, but
                // nothing is lost by resuming.
                Ok(None) => {
                    self.stream = None;
                    let status = tonic::Status::unavailable("WatchRun ended before RunCompleted");
                    self.retry_or_fail(&status).await;
                }
                Err(status) => {
                    self.stream = None;
                    self.retry_or_fail(&status).await;
                }
            }
        }
    }

    /// Queues the new events of one response: drops any `seq` already
    /// delivered (a resumed call may resend the last batch) and stops at
    /// RunCompleted or at an event this client cannot name.
    fn accept(&mut self, events: Vec<RunEvent>) {
        for event in events {
            if event.seq <= self.last_seq {
                continue;
            }
            if let Err(unknown) = require_known(&event) {
                self.finish(Err(unknown.into()));
                return;
            }
            self.last_seq = event.seq;
            let completed = matches!(event.event, Some(Event::RunCompleted(_)));
            self.ready.push_back(Ok(event));
            if completed {
                self.finish_ok();
                return;
            }
        }
    }

    /// After a failed call or stream: sleeps and lets the loop resume, or
    /// queues the final error.
    async fn retry_or_fail(&mut self, status: &tonic::Status) {
        let error = RpcError::from_status(status);
        if !error.is_retryable() {
            self.finish(Err(Error::Rpc(error)));
            return;
        }
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let elapsed = since.elapsed();
        if elapsed >= self.options.give_up_after {
            self.finish(Err(Error::RetriesExhausted {
                run_id: self.run_id.clone(),
                after_seq: self.last_seq,
                elapsed,
                last: error,
            }));
            return;
        }
        let wait = self.backoff.min(self.options.give_up_after - elapsed);
        self.backoff = (self.backoff * 2).min(self.options.max_backoff);
        if let Some(on_retry) = &self.options.on_retry {
            (on_retry.0)(&WatchRetry { error: &error, delay: wait, after_seq: self.last_seq });
        }
        tokio::time::sleep(wait).await;
    }

    fn finish(&mut self, item: Result<RunEvent, Error>) {
        self.ready.push_back(item);
        self.finish_ok();
    }

    fn finish_ok(&mut self) {
        self.done = true;
        self.stream = None;
    }
}
