package runwire

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	"github.com/runwire/runwire/clients/go/internal/scripted"
)

// filteredRun is seq 1..9: a whole run with one attempt each of nodes a and
// b; the same stream as the other clients' filtered tests.
func filteredRun() []*runwirev1.RunEvent {
	return events(0,
		run("run_started"), run("run_status_changed"),
		node("node_started", "a", 1, 1), node("node_log", "a", 1, 1),
		node("node_started", "b", 1, 1), node("node_log", "b", 1, 1),
		node("node_succeeded", "a", 1, 1), node("node_succeeded", "b", 1, 1),
		run("run_completed"))
}

func pick(all []*runwirev1.RunEvent, seqs ...int64) []*runwirev1.RunEvent {
	out := make([]*runwirev1.RunEvent, len(seqs))
	for i, s := range seqs {
		out[i] = all[s-1]
	}
	return out
}

var (
	logsOnly     = &runwirev1.EventFilter{Kinds: []string{"node_log"}}
	attemptKinds = &runwirev1.EventFilter{Kinds: []string{"node_started", "node_succeeded", "node_failed", "node_log"}}
	nodeA        = &runwirev1.EventFilter{NodeIds: []string{"a"}}
)

// firstViolation checks the stream with a filtered checker and returns the
// first violation, or nil.
func firstViolation(t *testing.T, afterSeq int64, filter *runwirev1.EventFilter, evs []*runwirev1.RunEvent) *Violation {
	t.Helper()
	c := NewFilteredChecker(afterSeq, filter)
	for _, ev := range evs {
		if err := c.Check(ev); err != nil {
			var v *Violation
			if !errors.As(err, &v) {
				t.Fatalf("checker returned %v, want *Violation", err)
			}
			return v
		}
	}
	if err := c.Finish(); err != nil {
		return err.(*Violation)
	}
	return nil
}

func TestFilteredCheckerAcceptsFilteredStreams(t *testing.T) {
	all := filteredRun()
	for _, tc := range []struct {
		name     string
		filter   *runwirev1.EventFilter
		seqs     []int64
		afterSeq int64
	}{
		{"logs", logsOnly, []int64{4, 6, 9}, 0},
		{"logs resumed", logsOnly, []int64{6, 9}, 4},
		{"attempt kinds", attemptKinds, []int64{3, 4, 5, 6, 7, 8, 9}, 0},
		{"node a", nodeA, []int64{1, 2, 3, 4, 7, 9}, 0},
		{"only run_completed", &runwirev1.EventFilter{Kinds: []string{"run_completed"}}, []int64{9}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v := firstViolation(t, tc.afterSeq, tc.filter, pick(all, tc.seqs...)); v != nil {
				t.Fatal(v)
			}
		})
	}
}

func TestFilteredCheckerRejectsWhatAFilterDoesNotExcuse(t *testing.T) {
	all := filteredRun()
	late := events(9, node("node_log", "b", 1, 1))[0] // seq 10, after RunCompleted
	for _, tc := range []struct {
		name     string
		filter   *runwirev1.EventFilter
		evs      []*runwirev1.RunEvent
		afterSeq int64
		rule     string
		seq      int64
	}{
		{"no filter", nil, pick(all, 4, 6, 9), 0, RuleSeqStart, 4},
		{"empty filter", &runwirev1.EventFilter{}, pick(all, 4, 6, 9), 0, RuleSeqStart, 4},
		{"no filter gap", nil, pick(all, 1, 2, 4), 0, RuleSeqGapless, 4},
		{"repeat", logsOnly, pick(all, 4, 4), 0, RuleSeqGapless, 4},
		{"reorder", logsOnly, pick(all, 6, 4), 0, RuleSeqGapless, 4},
		{"not after after_seq", logsOnly, pick(all, 4), 4, RuleSeqStart, 4},
		{"after run_completed", logsOnly, append(pick(all, 4, 9), late), 0, RuleRunCompletedLast, 10},
		{"no run_completed", logsOnly, pick(all, 4), 0, RuleRunCompletedLast, 4},
		{"attempt kinds keep attempt-unclosed", attemptKinds, pick(all, 3, 4, 5, 9), 0, RuleAttemptUnclosed, 9},
		{"attempt kinds keep output-outside-attempt", attemptKinds, pick(all, 4), 0, RuleOutputOutsideAttempt, 4},
		{"node ids keep the attempt rules", nodeA, pick(all, 1, 2, 4), 0, RuleOutputOutsideAttempt, 4},
		{"run id", logsOnly, append(pick(all, 4), events(5, run("node_log").of("run_other"))...), 0, RuleRunIDStable, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := firstViolation(t, tc.afterSeq, tc.filter, tc.evs)
			if v == nil || v.Rule != tc.rule || v.Seq != tc.seq {
				t.Fatalf("violation %v, want %s at seq %d", v, tc.rule, tc.seq)
			}
		})
	}
}

// The server looked through seq 8 before the drain: the resumed call starts
// there, not at the last event's seq 6, and carries the filter again.
func TestWatchWithAFilterResumesAfterResumeAfterSeq(t *testing.T) {
	all := filteredRun()
	srv := scripted.Start(t, func(call int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if call == 0 {
			if err := s.Send(&runwirev1.WatchRunResponse{Events: pick(all, 4, 6), ResumeAfterSeq: 8}); err != nil {
				return err
			}
			return runwireStatus(t, codes.Unavailable, "SERVER_DRAINING")
		}
		if err := s.Send(&runwirev1.WatchRunResponse{Events: pick(all, 6), ResumeAfterSeq: 8}); err != nil {
			return err
		}
		return s.Send(&runwirev1.WatchRunResponse{Events: pick(all, 9), ResumeAfterSeq: 9})
	})
	opts := fast()
	opts.Filter = logsOnly
	var end RunEnd
	opts.OnEnd = func(e RunEnd) { end = e }

	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, opts))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, got, pick(all, 4, 6, 9))
	if v := firstViolation(t, 0, logsOnly, got); v != nil {
		t.Fatal(v)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 || reqs[0].GetAfterSeq() != 0 || reqs[1].GetAfterSeq() != 8 {
		t.Fatalf("requests %v, want after_seq 0 then 8", reqs)
	}
	for _, r := range reqs {
		if len(r.GetFilter().GetKinds()) != 1 || r.GetFilter().GetKinds()[0] != "node_log" {
			t.Fatalf("request filter %v, want kinds [node_log]", r.GetFilter())
		}
	}
	if end.LastSeq != 9 {
		t.Fatalf("end %+v, want last seq 9", end)
	}
}

func TestWatchWithAFilterResumesPastAResponseWithoutEvents(t *testing.T) {
	all := filteredRun()
	srv := scripted.Start(t, func(call int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if call == 0 {
			if err := s.Send(&runwirev1.WatchRunResponse{ResumeAfterSeq: 5}); err != nil {
				return err
			}
			return runwireStatus(t, codes.Unavailable, "SERVER_DRAINING")
		}
		return s.Send(&runwirev1.WatchRunResponse{Events: pick(all, 6, 9), ResumeAfterSeq: 9})
	})
	opts := fast()
	opts.Filter = logsOnly

	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, opts))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, got, pick(all, 6, 9))
	assertAfterSeqs(t, srv, 0, 5)
}

// RunCompleted is always delivered: a stream_end past the resume point
// means it was lost.
func TestWatchWithAFilterFailsWhenRunCompletedWasSkipped(t *testing.T) {
	all := filteredRun()
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if err := s.Send(&runwirev1.WatchRunResponse{Events: pick(all, 4), ResumeAfterSeq: 6}); err != nil {
			return err
		}
		return s.Send(&runwirev1.WatchRunResponse{StreamEnd: &runwirev1.StreamEnd{LastSeq: 9}, ResumeAfterSeq: 9})
	})
	opts := fast()
	opts.Filter = logsOnly

	_, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, opts))
	if !errors.Is(err, ErrSeqGap) {
		t.Fatalf("err %v, want ErrSeqGap", err)
	}
}

func TestWatchWithAFilterEndsOnStreamEndAtItsResumePoint(t *testing.T) {
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		return s.Send(&runwirev1.WatchRunResponse{StreamEnd: &runwirev1.StreamEnd{LastSeq: 9, Status: runwirev1.RunStatus_RUN_STATUS_SUCCEEDED}})
	})
	opts := fast()
	opts.Filter = logsOnly

	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 9, opts))
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want nothing and no error", seqs(got), err)
	}
}
