package runwire

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	"github.com/runwire/runwire/clients/go/internal/scripted"
)

// Two runs interleaved in commit order.
var (
	evA1 = events(0, run("run_started").of("run_a"))[0]
	evB1 = events(0, run("run_started").of("run_b"))[0]
	evA2 = events(1, run("run_status_changed").of("run_a"))[0]
	evB2 = events(1, run("run_status_changed").of("run_b"))[0]
	evA3 = events(2, run("run_completed").of("run_a"))[0]
)

var deployFilter = &runwirev1.RunEventsFilter{FlowName: "deploy", Labels: map[string]string{"team": "infra"}}

func sendEvents(s runwirev1.RunService_WatchEventsServer, cursor string, evs ...*runwirev1.RunEvent) error {
	return s.Send(&runwirev1.WatchEventsResponse{Events: evs, Cursor: cursor})
}

// take drains n items of a WatchEvents, which never ends by itself, and
// stops it.
func take(t *testing.T, srv *scripted.Server, req *runwirev1.WatchEventsRequest, n int) ([]WatchedEvent, error) {
	t.Helper()
	var got []WatchedEvent
	for item, err := range WatchEvents(bounded(t), srv.Dial(t), req, fast()) {
		if err != nil {
			return got, err
		}
		got = append(got, item)
		if len(got) == n {
			break
		}
	}
	return got, nil
}

func keys(items []WatchedEvent) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.Event.GetRunId() + "/" + string(rune('0'+it.Event.GetSeq()))
	}
	return out
}

func assertKeys(t *testing.T, got []WatchedEvent, want ...string) {
	t.Helper()
	k := keys(got)
	if len(k) != len(want) {
		t.Fatalf("events %v, want %v", k, want)
	}
	for i := range want {
		if k[i] != want[i] {
			t.Fatalf("events %v, want %v", k, want)
		}
	}
}

func TestWatchEventsYieldsEventsWithTheCursorToResumeAfterEach(t *testing.T) {
	srv := scripted.StartEvents(t, func(_ int, _ *runwirev1.WatchEventsRequest, s runwirev1.RunService_WatchEventsServer) error {
		if err := sendEvents(s, "c2", evA1, evB1); err != nil {
			return err
		}
		if err := sendEvents(s, "c3", evA2); err != nil {
			return err
		}
		<-s.Context().Done()
		return nil
	})
	req := &runwirev1.WatchEventsRequest{Start: runwirev1.StreamStart_STREAM_START_EARLIEST, Filter: deployFilter}

	got, err := take(t, srv, req, 3)
	if err != nil {
		t.Fatal(err)
	}
	assertKeys(t, got, "run_a/1", "run_b/1", "run_a/2")
	// Within a response only its last event carries the response's cursor.
	if got[0].Cursor != "" || got[1].Cursor != "c2" || got[2].Cursor != "c3" {
		t.Fatalf("cursors %q %q %q, want \"\" c2 c3", got[0].Cursor, got[1].Cursor, got[2].Cursor)
	}
	reqs := srv.EventsRequests()
	if len(reqs) != 1 || !proto.Equal(reqs[0], req) {
		t.Fatalf("requests %v, want [%v]", reqs, req)
	}
}

// After each retried failure the next call starts at the last response's
// cursor (an empty response's too) with the same filter, and the events
// the server resends are dropped by (run_id, seq).
func TestWatchEventsResumesFromTheLastCursorAndDropsResentEvents(t *testing.T) {
	for name, failure := range map[string]error{
		"unavailable":           status.Error(codes.Unavailable, "draining"),
		"internal without info": status.Error(codes.Internal, "stream reset"),
		"overloaded":            runwireStatus(t, codes.ResourceExhausted, "OVERLOADED"),
		"ok end":                nil,
	} {
		t.Run(name, func(t *testing.T) {
			srv := scripted.StartEvents(t, func(call int, _ *runwirev1.WatchEventsRequest, s runwirev1.RunService_WatchEventsServer) error {
				if call == 0 {
					if err := sendEvents(s, "c2", evA1, evB1); err != nil {
						return err
					}
					if err := sendEvents(s, "c5"); err != nil {
						return err
					}
					return failure
				}
				if err := sendEvents(s, "c6", evA1, evB1, evA2); err != nil {
					return err
				}
				if err := sendEvents(s, "c8", evB2, evA3); err != nil {
					return err
				}
				<-s.Context().Done()
				return nil
			})

			got, err := take(t, srv, &runwirev1.WatchEventsRequest{Filter: deployFilter}, 5)
			if err != nil {
				t.Fatal(err)
			}
			assertKeys(t, got, "run_a/1", "run_b/1", "run_a/2", "run_b/2", "run_a/3")
			if got[2].Cursor != "c6" {
				t.Fatalf("cursor %q, want c6", got[2].Cursor)
			}
			reqs := srv.EventsRequests()
			if len(reqs) != 2 || reqs[0].GetCursor() != "" || reqs[1].GetCursor() != "c5" || reqs[1].GetFilter().GetFlowName() != "deploy" {
				t.Fatalf("requests %v, want cursors \"\" then c5 with the filter", reqs)
			}
		})
	}
}

func TestWatchEventsRestartsAtStartWhenNoResponseCame(t *testing.T) {
	srv := scripted.StartEvents(t, func(call int, _ *runwirev1.WatchEventsRequest, s runwirev1.RunService_WatchEventsServer) error {
		if call == 0 {
			return status.Error(codes.Unavailable, "draining")
		}
		if err := sendEvents(s, "c1", evA1); err != nil {
			return err
		}
		<-s.Context().Done()
		return nil
	})
	req := &runwirev1.WatchEventsRequest{Start: runwirev1.StreamStart_STREAM_START_EARLIEST}

	if _, err := take(t, srv, req, 1); err != nil {
		t.Fatal(err)
	}
	for _, r := range srv.EventsRequests() {
		if !proto.Equal(r, req) {
			t.Fatalf("request %v, want %v", r, req)
		}
	}
}

func TestWatchEventsReturnsCursorErrorsWithoutRetrying(t *testing.T) {
	for _, tc := range []struct {
		code   codes.Code
		reason runwirev1.ErrorReason
	}{
		{codes.InvalidArgument, runwirev1.ErrorReason_ERROR_REASON_CURSOR_INVALID},
		{codes.OutOfRange, runwirev1.ErrorReason_ERROR_REASON_CURSOR_EXPIRED},
		{codes.Internal, runwirev1.ErrorReason_ERROR_REASON_INTERNAL},
	} {
		t.Run(tc.reason.String(), func(t *testing.T) {
			name := tc.reason.String()[len("ERROR_REASON_"):]
			srv := scripted.StartEvents(t, func(_ int, _ *runwirev1.WatchEventsRequest, _ runwirev1.RunService_WatchEventsServer) error {
				return runwireStatus(t, tc.code, name)
			})

			_, err := take(t, srv, &runwirev1.WatchEventsRequest{Cursor: "c9"}, 1)
			var e *Error
			if !errors.As(err, &e) || e.Code != tc.code || e.Reason != tc.reason {
				t.Fatalf("err %v, want *Error %v %v", err, tc.code, tc.reason)
			}
			if n := len(srv.EventsRequests()); n != 1 {
				t.Fatalf("%d calls, want 1", n)
			}
		})
	}
}

func TestWatchEventsRejectsAnUnknownVariant(t *testing.T) {
	newer, err := proto.Marshal(&runwirev1.RunEvent{RunId: "run_a", Seq: 2})
	if err != nil {
		t.Fatal(err)
	}
	newer = protowire.AppendTag(newer, 127, protowire.BytesType)
	newer = protowire.AppendBytes(newer, nil)
	unknown := &runwirev1.RunEvent{}
	if err := proto.Unmarshal(newer, unknown); err != nil {
		t.Fatal(err)
	}
	srv := scripted.StartEvents(t, func(_ int, _ *runwirev1.WatchEventsRequest, s runwirev1.RunService_WatchEventsServer) error {
		if err := sendEvents(s, "c2", evA1, unknown); err != nil {
			return err
		}
		<-s.Context().Done()
		return nil
	})

	got, err := take(t, srv, &runwirev1.WatchEventsRequest{}, 2)
	var unknownErr *UnknownEventError
	if !errors.As(err, &unknownErr) || len(got) != 1 {
		t.Fatalf("got %d events, err %v; want 1 and *UnknownEventError", len(got), err)
	}
}

func TestWatchEventsGivesUpAfterRetryTimeoutWithoutProgress(t *testing.T) {
	srv := scripted.StartEvents(t, func(_ int, _ *runwirev1.WatchEventsRequest, _ runwirev1.RunService_WatchEventsServer) error {
		return status.Error(codes.Unavailable, "down")
	})
	opts := fast()
	opts.RetryTimeout = 20 * time.Millisecond
	var err error
	for _, e := range WatchEvents(bounded(t), srv.Dial(t), &runwirev1.WatchEventsRequest{}, opts) {
		err = e
	}
	if status.Code(err) != codes.Unavailable || err == nil {
		t.Fatalf("err %v, want UNAVAILABLE after the budget", err)
	}
}
