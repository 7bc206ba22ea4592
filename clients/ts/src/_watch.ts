/** watch(): a run's events as an async iterable that resumes across disconnects. */

import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorReason } from "./gen/runwire/v1/errors_pb.js";
import { RunStatus, type RunEvent } from "./gen/runwire/v1/events_pb.js";
import type { EventFilter } from "./gen/runwire/v1/run_service_pb.js";
import type { RunServiceClient } from "./_client.js";
import { requireKnownEvent } from "./_events.js";
import { isFiltered } from "./_grammar.js";
import {
  RunwireError,
  SeqGapError,
  WatchGaveUpError,
  retryDelayMs,
  runwireErrorInfo,
  toRpcError,
} from "./_errors.js";

/** Tuning and hooks for `watch`. Every field is optional. */
export interface WatchOptions {
  /** Stops the watch; the iterator then throws `signal.reason`. */
  signal?: AbortSignal | undefined;
  /** First reconnect delay; doubled per failed attempt. Default 100 ms. */
  initialBackoffMs?: number | undefined;
  /** Cap of the reconnect delay. Default 2 s. */
  maxBackoffMs?: number | undefined;
  /**
   * How long to keep reconnecting without receiving a response before
   * throwing `WatchGaveUpError`. Default 120 s, so a server restart is
   * ridden out. `Infinity` never gives up.
   */
  giveUpAfterMs?: number | undefined;
  /**
   * Cap of the wait a failed status's `google.rpc.RetryInfo` asks for (an
   * OVERLOADED server sends one). The wait before a reconnect is the longer
   * of the jittered backoff and that delay, so the watch never comes back
   * sooner than the server asked, and a bogus delay cannot stall it for
   * longer than this. When the capped delay would end past `giveUpAfterMs`,
   * the watch gives up at once (`WatchGaveUpError`, the last error as its
   * `cause`) instead of sleeping past its budget. Default 30 s.
   */
  maxServerDelayMs?: number | undefined;
  /** Called before each reconnect, e.g. to log it. Must not throw. */
  onRetry?: ((retry: WatchRetry) => void) | undefined;
  /**
   * Called once when the watch reaches the run's end, before the iterator
   * finishes: after RunCompleted, on the server's `streamEnd`, or when
   * `afterSeq` is beyond the end of the finished run. Must not throw.
   */
  onEnd?: ((end: RunEnd) => void) | undefined;
  /**
   * Yield only the events this filter selects (RunCompleted always comes).
   * With kinds or node ids, seqs may skip and a reconnect resumes after the
   * server's last `resumeAfterSeq`; check such a stream with
   * `new GrammarChecker(afterSeq, filter)`.
   */
  filter?: EventFilter | undefined;
}

/** The retry tuning `watch` and `watchEvents` share. */
export type RetryOptions = Pick<
  WatchOptions,
  "signal" | "initialBackoffMs" | "maxBackoffMs" | "giveUpAfterMs" | "maxServerDelayMs"
>;

/**
 * One streak of failures of a resuming stream: the waits and the give-up
 * budget. `watch` and `watchEvents` share it, so both follow the one retry
 * rule of clients/GRAMMAR.md ("Watching").
 */
export class Retrier {
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #giveUpAfterMs: number;
  readonly #maxServerDelayMs: number;
  readonly #signal: AbortSignal | undefined;
  #failedAttempts = 0;
  #failingSince: number | undefined;

  constructor(options: RetryOptions) {
    this.#initialBackoffMs = options.initialBackoffMs ?? WATCH_DEFAULTS.initialBackoffMs;
    this.#maxBackoffMs = options.maxBackoffMs ?? WATCH_DEFAULTS.maxBackoffMs;
    this.#giveUpAfterMs = options.giveUpAfterMs ?? WATCH_DEFAULTS.giveUpAfterMs;
    this.#maxServerDelayMs = options.maxServerDelayMs ?? WATCH_DEFAULTS.maxServerDelayMs;
    this.#signal = options.signal;
  }

  /**
   * After a failed attempt (`healthy`: it received a response first) that
   * ended with `error`: waits before the next one, telling `notify` the
   * failed attempts in a row and the wait, or throws
   * `giveUp(failedAttempts)` once the budget is spent (or the server's
   * RetryInfo asks for a wait past it).
   */
  async failed(
    healthy: boolean,
    error: ConnectError,
    giveUp: (failedAttempts: number) => Error,
    notify: (failedAttempts: number, delayMs: number) => void,
  ): Promise<void> {
    const now = performance.now();
    if (healthy) {
      this.#failedAttempts = 0;
      this.#failingSince = undefined;
    }
    this.#failingSince ??= now;
    this.#failedAttempts += 1;
    const failing = now - this.#failingSince;
    if (failing >= this.#giveUpAfterMs) throw giveUp(this.#failedAttempts);
    const ceiling = Math.min(
      this.#maxBackoffMs,
      this.#initialBackoffMs * 2 ** (this.#failedAttempts - 1),
    );
    // Jitter in [ceiling/2, ceiling] keeps many watchers of a restarted
    // server from reconnecting in lockstep; the last try lands on the budget.
    let wanted = Math.round(ceiling * (0.5 + Math.random() / 2));
    const asked = retryDelayMs(error);
    if (asked !== undefined) {
      // The server's RetryInfo: never come back sooner than it asked (up to
      // the cap), and give up now rather than sleep past the budget when it
      // asks for longer than is left.
      const capped = Math.min(asked, this.#maxServerDelayMs);
      if (failing + capped > this.#giveUpAfterMs) throw giveUp(this.#failedAttempts);
      wanted = Math.max(wanted, Math.ceil(capped));
    }
    const delayMs = Math.max(0, Math.min(wanted, Math.ceil(this.#giveUpAfterMs - failing)));
    notify(this.#failedAttempts, delayMs);
    const signal = this.#signal;
    try {
      // A timer may fire up to a millisecond early on the clock of
      // performance.now() (libuv counts whole, cached milliseconds): sleep
      // again until the wait has truly passed.
      const until = now + delayMs;
      let left = delayMs;
      do {
        await sleep(Math.ceil(left), undefined, signal === undefined ? undefined : { signal });
        left = until - performance.now();
      } while (left > 0);
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw err;
    }
  }
}

/**
 * The watch defaults, the same in every runwire client (clients/GRAMMAR.md,
 * "Watching"): 100 ms doubling to 2 s, each wait drawn from [wait/2, wait],
 * giving up after 120 s without a response; a server's RetryInfo delay is
 * honoured up to 30 s.
 */
export const WATCH_DEFAULTS = Object.freeze({
  initialBackoffMs: 100,
  maxBackoffMs: 2_000,
  giveUpAfterMs: 120_000,
  maxServerDelayMs: 30_000,
});

/** How a watched run ended. */
export interface RunEnd {
  readonly runId: string;
  /** The seq of the run's last event, RunCompleted. */
  readonly lastSeq: bigint;
  /** The run's final status; a number this client does not name stays a number. */
  readonly status: RunStatus;
  /**
   * The watch asked for events after a seq the run never reached (the
   * server answered OUT_OF_RANGE, reason AFTER_SEQ_BEYOND_END). Nothing was
   * missed; there was nothing.
   */
  readonly beyondEnd: boolean;
}

/** `RUN_STATUS_SUCCEEDED` for a status this client names, else its number. */
export function runStatusName(status: RunStatus): string {
  const name = RunStatus[status] as string | undefined;
  return name === undefined ? String(status) : `RUN_STATUS_${name}`;
}

/** The end an OUT_OF_RANGE AFTER_SEQ_BEYOND_END answer reports, else undefined. */
function beyondEnd(runId: string, err: ConnectError): RunEnd | undefined {
  if (err.code !== Code.OutOfRange) return undefined;
  const info = runwireErrorInfo(err);
  if (info === undefined || info.reason !== ErrorReason[ErrorReason.AFTER_SEQ_BEYOND_END])
    return undefined;
  const name = info.metadata["status"] ?? "";
  const named = (RunStatus as unknown as Record<string, number | undefined>)[
    name.replace(/^RUN_STATUS_/, "")
  ];
  const status = named ?? (/^\d+$/.test(name) ? Number(name) : RunStatus.UNSPECIFIED);
  const lastSeq = /^\d+$/.test(info.metadata["last_seq"] ?? "")
    ? BigInt(info.metadata["last_seq"] as string)
    : 0n;
  return { runId, lastSeq, status, beyondEnd: true };
}

/** What `onRetry` is told about a reconnect. */
export interface WatchRetry {
  /** Failed attempts in a row, from 1. */
  readonly failedAttempts: number;
  /** The transport error that ended the last attempt. */
  readonly error: ConnectError;
  /** The delay before the next attempt. */
  readonly delayMs: number;
  /** The `after_seq` the next attempt asks for: the last seq yielded. */
  readonly afterSeq: bigint;
}

/**
 * Yields a run's events with `seq > afterSeq`, each exactly once and in
 * order, and ends at the run's end: after RunCompleted, or when the server
 * says the stream reached the end of the finished run (`streamEnd`, or
 * OUT_OF_RANGE with reason AFTER_SEQ_BEYOND_END when `afterSeq` is beyond
 * it). The generator returns the `RunEnd`, which `onEnd` is told as well.
 *
 * The server sends `WatchRunResponse` batches. When a stream breaks (server
 * draining with UNAVAILABLE, a restart, a reset connection, an HTTP/2 stream
 * or a proxy failing with INTERNAL, UNKNOWN, CANCELLED, ABORTED or
 * DEADLINE_EXCEEDED without a runwire ErrorInfo, or an OK end before
 * the run's end; see `isRetryable`) the watch reconnects with `after_seq` set
 * to the last seq it yielded, after a capped exponential backoff with jitter
 * (and no sooner than a `google.rpc.RetryInfo` on the failed status asks, up
 * to `maxServerDelayMs`), and drops events it already yielded should the server send them again.
 *
 * With `options.filter` naming kinds or node ids, only the events it selects
 * are yielded, seqs may skip, and a reconnect resumes after the last
 * response's `resumeAfterSeq` (how far the server looked).
 *
 * Breaking out of the loop cancels the call.
 *
 * @throws RpcError for a status that is not retried (NOT_FOUND, INVALID_ARGUMENT,
 *   INTERNAL with a runwire ErrorInfo, …).
 * @throws WatchGaveUpError after `giveUpAfterMs` without a healthy stream,
 *   or when the server's RetryInfo asks for a wait past that budget.
 * @throws UnknownEventError for a variant this client does not know.
 * @throws SeqGapError if the server skips a seq.
 */
export async function* watch(
  client: Pick<RunServiceClient, "watchRun">,
  runId: string,
  afterSeq: bigint | number = 0n,
  options: WatchOptions = {},
): AsyncGenerator<RunEvent, RunEnd, undefined> {
  const { signal, filter } = options;
  const filtered = isFiltered(filter);
  const retrier = new Retrier(options);
  const ended = (end: RunEnd): RunEnd => {
    options.onEnd?.(end);
    return end;
  };

  // lastSeq: the seq last yielded. resume: where the next call starts, the
  // same unless a filter skipped events past it (resumeAfterSeq).
  let lastSeq = BigInt(afterSeq);
  let resume = lastSeq;

  for (;;) {
    signal?.throwIfAborted();
    const call = new AbortController();
    const cancel = (): void => call.abort(signal?.reason);
    signal?.addEventListener("abort", cancel, { once: true });
    let healthy = false;
    let failure: ConnectError;
    try {
      const stream = client.watchRun(
        { runId, afterSeq: resume, ...(filter === undefined ? {} : { filter }) },
        { signal: call.signal },
      );
      for await (const response of stream) {
        healthy = true;
        for (const event of response.events) {
          // After a reconnect the server may repeat what was already yielded.
          if (event.seq <= resume) continue;
          if (!filtered && event.seq !== lastSeq + 1n) {
            throw new SeqGapError(runId, lastSeq + 1n, event.seq);
          }
          requireKnownEvent(event);
          lastSeq = event.seq;
          resume = event.seq;
          yield event;
          if (event.event.case === "runCompleted") {
            return ended({ runId, lastSeq, status: event.event.value.status, beyondEnd: false });
          }
        }
        if (response.streamEnd !== undefined) {
          const { lastSeq: last, status } = response.streamEnd;
          // The end says events were skipped: judged before this response's
          // resumeAfterSeq, since RunCompleted, which every filter selects,
          // must have come before the end.
          if (last > resume) throw new SeqGapError(runId, resume + 1n, last);
          return ended({ runId, lastSeq: last, status, beyondEnd: false });
        }
        // The server looked this far; what it skipped is filtered out.
        if (filtered && response.resumeAfterSeq > resume) resume = response.resumeAfterSeq;
      }
      failure = new ConnectError("WatchRun ended before RunCompleted", Code.Unavailable);
    } catch (err) {
      if (err instanceof RunwireError) throw err;
      if (signal?.aborted) throw signal.reason;
      const ce = ConnectError.from(err);
      const end = beyondEnd(runId, ce);
      if (end !== undefined) return ended(end);
      if (!isRetryable(ce)) throw toRpcError(ce);
      failure = ce;
    } finally {
      signal?.removeEventListener("abort", cancel);
      call.abort();
    }

    const error = failure;
    await retrier.failed(
      healthy,
      error,
      (failedAttempts) => new WatchGaveUpError(runId, resume, failedAttempts, error),
      (failedAttempts, delayMs) =>
        options.onRetry?.({ failedAttempts, error, delayMs, afterSeq: resume }),
    );
  }
}

/**
 * Whether a failed WatchRun is worth resuming; the Go and Python clients
 * decide the same way.
 *
 * UNAVAILABLE always is: a draining server, a refused connection. INTERNAL,
 * UNKNOWN, ABORTED, CANCELLED and DEADLINE_EXCEEDED are when no ErrorInfo of
 * domain `runwire.v1` came with them: then they describe a dying HTTP/2
 * stream (Connect maps RST_STREAM INTERNAL_ERROR to INTERNAL and a dropped
 * connection to CANCELLED or ABORTED) or a proxy's timeout or reset (which
 * may carry the proxy's own ErrorInfo, of its own domain), not an answer of
 * the service, which attaches a runwire ErrorInfo to every error it raises;
 * its own INTERNAL is a fault that a retry would only repeat. Every other
 * code is the service's considered answer and is not retried.
 */
export function isRetryable(err: ConnectError): boolean {
  switch (err.code) {
    case Code.Unavailable:
      return true;
    case Code.ResourceExhausted:
      // The server turned the call away at its admission bound: retry.
      return runwireErrorInfo(err)?.reason === "OVERLOADED";
    case Code.Internal:
    case Code.Unknown:
    case Code.Aborted:
    case Code.Canceled:
    case Code.DeadlineExceeded:
      return runwireErrorInfo(err) === undefined;
    default:
      return false;
  }
}
