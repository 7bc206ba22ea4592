package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	"github.com/runwire/runwire/clients/go/internal/scripted"
)

const runID = "run_0193f0c2a7b84d1e9f3c5a6b7c8d9e0f"

// watch runs the command against srv and returns its exit status and output.
func watch(t *testing.T, srv *scripted.Server, extra ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args := append([]string{"--addr", srv.Addr, "--run-id", runID}, extra...)
	// The deadline only turns a hang into a failure; nothing waits on it.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	code := run(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// assertLines fails unless stdout is one line per event of want, each the
// event's proto3 JSON with sorted keys.
func assertLines(t *testing.T, stdout string, want []*runwirev1.RunEvent) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), stdout)
	}
	for i, line := range lines {
		got := &runwirev1.RunEvent{}
		if err := protojson.Unmarshal([]byte(line), got); err != nil {
			t.Fatalf("line %d is not a RunEvent: %v\n%s", i+1, err, line)
		}
		if !proto.Equal(got, want[i]) {
			t.Errorf("line %d:\n got %v\nwant %v", i+1, got, want[i])
		}
	}
	if !strings.HasPrefix(lines[0], `{"runId":"`+runID+`","seq":"1","eventTime":"2026-11-21T20:00:00Z",`) &&
		want[0].GetSeq() == 1 {
		t.Errorf("line 1 is not compact lowerCamelCase JSON in field order: %s", lines[0])
	}
}

func TestRunPrintsEveryEventOnceAcrossADrain(t *testing.T) {
	stream := scripted.Stream(runID, 3)
	srv := scripted.Start(t, func(call int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if call == 0 {
			if err := scripted.Send(s, stream[:4]...); err != nil {
				return err
			}
			return status.Error(codes.Unavailable, "draining")
		}
		return scripted.Send(s, scripted.After(stream, req.GetAfterSeq()-2)...) // resends two
	})
	code, stdout, stderr := watch(t, srv)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	assertLines(t, stdout, stream)
	if !strings.Contains(stderr, "reconnecting") {
		t.Errorf("stderr does not mention the reconnect:\n%s", stderr)
	}
}

func TestRunStartsAfterSeq(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	srv := scripted.Start(t, func(_ int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		return scripted.Send(s, scripted.After(stream, req.GetAfterSeq())...)
	})
	code, stdout, stderr := watch(t, srv, "--after-seq", "6")
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	assertLines(t, stdout, scripted.After(stream, 6))
}

func TestRunFailsOnABrokenGrammar(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	// Drop the retried attempt's NodeStarted: its log lines belong to no
	// open attempt. Renumber so that only the grammar, not the seq, breaks.
	broken := append([]*runwirev1.RunEvent{}, stream[:5]...)
	for _, ev := range stream[6:] {
		ev = proto.CloneOf(ev)
		ev.Seq--
		broken = append(broken, ev)
	}
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		return scripted.Send(s, broken...)
	})
	code, stdout, stderr := watch(t, srv)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	assertLines(t, stdout, broken)
	if !strings.Contains(stderr, "output-outside-attempt at seq 6: ") {
		t.Errorf("stderr does not name the violation:\n%s", stderr)
	}
}

func TestRunReportsAServerError(t *testing.T) {
	srv := scripted.Start(t, func(int, *runwirev1.WatchRunRequest, runwirev1.RunService_WatchRunServer) error {
		st, _ := status.New(codes.NotFound, "no run has id").WithDetails(
			&errdetails.ErrorInfo{Reason: "RUN_NOT_FOUND", Domain: "runwire.v1"})
		return st.Err()
	})
	code, stdout, stderr := watch(t, srv)
	if code != 3 || stdout != "" || !strings.Contains(stderr, "NotFound RUN_NOT_FOUND") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestRunRejectsBadUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	for _, args := range [][]string{
		{}, {"--run-id", "r", "extra"}, {"--run-id", "r", "--after-seq", "-1"}, {"--nope"},
		{"--run-id", "r", "--tls-cert", "c.pem"}, {"--run-id", "r", "--tls-cert", "c.pem", "--tls-key", "k.pem"},
	} {
		if code := run(t.Context(), args, &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

func TestRunHelpWorksAndNamesEveryFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help exits %d", code)
	}
	for _, flag := range []string{"-addr", "-run-id", "-after-seq", "-token", "-tls-ca", "-tls-cert", "-tls-key", "-give-up-after"} {
		if !strings.Contains(stderr.String(), flag) {
			t.Errorf("--help does not name %s:\n%s", flag, stderr.String())
		}
	}
}

// after_seq = the run's last seq: the server answers only stream_end, and
// the command exits 0 with the final status on stderr instead of
// reconnecting forever.
func TestRunAtTheEndOfAFinishedRunExitsZero(t *testing.T) {
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		return s.Send(&runwirev1.WatchRunResponse{StreamEnd: &runwirev1.StreamEnd{
			LastSeq: 9, Status: runwirev1.RunStatus_RUN_STATUS_SUCCEEDED,
		}})
	})
	code, stdout, stderr := watch(t, srv, "--after-seq", "9")
	if code != 0 || stdout != "" || stderr != "runwire-watch: run "+runID+" finished RUN_STATUS_SUCCEEDED at seq 9\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// after_seq = last + 5: OUT_OF_RANGE AFTER_SEQ_BEYOND_END ends it the same way.
func TestRunPastTheEndOfAFinishedRunExitsZero(t *testing.T) {
	srv := scripted.Start(t, func(int, *runwirev1.WatchRunRequest, runwirev1.RunService_WatchRunServer) error {
		st, _ := status.New(codes.OutOfRange, "beyond").WithDetails(&errdetails.ErrorInfo{
			Reason: "AFTER_SEQ_BEYOND_END", Domain: "runwire.v1",
			Metadata: map[string]string{"last_seq": "9", "status": "RUN_STATUS_FAILED"},
		})
		return st.Err()
	})
	code, stdout, stderr := watch(t, srv, "--after-seq", "14")
	if code != 0 || stdout != "" || stderr != "runwire-watch: run "+runID+" finished RUN_STATUS_FAILED at seq 9\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// --kinds node_log: the logs and RunCompleted, with gaps; the filtered
// grammar rule holds and the filter goes with the call.
func TestRunWithKindsChecksTheFilteredGrammar(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	var logs []*runwirev1.RunEvent
	for _, ev := range stream {
		if ev.GetNodeLog() != nil || ev.GetRunCompleted() != nil {
			logs = append(logs, ev)
		}
	}
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		return s.Send(&runwirev1.WatchRunResponse{Events: logs, ResumeAfterSeq: logs[len(logs)-1].GetSeq()})
	})
	code, stdout, stderr := watch(t, srv, "--kinds", "node_log")
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	assertLines(t, stdout, logs)
	if kinds := srv.Requests()[0].GetFilter().GetKinds(); len(kinds) != 1 || kinds[0] != "node_log" {
		t.Fatalf("filter kinds %v, want [node_log]", kinds)
	}
}

func TestRunWithEventsPrintsCountEventsAcrossRuns(t *testing.T) {
	a := scripted.Stream(runID, 0)
	b := scripted.Stream("run_other", 0)
	srv := scripted.StartEvents(t, func(call int, _ *runwirev1.WatchEventsRequest, s runwirev1.RunService_WatchEventsServer) error {
		if call == 0 {
			if err := s.Send(&runwirev1.WatchEventsResponse{Events: []*runwirev1.RunEvent{a[0], b[0]}, Cursor: "c2"}); err != nil {
				return err
			}
			return status.Error(codes.Unavailable, "draining")
		}
		if err := s.Send(&runwirev1.WatchEventsResponse{Events: []*runwirev1.RunEvent{b[0], a[1]}, Cursor: "c3"}); err != nil {
			return err
		}
		<-s.Context().Done()
		return nil
	})
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	args := []string{"--addr", srv.Addr, "--events", "--start", "earliest", "--flow-name", "deploy", "--count", "3"}
	if code := run(ctx, args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	assertLines(t, stdout.String(), []*runwirev1.RunEvent{a[0], b[0], a[1]})
	reqs := srv.EventsRequests()
	if len(reqs) != 2 || reqs[1].GetCursor() != "c2" || reqs[0].GetFilter().GetFlowName() != "deploy" ||
		reqs[0].GetStart() != runwirev1.StreamStart_STREAM_START_EARLIEST {
		t.Fatalf("requests %v", reqs)
	}
}

func TestRunWantsEitherRunIDOrEvents(t *testing.T) {
	var stdout, stderr bytes.Buffer
	for _, args := range [][]string{{"--events", "--run-id", runID}, {"--addr", "127.0.0.1:1"}, {"--events", "--start", "soon"}} {
		if code := run(t.Context(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
