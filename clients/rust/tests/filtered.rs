//! Filtered streams: the grammar's relaxation rule (`clients/GRAMMAR.md`)
//! and `watch_with_filter` against a real tonic server on 127.0.0.1:0.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use runwire_client::v1::run_service_client::RunServiceClient;
use runwire_client::v1::{EventFilter, RunEvent, RunStatus};
use runwire_client::{Error, GrammarChecker, Rule, Watch, WatchOptions, is_filtered, watch_with_filter};
use support::server::{Server, Step, draining};
use support::*;
use tonic::transport::{Channel, Endpoint};

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

/// seq 1..9: a whole run with one attempt each of nodes a and b, as in
/// every client's filtered tests.
fn run() -> Vec<RunEvent> {
    vec![
        run_event(1, started()),
        run_event(2, status_changed()),
        node_event(3, "a", 1, 1, node_started()),
        node_event(4, "a", 1, 1, log("a")),
        node_event(5, "b", 1, 1, node_started()),
        node_event(6, "b", 1, 1, log("b")),
        node_event(7, "a", 1, 1, succeeded()),
        node_event(8, "b", 1, 1, succeeded()),
        run_event(9, completed()),
    ]
}

fn pick(seqs: &[i64]) -> Vec<RunEvent> {
    let all = run();
    seqs.iter().map(|s| all[usize::try_from(*s - 1).unwrap()].clone()).collect()
}

fn kinds(kinds: &[&str]) -> EventFilter {
    EventFilter { kinds: kinds.iter().map(|k| (*k).to_owned()).collect(), node_ids: Vec::new() }
}

fn logs() -> EventFilter {
    kinds(&["node_log"])
}

fn attempts() -> EventFilter {
    kinds(&["node_started", "node_succeeded", "node_failed", "node_log"])
}

fn node_a() -> EventFilter {
    EventFilter { kinds: Vec::new(), node_ids: vec!["a".to_owned()] }
}

/// The first violation of the stream, finish included.
fn first_violation(after_seq: i64, filter: Option<&EventFilter>, events: &[RunEvent]) -> Option<(Rule, i64)> {
    let mut checker = match filter {
        Some(f) => GrammarChecker::with_filter(after_seq, f),
        None => GrammarChecker::new(after_seq),
    };
    for event in events {
        if let Err(v) = checker.check(event) {
            return Some((v.rule, v.seq));
        }
    }
    checker.finish().err().map(|v| (v.rule, v.seq))
}

#[test]
fn test_grammar_accepts_filtered_streams() {
    let cases: Vec<(&str, EventFilter, Vec<i64>, i64)> = vec![
        ("logs", logs(), vec![4, 6, 9], 0),
        ("logs resumed", logs(), vec![6, 9], 4),
        ("attempt kinds", attempts(), vec![3, 4, 5, 6, 7, 8, 9], 0),
        ("node a", node_a(), vec![1, 2, 3, 4, 7, 9], 0),
        ("only run_completed", kinds(&["run_completed"]), vec![9], 0),
    ];
    for (name, filter, seqs, after_seq) in cases {
        assert_eq!(first_violation(after_seq, Some(&filter), &pick(&seqs)), None, "{name}");
    }
}

/// A stream the filtered rule rejects: name, filter, events, after_seq,
/// the rule and seq of its first violation.
type Rejected = (&'static str, Option<EventFilter>, Vec<RunEvent>, i64, Rule, i64);

#[test]
fn test_grammar_rejects_what_a_filter_does_not_excuse() {
    let late = node_event(10, "b", 1, 1, log("late"));
    let mut other_run = node_event(6, "b", 1, 1, log("b"));
    other_run.run_id = "run_other".to_owned();
    let empty = EventFilter::default();
    let cases: Vec<Rejected> = vec![
        ("no filter", None, pick(&[4, 6, 9]), 0, Rule::SeqStart, 4),
        ("empty filter", Some(empty), pick(&[4, 6, 9]), 0, Rule::SeqStart, 4),
        ("no filter gap", None, pick(&[1, 2, 4]), 0, Rule::SeqGapless, 4),
        ("repeat", Some(logs()), pick(&[4, 4]), 0, Rule::SeqGapless, 4),
        ("reorder", Some(logs()), pick(&[6, 4]), 0, Rule::SeqGapless, 4),
        ("not after after_seq", Some(logs()), pick(&[4]), 4, Rule::SeqStart, 4),
        ("after run_completed", Some(logs()), [pick(&[4, 9]), vec![late]].concat(), 0, Rule::RunCompletedLast, 10),
        ("no run_completed", Some(logs()), pick(&[4]), 0, Rule::RunCompletedLast, 4),
        ("attempt kinds keep attempt-unclosed", Some(attempts()), pick(&[3, 4, 5, 9]), 0, Rule::AttemptUnclosed, 9),
        ("attempt kinds keep output-outside", Some(attempts()), pick(&[4]), 0, Rule::OutputOutsideAttempt, 4),
        ("node ids keep the attempt rules", Some(node_a()), pick(&[1, 2, 4]), 0, Rule::OutputOutsideAttempt, 4),
        ("run id", Some(logs()), [pick(&[4]), vec![other_run]].concat(), 0, Rule::RunIdStable, 6),
    ];
    for (name, filter, events, after_seq, rule, seq) in cases {
        assert_eq!(first_violation(after_seq, filter.as_ref(), &events), Some((rule, seq)), "{name}");
    }
}

#[test]
fn test_is_filtered_needs_kinds_or_node_ids() {
    assert!(!is_filtered(None));
    assert!(!is_filtered(Some(&EventFilter::default())));
    assert!(is_filtered(Some(&logs())));
    assert!(is_filtered(Some(&node_a())));
}

async fn drain(watch: &mut Watch) -> Result<Vec<RunEvent>, Error> {
    let mut out = Vec::new();
    while let Some(item) = watch.next().await {
        out.push(item?);
    }
    Ok(out)
}

/// The server looked through seq 8 before the drain: the resumed call
/// starts there, not at the last event's seq 6, and carries the filter.
#[tokio::test]
async fn test_watch_with_a_filter_resumes_after_resume_after_seq() {
    let server = Server::start(vec![
        vec![Step::SendResume(pick(&[4, 6]), 8), Step::Fail(draining())],
        vec![Step::SendResume(pick(&[6]), 8), Step::SendResume(pick(&[9]), 9)],
    ])
    .await;
    let mut watch = watch_with_filter(client(server.addr), RUN_ID, 0, logs(), fast());

    let got = drain(&mut watch).await.unwrap();

    assert_eq!(got, pick(&[4, 6, 9]));
    assert_eq!(first_violation(0, Some(&logs()), &got), None);
    assert_eq!(server.after_seqs(), vec![0, 8]);
    assert!(server.watch_requests().iter().all(|r| r.filter == Some(logs())));
    let end = watch.end().unwrap();
    assert_eq!((end.last_seq, end.status), (9, RunStatus::Succeeded as i32));
}

#[tokio::test]
async fn test_watch_with_a_filter_resumes_past_a_response_without_events() {
    let server = Server::start(vec![
        vec![Step::SendResume(Vec::new(), 5), Step::Fail(draining())],
        vec![Step::SendResume(pick(&[6, 9]), 9)],
    ])
    .await;
    let mut watch = watch_with_filter(client(server.addr), RUN_ID, 0, logs(), fast());

    assert_eq!(drain(&mut watch).await.unwrap(), pick(&[6, 9]));
    assert_eq!(server.after_seqs(), vec![0, 5]);
}

/// RunCompleted is always delivered: a stream_end past the resume point
/// means it was lost.
#[tokio::test]
async fn test_watch_with_a_filter_fails_when_run_completed_was_skipped() {
    let server =
        Server::start(vec![vec![Step::SendResume(pick(&[4]), 6), Step::End(9, RunStatus::Succeeded as i32)]]).await;
    let mut watch = watch_with_filter(client(server.addr), RUN_ID, 0, logs(), fast());

    match drain(&mut watch).await {
        Err(Error::SeqGap { expected: 7, received: 9, .. }) => {}
        other => panic!("expected a seq gap, got {other:?}"),
    }
}

#[tokio::test]
async fn test_watch_with_a_filter_ends_on_stream_end_at_its_resume_point() {
    let server = Server::start(vec![vec![Step::End(9, RunStatus::Succeeded as i32)]]).await;
    let mut watch = watch_with_filter(client(server.addr), RUN_ID, 9, logs(), fast());

    assert_eq!(drain(&mut watch).await.unwrap(), Vec::<RunEvent>::new());
    assert_eq!(watch.end().map(|e| e.last_seq), Some(9));
}
