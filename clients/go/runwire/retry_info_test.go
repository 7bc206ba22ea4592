package runwire

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	"github.com/runwire/runwire/clients/go/internal/scripted"
)

// asked is a RetryInfo delay far above fast()'s waits (1 ms doubling to
// 5 ms): a watch that ignored it would come back within milliseconds.
const asked = 300 * time.Millisecond

// stamps records, on the fake server's clock, when it sent each failure
// and when each call arrived.
type stamps struct {
	mu       sync.Mutex
	failures []time.Time
	calls    []time.Time
}

func (s *stamps) call() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, time.Now())
}

// fail records the failure's time and returns it.
func (s *stamps) fail(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, time.Now())
	return err
}

// gap is the time from the first failure sent to the second call received.
func (s *stamps) gap(t *testing.T) time.Duration {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < 1 || len(s.calls) < 2 {
		t.Fatalf("%d failures and %d calls, want a failure and a second call", len(s.failures), len(s.calls))
	}
	return s.calls[1].Sub(s.failures[0])
}

func (s *stamps) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func retryInfo(d time.Duration) *errdetails.RetryInfo {
	return &errdetails.RetryInfo{RetryDelay: durationpb.New(d)}
}

// busyThenHonest fails the first call after two events with code and reason
// carrying a RetryInfo of delay, and answers later calls like the server.
func busyThenHonest(t *testing.T, st *stamps, stream []*runwirev1.RunEvent, code codes.Code, reason string, delay time.Duration) scripted.Script {
	serve := honest(stream)
	return func(call int, req *runwirev1.WatchRunRequest, s runwirev1.RunService_WatchRunServer) error {
		st.call()
		if call > 0 {
			return serve(call, req, s)
		}
		if err := scripted.Send(s, stream[:2]...); err != nil {
			return err
		}
		return st.fail(runwireStatus(t, code, reason, retryInfo(delay)))
	}
}

func TestWatchWaitsAtLeastTheRetryInfoDelay(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   codes.Code
		reason string
	}{
		{"overloaded", codes.ResourceExhausted, "OVERLOADED"},
		{"draining", codes.Unavailable, "SERVER_DRAINING"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := scripted.Stream(runID, 3)
			st := &stamps{}
			srv := scripted.Start(t, busyThenHonest(t, st, stream, tc.code, tc.reason, asked))

			got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, fast()))
			if err != nil {
				t.Fatal(err)
			}
			assertEvents(t, got, stream)
			assertAfterSeqs(t, srv, 0, 2)
			// A lower bound on the server's own clock.
			if gap := st.gap(t); gap < asked {
				t.Errorf("second call %v after the failure, want at least the RetryInfo delay %v", gap, asked)
			}
		})
	}
}

func TestWatchCapsTheRetryInfoDelay(t *testing.T) {
	stream := scripted.Stream(runID, 3)
	st := &stamps{}
	srv := scripted.Start(t, busyThenHonest(t, st, stream, codes.ResourceExhausted, "OVERLOADED", time.Hour))
	opts := fast()
	opts.MaxServerDelay = asked

	got, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, opts))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, got, stream)
	if gap := st.gap(t); gap < asked {
		t.Errorf("second call %v after the failure, want at least the cap %v", gap, asked)
	}
}

func TestWatchGivesUpWhenTheRetryInfoDelayOutlastsRetryTimeout(t *testing.T) {
	stream := scripted.Stream(runID, 3)
	st := &stamps{}
	srv := scripted.Start(t, busyThenHonest(t, st, stream, codes.ResourceExhausted, "OVERLOADED", 20*time.Second))
	opts := fast()
	opts.RetryTimeout = 10 * time.Second

	_, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, opts))
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.ResourceExhausted || !strings.Contains(err.Error(), "past RetryTimeout") {
		t.Fatalf("error %v, want the last RESOURCE_EXHAUSTED *Error wrapped, past RetryTimeout", err)
	}
	if n := st.callCount(); n != 1 {
		t.Errorf("%d calls, want 1: no retry past the budget", n)
	}
}

func TestWatchGivesUpWhenTheRetryInfoDelayOutlastsTheDeadline(t *testing.T) {
	stream := scripted.Stream(runID, 3)
	st := &stamps{}
	srv := scripted.Start(t, busyThenHonest(t, st, stream, codes.ResourceExhausted, "OVERLOADED", 10*time.Second))
	ctx, cancel := context.WithTimeout(bounded(t), 5*time.Second)
	defer cancel()
	opts := fast()
	opts.RetryTimeout = -1 // forever, but for ctx

	_, err := collect(t, Watch(ctx, srv.Dial(t), runID, 0, opts))
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.ResourceExhausted || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the last RESOURCE_EXHAUSTED *Error wrapped, before the deadline", err)
	}
	if n := st.callCount(); n != 1 {
		t.Errorf("%d calls, want 1: no retry past the deadline", n)
	}
}

func TestWatchEventsWaitsAtLeastTheRetryInfoDelay(t *testing.T) {
	st := &stamps{}
	srv := scripted.StartEvents(t, func(call int, _ *runwirev1.WatchEventsRequest, s runwirev1.RunService_WatchEventsServer) error {
		st.call()
		if call == 0 {
			if err := sendEvents(s, "c1", evA1); err != nil {
				return err
			}
			return st.fail(runwireStatus(t, codes.ResourceExhausted, "OVERLOADED", retryInfo(asked)))
		}
		if err := sendEvents(s, "c2", evB1); err != nil {
			return err
		}
		<-s.Context().Done()
		return nil
	})

	got, err := take(t, srv, &runwirev1.WatchEventsRequest{Filter: deployFilter}, 2)
	if err != nil {
		t.Fatal(err)
	}
	assertKeys(t, got, "run_a/1", "run_b/1")
	if gap := st.gap(t); gap < asked {
		t.Errorf("second call %v after the failure, want at least the RetryInfo delay %v", gap, asked)
	}
}

func TestRetryDelayReadsTheLongestValidRetryInfo(t *testing.T) {
	bogus := &errdetails.RetryInfo{RetryDelay: &durationpb.Duration{Seconds: 1, Nanos: -1}}
	for _, tc := range []struct {
		name  string
		err   error
		want  time.Duration
		found bool
	}{
		{"none", runwireStatus(t, codes.ResourceExhausted, "OVERLOADED"), 0, false},
		{"one", runwireStatus(t, codes.ResourceExhausted, "OVERLOADED", retryInfo(time.Second)), time.Second, true},
		{"longest", runwireStatus(t, codes.Unavailable, "SERVER_DRAINING", retryInfo(time.Second), retryInfo(3*time.Second)), 3 * time.Second, true},
		{"negative", runwireStatus(t, codes.ResourceExhausted, "OVERLOADED", retryInfo(-time.Second)), 0, false},
		{"invalid", runwireStatus(t, codes.ResourceExhausted, "OVERLOADED", bogus), 0, false},
		{"not a status", errors.New("plain"), 0, false},
	} {
		got, found := retryDelay(tc.err)
		if got != tc.want || found != tc.found {
			t.Errorf("%s: retryDelay = %v, %v; want %v, %v", tc.name, got, found, tc.want, tc.found)
		}
	}
}

func TestWatchWaitsNoLongerThanWhatIsLeftOfRetryTimeout(t *testing.T) {
	srv := scripted.Start(t, func(_ int, _ *runwirev1.WatchRunRequest, _ runwirev1.RunService_WatchRunServer) error {
		return status.Error(codes.Unavailable, "down")
	})
	// A backoff of an hour: without the clamp the first wait would be at
	// least half of it, and the bounded context would end the test first.
	opts := &WatchOptions{InitialBackoff: time.Hour, MaxBackoff: time.Hour, RetryTimeout: 50 * time.Millisecond}
	var delays []time.Duration
	opts.OnRetry = func(_ error, d time.Duration) { delays = append(delays, d) }

	_, err := collect(t, Watch(bounded(t), srv.Dial(t), runID, 0, opts))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no answer for") {
		t.Fatalf("error %v, want the last UNAVAILABLE after RetryTimeout", err)
	}
	if len(delays) == 0 {
		t.Fatal("no retry before giving up")
	}
	for i, d := range delays {
		if d > opts.RetryTimeout {
			t.Errorf("wait %d was %v, more than all of RetryTimeout %v", i, d, opts.RetryTimeout)
		}
	}
}
