/** watchEvents(): events across runs as an async iterable that resumes from the last cursor. */

import { Code, ConnectError } from "@connectrpc/connect";
import type { RunEvent } from "./gen/runwire/v1/events_pb.js";
import { StreamStart, type RunEventsFilter } from "./gen/runwire/v1/run_service_pb.js";
import type { RunServiceClient } from "./_client.js";
import { requireKnownEvent } from "./_events.js";
import { RunwireError, WatchEventsGaveUpError, toRpcError } from "./_errors.js";
import { Retrier, isRetryable, type RetryOptions } from "./_watch.js";

/**
 * How many runs the duplicate filter remembers (the most recently
 * delivered). A server resends at most what follows the cursor a call
 * resumed from, that is the runs of the last responses.
 */
const DEDUP_RUNS = 65_536;

/** Where `watchEvents` starts and which events it selects. */
export interface WatchEventsRequestInit {
  /** Resume after this cursor (a `WatchedEvent.cursor` of an earlier watch); empty starts at `start`. */
  cursor?: string | undefined;
  /** Where a watch without a cursor starts; LATEST when unset. */
  start?: StreamStart | undefined;
  /** Which runs and events; every event of every run when unset. */
  filter?: RunEventsFilter | undefined;
}

/** Tuning and hooks for `watchEvents`; the retry fields are `watch`'s. */
export interface WatchEventsOptions extends RetryOptions {
  /** Called before each reconnect, e.g. to log it. Must not throw. */
  onRetry?: ((retry: WatchEventsRetry) => void) | undefined;
}

/** What `onRetry` is told about a reconnect of `watchEvents`. */
export interface WatchEventsRetry {
  /** Failed attempts in a row, from 1. */
  readonly failedAttempts: number;
  /** The transport error that ended the last attempt. */
  readonly error: ConnectError;
  /** The delay before the next attempt. */
  readonly delayMs: number;
  /** The cursor the next attempt resumes from; empty: the request's start. */
  readonly cursor: string;
}

/** One event from `watchEvents`, with where to resume after it. */
export interface WatchedEvent {
  readonly event: RunEvent;
  /**
   * Resumes after this event without losing anything after it: the cursor
   * of the response that carried the event when it is that response's last,
   * otherwise the cursor before the response (a resume may deliver the
   * response's earlier events again). Empty before the first response of a
   * watch started without a cursor.
   */
  readonly cursor: string;
}

/**
 * Yields the events of every run the filter selects, in commit order
 * (RunService.WatchEvents). It never finishes by itself: break out of the
 * loop or abort `options.signal`.
 *
 * It remembers the cursor of the last response (empty ones too). After a
 * failure `watch` would retry (see `isRetryable`; an OK end is a cut
 * stream) it waits as `watch` does and calls again from that cursor with
 * the same filter, or with the request as given before any response came,
 * and drops an event whose run's seq it already yielded.
 *
 * @throws RpcError for a status that is not retried: INVALID_ARGUMENT with
 *   reason CURSOR_INVALID, OUT_OF_RANGE with reason CURSOR_EXPIRED, …
 * @throws WatchEventsGaveUpError after `giveUpAfterMs` without a response.
 * @throws UnknownEventError for a variant this client does not know.
 */
export async function* watchEvents(
  client: Pick<RunServiceClient, "watchEvents">,
  request: WatchEventsRequestInit = {},
  options: WatchEventsOptions = {},
): AsyncGenerator<WatchedEvent, never, undefined> {
  const { signal } = options;
  const retrier = new Retrier(options);
  let cursor = request.cursor ?? "";
  // run id -> the highest seq yielded; Map keeps insertion order, oldest first.
  const delivered = new Map<string, bigint>();
  const fresh = (event: RunEvent): boolean => {
    const last = delivered.get(event.runId);
    if (last !== undefined && event.seq <= last) return false;
    delivered.delete(event.runId);
    delivered.set(event.runId, event.seq);
    if (delivered.size > DEDUP_RUNS) {
      const oldest = delivered.keys().next().value;
      if (oldest !== undefined) delivered.delete(oldest);
    }
    return true;
  };

  for (;;) {
    signal?.throwIfAborted();
    const call = new AbortController();
    const cancel = (): void => call.abort(signal?.reason);
    signal?.addEventListener("abort", cancel, { once: true });
    let healthy = false;
    let failure: ConnectError;
    try {
      const filter = request.filter === undefined ? {} : { filter: request.filter };
      const req =
        cursor === ""
          ? { cursor: "", start: request.start ?? StreamStart.LATEST, ...filter }
          : { cursor, ...filter };
      for await (const response of client.watchEvents(req, { signal: call.signal })) {
        healthy = true;
        const before = cursor;
        const events = response.events.filter(fresh);
        for (const [index, event] of events.entries()) {
          requireKnownEvent(event);
          const last = index === events.length - 1;
          if (last && response.cursor !== "") cursor = response.cursor;
          yield { event, cursor: last ? cursor : before };
        }
        if (response.cursor !== "") cursor = response.cursor;
      }
      failure = new ConnectError("WatchEvents ended", Code.Unavailable);
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
    const error = failure;
    const at = cursor;
    await retrier.failed(
      healthy,
      error,
      (failedAttempts) => new WatchEventsGaveUpError(at, failedAttempts, error),
      (failedAttempts, delayMs) =>
        options.onRetry?.({ failedAttempts, error, delayMs, cursor: at }),
    );
  }
}
