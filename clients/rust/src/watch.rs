//! `watch`: a run's events as a stream that survives disconnects and restarts.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use tonic::Code;
use tonic::codec::Streaming;
use tonic::codegen::{Body, Bytes, StdError};

use crate::error::{Error, RpcError};
use crate::event::require_known;
use crate::grammar::is_filtered;
use crate::v1::run_event::Event;
use crate::v1::run_service_client::RunServiceClient;
use crate::v1::{ErrorReason, EventFilter, RunEvent, RunStatus, WatchRunRequest, WatchRunResponse};

/// How a watched run ended, from [`Watch::end`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunEnd {
    /// The run.
    pub run_id: String,
    /// The seq of the run's last event, RunCompleted.
    pub last_seq: i64,
    /// The run's final [`RunStatus`] as a number: one this client does not
    /// name stays that number.
    pub status: i32,
    /// The watch asked for events after a seq the run never reached (the
    /// server answered `OUT_OF_RANGE`, reason `AFTER_SEQ_BEYOND_END`).
    /// Nothing was missed; there was nothing.
    pub beyond_end: bool,
}

impl RunEnd {
    /// The status as the proto names it, `RUN_STATUS_SUCCEEDED`, or its number.
    pub fn status_name(&self) -> String {
        RunStatus::try_from(self.status).map_or_else(|_| self.status.to_string(), |s| s.as_str_name().to_owned())
    }

    /// The end an `OUT_OF_RANGE` `AFTER_SEQ_BEYOND_END` answer reports.
    fn beyond(run_id: &str, error: &RpcError) -> Option<Self> {
        if error.code() != Code::OutOfRange || error.reason() != Some(ErrorReason::AfterSeqBeyondEnd) {
            return None;
        }
        let name = error.metadata().get("status").map_or("", String::as_str);
        let status = RunStatus::from_str_name(name).map(|s| s as i32).or_else(|| name.parse().ok()).unwrap_or(0);
        let last_seq = error.metadata().get("last_seq").and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(Self { run_id: run_id.to_owned(), last_seq, status, beyond_end: true })
    }
}

/// How a [`watch`] retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Wait before the first retry after progress; doubled per failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between retries.
    pub max_backoff: Duration,
    /// Give up with [`Error::RetriesExhausted`] when retryable failures go
    /// on this long without a response received. The default outlasts a
    /// server restart.
    pub give_up_after: Duration,
    /// Cap on the wait a failed status's `google.rpc.RetryInfo` asks for
    /// ([`RpcError::retry_delay`]; an `OVERLOADED` server sends one). The
    /// wait before a retry is the longer of the jittered backoff and that
    /// delay, so a watch never comes back sooner than the server asked, and
    /// a bogus delay cannot stall it for longer than this. When the capped
    /// delay would end after `give_up_after`, the watch gives up at once
    /// (with the last error) instead of sleeping past its budget.
    pub max_server_delay: Duration,
    /// Called before each wait for a reconnect, for logging; `None` (the
    /// default) calls nothing.
    pub on_retry: Option<OnRetry>,
}

/// The defaults, the same in every runwire client (clients/GRAMMAR.md,
/// "Watching"): 100 ms doubling to 2 s, each wait drawn from
/// `[wait/2, wait]`, giving up after 120 s without a response; a server's
/// RetryInfo delay honoured up to 30 s.
impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            give_up_after: Duration::from_secs(120),
            max_server_delay: Duration::from_secs(30),
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
    /// The `after_seq` the next `WatchRun` asks for: the last `seq`
    /// delivered (or past what a filter skipped); 0 for `watch_events`.
    pub after_seq: i64,
    /// The cursor the next `WatchEvents` call resumes from (empty: the
    /// request's own start); `None` for `watch`.
    pub cursor: Option<&'a str>,
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
/// order, ending at the run's end (then [`Watch::end`] says how it ended),
/// or with one `Err` after which the stream ends.
pub struct Watch {
    inner: Pin<Box<dyn Stream<Item = Result<RunEvent, Error>> + Send>>,
    end: Arc<Mutex<Option<RunEnd>>>,
}

impl Watch {
    /// How the run ended, once the stream has ended without an error:
    /// after RunCompleted, on the server's `stream_end`, or on
    /// `OUT_OF_RANGE` `AFTER_SEQ_BEYOND_END` when `after_seq` is beyond the
    /// finished run's end. `None` before that.
    pub fn end(&self) -> Option<RunEnd> {
        self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
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
/// it delivered, after a capped exponential backoff (and no sooner than a
/// `google.rpc.RetryInfo` on the failed status asks; see
/// [`WatchOptions::max_server_delay`]). Retried are
/// `UNAVAILABLE` (connection refused or reset, a draining or restarting
/// server); `INTERNAL`, `UNKNOWN`, `CANCELLED`, `ABORTED` and
/// `DEADLINE_EXCEEDED` when the status carries no `ErrorInfo` of domain
/// `runwire.v1` (an h2 stream dying, a proxy's timeout; a proxy's own
/// `ErrorInfo` does not count); and a stream that ends OK before
/// the run's end. See [`RpcError::is_retryable`]. Events at or below that
/// `seq`, which a server may resend, are dropped, so no `seq` is delivered
/// twice; a skipped `seq` ends the stream with [`Error::SeqGap`]. Any other
/// status ends the stream with [`Error::Rpc`]; an event of an unknown oneof
/// case ends it with [`Error::UnknownEvent`].
///
/// The stream ends without an error at the run's end: after RunCompleted,
/// on the server's `stream_end`, or on `OUT_OF_RANGE`
/// `AFTER_SEQ_BEYOND_END`; [`Watch::end`] then holds the final status.
///
/// `client` may wrap any tonic service, for example a `Channel` behind an
/// interceptor that adds a bearer token.
pub fn watch<T>(client: RunServiceClient<T>, run_id: impl Into<String>, after_seq: i64) -> Watch
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    watch_with_options(client, run_id, after_seq, WatchOptions::default())
}

/// [`watch`] with explicit retry options.
pub fn watch_with_options<T>(
    client: RunServiceClient<T>,
    run_id: impl Into<String>,
    after_seq: i64,
    options: WatchOptions,
) -> Watch
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    start(client, run_id.into(), after_seq, None, options)
}

/// [`watch_with_options`] of the events `filter` selects (RunCompleted
/// always). With kinds or node ids, seqs may skip (no [`Error::SeqGap`]
/// between events), and a reconnect resumes after the server's last
/// `resume_after_seq` (how far it looked), not the last event's `seq`; a
/// `stream_end` beyond that point means RunCompleted was lost and ends the
/// stream with [`Error::SeqGap`]. Check such a stream with
/// [`GrammarChecker::with_filter`](crate::GrammarChecker::with_filter).
pub fn watch_with_filter<T>(
    client: RunServiceClient<T>,
    run_id: impl Into<String>,
    after_seq: i64,
    filter: EventFilter,
    options: WatchOptions,
) -> Watch
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    start(client, run_id.into(), after_seq, Some(filter), options)
}

fn start<T>(
    client: RunServiceClient<T>,
    run_id: String,
    after_seq: i64,
    filter: Option<EventFilter>,
    options: WatchOptions,
) -> Watch
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    let end = Arc::new(Mutex::new(None));
    let state = Watcher {
        client,
        run_id,
        last_seq: after_seq,
        resume: after_seq,
        filtered: is_filtered(filter.as_ref()),
        filter,
        retrier: Retrier::new(options),
        stream: None,
        ready: VecDeque::new(),
        done: false,
        end: Arc::clone(&end),
    };
    let inner = futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    });
    Watch { inner: Box::pin(inner), end }
}

/// One streak of failures of a resuming stream: the waits and the give-up
/// budget. [`watch`] and [`watch_events`](crate::watch_events) share it, so
/// both follow the one retry rule of `clients/GRAMMAR.md` ("Watching").
pub(crate) struct Retrier {
    options: WatchOptions,
    backoff: Duration,
    /// When the current run of retryable failures began.
    failing_since: Option<Instant>,
}

impl Retrier {
    pub(crate) fn new(options: WatchOptions) -> Self {
        Self { backoff: options.initial_backoff, options, failing_since: None }
    }

    /// A response arrived: the outage, if any, is over.
    pub(crate) fn received(&mut self) {
        self.failing_since = None;
        self.backoff = self.options.initial_backoff;
    }

    /// After a retryable `error`: waits before the next call, or returns
    /// how long the failures have lasted once that spends the budget (or
    /// the server's RetryInfo asks for a wait that would).
    pub(crate) async fn wait(
        &mut self,
        error: &RpcError,
        after_seq: i64,
        cursor: Option<&str>,
    ) -> Result<(), Duration> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let elapsed = since.elapsed();
        if elapsed >= self.options.give_up_after {
            return Err(elapsed);
        }
        // Equal jitter, as in every client: the wait is drawn from
        // [backoff/2, backoff], so watchers cut off by one restart do not
        // all come back in the same instant; the last lands on the budget.
        let half = self.backoff / 2;
        let mut jittered = half + half.mul_f64(fastrand::f64());
        if let Some(asked) = error.retry_delay() {
            // The server's RetryInfo: never come back sooner than it asked
            // (up to the cap), and give up now rather than sleep past the
            // budget when it asks for longer than is left.
            let asked = asked.min(self.options.max_server_delay);
            if elapsed + asked > self.options.give_up_after {
                return Err(elapsed);
            }
            jittered = jittered.max(asked);
        }
        let wait = jittered.min(self.options.give_up_after - elapsed);
        self.backoff = (self.backoff * 2).min(self.options.max_backoff);
        if let Some(on_retry) = &self.options.on_retry {
            (on_retry.0)(&WatchRetry { error, delay: wait, after_seq, cursor });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

struct Watcher<T> {
    client: RunServiceClient<T>,
    run_id: String,
    /// The last `seq` accepted into `ready`.
    last_seq: i64,
    /// Where the next call resumes: `last_seq`, or past what a filter skipped.
    resume: i64,
    filter: Option<EventFilter>,
    filtered: bool,
    retrier: Retrier,
    stream: Option<Streaming<WatchRunResponse>>,
    /// Accepted items not yet handed out, in order.
    ready: VecDeque<Result<RunEvent, Error>>,
    /// Set once the run's end or a final error is in `ready`.
    done: bool,
    /// Shared with the [`Watch`]: set at the run's end.
    end: Arc<Mutex<Option<RunEnd>>>,
}

impl<T> Watcher<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    async fn next(&mut self) -> Option<Result<RunEvent, Error>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                let request = WatchRunRequest {
                    run_id: self.run_id.clone(),
                    after_seq: self.resume,
                    filter: self.filter.clone(),
                };
                match self.client.watch_run(request).await {
                    // Only a response counts as the outage being over, as in
                    // every client: a server that accepts calls and fails
                    // them at once still runs down the budget.
                    Ok(response) => self.stream = Some(response.into_inner()),
                    Err(status) => self.retry_or_fail(&status).await,
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(response)) => {
                    self.retrier.received();
                    self.accept(response);
                }
                // OK before the run's end: the server ends OK only after
                // stream_end, so this is a lost stream; resume it.
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
    /// the run's end, at a skipped seq or at an event this client cannot
    /// name.
    fn accept(&mut self, response: WatchRunResponse) {
        for event in response.events {
            if event.seq <= self.resume {
                continue;
            }
            if !self.filtered && event.seq != self.last_seq + 1 {
                let gap =
                    Error::SeqGap { run_id: self.run_id.clone(), expected: self.last_seq + 1, received: event.seq };
                self.finish(Err(gap));
                return;
            }
            if let Err(unknown) = require_known(&event) {
                self.finish(Err(unknown.into()));
                return;
            }
            self.last_seq = event.seq;
            self.resume = event.seq;
            let status = match &event.event {
                Some(Event::RunCompleted(done)) => Some(done.status),
                _ => None,
            };
            self.ready.push_back(Ok(event));
            if let Some(status) = status {
                self.end_at(self.last_seq, status, false);
                return;
            }
        }
        if let Some(end) = response.stream_end {
            if end.last_seq > self.resume {
                // The end says events were skipped: judged before this
                // response's resume_after_seq, since RunCompleted, which
                // every filter selects, must have come before the end.
                let gap =
                    Error::SeqGap { run_id: self.run_id.clone(), expected: self.resume + 1, received: end.last_seq };
                self.finish(Err(gap));
                return;
            }
            self.end_at(end.last_seq, end.status, false);
            return;
        }
        if self.filtered {
            // The server looked this far; what it skipped is filtered out.
            self.resume = self.resume.max(response.resume_after_seq);
        }
    }

    fn end_at(&mut self, last_seq: i64, status: i32, beyond_end: bool) {
        let end = RunEnd { run_id: self.run_id.clone(), last_seq, status, beyond_end };
        *self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(end);
        self.finish_ok();
    }

    /// After a failed call or stream: sleeps and lets the loop resume, or
    /// queues the final error, or ends the watch when the server says
    /// `after_seq` is beyond the finished run's end.
    async fn retry_or_fail(&mut self, status: &tonic::Status) {
        let error = RpcError::from_status(status);
        if let Some(end) = RunEnd::beyond(&self.run_id, &error) {
            self.end_at(end.last_seq, end.status, true);
            return;
        }
        if !error.is_retryable() {
            self.finish(Err(Error::Rpc(error)));
            return;
        }
        if let Err(elapsed) = self.retrier.wait(&error, self.resume, None).await {
            self.finish(Err(Error::RetriesExhausted {
                run_id: self.run_id.clone(),
                after_seq: self.resume,
                elapsed,
                last: error,
            }));
        }
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
