package runwire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
)

// dedupRuns is how many runs WatchEvents remembers the last delivered seq
// of (the most recently delivered). A server resends at most what follows
// the cursor a call resumed from, that is the runs of the last responses.
const dedupRuns = 65536

// WatchedEvent is one event from WatchEvents, with where to resume after it.
type WatchedEvent struct {
	// Event is the event.
	Event *runwirev1.RunEvent
	// Cursor resumes after Event without losing anything after it: the
	// cursor of the response that carried Event when Event is that
	// response's last, otherwise the cursor before the response (resuming
	// from it may deliver the response's earlier events again). Empty
	// before the first response of a stream started without a cursor.
	Cursor string
}

// WatchEvents streams the events of every run req.Filter selects, in commit
// order, across runs (RunService.WatchEvents). The stream never ends by
// itself; stop the loop or cancel ctx.
//
// It remembers the cursor of the last response (empty ones too). After a
// failure Watch would retry (the same rule, backoff and RetryTimeout; see
// WatchOptions) it calls WatchEvents again from that cursor with the same
// filter, or with req's own cursor and start before any response came, and
// drops an event whose run's seq it has already yielded: within a run, seqs
// only increase.
//
// The iterator yields (event, nil) pairs and at most one final error: an
// *Error for a status that is not retried (INVALID_ARGUMENT with reason
// CURSOR_INVALID for a malformed cursor, OUT_OF_RANGE with reason
// CURSOR_EXPIRED for one older than the retention window, an invalid
// filter, ...), an *UnknownEventError, ctx's error, or the last error
// wrapped when RetryTimeout passes without an answer. opts.Filter and
// opts.OnEnd are not used.
func WatchEvents(ctx context.Context, client runwirev1.RunServiceClient, req *runwirev1.WatchEventsRequest, opts *WatchOptions) iter.Seq2[WatchedEvent, error] {
	o := opts.withDefaults()
	return func(yield func(WatchedEvent, error) bool) {
		w := eventsWatcher{client: client, first: req, cursor: req.GetCursor(), opts: o, yield: yield, delivered: map[string]int64{}}
		if err := w.run(ctx); err != nil && !errors.Is(err, errStopped) {
			yield(WatchedEvent{}, err)
		}
	}
}

type eventsWatcher struct {
	client runwirev1.RunServiceClient
	first  *runwirev1.WatchEventsRequest
	cursor string // of the last response, or the request's
	opts   WatchOptions
	yield  func(WatchedEvent, error) bool
	// delivered maps a run to the highest seq yielded; order lists the runs
	// oldest first, to forget the oldest beyond dedupRuns.
	delivered map[string]int64
	order     []string
}

func (w *eventsWatcher) run(ctx context.Context) error {
	r := newRetrier(w.opts)
	for {
		progressed, err := w.attempt(ctx)
		switch {
		case errors.Is(err, errStopped):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case !retryable(err):
			return FromError(err)
		}
		if err := r.wait(ctx, progressed, err, fmt.Sprintf("watch events from cursor %q", w.cursor)); err != nil {
			return err
		}
	}
}

func (w *eventsWatcher) attempt(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // also cancels the stream when the consumer stops early
	req := w.first
	if w.cursor != "" {
		req = &runwirev1.WatchEventsRequest{Cursor: w.cursor, Filter: w.first.GetFilter()}
	}
	stream, err := w.client.WatchEvents(ctx, req, w.opts.CallOptions...)
	if err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			// The stream does not end by itself: a cut stream, resume it.
			return progressed, status.Error(codes.Unavailable, "WatchEvents stream ended")
		}
		if err != nil {
			return progressed, err
		}
		progressed = true
		before := w.cursor
		fresh := w.fresh(resp.GetEvents())
		for i, ev := range fresh {
			if err := CheckKnown(ev); err != nil {
				return progressed, err
			}
			at := before
			if i == len(fresh)-1 && resp.GetCursor() != "" {
				w.cursor, at = resp.GetCursor(), resp.GetCursor()
			}
			if !w.yield(WatchedEvent{Event: ev, Cursor: at}, nil) {
				return progressed, errStopped
			}
		}
		if resp.GetCursor() != "" {
			w.cursor = resp.GetCursor()
		}
	}
}

// fresh records evs as delivered and returns those whose run's seq was not
// delivered before.
func (w *eventsWatcher) fresh(evs []*runwirev1.RunEvent) []*runwirev1.RunEvent {
	out := make([]*runwirev1.RunEvent, 0, len(evs))
	for _, ev := range evs {
		last, seen := w.delivered[ev.GetRunId()]
		if seen && ev.GetSeq() <= last {
			continue
		}
		if !seen {
			w.order = append(w.order, ev.GetRunId())
			if len(w.order) > dedupRuns {
				delete(w.delivered, w.order[0])
				w.order = w.order[1:]
			}
		}
		w.delivered[ev.GetRunId()] = ev.GetSeq()
		out = append(out, ev)
	}
	return out
}
