//! A real tonic server on 127.0.0.1:0 that plays a scripted WatchRun, and a
//! TCP proxy that cuts connections and plays an absent server.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use runwire_client::ERROR_DOMAIN;
use runwire_client::v1::run_service_server::{RunService, RunServiceServer};
use runwire_client::v1::{
    RunEvent, StreamEnd, WatchEventsRequest, WatchEventsResponse, WatchRunRequest, WatchRunResponse,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch as signal};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::RUN_ID;

// --- the scripted server ---------------------------------------------------

/// What one WatchRun call does, step by step.
#[derive(Clone)]
pub enum Step {
    /// Send one WatchRunResponse with these events.
    Send(Vec<RunEvent>),
    /// Send one WatchRunResponse with these events and `resume_after_seq`.
    SendResume(Vec<RunEvent>, i64),
    /// Send one WatchEventsResponse with these events and `cursor`.
    SendCursor(Vec<RunEvent>, &'static str),
    /// Send one WatchRunResponse with only `stream_end`: last seq, status.
    End(i64, i32),
    /// End the call with this status.
    Fail(Status),
    /// Keep the call open, sending nothing, until the connection dies.
    Hang,
}

#[derive(Default)]
struct Script {
    /// One entry per expected call; a call beyond them fails UNAVAILABLE
    /// (a draining server).
    calls: Mutex<VecDeque<Vec<Step>>>,
    /// The `after_seq` of every call, in order.
    seen_after_seq: Mutex<Vec<i64>>,
    /// Every WatchRun request, in order.
    watch_requests: Mutex<Vec<WatchRunRequest>>,
    /// Every WatchEvents request, in order.
    events_requests: Mutex<Vec<WatchEventsRequest>>,
    /// When each call (of either method) arrived, in order.
    call_times: Mutex<Vec<Instant>>,
    /// When each `Step::Fail` status was sent, in order.
    fail_times: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    /// Records a call's arrival and pops its steps.
    fn next_call(&self) -> Vec<Step> {
        self.call_times.lock().unwrap().push(Instant::now());
        self.calls.lock().unwrap().pop_front().unwrap_or_else(|| vec![Step::Fail(draining())])
    }

    /// `status` as the call's only answer (trailers-only), its time recorded.
    fn fail_now<T>(&self, status: &Status) -> Result<T, Status> {
        self.fail_times.lock().unwrap().push(Instant::now());
        Err(status.clone())
    }

    /// `items` as a response stream (then pending when `hang`), the time of
    /// each error it sends recorded.
    fn stream<T: Send + 'static>(
        &self,
        items: Vec<Result<T, Status>>,
        hang: bool,
    ) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
        let fails = Arc::clone(&self.fail_times);
        let stream = futures_util::stream::iter(items).inspect(move |item| {
            if item.is_err() {
                fails.lock().unwrap().push(Instant::now());
            }
        });
        if hang { stream.chain(futures_util::stream::pending()).boxed() } else { stream.boxed() }
    }
}

#[derive(Clone)]
struct ScriptedRunService(Arc<Script>);

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchRunResponse, Status>> + Send>>;
type EventsStream = Pin<Box<dyn Stream<Item = Result<WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RunService for ScriptedRunService {
    async fn watch_events(&self, request: Request<WatchEventsRequest>) -> Result<Response<EventsStream>, Status> {
        self.0.events_requests.lock().unwrap().push(request.into_inner());
        let steps = self.0.next_call();
        if let Some(Step::Fail(status)) = steps.first() {
            return self.0.fail_now(status);
        }
        let mut items = Vec::new();
        let mut hang = false;
        for step in steps {
            match step {
                Step::SendCursor(events, cursor) => {
                    items.push(Ok(WatchEventsResponse { events, cursor: cursor.to_owned() }));
                }
                Step::Fail(status) => items.push(Err(status)),
                Step::Hang => hang = true,
                _ => panic!("not a WatchEvents step"),
            }
        }
        Ok(Response::new(self.0.stream(items, hang)))
    }

    async fn watch_run(&self, request: Request<WatchRunRequest>) -> Result<Response<ResponseStream>, Status> {
        let request = request.into_inner();
        assert_eq!(request.run_id, RUN_ID);
        self.0.seen_after_seq.lock().unwrap().push(request.after_seq);
        self.0.watch_requests.lock().unwrap().push(request.clone());
        let steps = self.0.next_call();
        if let Some(Step::Fail(status)) = steps.first() {
            return self.0.fail_now(status); // trailers-only, before any message
        }
        let mut items = Vec::new();
        let mut hang = false;
        for step in steps {
            match step {
                Step::Send(events) => {
                    let resume_after_seq = events.last().map_or(0, |e| e.seq);
                    items.push(Ok(WatchRunResponse { events, stream_end: None, resume_after_seq }));
                }
                Step::SendResume(events, resume_after_seq) => {
                    items.push(Ok(WatchRunResponse { events, stream_end: None, resume_after_seq }));
                }
                Step::End(last_seq, status) => items.push(Ok(WatchRunResponse {
                    events: Vec::new(),
                    stream_end: Some(StreamEnd { last_seq, status }),
                    resume_after_seq: last_seq,
                })),
                Step::SendCursor(..) => panic!("not a WatchRun step"),
                Step::Fail(status) => items.push(Err(status)),
                Step::Hang => hang = true,
            }
        }
        Ok(Response::new(self.0.stream(items, hang)))
    }
}

pub fn runwire_status(code: Code, reason: &str, details: ErrorDetails) -> Status {
    runwire_status_with(code, reason, HashMap::new(), details)
}

pub fn runwire_status_with(
    code: Code,
    reason: &str,
    metadata: HashMap<String, String>,
    mut details: ErrorDetails,
) -> Status {
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, format!("{reason} (scripted)"), details)
}

pub fn draining() -> Status {
    runwire_status(Code::Unavailable, "SERVER_DRAINING", ErrorDetails::new())
}

pub struct Server {
    pub addr: SocketAddr,
    script: Arc<Script>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(calls: Vec<Vec<Step>>) -> Server {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), calls)
    }

    pub fn start_on(listener: TcpListener, calls: Vec<Vec<Step>>) -> Server {
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Script { calls: Mutex::new(calls.into()), ..Script::default() });
        let service = RunServiceServer::new(ScriptedRunService(script.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server { addr, script, stop: Some(stop), task }
    }

    pub fn after_seqs(&self) -> Vec<i64> {
        self.script.seen_after_seq.lock().unwrap().clone()
    }

    pub fn watch_requests(&self) -> Vec<WatchRunRequest> {
        self.script.watch_requests.lock().unwrap().clone()
    }

    pub fn events_requests(&self) -> Vec<WatchEventsRequest> {
        self.script.events_requests.lock().unwrap().clone()
    }

    /// When each call arrived, on the server's clock.
    pub fn call_times(&self) -> Vec<Instant> {
        self.script.call_times.lock().unwrap().clone()
    }

    /// When each scripted failure was sent, on the server's clock.
    pub fn fail_times(&self) -> Vec<Instant> {
        self.script.fail_times.lock().unwrap().clone()
    }

    /// Graceful shutdown; returns once the listener is closed and every
    /// connection has ended.
    pub async fn stop(mut self) -> Vec<i64> {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.after_seqs()
    }
}

// --- a TCP proxy that can cut connections and play dead --------------------

#[derive(Default)]
struct ProxyState {
    /// While set, new connections are accepted and closed at once, as if
    /// the server were restarting.
    down: Mutex<bool>,
    refused: Mutex<usize>,
    refused_changed: Notify,
    accepted: Mutex<usize>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    cut: signal::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let (cut, cut_rx) = signal::channel(0u64);
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if *accept_state.down.lock().unwrap() {
                    drop(inbound);
                    *accept_state.refused.lock().unwrap() += 1;
                    accept_state.refused_changed.notify_waiters();
                    continue;
                }
                *accept_state.accepted.lock().unwrap() += 1;
                let mut cut_rx = cut_rx.clone();
                cut_rx.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        // Dropping both sockets resets the client's
                        // connection mid-stream.
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, state, cut }
    }

    /// Closes every live connection.
    pub fn cut_connections(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    pub fn set_down(&self, down: bool) {
        *self.state.down.lock().unwrap() = down;
    }

    pub fn accepted(&self) -> usize {
        *self.state.accepted.lock().unwrap()
    }

    /// Waits until the proxy has turned away `n` connections while down.
    pub async fn until_refused(&self, n: usize) {
        loop {
            let notified = self.state.refused_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if *self.state.refused.lock().unwrap() >= n {
                return;
            }
            notified.await;
        }
    }
}
