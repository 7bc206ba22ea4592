package runwire_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	runwire "github.com/runwire/runwire/clients/go/runwire"
)

// The README's example; compiled by go vet and go test, not run.
func ExampleWatch() {
	ctx, runID, afterSeq := context.Background(), "run_0193f0c2a7b84d1e9f3c5a6b7c8d9e0f", int64(0)
	err := func() error {
		conn, err := grpc.NewClient("127.0.0.1:50051",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Find a restarted server within seconds, not grpc-go's two minutes.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: 5 * time.Second,
			}))
		if err != nil {
			return err
		}
		defer conn.Close()

		checker := runwire.NewChecker(afterSeq)
		for ev, err := range runwire.Watch(ctx, runwirev1.NewRunServiceClient(conn), runID, afterSeq, nil) {
			if err != nil {
				var rerr *runwire.Error
				if errors.As(err, &rerr) && rerr.Reason == runwirev1.ErrorReason_ERROR_REASON_RUN_NOT_FOUND {
					log.Printf("no run %s", runID)
				}
				return err
			}
			if err := checker.Check(ev); err != nil {
				log.Print(err) // "<rule> at seq <seq>: <detail>"
			}
			fmt.Println(ev.GetSeq(), ev.GetEvent())
		}
		return checker.Finish()
	}()
	if err != nil {
		log.Print(err)
	}
}
