//! `watch` against a real tonic server on 127.0.0.1:0 that plays a scripted
//! WatchRun, behind a TCP proxy the tests use to cut connections and to
//! play an absent server. Every wait is on an event, never on time.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use runwire_client::v1::run_service_client::RunServiceClient;
use runwire_client::v1::{ErrorReason, RunEvent, RunStatus};
use runwire_client::{ERROR_DOMAIN, Error, OnRetry, Watch, WatchOptions, check_stream, watch_with_options};
use support::server::{Proxy, Server, Step, draining, runwire_status, runwire_status_with};
use support::*;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

// --- helpers ---------------------------------------------------------------

fn fast() -> WatchOptions {
    WatchOptions {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        give_up_after: Duration::from_secs(30),
        ..WatchOptions::default()
    }
}

/// A status with one `ErrorInfo` of `domain`, or none.
fn status_with_info(code: Code, domain: Option<&str>) -> Status {
    let mut details = ErrorDetails::new();
    if let Some(domain) = domain {
        details.set_error_info("SCRIPTED", domain, HashMap::new());
    }
    Status::with_error_details(code, format!("{code:?} (scripted)"), details)
}

/// `(code, after_seq)` of every reconnect, as `on_retry` heard of them.
type Retries = Arc<Mutex<Vec<(Code, i64)>>>;

/// [`fast`] options that record every reconnect.
fn recording() -> (WatchOptions, Retries) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let on_retry = OnRetry::new(move |r| log.lock().unwrap().push((r.error.code(), r.after_seq)));
    (WatchOptions { on_retry: Some(on_retry), ..fast() }, seen)
}

fn client(addr: SocketAddr) -> RunServiceClient<Channel> {
    RunServiceClient::new(Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy())
}

/// Events `from..=to` of `simple_run(total)`.
fn events(total: i64, from: i64, to: i64) -> Vec<RunEvent> {
    simple_run(total).into_iter().filter(|e| (from..=to).contains(&e.seq)).collect()
}

async fn next_ok(watch: &mut Watch) -> RunEvent {
    match watch.next().await {
        Some(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Drains the watch, which must end cleanly.
async fn rest(watch: &mut Watch) -> Vec<RunEvent> {
    let mut out = Vec::new();
    while let Some(item) = watch.next().await {
        out.push(item.unwrap_or_else(|e| panic!("watch failed: {e}")));
    }
    out
}

fn seqs(events: &[RunEvent]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}

// --- tests -----------------------------------------------------------------

/// The connection dies mid-stream; the resumed call re-sends seqs the
/// client already has; then the server drains with UNAVAILABLE and the
/// third call re-sends one more. The client sees 1..=6 once each.
#[tokio::test]
async fn test_watch_resumes_after_connection_loss_without_duplicates() {
    let server = Server::start(vec![
        vec![Step::Send(events(6, 1, 2)), Step::Send(events(6, 3, 3)), Step::Hang],
        vec![Step::Send(events(6, 2, 4)), Step::Send(events(6, 5, 5)), Step::Fail(draining())],
        vec![Step::Send(events(6, 5, 6))],
    ])
    .await;
    let proxy = Proxy::start(server.addr).await;
    let mut watch = watch_with_options(client(proxy.addr), RUN_ID, 0, fast());

    let mut got = vec![next_ok(&mut watch).await, next_ok(&mut watch).await, next_ok(&mut watch).await];
    assert_eq!(seqs(&got), [1, 2, 3]);
    proxy.cut_connections(); // the first call hangs after seq 3
    got.extend(rest(&mut watch).await);

    assert_eq!(seqs(&got), [1, 2, 3, 4, 5, 6]);
    assert_eq!(got, simple_run(6));
    assert!(check_stream(0, &got).is_empty());
    assert_eq!(server.after_seqs(), [0, 3, 5]);
    assert!(proxy.accepted() >= 2, "the client reconnected through a new connection");
}

/// The server goes away entirely (connections refused while it is down)
/// and comes back: the watch keeps retrying and resumes where it was.
#[tokio::test]
async fn test_watch_retries_while_the_server_is_absent() {
    let server =
        Server::start(vec![vec![Step::Send(events(5, 1, 2)), Step::Hang], vec![Step::Send(events(5, 3, 5))]]).await;
    let proxy = Proxy::start(server.addr).await;
    let mut watch = watch_with_options(client(proxy.addr), RUN_ID, 0, fast());

    let mut got = vec![next_ok(&mut watch).await, next_ok(&mut watch).await];
    proxy.set_down(true);
    proxy.cut_connections();
    // Drive the watch while waiting: it only retries while polled.
    let reconnected = tokio::spawn(async move { rest(&mut watch).await });
    proxy.until_refused(3).await;
    proxy.set_down(false);
    got.extend(reconnected.await.unwrap());

    assert_eq!(got, simple_run(5));
    assert_eq!(server.after_seqs(), [0, 2]);
}

/// A real server restart on the same port: the first server drains (its
/// stream ends UNAVAILABLE) and stops; a new one takes the port.
#[tokio::test]
async fn test_watch_survives_a_server_restart_on_the_same_port() {
    let first = Server::start(vec![vec![Step::Send(events(6, 1, 3)), Step::Fail(draining())]]).await;
    let addr = first.addr;
    let mut watch = watch_with_options(client(addr), RUN_ID, 0, fast());
    let mut got = vec![next_ok(&mut watch).await, next_ok(&mut watch).await, next_ok(&mut watch).await];

    // Keep polling so the client retries against the stopping server and
    // then against nothing at all.
    let resumed = tokio::spawn(async move { rest(&mut watch).await });
    let first_calls = first.stop().await;
    let second = Server::start_on(
        TcpListener::bind(addr).await.expect("rebind the restarted server's port"),
        vec![vec![Step::Send(events(6, 2, 4))], vec![Step::Send(events(6, 4, 6))]],
    );
    got.extend(resumed.await.unwrap());

    assert_eq!(got, simple_run(6));
    assert!(first_calls.iter().all(|after| *after == 0 || *after == 3), "{first_calls:?}");
    // The second server saw a resume from 3, then (its stream ended OK
    // before RunCompleted) from 4.
    assert_eq!(second.after_seqs(), [3, 4]);
}

#[tokio::test]
async fn test_watch_retries_internal_from_a_dying_stream() {
    let server = Server::start(vec![
        vec![Step::Send(events(4, 1, 2)), Step::Fail(Status::internal("h2 protocol error: stream reset"))],
        vec![Step::Fail(Status::unknown("error reading a body from connection"))],
        vec![Step::Send(events(4, 3, 4))],
    ])
    .await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());
    assert_eq!(rest(&mut watch).await, simple_run(4));
    assert_eq!(server.after_seqs(), [0, 2, 2]);
}

#[tokio::test]
async fn test_watch_surfaces_non_retryable_status_as_typed_error() {
    let server =
        Server::start(vec![vec![Step::Fail(runwire_status(Code::NotFound, "RUN_NOT_FOUND", ErrorDetails::new()))]])
            .await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());
    match watch.next().await {
        Some(Err(Error::Rpc(e))) => {
            assert_eq!(e.code(), Code::NotFound);
            assert_eq!(e.reason(), Some(ErrorReason::RunNotFound));
        }
        other => panic!("expected RUN_NOT_FOUND, got {other:?}"),
    }
    assert!(watch.next().await.is_none());
    assert_eq!(server.after_seqs(), [0], "not retried");
}

#[tokio::test]
async fn test_watch_reports_bad_request_field_violations() {
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation("after_seq", "must be >= 0, got -1");
    let server =
        Server::start(vec![vec![Step::Fail(runwire_status(Code::InvalidArgument, "REQUEST_INVALID", details))]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, -1, fast());
    let Some(Err(Error::Rpc(e))) = watch.next().await else { panic!("expected INVALID_ARGUMENT") };
    assert_eq!(e.reason(), Some(ErrorReason::RequestInvalid));
    assert_eq!(e.field_violations()[0].field, "after_seq");
    assert_eq!(e.field_violations()[0].description, "must be >= 0, got -1");
}

#[tokio::test]
async fn test_watch_internal_fault_reported_by_server_is_not_retried() {
    let fault = runwire_status(Code::Internal, "INTERNAL", ErrorDetails::new());
    let server = Server::start(vec![vec![Step::Send(events(4, 1, 1)), Step::Fail(fault)]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());
    assert_eq!(next_ok(&mut watch).await.seq, 1);
    let Some(Err(Error::Rpc(e))) = watch.next().await else { panic!("expected INTERNAL") };
    assert_eq!(e.reason(), Some(ErrorReason::Internal));
    assert_eq!(server.after_seqs(), [0]);
}

#[tokio::test]
async fn test_watch_unknown_event_ends_with_upgrade_error() {
    let mut unknown = events(4, 2, 2).remove(0);
    unknown.event = None; // what prost makes of a oneof case it does not know
    let server = Server::start(vec![vec![Step::Send(vec![events(4, 1, 1).remove(0), unknown])]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());
    assert_eq!(next_ok(&mut watch).await.seq, 1);
    match watch.next().await {
        Some(Err(Error::UnknownEvent(e))) => {
            assert_eq!(e.seq, 2);
            assert!(e.to_string().contains("upgrade the client"));
        }
        other => panic!("expected an unknown-event error, got {other:?}"),
    }
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn test_watch_gives_up_after_its_budget_without_progress() {
    let server = Server::start(vec![]).await;
    let proxy = Proxy::start(server.addr).await;
    proxy.set_down(true);
    let options = WatchOptions { give_up_after: Duration::from_millis(50), ..fast() };
    let mut watch = watch_with_options(client(proxy.addr), RUN_ID, 7, options);
    match watch.next().await {
        Some(Err(Error::RetriesExhausted { after_seq, last, .. })) => {
            assert_eq!(after_seq, 7);
            assert!(last.is_retryable());
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn test_watch_resumed_from_after_seq_stops_after_run_completed() {
    let server = Server::start(vec![vec![Step::Send(events(5, 3, 5)), Step::Hang]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 2, fast());
    let got = rest(&mut watch).await;
    assert_eq!(seqs(&got), [3, 4, 5]);
    assert!(check_stream(2, &got).is_empty());
}

/// The retry policy against a real server, for the codes a dying connection
/// or a proxy produces besides UNAVAILABLE: without a runwire ErrorInfo they
/// are resumed, with one they are the server's answer and end the watch, and
/// an ErrorInfo of another domain (a proxy's) does not count. Each status is
/// played both as the call's only answer (trailers-only) and mid-stream.
#[tokio::test]
async fn test_watch_retry_policy_by_code_and_error_info_domain() {
    const PROXY: Option<&str> = Some("proxy.example.com");
    const RUNWIRE: Option<&str> = Some(ERROR_DOMAIN);
    // (code, ErrorInfo domain, retried)
    let cases = [
        (Code::Aborted, None, true),
        (Code::DeadlineExceeded, None, true),
        (Code::Aborted, PROXY, true),
        (Code::DeadlineExceeded, PROXY, true),
        (Code::Internal, PROXY, true),
        (Code::Unknown, PROXY, true),
        (Code::Cancelled, PROXY, true),
        (Code::Unavailable, PROXY, true),
        (Code::Aborted, RUNWIRE, false),
        (Code::DeadlineExceeded, RUNWIRE, false),
        (Code::Internal, RUNWIRE, false),
        (Code::Cancelled, RUNWIRE, false),
        (Code::FailedPrecondition, None, false),
        (Code::ResourceExhausted, PROXY, false),
    ];
    for (code, domain, retried) in cases {
        for mid_stream in [false, true] {
            let case = format!("{code:?} with ErrorInfo {domain:?}, mid-stream: {mid_stream}");
            let failure = Step::Fail(status_with_info(code, domain));
            let first = if mid_stream { vec![Step::Send(events(4, 1, 2)), failure] } else { vec![failure] };
            let resume_from = if mid_stream { 2 } else { 0 };
            let server = Server::start(vec![first, vec![Step::Send(events(4, resume_from + 1, 4))]]).await;
            let (options, retries) = recording();
            let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, options);

            let mut got = Vec::new();
            let mut error = None;
            while let Some(item) = watch.next().await {
                match item {
                    Ok(event) => got.push(event),
                    Err(e) => error = Some(e),
                }
            }

            if retried {
                assert!(error.is_none(), "{case}: {error:?}");
                assert_eq!(got, simple_run(4), "{case}");
                assert_eq!(server.after_seqs(), [0, resume_from], "{case}");
                assert_eq!(*retries.lock().unwrap(), [(code, resume_from)], "{case}: one reconnect");
            } else {
                let Some(Error::Rpc(e)) = error else { panic!("{case}: expected Error::Rpc, got {error:?}") };
                assert_eq!(e.code(), code, "{case}");
                assert_eq!(e.domain(), domain, "{case}");
                assert!(!e.is_retryable(), "{case}");
                assert_eq!(seqs(&got), events(4, 1, resume_from).iter().map(|e| e.seq).collect::<Vec<_>>(), "{case}");
                assert_eq!(server.after_seqs(), [0], "{case}: not retried");
                assert!(retries.lock().unwrap().is_empty(), "{case}");
            }
        }
    }
}

/// A proxy may add its own ErrorInfo next to runwire's: the runwire one
/// still marks the status as the server's answer, and is the one read.
#[tokio::test]
async fn test_watch_runwire_error_info_behind_a_foreign_one_is_not_retried() {
    let infos = [
        tonic_types::ErrorInfo::new("UPSTREAM_ERROR", "proxy.example.com", HashMap::new()).into(),
        tonic_types::ErrorInfo::new("INTERNAL", ERROR_DOMAIN, HashMap::new()).into(),
    ];
    let status = Status::with_error_details_vec(Code::Internal, "boom", infos);
    let server = Server::start(vec![vec![Step::Send(events(4, 1, 1)), Step::Fail(status)]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());
    assert_eq!(next_ok(&mut watch).await.seq, 1);
    let Some(Err(Error::Rpc(e))) = watch.next().await else { panic!("expected INTERNAL") };
    assert_eq!(e.reason(), Some(ErrorReason::Internal));
    assert_eq!(e.domain(), Some(ERROR_DOMAIN));
    assert!(watch.next().await.is_none());
    assert_eq!(server.after_seqs(), [0]);
}

/// `on_retry` hears of every reconnect, and of nothing else.
#[tokio::test]
async fn test_watch_calls_on_retry_once_per_reconnect() {
    let server = Server::start(vec![
        vec![Step::Send(events(6, 1, 2)), Step::Fail(Status::aborted("stream reset"))],
        vec![Step::Fail(draining())],
        vec![Step::Send(events(6, 3, 4))], // ends OK before RunCompleted
        vec![Step::Send(events(6, 5, 6))],
    ])
    .await;
    let (options, retries) = recording();
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, options);
    assert_eq!(rest(&mut watch).await, simple_run(6));
    assert_eq!(server.after_seqs(), [0, 2, 2, 4]);
    assert_eq!(*retries.lock().unwrap(), [(Code::Aborted, 2), (Code::Unavailable, 2), (Code::Unavailable, 4)]);
}

// --- the server's RetryInfo ------------------------------------------------

/// A RetryInfo delay far above [`fast`]'s waits (1 ms doubling to 10 ms): a
/// watch that ignored it would come back within milliseconds.
const ASKED: Duration = Duration::from_millis(300);

/// `code` with a runwire ErrorInfo of `reason` and a RetryInfo of `delay`.
fn asking(code: Code, reason: &str, delay: Duration) -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(delay));
    runwire_status(code, reason, details)
}

/// From the first failure sent to the second call received, on the server's clock.
fn retry_gap(server: &Server) -> Duration {
    let (fails, calls) = (server.fail_times(), server.call_times());
    assert!(!fails.is_empty() && calls.len() >= 2, "{} failures, {} calls", fails.len(), calls.len());
    calls[1].duration_since(fails[0])
}

/// The wait is the longer of the backoff's and the server's RetryInfo, for
/// any retried code: OVERLOADED, and UNAVAILABLE should a draining server
/// send one.
#[tokio::test]
async fn test_watch_waits_at_least_the_retry_info_delay() {
    for (code, reason) in [(Code::ResourceExhausted, "OVERLOADED"), (Code::Unavailable, "SERVER_DRAINING")] {
        let server = Server::start(vec![
            vec![Step::Send(events(5, 1, 2)), Step::Fail(asking(code, reason, ASKED))],
            vec![Step::Send(events(5, 3, 5))],
        ])
        .await;
        let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());

        assert_eq!(rest(&mut watch).await, simple_run(5), "{code:?}");
        assert_eq!(server.after_seqs(), [0, 2]);
        let gap = retry_gap(&server);
        assert!(gap >= ASKED, "{code:?}: second call {gap:?} after the failure, want at least {ASKED:?}");
    }
}

/// An hour-long RetryInfo is cut to `max_server_delay`: the watch comes
/// back, and not before the cap.
#[tokio::test]
async fn test_watch_caps_the_retry_info_delay() {
    let hour = Duration::from_secs(3600);
    let server = Server::start(vec![
        vec![Step::Fail(asking(Code::ResourceExhausted, "OVERLOADED", hour))],
        vec![Step::Send(events(5, 1, 5))],
    ])
    .await;
    let options = WatchOptions { max_server_delay: ASKED, ..fast() };
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, options);

    let got = tokio::time::timeout(Duration::from_secs(10), rest(&mut watch)).await.expect("the cap bounds the wait");
    assert_eq!(got, simple_run(5));
    let gap = retry_gap(&server);
    assert!(gap >= ASKED, "second call {gap:?} after the failure, want at least the cap {ASKED:?}");
}

/// A delay past `give_up_after` ends the watch at once with the last error,
/// rather than a sleep past the budget.
#[tokio::test]
async fn test_watch_gives_up_when_the_retry_info_delay_outlasts_its_budget() {
    let server = Server::start(vec![
        vec![Step::Fail(asking(Code::ResourceExhausted, "OVERLOADED", Duration::from_secs(20)))],
        vec![Step::Send(events(5, 1, 5))],
    ])
    .await;
    let options = WatchOptions { give_up_after: Duration::from_secs(10), ..fast() };
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, options);

    match watch.next().await {
        Some(Err(Error::RetriesExhausted { last, elapsed, .. })) => {
            assert_eq!(last.reason(), Some(ErrorReason::Overloaded));
            assert_eq!(last.retry_delay(), Some(Duration::from_secs(20)));
            assert!(elapsed < Duration::from_secs(10));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(server.after_seqs(), [0], "no retry past the budget");
}

// --- the run's end ---------------------------------------------------------

#[test]
fn test_watch_defaults_are_the_same_in_every_client() {
    let d = WatchOptions::default();
    assert_eq!(
        (d.initial_backoff, d.max_backoff, d.give_up_after, d.max_server_delay),
        (Duration::from_millis(100), Duration::from_secs(2), Duration::from_secs(120), Duration::from_secs(30))
    );
}

/// A watcher that saw RunCompleted's seq but not the stream's end resumes at
/// after_seq = last: the server's stream_end ends the watch, with no retry.
#[tokio::test]
async fn test_watch_at_the_last_seq_of_a_finished_run_ends_with_its_status() {
    let server = Server::start(vec![vec![Step::End(5, RunStatus::Failed as i32)]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 5, fast());
    assert!(rest(&mut watch).await.is_empty());
    let end = watch.end().expect("the run's end");
    assert_eq!((end.last_seq, end.status, end.beyond_end), (5, RunStatus::Failed as i32, false));
    assert_eq!(end.status_name(), "RUN_STATUS_FAILED");
    assert_eq!(server.stop().await, [5]);
}

/// after_seq = last + 5: OUT_OF_RANGE AFTER_SEQ_BEYOND_END ends the watch
/// as finished; it is not retried.
#[tokio::test]
async fn test_watch_past_the_end_of_a_finished_run_ends_with_its_status() {
    let metadata = HashMap::from([
        ("last_seq".to_owned(), "5".to_owned()),
        ("status".to_owned(), "RUN_STATUS_SUCCEEDED".to_owned()),
    ]);
    let status = runwire_status_with(Code::OutOfRange, "AFTER_SEQ_BEYOND_END", metadata, ErrorDetails::new());
    let server = Server::start(vec![vec![Step::Fail(status)]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 10, fast());
    assert!(rest(&mut watch).await.is_empty());
    let end = watch.end().expect("the run's end");
    assert_eq!((end.last_seq, end.status, end.beyond_end), (5, RunStatus::Succeeded as i32, true));
    assert_eq!(server.stop().await, [10]);
}

/// The run finishes while the watcher is between reconnects.
#[tokio::test]
async fn test_watch_resumed_after_the_run_finished_between_reconnects() {
    let server = Server::start(vec![
        vec![Step::Send(events(6, 1, 3)), Step::Fail(draining())],
        vec![Step::Send(events(6, 4, 6)), Step::End(6, RunStatus::Succeeded as i32)],
    ])
    .await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());
    let got = rest(&mut watch).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5, 6]);
    assert_eq!(watch.end().map(|e| e.last_seq), Some(6));
    assert_eq!(server.stop().await, [0, 3]);
}

#[tokio::test]
async fn test_watch_end_keeps_a_status_newer_than_the_client() {
    let server = Server::start(vec![vec![Step::End(5, 42)]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 5, fast());
    assert!(rest(&mut watch).await.is_empty());
    let end = watch.end().expect("the run's end");
    assert_eq!((end.status, end.status_name()), (42, "42".to_owned()));
}

#[tokio::test]
async fn test_watch_seq_gap_is_an_error_not_a_silent_loss() {
    let mut gapped = events(6, 1, 2);
    gapped.extend(events(6, 4, 6));
    let server = Server::start(vec![vec![Step::Send(gapped)]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());
    assert_eq!(next_ok(&mut watch).await.seq, 1);
    assert_eq!(next_ok(&mut watch).await.seq, 2);
    match watch.next().await {
        Some(Err(Error::SeqGap { expected: 3, received: 4, .. })) => {}
        other => panic!("expected SeqGap, got {other:?}"),
    }
    assert!(watch.next().await.is_none());
    assert!(watch.end().is_none());
}

/// `watch` takes any tonic service: here a channel behind an interceptor
/// that adds a bearer token.
#[tokio::test]
async fn test_watch_accepts_an_intercepted_client() {
    let server = Server::start(vec![vec![Step::Send(events(4, 1, 4))]]).await;
    let channel = Endpoint::from_shared(format!("http://{}", server.addr)).unwrap().connect_lazy();
    let intercepted = RunServiceClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", "Bearer t0k".parse().unwrap());
        Ok(request)
    });
    let mut watch = watch_with_options(intercepted, RUN_ID, 0, fast());
    assert_eq!(seqs(&rest(&mut watch).await), [1, 2, 3, 4]);
}

/// A stream_end past the last event delivered means events were skipped.
#[tokio::test]
async fn test_watch_end_past_the_last_event_is_a_seq_gap() {
    let server =
        Server::start(vec![vec![Step::Send(events(6, 1, 3)), Step::End(6, RunStatus::Succeeded as i32)]]).await;
    let mut watch = watch_with_options(client(server.addr), RUN_ID, 0, fast());
    for seq in 1..=3 {
        assert_eq!(next_ok(&mut watch).await.seq, seq);
    }
    match watch.next().await {
        Some(Err(Error::SeqGap { expected: 4, received: 6, .. })) => {}
        other => panic!("expected SeqGap, got {other:?}"),
    }
    assert!(watch.end().is_none());
}
