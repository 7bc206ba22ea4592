/** The closed catalog as this client sees it: each variant's place in the stream grammar. */

import type { RunEvent } from "./gen/runwire/v1/events_pb.js";
import { UnknownEventError } from "./_errors.js";

/** The oneof case of a known `RunEvent.event` variant, e.g. `"nodeLog"`. */
export type EventCase = NonNullable<RunEvent["event"]["case"]>;

/** A `RunEvent` whose oneof case this client knows. */
export type KnownRunEvent = RunEvent & {
  event: Extract<RunEvent["event"], { case: EventCase }>;
};

/**
 * Where a variant may sit in a run's stream (clients/GRAMMAR.md).
 *
 * - `run-started`, `run-completed`: the first and the last event.
 * - `attempt-start`: NodeStarted opens an attempt.
 * - `attempt-output`: only inside the node's open attempt.
 * - `attempt-terminal`: closes the node's open attempt.
 * - `node-skip`: stands alone, never inside an attempt.
 * - `anywhere`: run-level, retry, gate, AI audit and sandbox events.
 */
export type EventRole =
  | "run-started"
  | "run-completed"
  | "attempt-start"
  | "attempt-output"
  | "attempt-terminal"
  | "node-skip"
  | "anywhere";

/**
 * The one hand-written mapping of variants. `satisfies` makes `tsc` fail when
 * a variant is added to events.proto without a role here (or one is removed).
 */
export const EVENT_ROLES = {
  runStarted: "run-started",
  runStatusChanged: "anywhere",
  runPaused: "anywhere",
  runResumed: "anywhere",
  runCompleted: "run-completed",
  nodeStarted: "attempt-start",
  nodeSucceeded: "attempt-terminal",
  nodeFailed: "attempt-terminal",
  nodeSkipped: "node-skip",
  nodeRetrying: "anywhere",
  iterationCapped: "anywhere",
  nodeLog: "attempt-output",
  nodeToken: "attempt-output",
  nodeHeartbeat: "attempt-output",
  toolCall: "attempt-output",
  awaitingConfirmation: "anywhere",
  confirmationResolved: "anywhere",
  approvalRequested: "anywhere",
  approvalResolved: "anywhere",
  aiInvocation: "anywhere",
  aiRoutingDecision: "anywhere",
  aiReviewRequired: "anywhere",
  aiReviewResolved: "anywhere",
  sandboxViolation: "anywhere",
} as const satisfies Record<EventCase, EventRole>;

/**
 * Returns the event if its oneof case is known to this client.
 *
 * An event from a newer server may carry a variant this client was not
 * generated with; protobuf decodes it to `event.case === undefined` and keeps
 * its bytes as unknown fields. Dropping it silently would hide part of the
 * run, so it is an error instead.
 *
 * @throws UnknownEventError when the case is unknown (or missing).
 */
export function requireKnownEvent(event: RunEvent): KnownRunEvent {
  const c = event.event.case;
  if (c === undefined || !Object.hasOwn(EVENT_ROLES, c)) {
    const fieldNumbers = (event.$unknown ?? []).map((f) => f.no);
    throw new UnknownEventError(event.runId, event.seq, fieldNumbers);
  }
  return event as KnownRunEvent;
}
