//! `watch_events`: the events of every run a filter selects, as a stream
//! that resumes from the last cursor after disconnects and restarts.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tonic::codec::Streaming;
use tonic::codegen::{Body, Bytes, StdError};

use crate::error::{Error, RpcError};
use crate::event::require_known;
use crate::v1::run_service_client::RunServiceClient;
use crate::v1::{RunEvent, WatchEventsRequest, WatchEventsResponse};
use crate::watch::{Retrier, WatchOptions};

/// How many runs the duplicate filter remembers (those first delivered
/// most recently). A server resends at most what follows the cursor a call
/// resumed from, that is the runs of the last responses.
const DEDUP_RUNS: usize = 65_536;

/// One event from [`watch_events`], with where to resume after it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WatchedEvent {
    /// The event.
    pub event: RunEvent,
    /// Resumes after this event without losing anything after it: the
    /// cursor of the response that carried the event when it is that
    /// response's last, otherwise the cursor before the response (a resume
    /// may deliver the response's earlier events again). Empty before the
    /// first response of a watch started without a cursor.
    pub cursor: String,
}

/// The events across runs from [`watch_events`]: `Ok` items in commit
/// order, never ending by itself; one `Err` ends it.
pub struct EventsWatch {
    inner: Pin<Box<dyn Stream<Item = Result<WatchedEvent, Error>> + Send>>,
}

impl std::fmt::Debug for EventsWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsWatch").finish_non_exhaustive()
    }
}

impl Stream for EventsWatch {
    type Item = Result<WatchedEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Streams `WatchEvents` from `request` (its cursor, start and filter) with
/// the default [`WatchOptions`].
///
/// It remembers the cursor of the last response (empty ones too). After a
/// failure [`watch`](crate::watch) would retry ([`RpcError::is_retryable`];
/// an OK end is a cut stream) it waits as `watch` does and calls again from
/// that cursor with the same filter, or with `request` as given before any
/// response came, and drops an event whose run's `seq` it already
/// delivered. A status that is not retried ends the stream with
/// [`Error::Rpc`]: `INVALID_ARGUMENT` with reason `CURSOR_INVALID` (a
/// malformed cursor), `OUT_OF_RANGE` with reason `CURSOR_EXPIRED` (older
/// than the retention window), ...; a spent budget with
/// [`Error::EventsRetriesExhausted`]; an unknown variant with
/// [`Error::UnknownEvent`].
pub fn watch_events<T>(client: RunServiceClient<T>, request: WatchEventsRequest) -> EventsWatch
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    watch_events_with_options(client, request, WatchOptions::default())
}

/// [`watch_events`] with explicit retry options (`filter` is not used).
pub fn watch_events_with_options<T>(
    client: RunServiceClient<T>,
    request: WatchEventsRequest,
    options: WatchOptions,
) -> EventsWatch
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    let state = EventsWatcher {
        client,
        cursor: request.cursor.clone(),
        first: request,
        retrier: Retrier::new(options),
        stream: None,
        ready: VecDeque::new(),
        done: false,
        delivered: HashMap::new(),
        order: VecDeque::new(),
    };
    let inner = futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    });
    EventsWatch { inner: Box::pin(inner) }
}

struct EventsWatcher<T> {
    client: RunServiceClient<T>,
    first: WatchEventsRequest,
    /// The cursor of the last response, or the request's.
    cursor: String,
    retrier: Retrier,
    stream: Option<Streaming<WatchEventsResponse>>,
    ready: VecDeque<Result<WatchedEvent, Error>>,
    done: bool,
    /// The highest `seq` delivered per run; `order` lists the runs oldest
    /// first, to forget the oldest beyond [`DEDUP_RUNS`].
    delivered: HashMap<String, i64>,
    order: VecDeque<String>,
}

impl<T> EventsWatcher<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    async fn next(&mut self) -> Option<Result<WatchedEvent, Error>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                let request = if self.cursor.is_empty() {
                    self.first.clone() // no response yet: the caller's start again
                } else {
                    WatchEventsRequest { cursor: self.cursor.clone(), ..self.first.clone() }
                };
                match self.client.watch_events(request).await {
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
                // The stream does not end by itself: a cut stream, resume it.
                Ok(None) => {
                    self.stream = None;
                    self.retry_or_fail(&tonic::Status::unavailable("WatchEvents stream ended")).await;
                }
                Err(status) => {
                    self.stream = None;
                    self.retry_or_fail(&status).await;
                }
            }
        }
    }

    /// Queues the events of one response not delivered before, each with
    /// the cursor to resume after it, and moves the cursor on.
    fn accept(&mut self, response: WatchEventsResponse) {
        let before = self.cursor.clone();
        let mut fresh = Vec::with_capacity(response.events.len());
        for event in response.events {
            if self.first_time(&event) {
                fresh.push(event);
            }
        }
        let count = fresh.len();
        for (index, event) in fresh.into_iter().enumerate() {
            if let Err(unknown) = require_known(&event) {
                self.finish(Err(unknown.into()));
                return;
            }
            let last = index + 1 == count;
            if last && !response.cursor.is_empty() {
                self.cursor.clone_from(&response.cursor);
            }
            let cursor = if last { self.cursor.clone() } else { before.clone() };
            self.ready.push_back(Ok(WatchedEvent { event, cursor }));
        }
        if !response.cursor.is_empty() {
            self.cursor = response.cursor;
        }
    }

    /// Records the event as delivered; false when its run's seq was already.
    fn first_time(&mut self, event: &RunEvent) -> bool {
        match self.delivered.get_mut(&event.run_id) {
            Some(last) if event.seq <= *last => false,
            Some(last) => {
                *last = event.seq;
                true
            }
            None => {
                self.delivered.insert(event.run_id.clone(), event.seq);
                self.order.push_back(event.run_id.clone());
                if self.order.len() > DEDUP_RUNS
                    && let Some(oldest) = self.order.pop_front()
                {
                    self.delivered.remove(&oldest);
                }
                true
            }
        }
    }

    async fn retry_or_fail(&mut self, status: &tonic::Status) {
        let error = RpcError::from_status(status);
        if !error.is_retryable() {
            self.finish(Err(Error::Rpc(error)));
            return;
        }
        if let Err(elapsed) = self.retrier.wait(&error, 0, Some(&self.cursor)).await {
            let cursor = self.cursor.clone();
            self.finish(Err(Error::EventsRetriesExhausted { cursor, elapsed, last: error }));
        }
    }

    fn finish(&mut self, item: Result<WatchedEvent, Error>) {
        self.ready.push_back(item);
        self.done = true;
        self.stream = None;
    }
}
