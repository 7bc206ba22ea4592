package runwire

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
)

func TestFromErrorDecodesErrorInfoAndBadRequest(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "flow is invalid").WithDetails(
		&errdetails.ErrorInfo{Reason: "FLOW_INVALID", Domain: ErrorDomain, Metadata: map[string]string{"flow": "nightly"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "flow.nodes[2].timeout", Description: "must be positive, got -1s"},
			{Field: "flow.edges[0].target", Description: `no node "deploy"`, Reason: "UNKNOWN_NODE"},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	var e *Error
	if !errors.As(FromError(fmt.Errorf("start: %w", st.Err())), &e) {
		t.Fatal("want an *Error")
	}
	if e.Code != codes.InvalidArgument || e.Reason != runwirev1.ErrorReason_ERROR_REASON_FLOW_INVALID ||
		e.ReasonName != "FLOW_INVALID" || e.Metadata["flow"] != "nightly" || e.Message != "flow is invalid" {
		t.Errorf("got %+v", e)
	}
	want := []FieldViolation{
		{Field: "flow.nodes[2].timeout", Description: "must be positive, got -1s"},
		{Field: "flow.edges[0].target", Description: `no node "deploy"`, Reason: "UNKNOWN_NODE"},
	}
	if len(e.FieldViolations) != len(want) || e.FieldViolations[0] != want[0] || e.FieldViolations[1] != want[1] {
		t.Errorf("violations %v, want %v", e.FieldViolations, want)
	}
	wantMsg := `runwire: InvalidArgument FLOW_INVALID: flow is invalid; flow.nodes[2].timeout: must be positive, got -1s; flow.edges[0].target: no node "deploy"`
	if e.Error() != wantMsg {
		t.Errorf("message\n got %s\nwant %s", e.Error(), wantMsg)
	}
	if status.Code(e) != codes.InvalidArgument || !proto.Equal(status.Convert(e).Proto(), st.Proto()) {
		t.Error("the *Error does not carry its original status")
	}
}

func TestFromErrorKeepsReasonsNewerThanTheClient(t *testing.T) {
	st, _ := status.New(codes.FailedPrecondition, "later").WithDetails(
		&errdetails.ErrorInfo{Reason: "SOMETHING_NEW", Domain: ErrorDomain})
	var e *Error
	if !errors.As(FromError(st.Err()), &e) {
		t.Fatal("want an *Error")
	}
	if e.Reason != runwirev1.ErrorReason_ERROR_REASON_UNSPECIFIED || e.ReasonName != "SOMETHING_NEW" {
		t.Errorf("got reason %v %q", e.Reason, e.ReasonName)
	}
}

func TestFromErrorIgnoresOtherDomainsAndPassesNonStatusErrors(t *testing.T) {
	st, _ := status.New(codes.PermissionDenied, "proxy says no").WithDetails(
		&errdetails.ErrorInfo{Reason: "RUN_NOT_FOUND", Domain: "proxy.example.com"})
	var e *Error
	if !errors.As(FromError(st.Err()), &e) || e.ReasonName != "" || e.Code != codes.PermissionDenied {
		t.Errorf("got %+v, want PermissionDenied with no runwire reason", e)
	}
	if FromError(nil) != nil {
		t.Error("FromError(nil) != nil")
	}
	if err := FromError(context.Canceled); err != context.Canceled {
		t.Errorf("FromError(context.Canceled) = %v", err)
	}
}

// futureEvent is the wire form of an event from a newer contract: a valid
// envelope plus a variant at field 120, inside the reserved sandbox block,
// that this client's generated code does not know.
func futureEvent(t *testing.T) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&runwirev1.RunEvent{RunId: runID, Seq: 7, NodeId: "build"})
	if err != nil {
		t.Fatal(err)
	}
	variant := protowire.AppendTag(nil, 1, protowire.BytesType)
	variant = protowire.AppendString(variant, "payload of a variant from the future")
	b = protowire.AppendTag(b, 120, protowire.BytesType)
	return protowire.AppendBytes(b, variant)
}

func TestDecodeEventRejectsAnUnknownVariant(t *testing.T) {
	ev, err := DecodeEvent(futureEvent(t))
	var unknown *UnknownEventError
	if !errors.As(err, &unknown) {
		t.Fatalf("DecodeEvent = %v, %v; want *UnknownEventError", ev, err)
	}
	if unknown.Seq != 7 || unknown.RunID != runID || len(unknown.FieldNumbers) != 1 || unknown.FieldNumbers[0] != 120 {
		t.Errorf("got %+v", unknown)
	}
	want := fmt.Sprintf("runwire: unknown event at seq 7 of run %q (unknown fields [120]): unknown event, upgrade the client", runID)
	if err.Error() != want {
		t.Errorf("message\n got %s\nwant %s", err, want)
	}
}

func TestDecodeEventAcceptsAKnownVariant(t *testing.T) {
	in := &runwirev1.RunEvent{RunId: runID, Seq: 1, Event: &runwirev1.RunEvent_RunStarted{RunStarted: &runwirev1.RunStarted{FlowName: "nightly"}}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvent(b)
	if err != nil || !proto.Equal(got, in) {
		t.Fatalf("DecodeEvent = %v, %v", got, err)
	}
	if _, err := DecodeEvent([]byte{0xff}); err == nil {
		t.Error("DecodeEvent accepted garbage")
	}
}
