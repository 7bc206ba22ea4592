/**
 * runwire TypeScript client: a RunService client, a resuming `watch`, the
 * stream grammar checker and typed errors. Generated messages live in
 * `./gen/runwire/v1/*_pb.js`.
 *
 * Loading it configures protobuf-es to keep a leading U+FEFF in decoded
 * strings (see `_text.ts`), as every other runwire client does.
 */

import "./_text.js";

export { createRunServiceClient, type RunServiceClient } from "./_client.js";
export {
  ERROR_DOMAIN,
  GrammarViolationError,
  RpcError,
  RunwireError,
  SeqGapError,
  UnknownEventError,
  WatchEventsGaveUpError,
  WatchGaveUpError,
  toRpcError,
  type FieldViolation,
  type GrammarRule,
} from "./_errors.js";
export {
  EVENT_ROLES,
  requireKnownEvent,
  type EventCase,
  type EventRole,
  type KnownRunEvent,
} from "./_events.js";
export { GrammarChecker, checkStream, isFiltered } from "./_grammar.js";
export {
  WATCH_DEFAULTS,
  isRetryable,
  runStatusName,
  watch,
  type RetryOptions,
  type RunEnd,
  type WatchOptions,
  type WatchRetry,
} from "./_watch.js";
export {
  watchEvents,
  type WatchEventsOptions,
  type WatchEventsRequestInit,
  type WatchEventsRetry,
  type WatchedEvent,
} from "./_watch_events.js";
