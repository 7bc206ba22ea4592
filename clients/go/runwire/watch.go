package runwire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
)

// Watch defaults; see WatchOptions. Every runwire client uses the same
// ones and the same retry rule (clients/GRAMMAR.md, "Watching").
const (
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 2 * time.Second
	DefaultRetryTimeout   = 2 * time.Minute
	// DefaultMaxServerDelay caps the wait a server asks for with a
	// google.rpc.RetryInfo; see WatchOptions.MaxServerDelay.
	DefaultMaxServerDelay = 30 * time.Second
)

// ErrSeqGap is wrapped by the error Watch yields when the server skips a
// seq: the events in between would otherwise be lost without a trace.
var ErrSeqGap = errors.New("runwire: WatchRun skipped a seq")

// WatchOptions tune Watch. The zero value (or nil) gives the defaults.
type WatchOptions struct {
	// InitialBackoff is the wait before the first reconnect; it doubles with
	// each failed attempt up to MaxBackoff, and resets once events arrive.
	// Default DefaultInitialBackoff.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between reconnects. Default DefaultMaxBackoff.
	MaxBackoff time.Duration
	// RetryTimeout is how long Watch keeps reconnecting without receiving
	// anything before it gives up and yields the last error. The clock starts
	// at the first failure after the last received response, so a run that is
	// quiet for hours costs nothing. Default DefaultRetryTimeout (a server
	// restart fits well inside it); negative retries until ctx ends.
	RetryTimeout time.Duration
	// MaxServerDelay caps the wait a failed status's google.rpc.RetryInfo
	// asks for (an OVERLOADED server sends one). The wait before a
	// reconnect is the longer of the jittered backoff and that delay, so
	// Watch never comes back sooner than the server asked, and a bogus
	// delay cannot stall it for longer than this. When the capped delay
	// would end after RetryTimeout runs out, or after ctx's deadline, Watch
	// ends at once with the last error wrapped rather than sleep past it.
	// Default DefaultMaxServerDelay.
	MaxServerDelay time.Duration
	// OnRetry, when set, is called before each wait with the error that
	// broke the stream and the wait that follows; for logging.
	OnRetry func(err error, delay time.Duration)
	// OnEnd, when set, is called once when the watch reaches the run's end,
	// before the iterator stops: after RunCompleted, on the server's
	// stream_end, or when after_seq is beyond the end of the finished run.
	OnEnd func(RunEnd)
	// CallOptions are passed to every WatchRun (or WatchEvents) call.
	CallOptions []grpc.CallOption
	// Filter, when it names kinds or node ids, makes Watch yield only the
	// events it selects (RunCompleted always): seqs may then skip, and a
	// reconnect resumes after the server's last resume_after_seq rather
	// than the last event. Check such a stream with NewFilteredChecker.
	// WatchEvents ignores it (its request carries its own filter).
	Filter *runwirev1.EventFilter
}

func (o *WatchOptions) withDefaults() WatchOptions {
	var w WatchOptions
	if o != nil {
		w = *o
	}
	if w.InitialBackoff <= 0 {
		w.InitialBackoff = DefaultInitialBackoff
	}
	if w.MaxBackoff <= 0 {
		w.MaxBackoff = DefaultMaxBackoff
	}
	if w.MaxBackoff < w.InitialBackoff {
		w.MaxBackoff = w.InitialBackoff
	}
	if w.RetryTimeout == 0 {
		w.RetryTimeout = DefaultRetryTimeout
	}
	if w.MaxServerDelay <= 0 {
		w.MaxServerDelay = DefaultMaxServerDelay
	}
	return w
}

// Watch streams the events of run runID with seq > afterSeq, in order and
// each exactly once, and ends at the run's end: after RunCompleted, or when
// the server says the stream reached the end of the finished run
// (WatchRunResponse.stream_end, or OUT_OF_RANGE with reason
// AFTER_SEQ_BEYOND_END when afterSeq is beyond it). WatchOptions.OnEnd is
// told the final status then.
//
// When the stream breaks (the server restarts or drains, the connection
// drops) Watch calls WatchRun again with after_seq set to the last seq it
// yielded, after a capped exponential backoff (and no sooner than a
// RetryInfo on the failed status asks; see WatchOptions.MaxServerDelay), and drops the events it has
// already yielded should the server send them again. It never skips one:
// a seq gap ends the watch with an error wrapping ErrSeqGap. With
// WatchOptions.Filter, only the events it selects are yielded, seqs may
// skip, and a reconnect resumes after the server's resume_after_seq.
//
// The iterator yields (event, nil) pairs and at most one final (nil, err):
// an *Error for a non-retryable status (NOT_FOUND, INVALID_ARGUMENT, ...),
// an *UnknownEventError for an event of a variant this client does not
// know, the context's error when ctx ends, or the last error wrapped when
// RetryTimeout passes without the server answering (or the server asks for
// a retry later than RetryTimeout or ctx's deadline allows). Stopping the loop early
// cancels the stream.
//
// For quick reconnects after a server restart, give the client's
// grpc.ClientConn a short connection backoff (grpc.WithConnectParams); the
// default one grows to two minutes.
func Watch(ctx context.Context, client runwirev1.RunServiceClient, runID string, afterSeq int64, opts *WatchOptions) iter.Seq2[*runwirev1.RunEvent, error] {
	o := opts.withDefaults()
	return func(yield func(*runwirev1.RunEvent, error) bool) {
		w := watcher{client: client, runID: runID, last: afterSeq, resume: afterSeq, filtered: IsFiltered(o.Filter), opts: o, yield: yield}
		if err := w.run(ctx); err != nil && !errors.Is(err, errStopped) {
			yield(nil, err)
		}
	}
}

// RunEnd says how a watched run ended.
type RunEnd struct {
	// RunID is the run.
	RunID string
	// LastSeq is the seq of the run's last event, RunCompleted.
	LastSeq int64
	// Status is the run's final status; a number this client has no name
	// for stays that number.
	Status runwirev1.RunStatus
	// BeyondEnd is set when the watch asked for events after a seq the run
	// never reached: the server answered OUT_OF_RANGE with reason
	// AFTER_SEQ_BEYOND_END. Nothing was missed; there was nothing.
	BeyondEnd bool
}

// StatusName is Status as the proto names it (RUN_STATUS_SUCCEEDED), or
// its number when this client has no name for it.
func (e RunEnd) StatusName() string {
	if name, ok := runwirev1.RunStatus_name[int32(e.Status)]; ok {
		return name
	}
	return strconv.Itoa(int(e.Status))
}

// beyondEnd returns the end an OUT_OF_RANGE AFTER_SEQ_BEYOND_END answer
// reports, and whether err is one.
func beyondEnd(runID string, err error) (RunEnd, bool) {
	var e *Error
	if !errors.As(FromError(err), &e) || e.Code != codes.OutOfRange || e.Reason != runwirev1.ErrorReason_ERROR_REASON_AFTER_SEQ_BEYOND_END {
		return RunEnd{}, false
	}
	end := RunEnd{RunID: runID, BeyondEnd: true}
	end.LastSeq, _ = strconv.ParseInt(e.Metadata["last_seq"], 10, 64)
	name := e.Metadata["status"]
	if v, ok := runwirev1.RunStatus_value[name]; ok {
		end.Status = runwirev1.RunStatus(v)
	} else if n, err := strconv.ParseInt(name, 10, 32); err == nil {
		end.Status = runwirev1.RunStatus(n)
	}
	return end, true
}

// errStopped means the consumer stopped iterating; nothing more is yielded.
var errStopped = errors.New("runwire: watch stopped by the consumer")

// errCompleted ends an attempt once RunCompleted has been yielded.
var errCompleted = errors.New("runwire: run completed")

type watcher struct {
	client   runwirev1.RunServiceClient
	runID    string
	last     int64 // the seq last yielded, or the starting after_seq
	resume   int64 // where the next call starts: last, or past what a filter skipped
	filtered bool
	opts     WatchOptions
	yield    func(*runwirev1.RunEvent, error) bool
	end      RunEnd // set with errCompleted
}

// retrier is one streak of failures of a resuming stream: the waits and
// the give-up budget. Watch and WatchEvents share it, so both follow the
// one retry rule of clients/GRAMMAR.md ("Watching").
type retrier struct {
	opts         WatchOptions
	backoff      time.Duration
	failingSince time.Time // when the current streak of failed attempts began
}

func newRetrier(opts WatchOptions) *retrier {
	return &retrier{opts: opts, backoff: opts.InitialBackoff}
}

// wait is called after a retryable failure err; progressed says whether the
// failed call received anything. It waits before the next call and returns
// nil, or returns the final error: ctx's, or err wrapped once RetryTimeout
// has passed without a response (what names the watch in it).
func (r *retrier) wait(ctx context.Context, progressed bool, err error, what string) error {
	now := time.Now()
	if progressed || r.failingSince.IsZero() {
		r.failingSince = now
	}
	if progressed {
		r.backoff = r.opts.InitialBackoff
	}
	if r.opts.RetryTimeout > 0 && now.Sub(r.failingSince) >= r.opts.RetryTimeout {
		return fmt.Errorf("runwire: %s: no answer for %v: %w",
			what, now.Sub(r.failingSince).Round(time.Millisecond), FromError(err))
	}
	// Equal jitter: half the backoff fixed, half random, so clients cut
	// off by one restart do not all come back in the same instant.
	delay := r.backoff/2 + rand.N(r.backoff/2+1)
	if asked, ok := retryDelay(err); ok {
		// The server's RetryInfo: never come back sooner than it asked (up
		// to the cap), and give up now rather than sleep past the budget
		// or the caller's deadline.
		asked = min(asked, r.opts.MaxServerDelay)
		if failing := now.Sub(r.failingSince); r.opts.RetryTimeout > 0 && failing+asked > r.opts.RetryTimeout {
			return fmt.Errorf("runwire: %s: no answer for %v, and the server asks for a retry in %v, past RetryTimeout %v: %w",
				what, failing.Round(time.Millisecond), asked, r.opts.RetryTimeout, FromError(err))
		}
		if deadline, ok := ctx.Deadline(); ok && now.Add(asked).After(deadline) {
			return fmt.Errorf("runwire: %s: the server asks for a retry in %v, past the context's deadline: %w",
				what, asked, FromError(err))
		}
		delay = max(delay, asked)
	}
	if r.opts.RetryTimeout > 0 {
		// The last try lands on the budget, not a whole backoff beyond it
		// (never below what the server asked: that fits, checked above).
		delay = min(delay, r.opts.RetryTimeout-now.Sub(r.failingSince))
	}
	if r.opts.OnRetry != nil {
		r.opts.OnRetry(err, delay)
	}
	t := time.NewTimer(delay)
	select {
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	case <-t.C:
	}
	r.backoff = min(2*r.backoff, r.opts.MaxBackoff)
	return nil
}

func (w *watcher) run(ctx context.Context) error {
	r := newRetrier(w.opts)
	for {
		progressed, err := w.attempt(ctx)
		if end, ok := beyondEnd(w.runID, err); ok {
			w.end, err = end, errCompleted
		}
		switch {
		case errors.Is(err, errCompleted):
			if w.opts.OnEnd != nil {
				w.opts.OnEnd(w.end)
			}
			return nil
		case errors.Is(err, errStopped):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case !retryable(err):
			return FromError(err)
		}
		if err := r.wait(ctx, progressed, err, fmt.Sprintf("watch run %q after seq %d", w.runID, w.resume)); err != nil {
			return err
		}
	}
}

// attempt runs one WatchRun call from w.last. It reports whether any
// response arrived, and why the call ended: errCompleted, errStopped, a
// contract error, or the stream's error.
func (w *watcher) attempt(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // also cancels the stream when the consumer stops early
	stream, err := w.client.WatchRun(ctx, &runwirev1.WatchRunRequest{RunId: w.runID, AfterSeq: w.resume, Filter: w.opts.Filter}, w.opts.CallOptions...)
	if err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			// The server ends with OK only at the run's end, after
			// stream_end, so this is a connection lost in an unusual way:
			// resume.
			return progressed, status.Error(codes.Unavailable, "WatchRun stream ended before run_completed")
		}
		if err != nil {
			return progressed, err
		}
		progressed = true
		for _, ev := range resp.GetEvents() {
			if ev.GetSeq() <= w.resume {
				continue // already yielded before a reconnect
			}
			if !w.filtered && ev.GetSeq() != w.last+1 {
				return progressed, fmt.Errorf("%w: run %q sent seq %d after seq %d", ErrSeqGap, w.runID, ev.GetSeq(), w.last)
			}
			if err := CheckKnown(ev); err != nil {
				return progressed, err
			}
			w.last, w.resume = ev.GetSeq(), ev.GetSeq()
			if !w.yield(ev, nil) {
				return progressed, errStopped
			}
			if done, ok := ev.GetEvent().(*runwirev1.RunEvent_RunCompleted); ok {
				w.end = RunEnd{RunID: w.runID, LastSeq: ev.GetSeq(), Status: done.RunCompleted.GetStatus()}
				return progressed, errCompleted
			}
		}
		if end := resp.GetStreamEnd(); end != nil {
			// The end says events were skipped: judged before this
			// response's resume_after_seq, since RunCompleted, which every
			// filter selects, must have come before the end.
			if end.GetLastSeq() > w.resume {
				return progressed, fmt.Errorf("%w: run %q ended at seq %d after seq %d", ErrSeqGap, w.runID, end.GetLastSeq(), w.resume)
			}
			w.end = RunEnd{RunID: w.runID, LastSeq: end.GetLastSeq(), Status: end.GetStatus()}
			return progressed, errCompleted
		}
		if w.filtered {
			// The server looked this far; what it skipped is filtered out.
			w.resume = max(w.resume, resp.GetResumeAfterSeq())
		}
	}
}

// retryable reports whether err broke the stream in a way that resuming from
// the last seq can heal.
//
// UNAVAILABLE is the server draining or the connection gone. A dying server
// or connection can also surface as INTERNAL, UNKNOWN, CANCELLED,
// DEADLINE_EXCEEDED or ABORTED (an HTTP/2 RST_STREAM, a half-written
// trailer, a proxy timeout); those are retried only when they carry no
// runwire ErrorInfo, because the runwire server attaches one to every error
// it raises itself, and its own INTERNAL is a fault that a retry would only
// repeat.
func retryable(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		// The server turned the call away at its admission bound: retry.
		return runwireReason(st) == "OVERLOADED"
	case codes.Internal, codes.Unknown, codes.Canceled, codes.DeadlineExceeded, codes.Aborted:
		return !hasRunwireInfo(st)
	default:
		return false
	}
}
