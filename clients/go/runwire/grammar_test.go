package runwire

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	"github.com/runwire/runwire/clients/go/internal/scripted"
)

// step is one event of a test stream: a variant by oneof field name and the
// node attempt it belongs to. seq is assigned in order unless set.
type step struct {
	variant   string
	node      string
	iteration int32
	attempt   int32
	item      *int32 // the item of a fan-out node, or nil
	seq       int64  // 0: the previous seq + 1
	runID     string // "": runID
}

func run(variant string) step { return step{variant: variant} }
func node(variant, id string, it, at int32) step {
	return step{variant: variant, node: id, iteration: it, attempt: at}
}
func (s step) at(seq int64) step    { s.seq = seq; return s }
func (s step) forItem(i int32) step { s.item = &i; return s }
func (s step) of(runID string) step { s.runID = runID; return s }

// events builds the stream; the first seq is afterSeq + 1.
func events(afterSeq int64, steps ...step) []*runwirev1.RunEvent {
	oneof := (&runwirev1.RunEvent{}).ProtoReflect().Descriptor().Oneofs().ByName("event")
	out := make([]*runwirev1.RunEvent, len(steps))
	seq := afterSeq
	for i, s := range steps {
		seq++
		if s.seq != 0 {
			seq = s.seq
		}
		ev := &runwirev1.RunEvent{RunId: runID, Seq: seq, NodeId: s.node, Iteration: s.iteration, Attempt: s.attempt, ItemIndex: s.item}
		if s.runID != "" {
			ev.RunId = s.runID
		}
		fd := oneof.Fields().ByName(protoreflect.Name(s.variant))
		if fd == nil {
			panic("no variant " + s.variant)
		}
		m := ev.ProtoReflect()
		m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
		out[i] = ev
	}
	return out
}

// checkAll feeds the stream to a checker and finishes it, returning every
// violation.
func checkAll(t *testing.T, afterSeq int64, evs []*runwirev1.RunEvent) []*Violation {
	t.Helper()
	c := NewChecker(afterSeq)
	var vs []*Violation
	add := func(err error) {
		if err == nil {
			return
		}
		var v *Violation
		if !errors.As(err, &v) {
			t.Fatalf("checker returned %v (%T), want *Violation", err, err)
		}
		vs = append(vs, v)
	}
	for _, ev := range evs {
		add(c.Check(ev))
	}
	add(c.Finish())
	return vs
}

func TestCheckerAcceptsValidStreams(t *testing.T) {
	tests := []struct {
		name     string
		afterSeq int64
		events   []*runwirev1.RunEvent
	}{
		{"shortest run", 0, events(0, run("run_started"), run("run_completed"))},
		{"retry, logs and a skip", 0, scripted.Stream(runID, 3)},
		{"resumed mid-attempt", 3, scripted.After(scripted.Stream(runID, 3), 3)},
		{"resumed at the last event", 9, scripted.After(scripted.Stream(runID, 3), 9)},
		{"parallel nodes, loops and run-level events between", 0, events(0,
			run("run_started"),
			run("run_status_changed"),
			node("node_started", "a", 1, 1),
			node("node_started", "b", 1, 1),
			node("node_log", "a", 1, 1),
			node("node_token", "b", 1, 1),
			node("ai_routing_decision", "b", 1, 1),
			node("tool_call", "b", 1, 1),
			node("ai_invocation", "b", 1, 1),
			node("node_heartbeat", "a", 1, 1),
			node("sandbox_violation", "a", 1, 1),
			node("node_failed", "a", 1, 1),
			node("node_retrying", "a", 1, 1),
			run("run_paused"),
			run("run_resumed"),
			node("node_started", "a", 1, 2),
			node("awaiting_confirmation", "a", 1, 2),
			node("confirmation_resolved", "a", 1, 2),
			node("node_succeeded", "a", 1, 2),
			node("ai_review_required", "b", 1, 1),
			node("ai_review_resolved", "b", 1, 1),
			node("node_succeeded", "b", 1, 1),
			node("node_started", "a", 2, 1),
			node("node_succeeded", "a", 2, 1),
			node("iteration_capped", "a", 2, 0),
			node("approval_requested", "gate", 1, 1),
			node("approval_resolved", "gate", 1, 1),
			node("node_skipped", "c", 0, 0),
			run("run_status_changed"),
			run("run_completed"),
		)},
		{"a fan-out: the node's attempt frames interleaved items, item 0 retried", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1),
			node("node_started", "a", 1, 1).forItem(0),
			node("node_started", "a", 1, 1).forItem(1),
			node("node_log", "a", 1, 1).forItem(1),
			node("node_failed", "a", 1, 1).forItem(0),
			node("node_retrying", "a", 1, 1).forItem(0),
			node("node_succeeded", "a", 1, 1).forItem(1),
			node("node_started", "a", 1, 2).forItem(0),
			node("node_succeeded", "a", 1, 2).forItem(0),
			node("node_skipped", "a", 1, 0).forItem(2),
			node("node_succeeded", "a", 1, 1),
			run("run_completed"),
		)},
		{"resumed: an item starts inside a frame opened before after_seq", 9, events(9,
			node("node_started", "a", 1, 1).forItem(3),
			node("node_succeeded", "a", 1, 1).forItem(3),
			node("node_succeeded", "a", 1, 1),
			run("run_completed"),
		)},
		{"resumed: events of attempts opened before after_seq", 10, events(10,
			node("node_log", "a", 1, 1),
			node("node_succeeded", "a", 1, 1),
			node("tool_call", "b", 3, 2),
			node("node_failed", "b", 3, 2),
			node("node_skipped", "c", 0, 0),
			node("node_log", "c", 1, 1),
			node("node_started", "a", 2, 1),
			node("node_succeeded", "a", 2, 1),
			run("run_completed"),
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if vs := checkAll(t, tt.afterSeq, tt.events); len(vs) != 0 {
				t.Errorf("violations on a valid stream: %v", vs)
			}
		})
	}
}

func TestCheckerReportsEachRule(t *testing.T) {
	tests := []struct {
		rule     string
		name     string
		afterSeq int64
		events   []*runwirev1.RunEvent
		seq      int64 // where the one violation is reported
	}{
		{RuleSeqStart, "first seq is not after_seq + 1", 0, events(0, run("run_started").at(2), run("run_completed")), 2},
		{RuleSeqStart, "resumed stream starts late", 4, events(4, node("node_log", "a", 1, 1).at(6), run("run_completed")), 6},
		{RuleSeqGapless, "gap", 0, events(0, run("run_started"), run("run_paused"), run("run_completed").at(4)), 4},
		{RuleSeqGapless, "repeat", 0, events(0, run("run_started"), run("run_paused"), run("run_resumed").at(2), run("run_completed").at(3)), 2},
		{RuleRunIDStable, "another run's event", 0, events(0, run("run_started"), run("run_paused").of("run_other"), run("run_completed")), 2},
		{RuleRunStartedFirst, "seq 1 is not RunStarted", 0, events(0, run("run_status_changed"), run("run_completed")), 1},
		{RuleRunStartedFirst, "RunStarted again", 0, events(0, run("run_started"), run("run_started"), run("run_completed")), 2},
		{RuleRunCompletedLast, "event after RunCompleted", 0, events(0, run("run_started"), run("run_completed"), run("run_status_changed")), 3},
		{RuleRunCompletedLast, "second RunCompleted", 0, events(0, run("run_started"), run("run_completed"), run("run_completed")), 3},
		{RuleRunCompletedLast, "finished without RunCompleted", 0, events(0, run("run_started"), run("run_paused")), 2},
		{RuleAttemptOpen, "second NodeStarted before the terminal", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1),
			node("node_started", "a", 1, 2),
			node("node_succeeded", "a", 1, 2),
			run("run_completed")), 3},
		{RuleItemOutsideFrame, "an item starts with no open attempt of its node", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1).forItem(0),
			node("node_succeeded", "a", 1, 1).forItem(0),
			run("run_completed")), 2},
		{RuleItemOutsideFrame, "an item starts in another iteration than its node's visit", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1),
			node("node_started", "a", 2, 1).forItem(0),
			node("node_succeeded", "a", 2, 1).forItem(0),
			node("node_succeeded", "a", 1, 1),
			run("run_completed")), 3},
		{RuleAttemptOpen, "the same item starts twice", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1),
			node("node_started", "a", 1, 1).forItem(0),
			node("node_started", "a", 1, 2).forItem(0),
			node("node_succeeded", "a", 1, 2).forItem(0),
			node("node_succeeded", "a", 1, 1),
			run("run_completed")), 4},
		{RuleItemUnclosed, "the node's visit closes while an item is open", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1),
			node("node_started", "a", 1, 1).forItem(0),
			node("node_succeeded", "a", 1, 1),
			node("node_succeeded", "a", 1, 1).forItem(0),
			run("run_completed")), 4},
		{RuleOutputOutsideAttempt, "log before NodeStarted", 0, events(0,
			run("run_started"),
			node("node_log", "a", 1, 1),
			run("run_completed")), 2},
		{RuleOutputOutsideAttempt, "token of another attempt", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 2),
			node("node_token", "a", 1, 1),
			node("node_succeeded", "a", 1, 2),
			run("run_completed")), 3},
		{RuleOutputOutsideAttempt, "heartbeat after the attempt closed", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1),
			node("node_succeeded", "a", 1, 1),
			node("node_heartbeat", "a", 1, 1),
			run("run_completed")), 4},
		{RuleOutputOutsideAttempt, "resumed: tool call after the seen close", 7, events(7,
			node("node_succeeded", "a", 1, 1),
			node("tool_call", "a", 1, 1),
			run("run_completed")), 9},
		{RuleTerminalOutsideAttempt, "success without NodeStarted", 0, events(0,
			run("run_started"),
			node("node_succeeded", "a", 1, 1),
			run("run_completed")), 2},
		{RuleTerminalOutsideAttempt, "failure of another iteration", 0, events(0,
			run("run_started"),
			node("node_started", "a", 2, 1),
			node("node_failed", "a", 1, 1),
			node("node_failed", "a", 2, 1),
			run("run_completed")), 3},
		{RuleTerminalOutsideAttempt, "resumed: second terminal", 7, events(7,
			node("node_failed", "a", 1, 1),
			node("node_succeeded", "a", 1, 1),
			run("run_completed")), 9},
		{RuleSkipInsideAttempt, "skip while running", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1),
			node("node_skipped", "a", 0, 0),
			node("node_succeeded", "a", 1, 1),
			run("run_completed")), 3},
		{RuleAttemptUnclosed, "RunCompleted with an open attempt", 0, events(0,
			run("run_started"),
			node("node_started", "a", 1, 1),
			node("node_log", "a", 1, 1),
			run("run_completed")), 4},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.rule] = true
		t.Run(tt.rule+"/"+tt.name, func(t *testing.T) {
			vs := checkAll(t, tt.afterSeq, tt.events)
			if len(vs) != 1 || vs[0].Rule != tt.rule || vs[0].Seq != tt.seq {
				t.Fatalf("violations %v, want exactly one %s at seq %d", vs, tt.rule, tt.seq)
			}
			prefix := fmt.Sprintf("%s at seq %d: ", tt.rule, tt.seq)
			if msg := vs[0].Error(); !strings.HasPrefix(msg, prefix) || len(msg) == len(prefix) {
				t.Errorf("message %q, want %q followed by a detail", msg, prefix)
			}
		})
	}
	for _, rule := range []string{
		RuleSeqStart, RuleSeqGapless, RuleRunIDStable, RuleRunStartedFirst, RuleRunCompletedLast,
		RuleAttemptOpen, RuleOutputOutsideAttempt, RuleTerminalOutsideAttempt, RuleSkipInsideAttempt,
		RuleAttemptUnclosed, RuleItemOutsideFrame, RuleItemUnclosed,
	} {
		if !covered[rule] {
			t.Errorf("no invalid stream for rule %s", rule)
		}
	}
}

// The rule names are the contract shared with the other clients.
func TestRuleNamesMatchGrammarMD(t *testing.T) {
	want := []string{
		"seq-start", "seq-gapless", "run-id-stable", "run-started-first", "run-completed-last",
		"attempt-open", "output-outside-attempt", "terminal-outside-attempt", "skip-inside-attempt",
		"attempt-unclosed", "item-outside-frame", "item-unclosed",
	}
	got := []string{
		RuleSeqStart, RuleSeqGapless, RuleRunIDStable, RuleRunStartedFirst, RuleRunCompletedLast,
		RuleAttemptOpen, RuleOutputOutsideAttempt, RuleTerminalOutsideAttempt, RuleSkipInsideAttempt,
		RuleAttemptUnclosed, RuleItemOutsideFrame, RuleItemUnclosed,
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("rules %v, want %v", got, want)
	}
}

func TestCheckerReturnsUnknownEventErrorForAnUnknownVariant(t *testing.T) {
	c := NewChecker(0)
	if err := c.Check(events(0, run("run_started"))[0]); err != nil {
		t.Fatal(err)
	}
	var unknown *UnknownEventError
	if err := c.Check(&runwirev1.RunEvent{RunId: runID, Seq: 2}); !errors.As(err, &unknown) {
		t.Fatalf("got %v, want *UnknownEventError", err)
	}
}

// kindOf is the client's one hand-written view of the catalog. Every
// variant is listed here, so a variant added to the proto fails this test
// until someone decides where it sits in the grammar (and does so in every
// client alike).
func TestKindOfCoversTheCatalog(t *testing.T) {
	want := map[string]eventKind{
		"run_started": kindRunStarted, "run_completed": kindRunCompleted,
		"node_started": kindNodeStarted, "node_skipped": kindNodeSkipped,
		"node_log": kindNodeOutput, "node_token": kindNodeOutput,
		"tool_call": kindNodeOutput, "node_heartbeat": kindNodeOutput,
		"node_succeeded": kindNodeTerminal, "node_failed": kindNodeTerminal,
		"run_status_changed": kindOther, "run_paused": kindOther, "run_resumed": kindOther,
		"node_retrying": kindOther, "iteration_capped": kindOther,
		"awaiting_confirmation": kindOther, "confirmation_resolved": kindOther,
		"approval_requested": kindOther, "approval_resolved": kindOther,
		"ai_invocation": kindOther, "ai_routing_decision": kindOther,
		"ai_review_required": kindOther, "ai_review_resolved": kindOther,
		"sandbox_violation": kindOther,
	}
	fields := (&runwirev1.RunEvent{}).ProtoReflect().Descriptor().Oneofs().ByName("event").Fields()
	if fields.Len() != len(want) {
		t.Errorf("the catalog has %d variants, this test lists %d", fields.Len(), len(want))
	}
	for i := range fields.Len() {
		name := string(fields.Get(i).Name())
		k, ok := want[name]
		if !ok {
			t.Errorf("variant %s is not classified for the grammar", name)
			continue
		}
		if got := kindOf(events(0, run(name))[0]); got != k {
			t.Errorf("kindOf(%s) = %d, want %d", name, got, k)
		}
	}
}
