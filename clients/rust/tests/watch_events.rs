//! `watch_events` against a real tonic server on 127.0.0.1:0 that plays a
//! scripted WatchEvents: cursors, resumes, resent events, typed errors.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use runwire_client::v1::run_service_client::RunServiceClient;
use runwire_client::v1::{ErrorReason, RunEvent, RunEventsFilter, StreamStart, WatchEventsRequest};
use runwire_client::{Error, EventsWatch, WatchOptions, WatchedEvent, watch_events_with_options};
use support::server::{Server, Step, runwire_status};
use support::*;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::ErrorDetails;

fn fast() -> WatchOptions {
    WatchOptions {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        give_up_after: Duration::from_secs(30),
        ..WatchOptions::default()
    }
}

fn client(addr: SocketAddr) -> RunServiceClient<Channel> {
    RunServiceClient::new(Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy())
}

fn of(run_id: &str, mut event: RunEvent) -> RunEvent {
    event.run_id = run_id.to_owned();
    event
}

/// Two runs interleaved in commit order.
fn a1() -> RunEvent {
    of("run_a", run_event(1, started()))
}
fn b1() -> RunEvent {
    of("run_b", run_event(1, started()))
}
fn a2() -> RunEvent {
    of("run_a", run_event(2, status_changed()))
}
fn b2() -> RunEvent {
    of("run_b", run_event(2, status_changed()))
}
fn a3() -> RunEvent {
    of("run_a", run_event(3, completed()))
}

fn deploy() -> RunEventsFilter {
    RunEventsFilter {
        flow_name: "deploy".to_owned(),
        labels: HashMap::from([("team".to_owned(), "infra".to_owned())]),
        ..RunEventsFilter::default()
    }
}

/// The first `n` items of a watch, which never ends by itself.
async fn take(watch: &mut EventsWatch, n: usize) -> Result<Vec<WatchedEvent>, Error> {
    let mut out = Vec::new();
    while out.len() < n {
        match watch.next().await {
            Some(item) => out.push(item?),
            None => panic!("the watch ended after {} items", out.len()),
        }
    }
    Ok(out)
}

fn keys(items: &[WatchedEvent]) -> Vec<String> {
    items.iter().map(|i| format!("{}/{}", i.event.run_id, i.event.seq)).collect()
}

#[tokio::test]
async fn test_watch_events_yields_events_with_the_cursor_to_resume_after_each() {
    let server = Server::start(vec![vec![
        Step::SendCursor(vec![a1(), b1()], "c2"),
        Step::SendCursor(vec![a2()], "c3"),
        Step::Hang,
    ]])
    .await;
    let request =
        WatchEventsRequest { cursor: String::new(), start: StreamStart::Earliest as i32, filter: Some(deploy()) };
    let mut watch = watch_events_with_options(client(server.addr), request.clone(), fast());

    let got = take(&mut watch, 3).await.unwrap();

    assert_eq!(keys(&got), ["run_a/1", "run_b/1", "run_a/2"]);
    // Within a response only its last event carries the response's cursor.
    assert_eq!(got.iter().map(|i| i.cursor.as_str()).collect::<Vec<_>>(), ["", "c2", "c3"]);
    assert_eq!(server.events_requests(), vec![request]);
}

/// After each retried failure the next call starts at the last response's
/// cursor (an empty response's too) with the same filter, and the events
/// the server resends are dropped by (run_id, seq).
#[tokio::test]
async fn test_watch_events_resumes_from_the_last_cursor_and_drops_resent_events() {
    let failures = [
        Some(Status::unavailable("draining")),
        Some(Status::internal("stream reset")),
        Some(runwire_status(Code::ResourceExhausted, "OVERLOADED", ErrorDetails::new())),
        None, // an OK end: the stream never ends by itself, so it was cut
    ];
    for failure in failures {
        let mut first = vec![Step::SendCursor(vec![a1(), b1()], "c2"), Step::SendCursor(Vec::new(), "c5")];
        first.extend(failure.clone().map(Step::Fail));
        let server = Server::start(vec![
            first,
            vec![Step::SendCursor(vec![a1(), b1(), a2()], "c6"), Step::SendCursor(vec![b2(), a3()], "c8"), Step::Hang],
        ])
        .await;
        let request = WatchEventsRequest { filter: Some(deploy()), ..WatchEventsRequest::default() };
        let mut watch = watch_events_with_options(client(server.addr), request, fast());

        let got = take(&mut watch, 5).await.unwrap();

        assert_eq!(keys(&got), ["run_a/1", "run_b/1", "run_a/2", "run_b/2", "run_a/3"], "{failure:?}");
        assert_eq!(got[2].cursor, "c6");
        let requests = server.events_requests();
        assert_eq!(requests.iter().map(|r| r.cursor.as_str()).collect::<Vec<_>>(), ["", "c5"], "{failure:?}");
        assert!(requests.iter().all(|r| r.filter == Some(deploy())));
    }
}

/// The same retrier as `watch`: an OVERLOADED RetryInfo delay is waited out in full.
#[tokio::test]
async fn test_watch_events_waits_at_least_the_retry_info_delay() {
    let asked = Duration::from_millis(300); // far above fast()'s waits
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(asked));
    let server = Server::start(vec![
        vec![
            Step::SendCursor(vec![a1()], "c1"),
            Step::Fail(runwire_status(Code::ResourceExhausted, "OVERLOADED", details)),
        ],
        vec![Step::SendCursor(vec![b1()], "c2"), Step::Hang],
    ])
    .await;
    let mut watch = watch_events_with_options(client(server.addr), WatchEventsRequest::default(), fast());

    let got = take(&mut watch, 2).await.unwrap();

    assert_eq!(keys(&got), ["run_a/1", "run_b/1"]);
    let (fails, calls) = (server.fail_times(), server.call_times());
    let gap = calls[1].duration_since(fails[0]);
    assert!(gap >= asked, "second call {gap:?} after the failure, want at least {asked:?}");
}

#[tokio::test]
async fn test_watch_events_restarts_at_start_when_no_response_came() {
    let server = Server::start(vec![
        vec![Step::Fail(Status::unavailable("draining"))],
        vec![Step::SendCursor(vec![a1()], "c1"), Step::Hang],
    ])
    .await;
    let request = WatchEventsRequest { start: StreamStart::Earliest as i32, ..WatchEventsRequest::default() };
    let mut watch = watch_events_with_options(client(server.addr), request.clone(), fast());

    take(&mut watch, 1).await.unwrap();
    assert_eq!(server.events_requests(), vec![request.clone(), request]);
}

#[tokio::test]
async fn test_watch_events_ends_with_cursor_errors_without_retrying() {
    for (code, reason, want) in [
        (Code::InvalidArgument, "CURSOR_INVALID", ErrorReason::CursorInvalid),
        (Code::OutOfRange, "CURSOR_EXPIRED", ErrorReason::CursorExpired),
        (Code::Internal, "INTERNAL", ErrorReason::Internal),
    ] {
        let server = Server::start(vec![vec![Step::Fail(runwire_status(code, reason, ErrorDetails::new()))]]).await;
        let request = WatchEventsRequest { cursor: "c9".to_owned(), ..WatchEventsRequest::default() };
        let mut watch = watch_events_with_options(client(server.addr), request, fast());

        match watch.next().await {
            Some(Err(Error::Rpc(e))) => assert_eq!((e.code(), e.reason()), (code, Some(want))),
            other => panic!("expected {reason}, got {other:?}"),
        }
        assert!(watch.next().await.is_none());
        assert_eq!(server.events_requests().len(), 1);
    }
}

#[tokio::test]
async fn test_watch_events_unknown_event_ends_with_upgrade_error() {
    let mut unknown = a2();
    unknown.event = None; // what prost makes of a oneof case it does not know
    let server = Server::start(vec![vec![Step::SendCursor(vec![a1(), unknown], "c2"), Step::Hang]]).await;
    let mut watch = watch_events_with_options(client(server.addr), WatchEventsRequest::default(), fast());

    assert!(matches!(watch.next().await, Some(Ok(_))));
    assert!(matches!(watch.next().await, Some(Err(Error::UnknownEvent(_)))));
}

#[tokio::test]
async fn test_watch_events_gives_up_after_its_budget() {
    let server = Server::start(Vec::new()).await; // every call fails UNAVAILABLE
    let options = WatchOptions { give_up_after: Duration::from_millis(20), ..fast() };
    let mut watch = watch_events_with_options(client(server.addr), WatchEventsRequest::default(), options);

    match watch.next().await {
        Some(Err(Error::EventsRetriesExhausted { last, .. })) => assert_eq!(last.code(), Code::Unavailable),
        other => panic!("expected the budget spent, got {other:?}"),
    }
}
