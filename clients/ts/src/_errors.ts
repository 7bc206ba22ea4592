/**
 * The client's error tree, and the one function that reads google.rpc details.
 *
 *     RunwireError                 root of everything this client throws
 *     ├── RpcError                 the call failed with a non-OK status that is
 *     │                            not retried: gRPC code, ErrorInfo reason,
 *     │                            BadRequest field violations
 *     ├── WatchGaveUpError         watch stopped retrying; `cause` is the last
 *     │                            transport error
 *     ├── SeqGapError              the server skipped a seq; events would be lost
 *     ├── UnknownEventError        an event variant this client does not know:
 *     │                            upgrade the client
 *     └── GrammarViolationError    a stream broke a rule of clients/GRAMMAR.md
 */

import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { ErrorReason, ErrorReasonSchema } from "./gen/runwire/v1/errors_pb.js";

/** The `google.rpc.ErrorInfo.domain` of every runwire error. */
export const ERROR_DOMAIN = "runwire.v1";

/** Root of every error this client throws. */
export class RunwireError extends Error {
  override name = "RunwireError";
}

/** One `google.rpc.BadRequest.FieldViolation`, e.g. field `flow.nodes[2].timeout`. */
export interface FieldViolation {
  /** Proto field path of the bad field (AIP-193). */
  readonly field: string;
  /** Why the value is bad, for people. */
  readonly description: string;
}

/**
 * A call failed with a status the client does not retry.
 *
 * The ErrorInfo fields (`reasonName`, `domain`, `metadata`) come from the
 * status's runwire ErrorInfo (domain `runwire.v1`), whatever other ErrorInfos
 * sit before or after it. When the status carries only ErrorInfos of other
 * domains (a proxy's, a gateway's) they come from the first of those, for
 * diagnosis: `domain` then names that domain, the message says
 * `(reason X from <domain>)`, and `reason` stays `ErrorReason.UNSPECIFIED`,
 * because a foreign reason that happens to share a runwire name (a proxy's
 * `INTERNAL`) is not runwire's. Check `domain === ERROR_DOMAIN` before acting
 * on `reasonName` or `metadata`.
 *
 * `reason` is the runwire `ErrorReason` (`ErrorReason.UNSPECIFIED` when the
 * status carried no runwire ErrorInfo, e.g. a client-side deadline, or names
 * a reason newer than this client); `reasonName` is the wire string as
 * received (`RUN_NOT_FOUND`).
 */
export class RpcError extends RunwireError {
  override name = "RpcError";
  /** The gRPC status code. */
  readonly code: Code;
  /** The runwire reason, or `ErrorReason.UNSPECIFIED`. */
  readonly reason: ErrorReason;
  /** `ErrorInfo.reason` as received; empty when there was no ErrorInfo. */
  readonly reasonName: string;
  /**
   * `ErrorInfo.domain` as received: `runwire.v1` (`ERROR_DOMAIN`) for runwire
   * errors, another domain when only a foreign ErrorInfo came, empty for none.
   */
  readonly domain: string;
  /** `ErrorInfo.metadata`, e.g. `{run_id: "…"}`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** One entry per bad field of an INVALID_ARGUMENT error; empty otherwise. */
  readonly fieldViolations: readonly FieldViolation[];
  /** The status message without the code prefix. */
  readonly statusMessage: string;

  constructor(init: {
    code: Code;
    statusMessage: string;
    reasonName?: string;
    domain?: string;
    metadata?: Record<string, string>;
    fieldViolations?: FieldViolation[];
    cause?: unknown;
  }) {
    const reasonName = init.reasonName ?? "";
    const domain = init.domain ?? "";
    const violations = init.fieldViolations ?? [];
    let text = `${codeName(init.code)}: ${init.statusMessage}`;
    if (reasonName !== "") {
      const foreign = domain !== ERROR_DOMAIN && domain !== "";
      text += foreign ? ` (reason ${reasonName} from ${domain})` : ` (reason ${reasonName})`;
    }
    for (const v of violations) text += `; ${v.field}: ${v.description}`;
    super(text, { cause: init.cause });
    this.code = init.code;
    this.statusMessage = init.statusMessage;
    this.reasonName = reasonName;
    this.domain = domain;
    this.metadata = init.metadata ?? {};
    this.fieldViolations = violations;
    this.reason = this.domain === ERROR_DOMAIN ? parseReason(reasonName) : ErrorReason.UNSPECIFIED;
  }
}

/** watch() stopped reconnecting; `cause` holds the last transport error. */
export class WatchGaveUpError extends RunwireError {
  override name = "WatchGaveUpError";
  constructor(
    readonly runId: string,
    /** The last seq delivered before giving up; resume from here. */
    readonly lastSeq: bigint,
    /** How many attempts failed in a row. */
    readonly failedAttempts: number,
    cause: unknown,
  ) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super(
      `watch of run ${runId} gave up after ${failedAttempts} failed attempts at seq ${lastSeq}: ${detail}`,
      { cause },
    );
  }
}

/** `watchEvents` kept failing for its whole give-up budget. */
export class WatchEventsGaveUpError extends RunwireError {
  override name = "WatchEventsGaveUpError";
  constructor(
    /** The cursor after the last response received; resume from here. */
    readonly cursor: string,
    /** How many attempts failed in a row. */
    readonly failedAttempts: number,
    cause: unknown,
  ) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super(
      `watch of events gave up after ${failedAttempts} failed attempts at cursor ${JSON.stringify(cursor)}: ${detail}`,
      { cause },
    );
  }
}

/** The server delivered a seq past the next one: events in between would be lost. */
export class SeqGapError extends RunwireError {
  override name = "SeqGapError";
  constructor(
    readonly runId: string,
    readonly expectedSeq: bigint,
    readonly receivedSeq: bigint,
  ) {
    super(`run ${runId}: expected seq ${expectedSeq}, received seq ${receivedSeq}`);
  }
}

/** An event whose oneof case this client does not know. */
export class UnknownEventError extends RunwireError {
  override name = "UnknownEventError";
  constructor(
    readonly runId: string,
    readonly seq: bigint,
    /** Field numbers the client could not decode, e.g. `[127]`. */
    readonly fieldNumbers: readonly number[],
  ) {
    const fields = fieldNumbers.length > 0 ? ` (field ${fieldNumbers.join(", ")})` : "";
    super(
      `unknown event, upgrade the client: run ${runId} seq ${seq} has an event variant this client does not know${fields}`,
    );
  }
}

/** The rule names of clients/GRAMMAR.md, identical in every client. */
export type GrammarRule =
  | "seq-start"
  | "seq-gapless"
  | "run-id-stable"
  | "run-started-first"
  | "run-completed-last"
  | "attempt-open"
  | "output-outside-attempt"
  | "terminal-outside-attempt"
  | "skip-inside-attempt"
  | "attempt-unclosed"
  | "item-outside-frame"
  | "item-unclosed";

/** A stream broke a grammar rule; the message is `<rule> at seq <seq>: <detail>`. */
export class GrammarViolationError extends RunwireError {
  override name = "GrammarViolationError";
  constructor(
    readonly rule: GrammarRule,
    readonly seq: bigint,
    readonly detail: string,
  ) {
    super(`${rule} at seq ${seq}: ${detail}`);
  }
}

/**
 * Turns a failed call into an `RpcError`, reading the status's
 * `google.rpc.ErrorInfo` and `google.rpc.BadRequest` details: the runwire
 * ErrorInfo if there is one, else the first ErrorInfo of another domain (see
 * `RpcError`). Errors of this client's own tree are returned unchanged.
 */
export function toRpcError(err: unknown): RunwireError {
  if (err instanceof RunwireError) return err;
  const ce = ConnectError.from(err);
  const info = runwireErrorInfo(ce) ?? ce.findDetails(ErrorInfoSchema)[0];
  const violations = ce
    .findDetails(BadRequestSchema)
    .flatMap((br) =>
      br.fieldViolations.map((v) => ({ field: v.field, description: v.description })),
    );
  return new RpcError({
    code: ce.code,
    statusMessage: ce.rawMessage,
    reasonName: info?.reason ?? "",
    domain: info?.domain ?? "",
    metadata: { ...info?.metadata },
    fieldViolations: violations,
    cause: ce,
  });
}

/**
 * The status's ErrorInfo of domain `runwire.v1` exactly, or undefined. Only
 * the runwire server attaches one, so its presence means the service itself
 * answered; an ErrorInfo of another domain (a proxy's) does not count.
 */
export function runwireErrorInfo(
  err: ConnectError,
): { reason: string; domain: string; metadata: Record<string, string> } | undefined {
  return err.findDetails(ErrorInfoSchema).find((i) => i.domain === ERROR_DOMAIN);
}

/**
 * The wait in milliseconds the status's `google.rpc.RetryInfo` asks for, or
 * undefined. The runwire server attaches one when it turns a call away at an
 * admission bound (RESOURCE_EXHAUSTED, reason OVERLOADED); any status may
 * carry one. A negative delay counts as none; of several, the longest counts.
 */
export function retryDelayMs(err: ConnectError): number | undefined {
  let asked: number | undefined;
  for (const info of err.findDetails(RetryInfoSchema)) {
    const delay = info.retryDelay;
    if (delay === undefined) continue;
    const ms = Number(delay.seconds) * 1000 + delay.nanos / 1e6;
    if (ms >= 0 && (asked === undefined || ms > asked)) asked = ms;
  }
  return asked;
}

function parseReason(name: string): ErrorReason {
  const value = ErrorReasonSchema.values.find((v) => v.name === `ERROR_REASON_${name}`);
  return value === undefined ? ErrorReason.UNSPECIFIED : (value.number as ErrorReason);
}

function codeName(code: Code): string {
  return Code[code] ?? `code ${code}`;
}
