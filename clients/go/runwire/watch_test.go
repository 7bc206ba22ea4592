package runwire

import (
	"context"
	"errors"
	"iter"
	"strconv"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	"github.com/runwire/runwire/clients/go/internal/scripted"
)

const runID = "run_0193f0c2a7b84d1e9f3c5a6b7c8d9e0f"

// fast keeps reconnect waits short; tests synchronise on events, never on
// these delays.
func fast() *WatchOptions {
	return &WatchOptions{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
}

// bounded is the test's context with a deadline, so that a watch which
// never ends fails its test instead of hanging the run; nothing waits on it.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// collect drains a watch: the events in order and the final error.
func collect(t *testing.T, seq iter.Seq2[*runwirev1.RunEvent, error]) ([]*runwirev1.RunEvent, error) {
	t.Helper()
	var got []*runwirev1.RunEvent
	for ev, err := range seq {
		if err != nil {
			return got, err
		}
		got = append(got, ev)
	}
	return got, nil
}

// assertEvents fails unless got is exactly want, in order.
func assertEvents(t *testing.T, got, want []*runwirev1.RunEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d events (seqs %v), want %d (seqs %v)", len(got), seqs(got), len(want), seqs(want))
		return
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("event %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

func seqs(evs []*runwirev1.RunEvent) []int64 {
	out := make([]int64, len(evs))
	for i, ev := range evs {
		out[i] = ev.GetSeq()
	}
	return out
}

// assertAfterSeqs fails unless the server saw WatchRun calls with exactly
// these after_seq values.
func assertAfterSeqs(t *testing.T, srv *scripted.Server, want ...int64) {
	t.Helper()
	reqs := srv.Requests()
	got := make([]int64, len(reqs))
	for i, r := range reqs {
		got[i] = r.GetAfterSeq()
		if r.GetRunId() != runID {
			t.Errorf("call %d: run_id %q, want %q", i, r.GetRunId(), runID)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("WatchRun after_seqs %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("WatchRun after_seqs %v, want %v", got, want)
		}
	}
}

// honest answers like the real server: the events after after_seq, in
// batches of two, then OK.
func honest(stream []*runwirev1.RunEvent) scripted.Script {
	return func(_ int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		last := stream[len(stream)-1]
		if req.GetAfterSeq() > last.GetSeq() {
			return beyondStatus(last.GetSeq(), "RUN_STATUS_SUCCEEDED")
		}
		rest := scripted.After(stream, req.GetAfterSeq())
		for len(rest) > 0 {
			n := min(2, len(rest))
			if err := scripted.Send(s, rest[:n]...); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return s.Send(&runwirev1.WatchRunResponse{StreamEnd: &runwirev1.StreamEnd{
			LastSeq: last.GetSeq(), Status: last.GetRunCompleted().GetStatus(),
		}})
	}
}

// beyondStatus is the server's answer to after_seq beyond a finished run's end.
func beyondStatus(lastSeq int64, statusName string) error {
	st, err := status.New(codes.OutOfRange, "after_seq is beyond the run's end").WithDetails(&errdetails.ErrorInfo{
		Reason: "AFTER_SEQ_BEYOND_END", Domain: ErrorDomain,
		Metadata: map[string]string{"last_seq": strconv.FormatInt(lastSeq, 10), "status": statusName},
	})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func runwireStatus(t *testing.T, code codes.Code, reason string, details ...protoadapt.MessageV1) error {
	t.Helper()
	all := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}}, details...)
	st, err := status.New(code, "scripted "+reason).WithDetails(all...)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestWatchDeliversEveryBatchInOrderAndStopsAfterRunCompleted(t *testing.T) {
	stream := scripted.Stream(runID, 5)
	srv := scripted.Start(t, honest(stream))

	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, fast()))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, got, stream)
	assertAfterSeqs(t, srv, 0)
}

func TestWatchStartsAfterTheGivenSeq(t *testing.T) {
	stream := scripted.Stream(runID, 3)
	srv := scripted.Start(t, honest(stream))

	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 4, fast()))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, got, scripted.After(stream, 4))
	assertAfterSeqs(t, srv, 4)
}

// A draining server closes the stream with UNAVAILABLE; the resumed stream
// repeats events the client already has, which it must drop.
func TestWatchResumesAfterDrainAndDropsRepeatedSeqs(t *testing.T) {
	stream := scripted.Stream(runID, 4)
	srv := scripted.Start(t, func(call int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if call == 0 {
			if err := scripted.Send(s, stream[:3]...); err != nil {
				return err
			}
			return runwireStatus(t, codes.Unavailable, "SERVER_DRAINING")
		}
		// Replay from seq 2: two repeats in the first batch, one repeated
		// again in the next.
		if err := scripted.Send(s, stream[1:5]...); err != nil {
			return err
		}
		return scripted.Send(s, stream[4:]...)
	})

	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, fast()))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, got, stream)
	assertAfterSeqs(t, srv, 0, 3)
}

// The connection dies under an open stream (a network failure, a crashed
// proxy): the client reconnects to the same server from the last seq.
func TestWatchResumesAfterConnectionDrop(t *testing.T) {
	stream := scripted.Stream(runID, 4)
	srv := scripted.Start(t, func(call int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if call == 0 {
			if err := scripted.Send(s, stream[:4]...); err != nil {
				return err
			}
			<-s.Context().Done() // until the test drops the connection
			return s.Context().Err()
		}
		return honest(stream)(call, req, s)
	})

	var got []*runwirev1.RunEvent
	var retryErrs []error
	opts := fast()
	opts.OnRetry = func(err error, _ time.Duration) { retryErrs = append(retryErrs, err) }
	for ev, err := range Watch(bounded(t), srv.Dial(t), runID, 0, opts) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
		if ev.GetSeq() == 4 {
			srv.DropConnections()
		}
	}
	assertEvents(t, got, stream)
	assertAfterSeqs(t, srv, 0, 4)
	if len(retryErrs) == 0 || status.Code(retryErrs[0]) != codes.Unavailable {
		t.Errorf("retry errors %v, want UNAVAILABLE first", retryErrs)
	}
}

// The server process goes away mid-stream and comes back on the same
// address; while it is gone every call fails, and the watch keeps trying.
func TestWatchResumesAcrossServerRestart(t *testing.T) {
	stream := scripted.Stream(runID, 4)
	srv := scripted.Start(t, func(call int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if call == 0 {
			if err := scripted.Send(s, stream[:5]...); err != nil {
				return err
			}
			<-s.Context().Done() // until the test stops the server
			return s.Context().Err()
		}
		return honest(stream)(call, req, s)
	})

	retries := 0
	opts := fast()
	opts.OnRetry = func(err error, _ time.Duration) {
		retries++
		if code := status.Code(err); code != codes.Unavailable {
			t.Errorf("retry %d after %v, want UNAVAILABLE", retries, err)
		}
		if retries == 3 { // the stream broke, then two calls found no server
			srv.Restart()
		}
	}
	var got []*runwirev1.RunEvent
	for ev, err := range Watch(bounded(t), srv.Dial(t), runID, 0, opts) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
		if ev.GetSeq() == 5 {
			srv.Stop()
		}
	}
	assertEvents(t, got, stream)
	assertAfterSeqs(t, srv, 0, 5)
	if retries < 3 {
		t.Errorf("%d retries, want at least 3", retries)
	}
}

// A dying server may reset the stream: INTERNAL or CANCELLED without a
// runwire ErrorInfo is the transport, not the application, and is retried.
func TestWatchRetriesTransportResets(t *testing.T) {
	for _, code := range []codes.Code{codes.Internal, codes.Canceled, codes.DeadlineExceeded} {
		t.Run(code.String(), func(t *testing.T) {
			stream := scripted.Stream(runID, 2)
			srv := scripted.Start(t, func(call int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
				if call == 0 {
					if err := scripted.Send(s, stream[:2]...); err != nil {
						return err
					}
					return status.Error(code, "stream terminated by RST_STREAM")
				}
				return honest(stream)(call, req, s)
			})
			got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, fast()))
			if err != nil {
				t.Fatal(err)
			}
			assertEvents(t, got, stream)
			assertAfterSeqs(t, srv, 0, 2)
		})
	}
}

// An OK end before RunCompleted breaks the server's promise; the client
// resumes rather than report a finished run.
func TestWatchResumesWhenStreamEndsBeforeRunCompleted(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	srv := scripted.Start(t, func(call int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if call == 0 {
			return scripted.Send(s, stream[:3]...)
		}
		return honest(stream)(call, req, s)
	})
	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, fast()))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, got, stream)
	assertAfterSeqs(t, srv, 0, 3)
}

func TestWatchReturnsTypedErrorsWithoutRetrying(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		code       codes.Code
		reason     runwirev1.ErrorReason
		violations []FieldViolation
	}{
		{
			name:   "not found",
			err:    runwireStatus(t, codes.NotFound, "RUN_NOT_FOUND"),
			code:   codes.NotFound,
			reason: runwirev1.ErrorReason_ERROR_REASON_RUN_NOT_FOUND,
		},
		{
			name: "invalid argument",
			err: runwireStatus(t, codes.InvalidArgument, "REQUEST_INVALID", &errdetails.BadRequest{
				FieldViolations: []*errdetails.BadRequest_FieldViolation{
					{Field: "after_seq", Description: "must be >= 0, got -1"},
				},
			}),
			code:       codes.InvalidArgument,
			reason:     runwirev1.ErrorReason_ERROR_REASON_REQUEST_INVALID,
			violations: []FieldViolation{{Field: "after_seq", Description: "must be >= 0, got -1"}},
		},
		{
			name:   "server fault",
			err:    runwireStatus(t, codes.Internal, "INTERNAL"),
			code:   codes.Internal,
			reason: runwirev1.ErrorReason_ERROR_REASON_INTERNAL,
		},
		{
			name: "unauthenticated",
			err:  runwireStatus(t, codes.Unauthenticated, "UNAUTHENTICATED"),
			code: codes.Unauthenticated, reason: runwirev1.ErrorReason_ERROR_REASON_UNAUTHENTICATED,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := scripted.Start(t, func(int, *runwirev1.WatchRunRequest, runwirev1.RunService_WatchRunServer) error {
				return tt.err
			})
			got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, fast()))
			if len(got) != 0 {
				t.Errorf("got events %v", seqs(got))
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *runwire.Error", err, err)
			}
			if e.Code != tt.code || e.Reason != tt.reason {
				t.Errorf("got code %v reason %v, want %v %v", e.Code, e.Reason, tt.code, tt.reason)
			}
			if len(e.FieldViolations) != len(tt.violations) {
				t.Fatalf("violations %v, want %v", e.FieldViolations, tt.violations)
			}
			for i := range tt.violations {
				if e.FieldViolations[i] != tt.violations[i] {
					t.Errorf("violation %d: %v, want %v", i, e.FieldViolations[i], tt.violations[i])
				}
			}
			assertAfterSeqs(t, srv, 0)
		})
	}
}

func TestWatchRejectsAnUnknownVariant(t *testing.T) {
	stream := scripted.Stream(runID, 1)
	future := &runwirev1.RunEvent{RunId: runID, Seq: 2, NodeId: "build", Iteration: 1, Attempt: 1}
	// A variant from a newer contract at field 200 (reserved for nothing
	// yet): this client decodes it as an event with no case.
	future.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 200, protowire.BytesType), []byte{0x0a, 0x01, 'x'}))
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		return scripted.Send(s, stream[0], future, stream[1])
	})

	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, fast()))
	assertEvents(t, got, stream[:1])
	var unknown *UnknownEventError
	if !errors.As(err, &unknown) {
		t.Fatalf("error %v (%T), want *UnknownEventError", err, err)
	}
	if unknown.Seq != 2 || len(unknown.FieldNumbers) != 1 || unknown.FieldNumbers[0] != 200 {
		t.Errorf("got %+v, want seq 2 and field 200", unknown)
	}
	assertAfterSeqs(t, srv, 0)
}

func TestWatchFailsOnASeqGap(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		return scripted.Send(s, stream[0], stream[1], stream[3])
	})
	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, fast()))
	assertEvents(t, got, stream[:2])
	if !errors.Is(err, ErrSeqGap) {
		t.Fatalf("error %v, want ErrSeqGap", err)
	}
}

func TestWatchGivesUpAfterRetryTimeoutWithoutProgress(t *testing.T) {
	srv := scripted.Start(t, func(int, *runwirev1.WatchRunRequest, runwirev1.RunService_WatchRunServer) error {
		return status.Error(codes.Unavailable, "still starting")
	})
	opts := fast()
	opts.RetryTimeout = 20 * time.Millisecond
	_, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, opts))
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.Unavailable {
		t.Fatalf("error %v, want a wrapped UNAVAILABLE *Error", err)
	}
	if n := len(srv.Requests()); n < 2 {
		t.Errorf("%d calls, want retries before giving up", n)
	}
}

func TestWatchEndsWithTheContext(t *testing.T) {
	srv := scripted.Start(t, func(int, *runwirev1.WatchRunRequest, runwirev1.RunService_WatchRunServer) error {
		return status.Error(codes.Unavailable, "still starting")
	})
	ctx, cancel := context.WithCancel(bounded(t))
	opts := fast()
	opts.RetryTimeout = -1 // forever, but for ctx
	opts.OnRetry = func(error, time.Duration) {
		if len(srv.Requests()) == 3 {
			cancel()
		}
	}
	_, err := collect(t, Watch(ctx, srv.Dial(t), runID, 0, opts))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

func TestWatchCancelsTheStreamWhenTheConsumerStops(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	cancelled := make(chan struct{})
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if err := scripted.Send(s, stream[:3]...); err != nil {
			return err
		}
		<-s.Context().Done()
		close(cancelled)
		return nil
	})
	ctx := bounded(t)
	var got []*runwirev1.RunEvent
	for ev, err := range Watch(ctx, srv.Dial(t), runID, 0, fast()) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
		if ev.GetSeq() == 2 {
			break
		}
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("the server never saw the stream end")
	}
	assertEvents(t, got, stream[:2])
}

func TestRetryableClassifiesStatuses(t *testing.T) {
	withInfo := func(code codes.Code) error { return runwireStatus(t, code, "X") }
	tests := []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "connection refused"), true},
		{withInfo(codes.Unavailable), true},
		{status.Error(codes.Internal, "RST_STREAM"), true},
		{withInfo(codes.Internal), false},
		{status.Error(codes.DeadlineExceeded, "proxy timeout"), true},
		{status.Error(codes.Canceled, "RST_STREAM CANCEL"), true},
		{status.Error(codes.NotFound, ""), false},
		{status.Error(codes.InvalidArgument, ""), false},
		{status.Error(codes.Unknown, "half-written trailer"), true},
		{withInfo(codes.Unknown), false},
		{status.Error(codes.ResourceExhausted, "message too large"), false},
		{runwireStatus(t, codes.ResourceExhausted, "OVERLOADED"), true},
		{withInfo(codes.ResourceExhausted), false},
		{errors.New("not a status"), false},
	}
	for _, tt := range tests {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// endOf collects a watch and what OnEnd was told.
func endOf(t *testing.T, srv *scripted.Server, afterSeq int64) ([]*runwirev1.RunEvent, []RunEnd) {
	t.Helper()
	var ends []RunEnd
	opts := fast()
	opts.OnEnd = func(e RunEnd) { ends = append(ends, e) }
	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, afterSeq, opts))
	if err != nil {
		t.Fatal(err)
	}
	return got, ends
}

// A watcher that saw RunCompleted's seq but not the stream's end resumes at
// after_seq = last: the server's stream_end ends the watch, with no retry.
func TestWatchAtTheLastSeqOfAFinishedRunEnds(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	last := stream[len(stream)-1].GetSeq()
	srv := scripted.Start(t, honest(stream))
	got, ends := endOf(t, srv, last)
	assertEvents(t, got, nil)
	want := RunEnd{RunID: runID, LastSeq: last, Status: stream[len(stream)-1].GetRunCompleted().GetStatus()}
	if len(ends) != 1 || ends[0] != want {
		t.Errorf("OnEnd got %+v, want [%+v]", ends, want)
	}
	assertAfterSeqs(t, srv, last)
}

// after_seq = last + 5: OUT_OF_RANGE AFTER_SEQ_BEYOND_END is the run's end,
// not an error, and is not retried.
func TestWatchPastTheEndOfAFinishedRunEnds(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	last := stream[len(stream)-1].GetSeq()
	srv := scripted.Start(t, honest(stream))
	got, ends := endOf(t, srv, last+5)
	assertEvents(t, got, nil)
	want := RunEnd{RunID: runID, LastSeq: last, Status: runwirev1.RunStatus_RUN_STATUS_SUCCEEDED, BeyondEnd: true}
	if len(ends) != 1 || ends[0] != want {
		t.Errorf("OnEnd got %+v, want [%+v]", ends, want)
	}
	if ends[0].StatusName() != "RUN_STATUS_SUCCEEDED" {
		t.Errorf("StatusName %q", ends[0].StatusName())
	}
	assertAfterSeqs(t, srv, last+5)
}

// The run finishes while the watcher is between reconnects: the resumed
// call delivers the rest and the end.
func TestWatchResumedAfterTheRunFinishedBetweenReconnects(t *testing.T) {
	stream := scripted.Stream(runID, 3)
	end := honest(stream)
	srv := scripted.Start(t, func(call int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if call == 0 {
			if err := scripted.Send(s, stream[:3]...); err != nil {
				return err
			}
			return status.Error(codes.Unavailable, "restarting")
		}
		return end(call, req, s)
	})
	got, ends := endOf(t, srv, 0)
	assertEvents(t, got, stream)
	if len(ends) != 1 || ends[0].LastSeq != stream[len(stream)-1].GetSeq() {
		t.Errorf("OnEnd got %+v", ends)
	}
	assertAfterSeqs(t, srv, 0, 3)
}

// A status newer than this client stays its number.
func TestWatchEndKeepsAStatusNewerThanTheClient(t *testing.T) {
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		return s.Send(&runwirev1.WatchRunResponse{StreamEnd: &runwirev1.StreamEnd{LastSeq: 9, Status: 42}})
	})
	_, ends := endOf(t, srv, 9)
	if len(ends) != 1 || ends[0].Status != 42 || ends[0].StatusName() != "42" {
		t.Errorf("OnEnd got %+v", ends)
	}
}

func TestWatchDefaultsAreTheSameInEveryClient(t *testing.T) {
	if DefaultInitialBackoff != 100*time.Millisecond || DefaultMaxBackoff != 2*time.Second || DefaultRetryTimeout != 120*time.Second || DefaultMaxServerDelay != 30*time.Second {
		t.Errorf("defaults %v %v %v %v, want 100ms 2s 2m0s 30s (clients/GRAMMAR.md)", DefaultInitialBackoff, DefaultMaxBackoff, DefaultRetryTimeout, DefaultMaxServerDelay)
	}
}

// A stream_end past the last event delivered means events were skipped.
func TestWatchFailsWhenTheEndSaysEventsWereSkipped(t *testing.T) {
	stream := scripted.Stream(runID, 2)
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		if err := scripted.Send(s, stream[:2]...); err != nil {
			return err
		}
		return s.Send(&runwirev1.WatchRunResponse{StreamEnd: &runwirev1.StreamEnd{LastSeq: 9}})
	})
	var ends []RunEnd
	opts := fast()
	opts.OnEnd = func(e RunEnd) { ends = append(ends, e) }
	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, opts))
	assertEvents(t, got, stream[:2])
	if !errors.Is(err, ErrSeqGap) || len(ends) != 0 {
		t.Fatalf("error %v, ends %v; want ErrSeqGap and no end", err, ends)
	}
}
