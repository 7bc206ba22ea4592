// Command benchruns is the client side of bench/workers.py (`make
// bench-workers`): CLIENTS clients, each on a connection of its own, start
// runs and watch each to RunCompleted, until RUNS runs are done.
//
// It exists because the bench's clients share the machine's cores with the
// server and Postgres: a client that spends less CPU per run leaves more to
// what is measured. Each run is still a StartRun over gRPC and a WatchRun
// read to RunCompleted (which must say SUCCEEDED); the StartRunRequest is
// read from stdin, in its binary encoding, so the flow is the bench's.
//
// Usage: benchruns ADDR CLIENTS RUNS < request.binpb
//
// It prints one JSON line: {"start", "end", "runs", "cpu"}: wall-clock
// seconds (Unix time) of the measured part (after each client's first run),
// the runs in it, and this process's CPU seconds (user + system) over it.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchruns:", err)
		os.Exit(1)
	}
}

func cpuSeconds() float64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano()).Seconds()
}

func run() error {
	// One thread runs Go code: idle Ps spinning for work cost about a tenth
	// more CPU per run on a machine whose other cores serve the runs.
	runtime.GOMAXPROCS(1)
	if len(os.Args) != 4 {
		return fmt.Errorf("usage: benchruns ADDR CLIENTS RUNS < request.binpb")
	}
	addr := os.Args[1]
	clients, err1 := strconv.Atoi(os.Args[2])
	runs, err2 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || clients < 1 || runs < 0 {
		return fmt.Errorf("CLIENTS and RUNS are counts")
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	request := &runwirev1.StartRunRequest{}
	if err := proto.Unmarshal(raw, request); err != nil {
		return fmt.Errorf("the StartRunRequest on stdin: %w", err)
	}
	ctx := context.Background()
	stubs := make([]runwirev1.RunServiceClient, clients)
	for i := range stubs {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		stubs[i] = runwirev1.NewRunServiceClient(conn)
	}
	// Connect and warm up: one run per client, not measured.
	if err := each(stubs, func(stub runwirev1.RunServiceClient) error {
		_, err := runToEnd(ctx, stub, request)
		return err
	}); err != nil {
		return err
	}
	left, responses := int64(runs), int64(0)
	start, cpu := time.Now(), cpuSeconds()
	if err := each(stubs, func(stub runwirev1.RunServiceClient) error {
		for atomic.AddInt64(&left, -1) >= 0 {
			n, err := runToEnd(ctx, stub, request)
			if err != nil {
				return err
			}
			atomic.AddInt64(&responses, int64(n))
		}
		return nil
	}); err != nil {
		return err
	}
	end, used := time.Now(), cpuSeconds()-cpu
	return json.NewEncoder(os.Stdout).Encode(map[string]float64{
		"start":     float64(start.UnixNano()) / 1e9,
		"end":       float64(end.UnixNano()) / 1e9,
		"runs":      float64(runs),
		"cpu":       used,
		"responses": float64(responses),
	})
}

// each runs work once per stub, concurrently; the first error wins.
func each(stubs []runwirev1.RunServiceClient, work func(runwirev1.RunServiceClient) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(stubs))
	for _, stub := range stubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := work(stub); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// runToEnd starts a run and reads its stream to the end, which must follow a
// RunCompleted that says SUCCEEDED; it returns how many WatchRunResponses
// the stream had.
func runToEnd(ctx context.Context, stub runwirev1.RunServiceClient, request *runwirev1.StartRunRequest) (int, error) {
	started, err := stub.StartRun(ctx, request)
	if err != nil {
		return 0, fmt.Errorf("StartRun: %w", err)
	}
	runID := started.GetRun().GetRunId()
	stream, err := stub.WatchRun(ctx, &runwirev1.WatchRunRequest{RunId: runID})
	if err != nil {
		return 0, fmt.Errorf("WatchRun %s: %w", runID, err)
	}
	completed, responses := false, 0
	for {
		response, err := stream.Recv()
		if err == io.EOF && completed {
			return responses, nil // the stream's end follows RunCompleted
		}
		if err != nil {
			return 0, fmt.Errorf("run %s's stream ended before RunCompleted: %w", runID, err)
		}
		responses++
		for _, event := range response.GetEvents() {
			if done := event.GetRunCompleted(); done != nil {
				if done.GetStatus() != runwirev1.RunStatus_RUN_STATUS_SUCCEEDED {
					return 0, fmt.Errorf("run %s ended %s", runID, done.GetStatus())
				}
				completed = true
			}
		}
	}
}
