package runwire

import (
	"fmt"
	"sort"
	"strings"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
)

// The stream grammar rules of clients/GRAMMAR.md; every runwire client uses
// these names.
const (
	RuleSeqStart               = "seq-start"
	RuleSeqGapless             = "seq-gapless"
	RuleRunIDStable            = "run-id-stable"
	RuleRunStartedFirst        = "run-started-first"
	RuleRunCompletedLast       = "run-completed-last"
	RuleAttemptOpen            = "attempt-open"
	RuleOutputOutsideAttempt   = "output-outside-attempt"
	RuleTerminalOutsideAttempt = "terminal-outside-attempt"
	RuleSkipInsideAttempt      = "skip-inside-attempt"
	RuleAttemptUnclosed        = "attempt-unclosed"
	RuleItemOutsideFrame       = "item-outside-frame"
	RuleItemUnclosed           = "item-unclosed"
)

// Violation is one broken grammar rule.
type Violation struct {
	// Rule is one of the Rule* names.
	Rule string
	// Seq is the seq of the offending event; for a stream finished without
	// RunCompleted, the last seq seen (after_seq when none was).
	Seq int64
	// Detail says what was wrong, for people.
	Detail string
}

// Error formats the violation as `<rule> at seq <seq>: <detail>`.
func (v *Violation) Error() string {
	return fmt.Sprintf("%s at seq %d: %s", v.Rule, v.Seq, v.Detail)
}

// attempt identifies a node attempt by its envelope fields.
type attempt struct {
	iteration, attempt int32
}

func (a attempt) String() string {
	return fmt.Sprintf("iteration %d attempt %d", a.iteration, a.attempt)
}

// Checker checks one run's event stream against the grammar. Create it with
// the after_seq the watch started from, Check each event in arrival order,
// and Finish when the stream ends. A Checker is not safe for concurrent use.
type Checker struct {
	afterSeq  int64
	started   bool // some event was checked
	firstRun  string
	lastSeq   int64
	completed bool
	open      map[string]attempt // node_id -> its open attempt
	// seen holds the nodes whose attempt state the checker knows: it saw an
	// attempt of theirs open or close (a skip says nothing about attempts). A resumed stream (after_seq > 0) accepts output
	// and terminal events of other nodes, whose NodeStarted came earlier.
	seen map[string]bool
	// filtered relaxes the seq rules and attemptRules keeps or drops the
	// attempt rules, per "Filtered streams" in clients/GRAMMAR.md.
	filtered     bool
	attemptRules bool
}

// NewChecker returns a Checker for a stream of the events after afterSeq
// (0 for the whole stream).
func NewChecker(afterSeq int64) *Checker {
	return &Checker{
		afterSeq: afterSeq,
		lastSeq:  afterSeq,
		open:     map[string]attempt{},
		seen:     map[string]bool{},

		attemptRules: true,
	}
}

// NewFilteredChecker returns a Checker for the stream of a WatchRun with
// filter, which applies the filtered-stream rule of clients/GRAMMAR.md:
// seqs must increase but may skip, and the attempt rules hold only when the
// filter's kinds select node_started, node_succeeded and node_failed. A nil
// filter, or one with neither kinds nor node ids, checks as NewChecker does.
func NewFilteredChecker(afterSeq int64, filter *runwirev1.EventFilter) *Checker {
	c := NewChecker(afterSeq)
	c.filtered = IsFiltered(filter)
	c.attemptRules = selectsAttemptFraming(filter.GetKinds())
	return c
}

// IsFiltered reports whether a WatchRun with filter may skip events: the
// filter names kinds or node ids.
func IsFiltered(filter *runwirev1.EventFilter) bool {
	return len(filter.GetKinds()) > 0 || len(filter.GetNodeIds()) > 0
}

// selectsAttemptFraming reports whether kinds (empty: every kind) select
// the events that open and close attempts.
func selectsAttemptFraming(kinds []string) bool {
	if len(kinds) == 0 {
		return true
	}
	want := map[string]bool{"node_started": true, "node_succeeded": true, "node_failed": true}
	for _, k := range kinds {
		delete(want, k)
	}
	return len(want) == 0
}

// eventKind is the grammar's view of a oneof case.
type eventKind int

const (
	kindOther eventKind = iota // run status, gates, AI audit, retries, caps, sandbox
	kindRunStarted
	kindRunCompleted
	kindNodeStarted
	kindNodeOutput   // NodeLog, NodeToken, ToolCall, NodeHeartbeat
	kindNodeTerminal // NodeSucceeded, NodeFailed
	kindNodeSkipped
)

// kindOf is the one hand-written mapping of variants in this client: a new
// variant that belongs to a node attempt must be added here (see
// fixtures/corpus/README.md).
func kindOf(ev *runwirev1.RunEvent) eventKind {
	switch ev.GetEvent().(type) {
	case *runwirev1.RunEvent_RunStarted:
		return kindRunStarted
	case *runwirev1.RunEvent_RunCompleted:
		return kindRunCompleted
	case *runwirev1.RunEvent_NodeStarted:
		return kindNodeStarted
	case *runwirev1.RunEvent_NodeLog, *runwirev1.RunEvent_NodeToken,
		*runwirev1.RunEvent_ToolCall, *runwirev1.RunEvent_NodeHeartbeat:
		return kindNodeOutput
	case *runwirev1.RunEvent_NodeSucceeded, *runwirev1.RunEvent_NodeFailed:
		return kindNodeTerminal
	case *runwirev1.RunEvent_NodeSkipped:
		return kindNodeSkipped
	default:
		return kindOther
	}
}

// variantName is the oneof field name of ev's case, for messages.
func variantName(ev *runwirev1.RunEvent) string {
	m := ev.ProtoReflect()
	if f := m.WhichOneof(m.Descriptor().Oneofs().ByName("event")); f != nil {
		return string(f.Name())
	}
	return "unknown event"
}

// Check checks the next event. It returns the first rule ev breaks as a
// *Violation, or nil; rules are judged in the order of clients/GRAMMAR.md,
// run-completed-last before run-started-first. The checker's state advances
// either way, so checking can go on after a violation. An event of an
// unknown variant is no violation: Check returns its *UnknownEventError.
func (c *Checker) Check(ev *runwirev1.RunEvent) error {
	if err := CheckKnown(ev); err != nil {
		return err
	}
	v := c.check(ev)
	if v == nil {
		return nil
	}
	return v
}

func (c *Checker) check(ev *runwirev1.RunEvent) *Violation {
	seq := ev.GetSeq()
	fail := func(rule, format string, args ...any) *Violation {
		return &Violation{Rule: rule, Seq: seq, Detail: fmt.Sprintf(format, args...)}
	}
	first := !c.started
	prev := c.lastSeq
	c.started = true
	c.lastSeq = seq
	if first {
		c.firstRun = ev.GetRunId()
	}
	kind := kindOf(ev)
	// A fan-out item is a track of its own, named node[item_index]; the
	// node's own attempt (no item) frames its items.
	frame := ev.GetNodeId()
	node := frame
	isItem := ev.ItemIndex != nil
	if isItem {
		node = fmt.Sprintf("%s[%d]", frame, ev.GetItemIndex())
	}
	key := attempt{ev.GetIteration(), ev.GetAttempt()}
	name := variantName(ev)

	// Attempt bookkeeping happens before the rules are judged, so that a
	// violation does not derail the checks of later events.
	open, isOpen := c.open[node]
	known := c.seen[node] || c.afterSeq == 0
	openFrame, frameOpen := c.open[frame]
	frameKnown := c.seen[frame] || c.afterSeq == 0
	var openItems []string
	if kind == kindNodeTerminal && !isItem {
		for n := range c.open {
			if strings.HasPrefix(n, frame+"[") {
				openItems = append(openItems, n)
			}
		}
		sort.Strings(openItems)
	}
	wasCompleted := c.completed
	switch kind {
	case kindNodeStarted:
		c.open[node] = key
		c.seen[node] = true
	case kindNodeTerminal:
		if !isOpen || open == key {
			delete(c.open, node)
		}
		c.seen[node] = true
	case kindRunCompleted:
		c.completed = true
	}

	switch {
	case c.filtered && first && seq <= c.afterSeq:
		return fail(RuleSeqStart, "first event has seq %d, want more than after_seq %d", seq, c.afterSeq)
	case c.filtered && !first && seq <= prev:
		return fail(RuleSeqGapless, "seq %d follows seq %d, want more", seq, prev)
	case !c.filtered && first && seq != c.afterSeq+1:
		return fail(RuleSeqStart, "first event has seq %d, want %d (after_seq %d)", seq, c.afterSeq+1, c.afterSeq)
	case !c.filtered && !first && seq != prev+1:
		return fail(RuleSeqGapless, "seq %d follows seq %d", seq, prev)
	case ev.GetRunId() != c.firstRun:
		return fail(RuleRunIDStable, "run_id %q differs from %q", ev.GetRunId(), c.firstRun)
	case wasCompleted:
		return fail(RuleRunCompletedLast, "%s follows run_completed", name)
	case seq == 1 && kind != kindRunStarted:
		return fail(RuleRunStartedFirst, "%s at seq 1, want run_started", name)
	case seq != 1 && kind == kindRunStarted:
		return fail(RuleRunStartedFirst, "run_started at seq %d, want seq 1", seq)
	}
	if !c.attemptRules {
		return nil
	}

	switch {
	case kind == kindNodeStarted && isItem && ((!frameOpen && frameKnown) || (frameOpen && openFrame.iteration != key.iteration)):
		return fail(RuleItemOutsideFrame, "node_started for item %q (%s) outside an open visit of node %q", node, key, frame)
	case len(openItems) > 0:
		return fail(RuleItemUnclosed, "%s for node %q while items are open: %s", name, frame, strings.Join(openItems, ", "))
	}

	switch kind {
	case kindNodeStarted:
		if isOpen {
			return fail(RuleAttemptOpen, "node_started for node %q (%s) while its %s is open", node, key, open)
		}
	case kindNodeOutput:
		switch {
		case isOpen && open != key:
			return fail(RuleOutputOutsideAttempt, "%s for node %q (%s) while its open attempt is %s", name, node, key, open)
		case !isOpen && known:
			return fail(RuleOutputOutsideAttempt, "%s for node %q (%s) with no open attempt", name, node, key)
		}
	case kindNodeTerminal:
		switch {
		case isOpen && open != key:
			return fail(RuleTerminalOutsideAttempt, "%s for node %q (%s) while its open attempt is %s", name, node, key, open)
		case !isOpen && known:
			return fail(RuleTerminalOutsideAttempt, "%s for node %q (%s) with no open attempt", name, node, key)
		}
	case kindNodeSkipped:
		if isOpen {
			return fail(RuleSkipInsideAttempt, "node_skipped for node %q while its %s is open", node, open)
		}
	case kindRunCompleted:
		if len(c.open) > 0 {
			return fail(RuleAttemptUnclosed, "run_completed while attempts are open: %s", c.describeOpen())
		}
	}
	return nil
}

// describeOpen lists the open attempts in node order.
func (c *Checker) describeOpen() string {
	nodes := make([]string, 0, len(c.open))
	for n := range c.open {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = fmt.Sprintf("node %q (%s)", n, c.open[n])
	}
	return strings.Join(parts, ", ")
}

// Finish is called when the stream has ended. It returns a *Violation when
// the stream ended without RunCompleted, and nil otherwise.
func (c *Checker) Finish() error {
	if c.completed {
		return nil
	}
	return &Violation{Rule: RuleRunCompletedLast, Seq: c.lastSeq, Detail: "stream finished without run_completed"}
}
