// Package runwire is the thin Go layer over the generated runwire.v1 stubs
// (package runwirev1 under gen/): a resuming WatchRun helper, the stream
// grammar checker shared by every runwire client, and typed errors.
//
// Errors this package returns:
//
//	*Error              a non-retryable gRPC status; Reason is the ErrorInfo
//	                    reason, FieldViolations the BadRequest details
//	*UnknownEventError  an event whose oneof case this client was built
//	                    without: upgrade the client
//	*Violation          a stream grammar rule was broken (Checker only)
//	ErrSeqGap           WatchRun skipped a seq: events would be lost
//	context errors      the caller's context ended the watch
package runwire
