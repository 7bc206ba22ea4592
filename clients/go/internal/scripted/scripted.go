// Package scripted runs a real grpc-go RunService on 127.0.0.1:0 whose
// WatchRun follows a test's script, and builds grammatical event streams.
// It exists for this module's tests only.
package scripted

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
)

// Script answers the call-th WatchRun call (0-based, counted across
// restarts) as the test wants; its return value ends the stream as a
// handler's would (nil for OK, a status error otherwise).
type Script func(call int, req *runwirev1.WatchRunRequest, stream runwirev1.RunService_WatchRunServer) error

// EventsScript answers the call-th WatchEvents call (0-based) as the test
// wants, like Script.
type EventsScript func(call int, req *runwirev1.WatchEventsRequest, stream runwirev1.RunService_WatchEventsServer) error

// Server is a RunService that serves WatchRun from a Script and
// WatchEvents from an EventsScript.
type Server struct {
	runwirev1.UnimplementedRunServiceServer

	// Addr is the host:port the server listens on; it stays the same across
	// Restart.
	Addr string

	t      testing.TB
	script Script
	events EventsScript

	mu             sync.Mutex
	requests       []*runwirev1.WatchRunRequest
	eventsRequests []*runwirev1.WatchEventsRequest
	grpc           *grpc.Server
	conns          map[net.Conn]bool
}

// Start serves script on a port picked by the kernel until the test ends.
func Start(t testing.TB, script Script) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: lis.Addr().String(), t: t, script: script, conns: map[net.Conn]bool{}}
	s.serve(lis)
	t.Cleanup(s.Stop)
	return s
}

// StartEvents serves WatchEvents from script on a port picked by the kernel
// until the test ends.
func StartEvents(t testing.TB, script EventsScript) *Server {
	t.Helper()
	s := Start(t, nil)
	s.mu.Lock()
	s.events = script
	s.mu.Unlock()
	return s
}

// WatchEvents records the request and hands the call to the events script.
func (s *Server) WatchEvents(req *runwirev1.WatchEventsRequest, stream runwirev1.RunService_WatchEventsServer) error {
	s.mu.Lock()
	call := len(s.eventsRequests)
	s.eventsRequests = append(s.eventsRequests, req)
	script := s.events
	s.mu.Unlock()
	return script(call, req, stream)
}

// EventsRequests returns the WatchEvents requests received so far, in order.
func (s *Server) EventsRequests() []*runwirev1.WatchEventsRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*runwirev1.WatchEventsRequest(nil), s.eventsRequests...)
}

func (s *Server) serve(lis net.Listener) {
	g := grpc.NewServer()
	runwirev1.RegisterRunServiceServer(g, s)
	s.mu.Lock()
	s.grpc = g
	s.mu.Unlock()
	go func() { _ = g.Serve(&trackingListener{Listener: lis, s: s}) }()
}

// WatchRun records the request and hands the call to the script.
func (s *Server) WatchRun(req *runwirev1.WatchRunRequest, stream runwirev1.RunService_WatchRunServer) error {
	s.mu.Lock()
	call := len(s.requests)
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	return s.script(call, req, stream)
}

// Requests returns the WatchRun requests received so far, in order.
func (s *Server) Requests() []*runwirev1.WatchRunRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*runwirev1.WatchRunRequest(nil), s.requests...)
}

// DropConnections closes every accepted connection under the server's feet,
// as a network failure or a crashed peer would; the server keeps listening.
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// Stop stops the server at once: the listener and every connection close
// and running streams end.
func (s *Server) Stop() {
	s.mu.Lock()
	g := s.grpc
	s.mu.Unlock()
	g.Stop()
}

// Restart serves again on the same address after Stop, as a restarted
// server process would.
func (s *Server) Restart() {
	lis, err := net.Listen("tcp", s.Addr)
	if err != nil {
		s.t.Errorf("restart on %s: %v", s.Addr, err)
		return
	}
	s.serve(lis)
}

// Dial returns a client of s whose connection backs off briefly after a
// failure, so a restart is noticed quickly. It is closed when the test ends.
func (s *Server) Dial(t testing.TB) runwirev1.RunServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(s.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.6, MaxDelay: 50 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return runwirev1.NewRunServiceClient(cc)
}

type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	l.s.conns[c] = true
	l.s.mu.Unlock()
	return c, nil
}

// Send sends events as one WatchRunResponse.
func Send(stream runwirev1.RunService_WatchRunServer, events ...*runwirev1.RunEvent) error {
	return stream.Send(&runwirev1.WatchRunResponse{Events: events})
}

// After returns the events of stream with seq > afterSeq.
func After(stream []*runwirev1.RunEvent, afterSeq int64) []*runwirev1.RunEvent {
	var out []*runwirev1.RunEvent
	for _, ev := range stream {
		if ev.GetSeq() > afterSeq {
			out = append(out, ev)
		}
	}
	return out
}

// Stream returns a grammatical stream for runID: RunStarted; node "build"
// failing its first attempt with one log line and succeeding its second
// after logs lines; node "deploy" skipped; RunCompleted.
func Stream(runID string, logs int) []*runwirev1.RunEvent {
	var evs []*runwirev1.RunEvent
	add := func(node string, attempt int32, e any) {
		ev := &runwirev1.RunEvent{
			RunId:     runID,
			Seq:       int64(len(evs) + 1),
			EventTime: timestamppb.New(time.Date(2026, 11, 21, 20, 0, 0, len(evs), time.UTC)),
			TraceId:   "4bf92f3577b34da6a3ce929d0e0e4736",
			SpanId:    "00f067aa0ba902b7",
		}
		if node != "" {
			ev.NodeId, ev.Iteration, ev.Attempt = node, 1, attempt
			ev.SpanId = fmt.Sprintf("%016x", 1000+attempt)
		}
		switch e := e.(type) {
		case *runwirev1.RunStarted:
			ev.Event = &runwirev1.RunEvent_RunStarted{RunStarted: e}
		case *runwirev1.NodeStarted:
			ev.Event = &runwirev1.RunEvent_NodeStarted{NodeStarted: e}
		case *runwirev1.NodeLog:
			ev.Event = &runwirev1.RunEvent_NodeLog{NodeLog: e}
		case *runwirev1.NodeFailed:
			ev.Event = &runwirev1.RunEvent_NodeFailed{NodeFailed: e}
		case *runwirev1.NodeRetrying:
			ev.Event = &runwirev1.RunEvent_NodeRetrying{NodeRetrying: e}
		case *runwirev1.NodeSucceeded:
			ev.Event = &runwirev1.RunEvent_NodeSucceeded{NodeSucceeded: e}
		case *runwirev1.NodeSkipped:
			ev.Event = &runwirev1.RunEvent_NodeSkipped{NodeSkipped: e}
		case *runwirev1.RunCompleted:
			ev.Event = &runwirev1.RunEvent_RunCompleted{RunCompleted: e}
		default:
			panic(fmt.Sprintf("scripted: no case for %T", e))
		}
		evs = append(evs, ev)
	}
	add("", 0, &runwirev1.RunStarted{FlowName: "nightly", Trigger: "api", NodeCount: 2, InputsJson: "{}"})
	add("build", 1, &runwirev1.NodeStarted{Adapter: "shell", Action: "run", ParamsJson: `{"argv":["make"]}`})
	add("build", 1, &runwirev1.NodeLog{Stream: runwirev1.LogStream_LOG_STREAM_STDERR, Line: "flaky: «retry»", LineNumber: 1})
	add("build", 1, &runwirev1.NodeFailed{Error: &runwirev1.ErrorSummary{Reason: "EXIT_STATUS", ExitCode: 1}, WillRetry: true, OutputJson: "null"})
	add("build", 1, &runwirev1.NodeRetrying{NextAttempt: 2, Backoff: durationpb.New(time.Second), MaxAttempts: 3})
	add("build", 2, &runwirev1.NodeStarted{Adapter: "shell", Action: "run", ParamsJson: `{"argv":["make"]}`})
	for i := range logs {
		add("build", 2, &runwirev1.NodeLog{Stream: runwirev1.LogStream_LOG_STREAM_STDOUT, Line: fmt.Sprintf("line %d", i+1), LineNumber: int64(i + 1)})
	}
	add("build", 2, &runwirev1.NodeSucceeded{OutputJson: `{"ok":true}`, Duration: durationpb.New(2 * time.Second)})
	add("deploy", 0, &runwirev1.NodeSkipped{Reason: "no edge taken"})
	evs[len(evs)-1].Iteration, evs[len(evs)-1].Attempt = 0, 0
	add("", 0, &runwirev1.RunCompleted{Status: runwirev1.RunStatus_RUN_STATUS_SUCCEEDED, SucceededNodeCount: 1, SkippedNodeCount: 1})
	return evs
}
