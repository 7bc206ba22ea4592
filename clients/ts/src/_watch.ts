/** watch(): a run's events as an async iterable that resumes across disconnects. */

import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RunEvent } from "./gen/runwire/v1/events_pb.js";
import type { RunServiceClient } from "./_client.js";
import { requireKnownEvent } from "./_events.js";
import {
  RunwireError,
  SeqGapError,
  WatchGaveUpError,
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
   * How long to keep reconnecting without a healthy stream before throwing
   * `WatchGaveUpError`. Default 60 s, so a server restart is ridden out.
   * `Infinity` never gives up.
   */
  giveUpAfterMs?: number | undefined;
  /**
   * A stream that delivered a response, or stayed open this long, counts as
   * healthy: a failure after it starts a fresh retry budget. Default 10 s.
   */
  healthyAfterMs?: number | undefined;
  /** Called before each reconnect, e.g. to log it. Must not throw. */
  onRetry?: ((retry: WatchRetry) => void) | undefined;
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
 * order, and ends after RunCompleted.
 *
 * The server sends `WatchRunResponse` batches. When a stream breaks (server
 * draining with UNAVAILABLE, a restart, a reset connection, an HTTP/2 stream
 * or a proxy failing with INTERNAL, UNKNOWN, CANCELLED, ABORTED or
 * DEADLINE_EXCEEDED without a runwire ErrorInfo, or an OK end before
 * RunCompleted; see `isRetryable`) the watch reconnects with `after_seq` set
 * to the last seq it yielded, after a capped exponential backoff with jitter,
 * and drops events it already yielded should the server send them again.
 *
 * Breaking out of the loop cancels the call.
 *
 * @throws RpcError for a status that is not retried (NOT_FOUND, INVALID_ARGUMENT,
 *   INTERNAL with a runwire ErrorInfo, …).
 * @throws WatchGaveUpError after `giveUpAfterMs` without a healthy stream.
 * @throws UnknownEventError for a variant this client does not know.
 * @throws SeqGapError if the server skips a seq.
 */
export async function* watch(
  client: Pick<RunServiceClient, "watchRun">,
  runId: string,
  afterSeq: bigint | number = 0n,
  options: WatchOptions = {},
): AsyncGenerator<RunEvent, void, undefined> {
  const initialBackoffMs = options.initialBackoffMs ?? 100;
  const maxBackoffMs = options.maxBackoffMs ?? 2_000;
  const giveUpAfterMs = options.giveUpAfterMs ?? 60_000;
  const healthyAfterMs = options.healthyAfterMs ?? 10_000;
  const { signal } = options;

  let lastSeq = BigInt(afterSeq);
  let failedAttempts = 0;
  let failingSince: number | undefined;

  for (;;) {
    signal?.throwIfAborted();
    const call = new AbortController();
    const cancel = (): void => call.abort(signal?.reason);
    signal?.addEventListener("abort", cancel, { once: true });
    const startedAt = performance.now();
    let healthy = false;
    let failure: ConnectError;
    try {
      const stream = client.watchRun({ runId, afterSeq: lastSeq }, { signal: call.signal });
      for await (const response of stream) {
        healthy = true;
        for (const event of response.events) {
          // After a reconnect the server may repeat what was already yielded.
          if (event.seq <= lastSeq) continue;
          if (event.seq !== lastSeq + 1n) throw new SeqGapError(runId, lastSeq + 1n, event.seq);
          requireKnownEvent(event);
          lastSeq = event.seq;
          yield event;
          if (event.event.case === "runCompleted") return;
        }
      }
      failure = new ConnectError("WatchRun ended before RunCompleted", Code.Unavailable);
    } catch (err) {
      if (err instanceof RunwireError) throw err;
      if (signal?.aborted) throw signal.reason;
      const ce = ConnectError.from(err);
      if (!isRetryable(ce)) throw toRpcError(ce);
      failure = ce;
    } finally {
      signal?.removeEventListener("abort", cancel);
      call.abort();
    }

    const now = performance.now();
    if (healthy || now - startedAt >= healthyAfterMs) {
      failedAttempts = 0;
      failingSince = undefined;
    }
    failingSince ??= now;
    failedAttempts += 1;
    if (now - failingSince >= giveUpAfterMs) {
      throw new WatchGaveUpError(runId, lastSeq, failedAttempts, failure);
    }
    const ceiling = Math.min(maxBackoffMs, initialBackoffMs * 2 ** (failedAttempts - 1));
    // Jitter in [ceiling/2, ceiling] keeps many watchers of a restarted
    // server from reconnecting in lockstep; the last try lands on the budget.
    const jittered = Math.round(ceiling * (0.5 + Math.random() / 2));
    const delayMs = Math.max(
      0,
      Math.min(jittered, Math.ceil(giveUpAfterMs - (now - failingSince))),
    );
    options.onRetry?.({ failedAttempts, error: failure, delayMs, afterSeq: lastSeq });
    try {
      await sleep(delayMs, undefined, signal === undefined ? undefined : { signal });
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw err;
    }
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
