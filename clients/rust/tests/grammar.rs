//! The grammar checker against hand-written streams: valid ones pass, and
//! each invalid one breaks exactly the rule it is written for.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use runwire_client::v1::RunEvent;
use runwire_client::{GrammarChecker, Rule, check_stream};
use support::*;

fn a(seq: i64, event: runwire_client::v1::run_event::Event) -> RunEvent {
    node_event(seq, "a", 1, 1, event)
}

/// An event of item `item` of fan-out node "a", iteration 1.
fn item(seq: i64, item: i32, attempt: i32, event: runwire_client::v1::run_event::Event) -> RunEvent {
    let mut e = node_event(seq, "a", 1, attempt, event);
    e.item_index = Some(item);
    e
}

/// Streams that keep every rule: `(name, after_seq, events)`.
fn valid_streams() -> Vec<(&'static str, i64, Vec<RunEvent>)> {
    vec![
        ("minimal", 0, vec![run_event(1, started()), run_event(2, completed())]),
        (
            "every output kind, a retry and a skip",
            0,
            vec![
                run_event(1, started()),
                run_event(2, status_changed()),
                a(3, node_started()),
                a(4, log("building")),
                a(5, token()),
                a(6, tool_call()),
                a(7, heartbeat()),
                a(8, failed(true)),
                a(9, retrying(2)),
                node_event(10, "a", 1, 2, node_started()),
                node_event(11, "a", 1, 2, succeeded()),
                node_event(12, "b", 0, 0, skipped()),
                run_event(13, completed()),
            ],
        ),
        (
            "parallel nodes interleave",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                node_event(3, "b", 1, 1, node_started()),
                a(4, log("a1")),
                node_event(5, "b", 1, 1, log("b1")),
                node_event(6, "b", 1, 1, failed(false)),
                a(7, succeeded()),
                run_event(8, completed()),
            ],
        ),
        (
            "a bounded loop visits a node again",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                a(3, succeeded()),
                node_event(4, "a", 2, 1, node_started()),
                node_event(5, "a", 2, 1, succeeded()),
                run_event(6, completed()),
            ],
        ),
        (
            "a fan-out: the node's attempt frames interleaved items, item 0 retried",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                item(3, 0, 1, node_started()),
                item(4, 1, 1, node_started()),
                item(5, 1, 1, log("b1")),
                item(6, 0, 1, failed(true)),
                item(7, 0, 1, retrying(2)),
                item(8, 1, 1, succeeded()),
                item(9, 0, 2, node_started()),
                item(10, 0, 2, succeeded()),
                item(11, 2, 0, skipped()),
                a(12, succeeded()),
                run_event(13, completed()),
            ],
        ),
        (
            "a resumed stream starts an item inside a visit opened before after_seq",
            9,
            vec![
                item(10, 3, 1, node_started()),
                item(11, 3, 1, succeeded()),
                a(12, succeeded()),
                run_event(13, completed()),
            ],
        ),
        (
            "a resumed stream continues an attempt opened before after_seq",
            5,
            vec![
                a(6, log("still running")),
                a(7, succeeded()),
                node_event(8, "b", 1, 1, heartbeat()),
                node_event(9, "b", 1, 1, failed(false)),
                run_event(10, completed()),
            ],
        ),
    ]
}

/// One stream per rule that breaks that rule and no other:
/// `(rule, after_seq, events)`.
fn invalid_streams() -> Vec<(Rule, &'static str, i64, Vec<RunEvent>)> {
    let mut other_run = run_event(2, status_changed());
    other_run.run_id = "run_other".into();
    vec![
        (
            Rule::SeqStart,
            "seq-start at seq 2: first event has seq 2, expected after_seq + 1 = 1",
            0,
            vec![run_event(2, status_changed()), run_event(3, completed())],
        ),
        (
            Rule::SeqStart,
            "seq-start at seq 7: first event has seq 7, expected after_seq + 1 = 6",
            5,
            vec![run_event(7, status_changed()), run_event(8, completed())],
        ),
        (
            Rule::SeqGapless,
            "seq-gapless at seq 4: seq 4 follows seq 2, expected 3",
            0,
            vec![run_event(1, started()), run_event(2, status_changed()), run_event(4, completed())],
        ),
        (
            Rule::SeqGapless,
            "seq-gapless at seq 2: seq 2 follows seq 2, expected 3",
            0,
            vec![run_event(1, started()), run_event(2, status_changed()), run_event(2, completed())],
        ),
        (
            Rule::RunIdStable,
            "run-id-stable at seq 2: run_id \"run_other\" differs from the first event's \"run_test\"",
            0,
            vec![run_event(1, started()), other_run, run_event(3, completed())],
        ),
        (
            Rule::RunStartedFirst,
            "run-started-first at seq 1: the event at seq 1 is RunStatusChanged, not RunStarted",
            0,
            vec![run_event(1, status_changed()), run_event(2, completed())],
        ),
        (
            Rule::RunStartedFirst,
            "run-started-first at seq 2: RunStarted at seq 2; it belongs at seq 1",
            0,
            vec![run_event(1, started()), run_event(2, started()), run_event(3, completed())],
        ),
        (
            Rule::RunCompletedLast,
            "run-completed-last at seq 3: RunStatusChanged follows RunCompleted at seq 2",
            0,
            vec![run_event(1, started()), run_event(2, completed()), run_event(3, status_changed())],
        ),
        (
            Rule::RunCompletedLast,
            "run-completed-last at seq 3: RunCompleted follows RunCompleted at seq 2",
            0,
            vec![run_event(1, started()), run_event(2, completed()), run_event(3, completed())],
        ),
        (
            Rule::RunCompletedLast,
            "run-completed-last at seq 2: the stream finished without RunCompleted",
            0,
            vec![run_event(1, started()), run_event(2, status_changed())],
        ),
        (
            Rule::AttemptOpen,
            "attempt-open at seq 3: NodeStarted for node \"a\" iteration 1 attempt 2 while iteration 1 attempt 1 is open",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                node_event(3, "a", 1, 2, node_started()),
                node_event(4, "a", 1, 2, succeeded()),
                run_event(5, completed()),
            ],
        ),
        (
            Rule::OutputOutsideAttempt,
            "output-outside-attempt at seq 2: NodeLog for node \"a\" iteration 1 attempt 1 with no open attempt",
            0,
            vec![run_event(1, started()), a(2, log("orphan")), run_event(3, completed())],
        ),
        (
            Rule::OutputOutsideAttempt,
            "output-outside-attempt at seq 3: NodeToken for node \"a\" iteration 1 attempt 2 does not match the open iteration 1 attempt 1",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                node_event(3, "a", 1, 2, token()),
                a(4, succeeded()),
                run_event(5, completed()),
            ],
        ),
        (
            Rule::OutputOutsideAttempt,
            "output-outside-attempt at seq 8: ToolCall for node \"a\" iteration 1 attempt 1 with no open attempt",
            5,
            // Resumed: the attempt opened before seq 6, and once the checker
            // has seen it close a stray event fails.
            vec![a(6, heartbeat()), a(7, succeeded()), a(8, tool_call()), run_event(9, completed())],
        ),
        (
            Rule::TerminalOutsideAttempt,
            "terminal-outside-attempt at seq 2: NodeSucceeded for node \"a\" iteration 1 attempt 1 with no open attempt",
            0,
            vec![run_event(1, started()), a(2, succeeded()), run_event(3, completed())],
        ),
        (
            Rule::TerminalOutsideAttempt,
            "terminal-outside-attempt at seq 4: NodeFailed for node \"a\" iteration 1 attempt 1 with no open attempt",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                a(3, succeeded()),
                a(4, failed(false)),
                run_event(5, completed()),
            ],
        ),
        (
            Rule::SkipInsideAttempt,
            "skip-inside-attempt at seq 3: NodeSkipped for node \"a\" while iteration 1 attempt 1 is open",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                node_event(3, "a", 0, 0, skipped()),
                a(4, succeeded()),
                run_event(5, completed()),
            ],
        ),
        (
            Rule::AttemptUnclosed,
            "attempt-unclosed at seq 4: RunCompleted while attempts are open: node \"a\" iteration 1 attempt 1, node \"b\" iteration 2 attempt 1",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                node_event(3, "b", 2, 1, node_started()),
                run_event(4, completed()),
            ],
        ),
        (
            Rule::ItemOutsideFrame,
            "item-outside-frame at seq 2: NodeStarted for item \"a[0]\" iteration 1 attempt 1 outside an open visit of node \"a\"",
            0,
            vec![
                run_event(1, started()),
                item(2, 0, 1, node_started()),
                item(3, 0, 1, succeeded()),
                run_event(4, completed()),
            ],
        ),
        (
            Rule::ItemUnclosed,
            "item-unclosed at seq 4: NodeSucceeded for node \"a\" while items are open: a[0]",
            0,
            vec![
                run_event(1, started()),
                a(2, node_started()),
                item(3, 0, 1, node_started()),
                a(4, succeeded()),
                item(5, 0, 1, succeeded()),
                run_event(6, completed()),
            ],
        ),
    ]
}

#[test]
fn test_grammar_accepts_valid_streams() {
    for (name, after_seq, events) in valid_streams() {
        let violations = check_stream(after_seq, &events);
        assert!(violations.is_empty(), "{name}: unexpected violations {violations:#?}");
    }
}

#[test]
fn test_grammar_flags_exactly_the_broken_rule() {
    for (rule, message, after_seq, events) in invalid_streams() {
        let violations = check_stream(after_seq, &events);
        let rules: Vec<Rule> = violations.iter().map(|v| v.rule).collect();
        assert_eq!(rules, [rule], "stream for {rule}: {violations:#?}");
        assert_eq!(violations[0].to_string(), message);
    }
}

#[test]
fn test_grammar_has_an_invalid_stream_per_rule() {
    let covered: BTreeSet<Rule> = invalid_streams().into_iter().map(|(rule, ..)| rule).collect();
    let all: BTreeSet<Rule> = Rule::ALL.into_iter().collect();
    assert_eq!(covered, all);
}

#[test]
fn test_grammar_rule_names_match_grammar_md() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../GRAMMAR.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let documented: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("| `")?.split('`').next()).collect();
    let ours: Vec<&str> = Rule::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(ours, documented, "rule names and order must be those of clients/GRAMMAR.md");
}

#[test]
fn test_grammar_checker_reports_per_event_and_keeps_all() {
    let mut checker = GrammarChecker::new(0);
    assert!(checker.check(&run_event(1, started())).is_ok());
    let err = checker.check(&run_event(3, started())).unwrap_err();
    assert_eq!(err.rule, Rule::SeqGapless);
    // The same event also broke run-started-first; both are kept.
    let rules: Vec<Rule> = checker.violations().iter().map(|v| v.rule).collect();
    assert_eq!(rules, [Rule::SeqGapless, Rule::RunStartedFirst]);
    assert_eq!(checker.finish().unwrap_err().rule, Rule::RunCompletedLast);
}

#[test]
fn test_grammar_ignores_the_case_of_an_unknown_event() {
    let mut unknown = run_event(2, status_changed());
    unknown.event = None;
    let events = [run_event(1, started()), unknown, run_event(3, completed())];
    assert!(check_stream(0, &events).is_empty());
}
