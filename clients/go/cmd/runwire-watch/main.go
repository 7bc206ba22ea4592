// Command runwire-watch watches one run and prints each event on its own
// line as compact proto3 JSON (keys sorted, lowerCamelCase names), resuming
// across disconnects and server restarts. It checks the stream grammar over
// what it printed and exits 0 only after RunCompleted with the grammar held.
//
//	runwire-watch --addr 127.0.0.1:50051 --run-id run_0193f0c2... [--after-seq 12]
//
// Exit status: 0 after RunCompleted with no violation; 1 when the watch
// failed or the grammar was broken (details on stderr); 2 for bad usage.
// The connection is plaintext, for a loopback listener.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	runwire "github.com/runwire/runwire/clients/go"
	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	"github.com/runwire/runwire/clients/go/internal/canonjson"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("runwire-watch", flag.ContinueOnError)
	flags.SetOutput(stderr)
	addr := flags.String("addr", "127.0.0.1:50051", "the server's `host:port`")
	runID := flags.String("run-id", "", "the run to watch (required)")
	afterSeq := flags.Int64("after-seq", 0, "print only the events after this `seq`")
	retryTimeout := flags.Duration("retry-timeout", runwire.DefaultRetryTimeout,
		"give up after reconnecting for this long without an answer; negative retries forever")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if *runID == "" || flags.NArg() > 0 || *afterSeq < 0 {
		fmt.Fprintln(stderr, "usage: runwire-watch --addr HOST:PORT --run-id ID [--after-seq N]")
		flags.PrintDefaults()
		return 2
	}

	cc, err := grpc.NewClient(*addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// grpc-go's default reconnect backoff grows to two minutes; a
		// restarted server should be found again within a couple of seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}))
	if err != nil {
		fmt.Fprintf(stderr, "runwire-watch: %v\n", err)
		return 2
	}
	defer cc.Close()

	out := bufio.NewWriter(stdout)
	checker := runwire.NewChecker(*afterSeq)
	broken := false
	opts := &runwire.WatchOptions{
		RetryTimeout: *retryTimeout,
		OnRetry: func(err error, delay time.Duration) {
			fmt.Fprintf(stderr, "runwire-watch: reconnecting in %v: %v\n", delay.Round(time.Millisecond), err)
		},
	}
	for ev, err := range runwire.Watch(ctx, runwirev1.NewRunServiceClient(cc), *runID, *afterSeq, opts) {
		if err != nil {
			fmt.Fprintf(stderr, "runwire-watch: %v\n", err)
			return 1
		}
		line, err := eventLine(ev)
		if err != nil {
			fmt.Fprintf(stderr, "runwire-watch: seq %d: %v\n", ev.GetSeq(), err)
			return 1
		}
		out.Write(line)
		out.WriteByte('\n')
		// Flush per event: whoever reads the lines sees them as they come.
		if err := out.Flush(); err != nil {
			fmt.Fprintf(stderr, "runwire-watch: %v\n", err)
			return 1
		}
		if err := checker.Check(ev); err != nil {
			broken = true
			fmt.Fprintf(stderr, "runwire-watch: grammar: %v\n", err)
		}
	}
	if err := checker.Finish(); err != nil {
		broken = true
		fmt.Fprintf(stderr, "runwire-watch: grammar: %v\n", err)
	}
	if broken {
		return 1
	}
	return 0
}

// eventLine is ev's proto3 JSON in canonical form: one line, keys sorted.
func eventLine(ev *runwirev1.RunEvent) ([]byte, error) {
	b, err := protojson.Marshal(ev)
	if err != nil {
		return nil, err
	}
	line, err := canonjson.Canonicalize(b)
	if err != nil {
		return nil, errors.New("protojson wrote invalid JSON: " + err.Error())
	}
	return line, nil
}
