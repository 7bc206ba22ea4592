//! The `runwire-watch` example as the live cross-language test runs it: a
//! child process against a scripted server, one JSON line per event.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use std::collections::HashMap;

use runwire_client::v1::{RunEvent, RunStatus};
use serde_json::Value;
use support::server::{Proxy, Server, Step, draining, runwire_status, runwire_status_with};
use support::*;
use tonic::{Code, Status};
use tonic_types::ErrorDetails;

/// `target/<profile>/examples/runwire-watch`, built by `cargo test`.
fn example_binary() -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile_dir.join("examples").join(format!("runwire-watch{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run plain `cargo test`, which builds the examples before the tests",
        bin.display()
    );
    bin
}

struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn spawn(addr: std::net::SocketAddr, after_seq: i64) -> Watcher {
        Self::spawn_with(addr, &["--run-id", RUN_ID, "--after-seq", &after_seq.to_string()])
    }

    fn spawn_with(addr: std::net::SocketAddr, args: &[&str]) -> Watcher {
        let mut child = Command::new(example_binary())
            .args(["--addr", &addr.to_string()])
            .args(args)
            .args(["--give-up-after", "30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        Watcher { child, lines }
    }

    /// Blocks (off the runtime) until the next stdout line.
    async fn line(&mut self) -> Option<String> {
        tokio::task::block_in_place(|| self.lines.recv().ok())
    }

    /// Waits for exit: `(code, remaining stdout lines, stderr)`.
    async fn finish(mut self) -> (i32, Vec<String>, String) {
        tokio::task::block_in_place(|| {
            let status = self.child.wait().unwrap();
            let mut stderr = String::new();
            self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            (status.code().unwrap_or(-1), self.lines.iter().collect(), stderr)
        })
    }
}

fn json_of(event: &RunEvent) -> Value {
    serde_json::to_value(event).unwrap()
}

fn parse(lines: &[String]) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_prints_each_event_once_across_a_disconnect() {
    let run = simple_run(6);
    let server =
        Server::start(vec![vec![Step::Send(run[..3].to_vec()), Step::Hang], vec![Step::Send(run[1..].to_vec())]]).await;
    let proxy = Proxy::start(server.addr).await;
    let mut watcher = Watcher::spawn(proxy.addr, 0);

    let mut lines = Vec::new();
    for _ in 0..3 {
        lines.push(watcher.line().await.expect("a line per event"));
    }
    proxy.cut_connections();
    let (code, rest, stderr) = watcher.finish().await;
    lines.extend(rest);

    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(lines.iter().all(|l| !l.contains('\n') && l.contains("\"runId\"")), "{lines:?}");
    assert_eq!(parse(&lines), run.iter().map(json_of).collect::<Vec<_>>());
    assert_eq!(server.after_seqs(), [0, 3]);
    // The client may need more than one call to get through, but stderr
    // holds reconnect notes and nothing else.
    assert!(!stderr.is_empty(), "no reconnect note on stderr");
    assert!(stderr.lines().all(is_reconnect_note), "{stderr}");
}

fn is_reconnect_note(line: &str) -> bool {
    line.starts_with(&format!("runwire-watch: run {RUN_ID}: ")) && line.contains("; reconnecting after seq ")
}

/// Each reconnect is one line on stderr naming the error and the seq the
/// watch resumes after; stdout stays one JSON line per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_notes_each_reconnect_on_stderr() {
    let run = simple_run(6);
    let server = Server::start(vec![
        vec![Step::Send(run[..3].to_vec()), Step::Fail(Status::aborted("stream reset by a proxy"))],
        vec![Step::Send(run[3..4].to_vec()), Step::Fail(draining())],
        vec![Step::Send(run[4..].to_vec())],
    ])
    .await;
    let (code, lines, stderr) = Watcher::spawn(server.addr, 0).finish().await;

    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(parse(&lines), run.iter().map(json_of).collect::<Vec<_>>());
    assert_eq!(server.after_seqs(), [0, 3, 4]);
    let notes: Vec<&str> = stderr.lines().collect();
    assert_eq!(notes.len(), 2, "one line per reconnect: {stderr}");
    assert!(notes.iter().all(|l| is_reconnect_note(l)), "{stderr}");
    assert!(notes[0].contains("Aborted: stream reset by a proxy; reconnecting after seq 3 in "), "{stderr}");
    assert!(notes[1].contains("Unavailable (SERVER_DRAINING)"), "{stderr}");
    assert!(notes[1].contains("reconnecting after seq 4 in "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_exits_1_on_a_seq_gap() {
    let mut run = simple_run(4);
    run.remove(2); // a gap at seq 3
    let server = Server::start(vec![vec![Step::Send(run.clone())]]).await;
    let (code, lines, stderr) = Watcher::spawn(server.addr, 0).finish().await;
    assert_eq!(code, 1, "stderr: {stderr}");
    assert_eq!(parse(&lines), run[..2].iter().map(json_of).collect::<Vec<_>>());
    assert!(stderr.contains("expected seq 3, received seq 4"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_exits_1_when_the_grammar_breaks() {
    let run = vec![run_event(1, started()), node_event(2, "a", 1, 1, log("stray")), run_event(3, completed())];
    let server = Server::start(vec![vec![Step::Send(run.clone())]]).await;
    let (code, lines, stderr) = Watcher::spawn(server.addr, 0).finish().await;
    assert_eq!(code, 1, "stderr: {stderr}");
    assert_eq!(parse(&lines), run.iter().map(json_of).collect::<Vec<_>>());
    assert!(stderr.contains("output-outside-attempt at seq 2: "), "{stderr}");
}

/// after_seq = the run's last seq: the server answers only stream_end; the
/// example exits 0 with the final status on stderr instead of reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_at_the_end_of_a_finished_run_exits_0() {
    let server = Server::start(vec![vec![Step::End(5, RunStatus::Succeeded as i32)]]).await;
    let (code, lines, stderr) = Watcher::spawn(server.addr, 5).finish().await;
    assert_eq!((code, lines.len()), (0, 0), "stderr: {stderr}");
    assert_eq!(stderr, format!("runwire-watch: run {RUN_ID} finished RUN_STATUS_SUCCEEDED at seq 5\n"));
    assert_eq!(server.stop().await, [5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_past_the_end_of_a_finished_run_exits_0() {
    let metadata =
        HashMap::from([("last_seq".to_owned(), "5".to_owned()), ("status".to_owned(), "RUN_STATUS_FAILED".to_owned())]);
    let status = runwire_status_with(Code::OutOfRange, "AFTER_SEQ_BEYOND_END", metadata, ErrorDetails::new());
    let server = Server::start(vec![vec![Step::Fail(status)]]).await;
    let (code, lines, stderr) = Watcher::spawn(server.addr, 10).finish().await;
    assert_eq!((code, lines.len()), (0, 0), "stderr: {stderr}");
    assert_eq!(stderr, format!("runwire-watch: run {RUN_ID} finished RUN_STATUS_FAILED at seq 5\n"));
    assert_eq!(server.stop().await, [10]);
}

#[test]
fn test_example_help_works() {
    let out = Command::new(example_binary()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in
        ["--addr", "--run-id", "--after-seq", "--token", "--tls-ca", "--tls-cert", "--tls-key", "--give-up-after"]
    {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_exits_nonzero_on_a_typed_error() {
    let status = runwire_status(Code::NotFound, "RUN_NOT_FOUND", ErrorDetails::new());
    let server = Server::start(vec![vec![Step::Fail(status)]]).await;
    let (code, lines, stderr) = Watcher::spawn(server.addr, 0).finish().await;
    assert_eq!(code, 3, "stderr: {stderr}");
    assert!(lines.is_empty());
    assert!(stderr.contains("NotFound (RUN_NOT_FOUND)"), "{stderr}");
}

/// `--kinds node_log`: the logs and RunCompleted, with gaps; the filtered
/// grammar rule holds and the filter goes with the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_kinds_checks_the_filtered_grammar() {
    let run = simple_run(6);
    let picked = vec![run[2].clone(), run[5].clone()]; // a log line, RunCompleted
    let server = Server::start(vec![vec![Step::SendResume(picked.clone(), 6)]]).await;
    let (code, lines, stderr) =
        Watcher::spawn_with(server.addr, &["--run-id", RUN_ID, "--kinds", "node_log"]).finish().await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(parse(&lines), picked.iter().map(json_of).collect::<Vec<_>>());
    let filter = server.watch_requests()[0].filter.clone().unwrap();
    assert_eq!(filter.kinds, ["node_log"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_example_events_prints_count_events_across_runs() {
    let a = run_event(1, started());
    let mut b = run_event(1, started());
    b.run_id = "run_other".to_owned();
    let mut b2 = run_event(2, completed());
    b2.run_id = "run_other".to_owned();
    let server = Server::start(vec![
        vec![Step::SendCursor(vec![a.clone(), b.clone()], "c2"), Step::Fail(draining())],
        vec![Step::SendCursor(vec![b.clone(), b2.clone()], "c3"), Step::Hang],
    ])
    .await;
    let args = ["--events", "--start", "earliest", "--flow-name", "deploy", "--count", "3"];
    let (code, lines, stderr) = Watcher::spawn_with(server.addr, &args).finish().await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(parse(&lines), [a, b, b2].iter().map(json_of).collect::<Vec<_>>());
    let requests = server.events_requests();
    assert_eq!(requests.iter().map(|r| r.cursor.as_str()).collect::<Vec<_>>(), ["", "c2"]);
    assert!(requests.iter().all(|r| r.filter.as_ref().is_some_and(|f| f.flow_name == "deploy")));
}

#[test]
fn test_example_wants_either_run_id_or_events() {
    for args in [&["--events", "--run-id", RUN_ID][..], &["--addr", "127.0.0.1:1"][..]] {
        let out = Command::new(example_binary()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
