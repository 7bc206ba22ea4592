package runwire

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every runwire error.
const ErrorDomain = "runwire.v1"

// reasonPrefix is cut from ErrorReason value names to form the wire reason.
const reasonPrefix = "ERROR_REASON_"

// Error is a gRPC status from a runwire server, with its details decoded.
//
// A runwire server attaches one google.rpc.ErrorInfo in domain ErrorDomain
// to every error, and a google.rpc.BadRequest to INVALID_ARGUMENT. A status
// without them (from a proxy, or from the transport) still becomes an Error,
// with Reason ERROR_REASON_UNSPECIFIED.
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the status message.
	Message string
	// Reason is the ErrorInfo reason as the ErrorReason enum; unspecified
	// when the status has no runwire ErrorInfo or names a reason newer than
	// this client (ReasonName still holds it).
	Reason runwirev1.ErrorReason
	// ReasonName is the ErrorInfo reason as sent, for example RUN_NOT_FOUND.
	ReasonName string
	// Metadata is the ErrorInfo metadata.
	Metadata map[string]string
	// FieldViolations are the BadRequest field violations, one per bad field,
	// named by proto field path such as `flow.nodes[2].timeout`.
	FieldViolations []FieldViolation

	status *status.Status
}

// FieldViolation is one google.rpc.BadRequest field violation.
type FieldViolation struct {
	// Field is the proto field path of the bad field.
	Field string
	// Description says what is wrong with it.
	Description string
	// Reason is the violation's machine-readable reason, if the server set one.
	Reason string
}

// Error formats the code, reason, message and field violations on one line.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("runwire: ")
	b.WriteString(e.Code.String())
	if e.ReasonName != "" {
		b.WriteString(" ")
		b.WriteString(e.ReasonName)
	}
	b.WriteString(": ")
	b.WriteString(e.Message)
	for _, v := range e.FieldViolations {
		fmt.Fprintf(&b, "; %s: %s", v.Field, v.Description)
	}
	return b.String()
}

// GRPCStatus returns the original status, so status.FromError and
// status.Code keep working on an Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// FromError returns the *Error for the gRPC status in err's chain. It
// returns nil for nil, and err unchanged when err is already an *Error or
// carries no gRPC status (a context error, for example).
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	// Not status.FromError: on a wrapped error it rewrites the message.
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) || se.GRPCStatus() == nil {
		return err
	}
	return newError(se.GRPCStatus())
}

func newError(st *status.Status) *Error {
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() != ErrorDomain || e.ReasonName != "" {
				continue
			}
			e.ReasonName = d.GetReason()
			e.Metadata = d.GetMetadata()
			if v, ok := runwirev1.ErrorReason_value[reasonPrefix+d.GetReason()]; ok {
				e.Reason = runwirev1.ErrorReason(v)
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{
					Field:       v.GetField(),
					Description: v.GetDescription(),
					Reason:      v.GetReason(),
				})
			}
		}
	}
	return e
}

// hasRunwireInfo reports whether st carries a runwire ErrorInfo, that is,
// whether the runwire application (not the transport) produced it.
func hasRunwireInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}

// runwireReason is the reason of the status's runwire ErrorInfo, or "".
func runwireReason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// retryDelay is the wait the google.rpc.RetryInfo of err's status asks for,
// and whether it carries one. The runwire server attaches one when it turns
// a call away at an admission bound (RESOURCE_EXHAUSTED, reason
// OVERLOADED); any status may carry one. A negative or invalid delay counts
// as none; of several RetryInfos the longest counts.
func retryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	var asked time.Duration
	found := false
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.RetryInfo)
		if !ok || info.GetRetryDelay() == nil || info.GetRetryDelay().CheckValid() != nil {
			continue
		}
		if delay := info.GetRetryDelay().AsDuration(); delay >= 0 && (!found || delay > asked) {
			asked, found = delay, true
		}
	}
	return asked, found
}

// UnknownEventError reports a RunEvent whose oneof case this client does not
// know: the server speaks a newer contract. It is never dropped silently;
// upgrade the client.
type UnknownEventError struct {
	// RunID and Seq are taken from the event's envelope.
	RunID string
	Seq   int64
	// FieldNumbers are the unknown field numbers the event carried; the new
	// variant is among them. Empty when the event carried no variant at all.
	FieldNumbers []protowire.Number
}

// Error names the event and the unknown field numbers.
func (e *UnknownEventError) Error() string {
	return fmt.Sprintf("runwire: unknown event at seq %d of run %q (unknown fields %v): unknown event, upgrade the client",
		e.Seq, e.RunID, e.FieldNumbers)
}

// CheckKnown returns an *UnknownEventError when ev has no oneof case this
// client knows, and nil otherwise. Watch and DecodeEvent call it on every
// event.
func CheckKnown(ev *runwirev1.RunEvent) error {
	if ev.GetEvent() != nil {
		return nil
	}
	e := &UnknownEventError{RunID: ev.GetRunId(), Seq: ev.GetSeq()}
	for b := ev.ProtoReflect().GetUnknown(); len(b) > 0; {
		num, _, n := protowire.ConsumeField(b)
		if n < 0 {
			break
		}
		e.FieldNumbers = append(e.FieldNumbers, num)
		b = b[n:]
	}
	return e
}

// DecodeEvent decodes one RunEvent from its binary encoding. An event of an
// unknown variant decodes into an *UnknownEventError, not into an event.
func DecodeEvent(b []byte) (*runwirev1.RunEvent, error) {
	ev := &runwirev1.RunEvent{}
	if err := proto.Unmarshal(b, ev); err != nil {
		return nil, fmt.Errorf("runwire: decode RunEvent: %w", err)
	}
	if err := CheckKnown(ev); err != nil {
		return nil, err
	}
	return ev, nil
}
