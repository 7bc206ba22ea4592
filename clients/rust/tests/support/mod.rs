//! Builders for hand-written event streams, shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different part

pub mod server;

use runwire_client::v1::run_event::Event;
use runwire_client::v1::{self as pb, RunEvent};

pub const RUN_ID: &str = "run_test";

/// A run-level event (no node fields).
pub fn run_event(seq: i64, event: Event) -> RunEvent {
    RunEvent { run_id: RUN_ID.to_owned(), seq, event: Some(event), ..RunEvent::default() }
}

/// A node event of attempt `(iteration, attempt)` of `node_id`.
pub fn node_event(seq: i64, node_id: &str, iteration: i32, attempt: i32, event: Event) -> RunEvent {
    RunEvent {
        run_id: RUN_ID.to_owned(),
        seq,
        node_id: node_id.to_owned(),
        iteration,
        attempt,
        event: Some(event),
        ..RunEvent::default()
    }
}

pub fn started() -> Event {
    Event::RunStarted(pb::RunStarted { flow_name: "demo".into(), node_count: 3, ..Default::default() })
}
pub fn completed() -> Event {
    Event::RunCompleted(pb::RunCompleted { status: pb::RunStatus::Succeeded.into(), ..Default::default() })
}
pub fn status_changed() -> Event {
    Event::RunStatusChanged(pb::RunStatusChanged {
        previous_status: pb::RunStatus::Pending.into(),
        new_status: pb::RunStatus::Running.into(),
        ..Default::default()
    })
}
pub fn node_started() -> Event {
    Event::NodeStarted(pb::NodeStarted { adapter: "shell".into(), action: "exec".into(), ..Default::default() })
}
pub fn log(line: &str) -> Event {
    Event::NodeLog(pb::NodeLog { stream: pb::LogStream::Stdout.into(), line: line.into(), ..Default::default() })
}
pub fn token() -> Event {
    Event::NodeToken(pb::NodeToken { delta: "hi".into(), token_index: 0 })
}
pub fn tool_call() -> Event {
    Event::ToolCall(pb::ToolCall { tool_name: "fs.read".into(), ..Default::default() })
}
pub fn heartbeat() -> Event {
    Event::NodeHeartbeat(pb::NodeHeartbeat { stagnant_count: 1, ..Default::default() })
}
pub fn succeeded() -> Event {
    Event::NodeSucceeded(pb::NodeSucceeded { output_json: "{}".into(), ..Default::default() })
}
pub fn failed(will_retry: bool) -> Event {
    Event::NodeFailed(pb::NodeFailed { will_retry, output_json: "null".into(), ..Default::default() })
}
pub fn retrying(next_attempt: i32) -> Event {
    Event::NodeRetrying(pb::NodeRetrying { next_attempt, max_attempts: 3, ..Default::default() })
}
pub fn skipped() -> Event {
    Event::NodeSkipped(pb::NodeSkipped { reason: "upstream failed".into() })
}

/// A well-formed run of `n >= 2` events: RunStarted, node `a` logging
/// `n - 4` lines when there is room, RunCompleted.
pub fn simple_run(n: i64) -> Vec<RunEvent> {
    assert!(n == 2 || n >= 4, "a node attempt needs NodeStarted and a terminal event");
    let mut events = vec![run_event(1, started())];
    if n >= 4 {
        events.push(node_event(2, "a", 1, 1, node_started()));
        for seq in 3..n - 1 {
            events.push(node_event(seq, "a", 1, 1, log(&format!("line {seq}"))));
        }
        events.push(node_event(n - 1, "a", 1, 1, succeeded()));
    }
    events.push(run_event(n, completed()));
    events
}
