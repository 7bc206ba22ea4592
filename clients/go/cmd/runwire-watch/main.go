// Command runwire-watch watches one run and prints each event on its own
// line as compact proto3 JSON (fields in declaration order, lowerCamelCase
// names, the same bytes as every client's example prints), resuming
// across disconnects and server restarts. It checks the stream grammar over
// what it printed and exits 0 at the run's end with the grammar held.
//
//	runwire-watch --addr 127.0.0.1:50051 --run-id run_0193f0c2... [--after-seq 12]
//	    [--token TOKEN] [--tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem]]
//	    [--give-up-after SECONDS] [--kinds KIND,...] [--node-ids NODE,...]
//	runwire-watch --events [--cursor CURSOR] [--start latest|earliest]
//	    [--flow-name NAME] [--kinds KIND,...] [--node-ids NODE,...] [--count N] [connection flags]
//
// --kinds and --node-ids filter the watch (the grammar check then follows
// the filtered-stream rule). --events watches every run instead
// (WatchEvents, resumed from the last cursor), printing the same lines,
// until --count events (forever without it); it checks no grammar.
//
// Exit status, the same in every client's example: 0 at the run's end (after
// RunCompleted, or told by the server that the run finished at or before
// --after-seq) with no violation; 1 when the stream broke a grammar rule or
// skipped a seq; 2 for bad usage; 3 when the watch failed: the server
// answered with an error (for example NOT_FOUND), sent an event this client
// does not know, or could not be reached within the give-up budget.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	runwire "github.com/runwire/runwire/clients/go/runwire"
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
	runID := flags.String("run-id", "", "the run to watch (not with --events)")
	kinds := flags.String("kinds", "", "only these event `kinds` (oneof names, comma-separated)")
	nodeIDs := flags.String("node-ids", "", "only these `nodes`' events (comma-separated)")
	events := flags.Bool("events", false, "watch every run's events (WatchEvents) instead")
	cursor := flags.String("cursor", "", "--events: resume after this `cursor`")
	start := flags.String("start", "latest", "--events without --cursor: where to start, `latest` or earliest")
	flowName := flags.String("flow-name", "", "--events: only runs of this `flow`")
	count := flags.Int("count", 0, "--events: exit 0 after this many `events`")
	afterSeq := flags.Int64("after-seq", 0, "print only the events after this `seq`")
	token := flags.String("token", "", "send `authorization: Bearer TOKEN`")
	tlsCA := flags.String("tls-ca", "", "connect with TLS, trusting this PEM CA `file`")
	tlsCert := flags.String("tls-cert", "", "client certificate `file` (PEM) for mutual TLS")
	tlsKey := flags.String("tls-key", "", "private key `file` (PEM) of --tls-cert")
	giveUpAfter := flags.Float64("give-up-after", runwire.DefaultRetryTimeout.Seconds(),
		"give up after failing this many `seconds` without an answer; 0 retries forever")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: runwire-watch --addr HOST:PORT --run-id ID [--after-seq N] [--kinds K,...] [--node-ids N,...] [--token TOKEN] [--tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem]] [--give-up-after SECONDS]")
		fmt.Fprintln(stderr, "       runwire-watch --addr HOST:PORT --events [--cursor C] [--start latest|earliest] [--flow-name F] [--kinds K,...] [--node-ids N,...] [--count N] [connection flags]")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if (*runID == "") != *events || flags.NArg() > 0 || *afterSeq < 0 || *giveUpAfter < 0 || *count < 0 ||
		(*start != "latest" && *start != "earliest") ||
		(*tlsCert == "") != (*tlsKey == "") || (*tlsCert != "" && *tlsCA == "") {
		flags.Usage()
		return 2
	}
	creds := insecure.NewCredentials()
	if *tlsCA != "" {
		config, err := tlsConfig(*tlsCA, *tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintf(stderr, "runwire-watch: %v\n", err)
			return 2
		}
		creds = credentials.NewTLS(config)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if *token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{token: *token, secure: *tlsCA != ""}))
	}
	retryTimeout := time.Duration(*giveUpAfter * float64(time.Second))
	if *giveUpAfter == 0 {
		retryTimeout = -1 // retry forever
	}

	cc, err := grpc.NewClient(*addr, append(dial,
		// grpc-go's default reconnect backoff grows to two minutes; a
		// restarted server should be found again within a couple of seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}))...)
	if err != nil {
		fmt.Fprintf(stderr, "runwire-watch: %v\n", err)
		return 2
	}
	defer cc.Close()

	out := bufio.NewWriter(stdout)
	var filter *runwirev1.EventFilter
	if *kinds != "" || *nodeIDs != "" {
		filter = &runwirev1.EventFilter{Kinds: list(*kinds), NodeIds: list(*nodeIDs)}
	}
	onRetry := func(err error, delay time.Duration) {
		fmt.Fprintf(stderr, "runwire-watch: reconnecting in %v: %v\n", delay.Round(time.Millisecond), err)
	}
	if *events {
		req := &runwirev1.WatchEventsRequest{
			Cursor: *cursor,
			Start:  runwirev1.StreamStart_STREAM_START_LATEST,
			Filter: &runwirev1.RunEventsFilter{FlowName: *flowName, Events: filter},
		}
		if *start == "earliest" {
			req.Start = runwirev1.StreamStart_STREAM_START_EARLIEST
		}
		opts := &runwire.WatchOptions{RetryTimeout: retryTimeout, OnRetry: onRetry}
		return watchEvents(ctx, runwirev1.NewRunServiceClient(cc), req, opts, *count, out, stderr)
	}
	checker := runwire.NewFilteredChecker(*afterSeq, filter)
	broken := false
	var end *runwire.RunEnd
	opts := &runwire.WatchOptions{
		Filter:       filter,
		RetryTimeout: retryTimeout,
		OnEnd:        func(e runwire.RunEnd) { end = &e },
		OnRetry:      onRetry,
	}
	for ev, err := range runwire.Watch(ctx, runwirev1.NewRunServiceClient(cc), *runID, *afterSeq, opts) {
		if err != nil {
			fmt.Fprintf(stderr, "runwire-watch: %v\n", err)
			if errors.Is(err, runwire.ErrSeqGap) {
				return 1
			}
			return 3
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
	if end == nil { // only ctx ending stops a watch without an error or an end
		fmt.Fprintf(stderr, "runwire-watch: %v\n", ctx.Err())
		return 3
	}
	if end.LastSeq > *afterSeq { // else nothing was watched: nothing to check
		if err := checker.Finish(); err != nil {
			broken = true
			fmt.Fprintf(stderr, "runwire-watch: grammar: %v\n", err)
		}
	} else {
		// No RunCompleted line printed to say it: the run ended before --after-seq.
		fmt.Fprintf(stderr, "runwire-watch: run %s finished %s at seq %d\n", end.RunID, end.StatusName(), end.LastSeq)
	}
	if broken {
		return 1
	}
	return 0
}

// watchEvents prints every run's events from WatchEvents until count of
// them (forever when count is 0): --events.
func watchEvents(ctx context.Context, client runwirev1.RunServiceClient, req *runwirev1.WatchEventsRequest,
	opts *runwire.WatchOptions, count int, out *bufio.Writer, stderr io.Writer,
) int {
	printed := 0
	for item, err := range runwire.WatchEvents(ctx, client, req, opts) {
		if err != nil {
			fmt.Fprintf(stderr, "runwire-watch: %v\n", err)
			return 3
		}
		line, err := eventLine(item.Event)
		if err != nil {
			fmt.Fprintf(stderr, "runwire-watch: seq %d: %v\n", item.Event.GetSeq(), err)
			return 1
		}
		out.Write(line)
		out.WriteByte('\n')
		if err := out.Flush(); err != nil {
			fmt.Fprintf(stderr, "runwire-watch: %v\n", err)
			return 1
		}
		printed++
		if printed == count {
			return 0
		}
	}
	return 3 // only ctx ending stops it without an error
}

// list splits a comma-separated flag value, dropping empty parts.
func list(value string) []string {
	var out []string
	for _, part := range strings.Split(value, ",") {
		if part != "" {
			out = append(out, part)
		}
	}
	return out
}

// tlsConfig trusts the CA bundle at caFile and, for mutual TLS, presents
// the client certificate certFile with its key keyFile.
func tlsConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", caFile)
	}
	config := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{cert}
	}
	return config, nil
}

// bearer sends `authorization: Bearer TOKEN` on every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false without TLS, so a token works on a
// plaintext loopback listener too, as the server allows there.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// eventLine is ev's proto3 JSON on one line, fields in declaration order
// as every client's example prints them, byte for byte: protojson with its
// deliberately unstable whitespace removed (json.Compact touches nothing
// inside strings, and protojson escapes only what the others escape).
func eventLine(ev *runwirev1.RunEvent) ([]byte, error) {
	b, err := protojson.Marshal(ev)
	if err != nil {
		return nil, err
	}
	var line bytes.Buffer
	if err := json.Compact(&line, b); err != nil {
		return nil, errors.New("protojson wrote invalid JSON: " + err.Error())
	}
	return line.Bytes(), nil
}
