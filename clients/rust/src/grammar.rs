//! The stream grammar checker: the rules of `clients/GRAMMAR.md`, with the
//! rule names every runwire client uses.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::v1::run_event::Event;
use crate::v1::{EventFilter, RunEvent};

/// One rule of the stream grammar; [`Rule::name`] is its name in every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The first event's `seq` is not `after_seq + 1`.
    SeqStart,
    /// An event's `seq` is not the previous `seq + 1`.
    SeqGapless,
    /// An event's `run_id` differs from the first event's.
    RunIdStable,
    /// The event at seq 1 is not RunStarted, or RunStarted is elsewhere.
    RunStartedFirst,
    /// An event follows RunCompleted, or the stream ends without it.
    RunCompletedLast,
    /// NodeStarted for a node that already has an open attempt.
    AttemptOpen,
    /// NodeLog, NodeToken, ToolCall or NodeHeartbeat outside the node's open
    /// attempt.
    OutputOutsideAttempt,
    /// NodeSucceeded or NodeFailed outside the node's open attempt.
    TerminalOutsideAttempt,
    /// NodeSkipped for a node with an open attempt.
    SkipInsideAttempt,
    /// RunCompleted while an attempt is still open.
    AttemptUnclosed,
    /// NodeStarted of a fan-out item outside an open attempt of its node (of
    /// the same iteration).
    ItemOutsideFrame,
    /// The node's own terminal event while an item of it is still open.
    ItemUnclosed,
}

impl Rule {
    /// Every rule, in the order of `clients/GRAMMAR.md`.
    pub const ALL: [Rule; 12] = [
        Rule::SeqStart,
        Rule::SeqGapless,
        Rule::RunIdStable,
        Rule::RunStartedFirst,
        Rule::RunCompletedLast,
        Rule::AttemptOpen,
        Rule::OutputOutsideAttempt,
        Rule::TerminalOutsideAttempt,
        Rule::SkipInsideAttempt,
        Rule::AttemptUnclosed,
        Rule::ItemOutsideFrame,
        Rule::ItemUnclosed,
    ];

    /// The rule's name, shared by every client: `seq-start`, ...
    pub fn name(self) -> &'static str {
        match self {
            Rule::SeqStart => "seq-start",
            Rule::SeqGapless => "seq-gapless",
            Rule::RunIdStable => "run-id-stable",
            Rule::RunStartedFirst => "run-started-first",
            Rule::RunCompletedLast => "run-completed-last",
            Rule::AttemptOpen => "attempt-open",
            Rule::OutputOutsideAttempt => "output-outside-attempt",
            Rule::TerminalOutsideAttempt => "terminal-outside-attempt",
            Rule::SkipInsideAttempt => "skip-inside-attempt",
            Rule::AttemptUnclosed => "attempt-unclosed",
            Rule::ItemOutsideFrame => "item-outside-frame",
            Rule::ItemUnclosed => "item-unclosed",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken rule: displays as `<rule> at seq <seq>: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The `seq` of the offending event; for a stream finished without
    /// RunCompleted, the last `seq` seen (or `after_seq` if none).
    pub seq: i64,
    /// What happened, for people.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at seq {}: {}", self.rule, self.seq, self.detail)
    }
}

impl std::error::Error for Violation {}

/// `(iteration, attempt)` of the envelope; with `node_id` it names an attempt.
type Attempt = (i32, i32);

/// Where a variant sits in the grammar. The match is exhaustive on purpose:
/// a new variant does not compile until it is placed here (and in the other
/// clients' checkers, with the same rule).
enum Role {
    RunStarted,
    RunCompleted,
    NodeStarted,
    NodeOutput,
    NodeTerminal,
    NodeSkipped,
    Anywhere,
}

fn role(event: &Event) -> (Role, &'static str) {
    match event {
        Event::RunStarted(_) => (Role::RunStarted, "RunStarted"),
        Event::RunCompleted(_) => (Role::RunCompleted, "RunCompleted"),
        Event::NodeStarted(_) => (Role::NodeStarted, "NodeStarted"),
        Event::NodeLog(_) => (Role::NodeOutput, "NodeLog"),
        Event::NodeToken(_) => (Role::NodeOutput, "NodeToken"),
        Event::ToolCall(_) => (Role::NodeOutput, "ToolCall"),
        Event::NodeHeartbeat(_) => (Role::NodeOutput, "NodeHeartbeat"),
        Event::NodeSucceeded(_) => (Role::NodeTerminal, "NodeSucceeded"),
        Event::NodeFailed(_) => (Role::NodeTerminal, "NodeFailed"),
        Event::NodeSkipped(_) => (Role::NodeSkipped, "NodeSkipped"),
        Event::RunStatusChanged(_) => (Role::Anywhere, "RunStatusChanged"),
        Event::RunPaused(_) => (Role::Anywhere, "RunPaused"),
        Event::RunResumed(_) => (Role::Anywhere, "RunResumed"),
        Event::NodeRetrying(_) => (Role::Anywhere, "NodeRetrying"),
        Event::IterationCapped(_) => (Role::Anywhere, "IterationCapped"),
        Event::AwaitingConfirmation(_) => (Role::Anywhere, "AwaitingConfirmation"),
        Event::ConfirmationResolved(_) => (Role::Anywhere, "ConfirmationResolved"),
        Event::ApprovalRequested(_) => (Role::Anywhere, "ApprovalRequested"),
        Event::ApprovalResolved(_) => (Role::Anywhere, "ApprovalResolved"),
        Event::AiInvocation(_) => (Role::Anywhere, "AiInvocation"),
        Event::AiRoutingDecision(_) => (Role::Anywhere, "AiRoutingDecision"),
        Event::AiReviewRequired(_) => (Role::Anywhere, "AiReviewRequired"),
        Event::AiReviewResolved(_) => (Role::Anywhere, "AiReviewResolved"),
        Event::SandboxViolation(_) => (Role::Anywhere, "SandboxViolation"),
    }
}

/// Whether a `WatchRun` with this filter may skip events: it names kinds or
/// node ids.
pub fn is_filtered(filter: Option<&EventFilter>) -> bool {
    filter.is_some_and(|f| !f.kinds.is_empty() || !f.node_ids.is_empty())
}

/// Checks one run's event stream against the grammar, one event at a time.
///
/// Create it with the `after_seq` the watch started from (0 for the whole
/// stream), [`check`](Self::check) every event in order, then
/// [`finish`](Self::finish) when the stream ends. Every violation is kept in
/// [`violations`](Self::violations); the methods also return the first one
/// each call found. For a filtered watch create it with
/// [`with_filter`](Self::with_filter).
#[derive(Debug, Clone)]
pub struct GrammarChecker {
    after_seq: i64,
    run_id: Option<String>,
    last_seq: Option<i64>,
    completed_at: Option<i64>,
    /// Open attempt per node; a BTreeMap so `attempt-unclosed` lists nodes
    /// in a stable order.
    open: BTreeMap<String, Attempt>,
    /// Nodes whose attempt the checker has seen open or close. For a resumed
    /// stream (`after_seq > 0`) the attempt rules apply only to these: an
    /// attempt may have opened before `after_seq`.
    seen: HashSet<String>,
    violations: Vec<Violation>,
    /// "Filtered streams" of `clients/GRAMMAR.md`: seqs may skip.
    filtered: bool,
    /// Whether the attempt rules apply (not when a filter drops the framing).
    attempt_rules: bool,
}

impl GrammarChecker {
    /// A checker for a stream that starts after `after_seq`.
    pub fn new(after_seq: i64) -> Self {
        Self {
            after_seq,
            run_id: None,
            last_seq: None,
            completed_at: None,
            open: BTreeMap::new(),
            seen: HashSet::new(),
            violations: Vec::new(),
            filtered: false,
            attempt_rules: true,
        }
    }

    /// A checker for the stream of a `WatchRun` with `filter`, applying the
    /// filtered-stream rule of `clients/GRAMMAR.md`: seqs must increase but
    /// may skip, and the attempt rules hold only when the filter's kinds
    /// select `node_started`, `node_succeeded` and `node_failed`. A filter
    /// with neither kinds nor node ids checks as [`new`](Self::new) does.
    pub fn with_filter(after_seq: i64, filter: &EventFilter) -> Self {
        let kinds = &filter.kinds;
        let framing = ["node_started", "node_succeeded", "node_failed"];
        Self {
            filtered: is_filtered(Some(filter)),
            attempt_rules: kinds.is_empty() || framing.iter().all(|k| kinds.iter().any(|s| s == k)),
            ..Self::new(after_seq)
        }
    }

    /// Every violation found so far, in stream order.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Checks the next event.
    ///
    /// An event without a oneof case is not the grammar's business (the
    /// decoding helper rejects it as an unknown event); only its envelope is
    /// checked.
    ///
    /// # Errors
    ///
    /// The first violation this event caused; all of them are recorded.
    pub fn check(&mut self, event: &RunEvent) -> Result<(), Violation> {
        let first_new = self.violations.len();
        let seq = event.seq;

        match self.last_seq {
            None if self.filtered && seq <= self.after_seq => self.fail(
                Rule::SeqStart,
                seq,
                format!("first event has seq {seq}, expected more than after_seq {}", self.after_seq),
            ),
            Some(last) if self.filtered && seq <= last => {
                self.fail(Rule::SeqGapless, seq, format!("seq {seq} follows seq {last}, expected more"));
            }
            _ if self.filtered => {}
            None if seq != self.after_seq + 1 => self.fail(
                Rule::SeqStart,
                seq,
                format!("first event has seq {seq}, expected after_seq + 1 = {}", self.after_seq + 1),
            ),
            Some(last) if seq != last + 1 => {
                self.fail(Rule::SeqGapless, seq, format!("seq {seq} follows seq {last}, expected {}", last + 1));
            }
            _ => {}
        }
        self.last_seq = Some(seq);

        match &self.run_id {
            None => self.run_id = Some(event.run_id.clone()),
            Some(first) if *first != event.run_id => {
                let detail = format!("run_id {:?} differs from the first event's {first:?}", event.run_id);
                self.fail(Rule::RunIdStable, seq, detail);
            }
            Some(_) => {}
        }

        let Some(case) = &event.event else {
            return self.first_since(first_new);
        };
        let (role, name) = role(case);

        if let Some(completed) = self.completed_at {
            self.fail(Rule::RunCompletedLast, seq, format!("{name} follows RunCompleted at seq {completed}"));
        }
        match role {
            Role::RunStarted if seq != 1 => {
                self.fail(Rule::RunStartedFirst, seq, format!("RunStarted at seq {seq}; it belongs at seq 1"));
            }
            _ if seq == 1 && !matches!(role, Role::RunStarted) => {
                self.fail(Rule::RunStartedFirst, seq, format!("the event at seq 1 is {name}, not RunStarted"));
            }
            _ => {}
        }
        if !self.attempt_rules {
            if matches!(role, Role::RunCompleted) {
                self.completed_at.get_or_insert(seq);
            }
            return self.first_since(first_new);
        }

        // A fan-out item is a track of its own, named `node[item_index]`; the
        // node's own attempt (no item) frames its items.
        let frame = event.node_id.as_str();
        let track = match event.item_index {
            Some(item) => format!("{frame}[{item}]"),
            None => frame.to_owned(),
        };
        let node = track.as_str();
        let attempt = (event.iteration, event.attempt);
        match role {
            Role::NodeStarted if event.item_index.is_some() => {
                let outside = match self.open.get(frame) {
                    Some(open) => open.0 != event.iteration,
                    None => self.after_seq == 0 || self.seen.contains(frame),
                };
                if outside {
                    let detail = format!(
                        "NodeStarted for item {node:?} {} outside an open visit of node {frame:?}",
                        describe(attempt)
                    );
                    self.fail(Rule::ItemOutsideFrame, seq, detail);
                }
            }
            Role::NodeTerminal if event.item_index.is_none() => {
                let prefix = format!("{frame}[");
                let items: Vec<&str> =
                    self.open.keys().filter(|n| n.starts_with(&prefix)).map(String::as_str).collect();
                if !items.is_empty() {
                    let detail = format!("{name} for node {frame:?} while items are open: {}", items.join(", "));
                    self.fail(Rule::ItemUnclosed, seq, detail);
                }
            }
            _ => {}
        }
        match role {
            Role::NodeStarted => {
                if let Some(open) = self.open.get(node) {
                    let detail = format!(
                        "NodeStarted for node {node:?} {} while {} is open",
                        describe(attempt),
                        describe(*open)
                    );
                    self.fail(Rule::AttemptOpen, seq, detail);
                }
                self.open.insert(node.to_owned(), attempt);
                self.seen.insert(node.to_owned());
            }
            Role::NodeOutput => {
                if let Some(detail) = self.outside_open_attempt(name, node, attempt) {
                    self.fail(Rule::OutputOutsideAttempt, seq, detail);
                }
            }
            Role::NodeTerminal => match self.outside_open_attempt(name, node, attempt) {
                Some(detail) => self.fail(Rule::TerminalOutsideAttempt, seq, detail),
                None => {
                    self.open.remove(node);
                    self.seen.insert(node.to_owned());
                }
            },
            Role::NodeSkipped => {
                if let Some(open) = self.open.get(node) {
                    let detail = format!("NodeSkipped for node {node:?} while {} is open", describe(*open));
                    self.fail(Rule::SkipInsideAttempt, seq, detail);
                }
            }
            Role::RunCompleted => {
                if !self.open.is_empty() {
                    let open: Vec<String> =
                        self.open.iter().map(|(n, a)| format!("node {n:?} {}", describe(*a))).collect();
                    let detail = format!("RunCompleted while attempts are open: {}", open.join(", "));
                    self.fail(Rule::AttemptUnclosed, seq, detail);
                }
                self.completed_at.get_or_insert(seq);
            }
            Role::RunStarted | Role::Anywhere => {}
        }
        self.first_since(first_new)
    }

    /// Ends the stream: it must have ended with RunCompleted.
    ///
    /// # Errors
    ///
    /// A `run-completed-last` violation when RunCompleted never came.
    pub fn finish(&mut self) -> Result<(), Violation> {
        let first_new = self.violations.len();
        if self.completed_at.is_none() {
            let seq = self.last_seq.unwrap_or(self.after_seq);
            self.fail(Rule::RunCompletedLast, seq, "the stream finished without RunCompleted".to_owned());
        }
        self.first_since(first_new)
    }

    /// `None` when an output or terminal event matches the node's open
    /// attempt (or, in a resumed stream, the node's attempt opened before
    /// the checked part); otherwise why it does not.
    fn outside_open_attempt(&self, name: &str, node: &str, attempt: Attempt) -> Option<String> {
        match self.open.get(node) {
            Some(open) if *open == attempt => None,
            Some(open) => Some(format!(
                "{name} for node {node:?} {} does not match the open {}",
                describe(attempt),
                describe(*open)
            )),
            None if self.after_seq > 0 && !self.seen.contains(node) => None,
            None => Some(format!("{name} for node {node:?} {} with no open attempt", describe(attempt))),
        }
    }

    fn fail(&mut self, rule: Rule, seq: i64, detail: String) {
        self.violations.push(Violation { rule, seq, detail });
    }

    fn first_since(&self, index: usize) -> Result<(), Violation> {
        match self.violations.get(index) {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }
}

fn describe((iteration, attempt): Attempt) -> String {
    format!("iteration {iteration} attempt {attempt}")
}

/// Checks a whole stream and returns every violation, finish included.
pub fn check_stream<'a>(after_seq: i64, events: impl IntoIterator<Item = &'a RunEvent>) -> Vec<Violation> {
    let mut checker = GrammarChecker::new(after_seq);
    for event in events {
        // Every violation is recorded; the first-per-event result is not needed.
        let _ = checker.check(event);
    }
    let _ = checker.finish();
    checker.violations
}
