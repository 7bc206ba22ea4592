/** watch() and watchEvents() honour the server's google.rpc.RetryInfo, against a real gRPC server. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, RetryInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import type { RunEvent } from "../src/gen/runwire/v1/events_pb.js";
import {
  WatchGaveUpError,
  createRunServiceClient,
  watch,
  watchEvents,
  type RetryOptions,
  type WatchedEvent,
} from "../src/index.js";
import { retryDelayMs } from "../src/_errors.js";
import { E, RUN_ID, scriptedServers, aborted, ev, validRun, type WatchScript } from "./_support.js";

/** Fast backoff: 1 ms doubling to 20 ms. */
const FAST: RetryOptions = { initialBackoffMs: 1, maxBackoffMs: 20 };

/** A RetryInfo delay far above FAST's waits: a watch ignoring it comes back within milliseconds. */
const ASKED_MS = 300;

const { serve, serveEvents } = scriptedServers();

/** A runwire status with reason `reason` and a RetryInfo of `delayMs`. */
function asking(code: Code, reason: string, delayMs: number): ConnectError {
  return new ConnectError("busy", code, undefined, [
    { desc: ErrorInfoSchema, value: { reason, domain: "runwire.v1", metadata: {} } },
    {
      desc: RetryInfoSchema,
      value: {
        retryDelay: {
          seconds: BigInt(Math.floor(delayMs / 1000)),
          nanos: (delayMs % 1000) * 1_000_000,
        },
      },
    },
  ]);
}

/** When the fake server sent each failure and received each call, on its own clock. */
class Stamps {
  readonly failures: number[] = [];
  readonly calls: number[] = [];

  call(): void {
    this.calls.push(performance.now());
  }

  fail(err: ConnectError): ConnectError {
    this.failures.push(performance.now());
    return err;
  }

  /** From the first failure sent to the second call received. */
  gap(): number {
    const [failure] = this.failures;
    const second = this.calls[1];
    assert.ok(failure !== undefined && second !== undefined, "a failure and a second call");
    return second - failure;
  }
}

/** Fails the first call after two events with `failure`, then serves the rest of `run`. */
function busyThenServes(stamps: Stamps, run: RunEvent[], failure: ConnectError): WatchScript {
  return async function* (req, call) {
    stamps.call();
    if (call.index === 0) {
      yield { events: run.slice(0, 2) };
      throw stamps.fail(failure);
    }
    yield { events: run.filter((e) => e.seq > req.afterSeq) };
  };
}

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

describe("RetryInfo", () => {
  for (const [name, code, reason] of [
    ["overloaded", Code.ResourceExhausted, "OVERLOADED"],
    ["draining", Code.Unavailable, "SERVER_DRAINING"],
  ] as const) {
    test(`test_watch_waits_at_least_the_retry_info_delay_${name}`, async () => {
      const run = validRun(5);
      const stamps = new Stamps();
      const server = await serve(busyThenServes(stamps, run, asking(code, reason, ASKED_MS)));
      const client = createRunServiceClient(server.address);

      const got = await collect(watch(client, RUN_ID, 0n, FAST));

      assert.deepEqual(
        got.map((e) => e.seq),
        [1n, 2n, 3n, 4n, 5n],
      );
      assert.deepEqual(
        server.requests.map((r) => r.afterSeq),
        [0n, 2n],
      );
      // A lower bound on the server's own clock.
      assert.ok(stamps.gap() >= ASKED_MS, `second call ${stamps.gap()} ms after the failure`);
    });
  }

  test("test_watch_caps_the_retry_info_delay", async () => {
    const run = validRun(5);
    const stamps = new Stamps();
    const hour = 3_600_000;
    const server = await serve(
      busyThenServes(stamps, run, asking(Code.ResourceExhausted, "OVERLOADED", hour)),
    );
    const client = createRunServiceClient(server.address);

    const got = await collect(
      watch(client, RUN_ID, 0n, {
        ...FAST,
        maxServerDelayMs: ASKED_MS,
        signal: AbortSignal.timeout(10_000),
      }),
    );

    assert.equal(got.length, 5);
    assert.ok(stamps.gap() >= ASKED_MS, `second call ${stamps.gap()} ms after the failure`);
  });

  test("test_watch_gives_up_when_the_retry_info_delay_outlasts_its_budget", async () => {
    const run = validRun(5);
    const stamps = new Stamps();
    const server = await serve(
      busyThenServes(stamps, run, asking(Code.ResourceExhausted, "OVERLOADED", 20_000)),
    );
    const client = createRunServiceClient(server.address);

    await assert.rejects(
      collect(watch(client, RUN_ID, 0n, { ...FAST, giveUpAfterMs: 10_000 })),
      (err: unknown) => {
        assert.ok(err instanceof WatchGaveUpError, String(err));
        assert.ok(err.cause instanceof ConnectError);
        assert.equal(err.cause.code, Code.ResourceExhausted);
        assert.equal(err.lastSeq, 2n);
        assert.equal(err.failedAttempts, 1);
        return true;
      },
    );
    assert.equal(server.requests.length, 1, "no retry past the budget");
  });

  test("test_watch_events_waits_at_least_the_retry_info_delay", async () => {
    const stamps = new Stamps();
    const server = await serveEvents(async function* (_req, call) {
      stamps.call();
      if (call.index === 0) {
        yield { events: [ev(1, E.runStarted, "", "run_a")], cursor: "c1" };
        throw stamps.fail(asking(Code.ResourceExhausted, "OVERLOADED", ASKED_MS));
      }
      yield { events: [ev(1, E.runStarted, "", "run_b")], cursor: "c2" };
      await aborted(call.signal);
    });
    const client = createRunServiceClient(server.address);
    const got: WatchedEvent[] = [];
    for await (const item of watchEvents(client, {}, FAST)) {
      got.push(item);
      if (got.length === 2) break;
    }

    assert.deepEqual(
      got.map((i) => `${i.event.runId}/${i.event.seq}`),
      ["run_a/1", "run_b/1"],
    );
    assert.deepEqual(
      server.eventsRequests.map((r) => r.cursor),
      ["", "c1"],
    );
    assert.ok(stamps.gap() >= ASKED_MS, `second call ${stamps.gap()} ms after the failure`);
  });

  test("test_retry_delay_ms_reads_the_longest_retry_info", () => {
    assert.equal(retryDelayMs(new ConnectError("x", Code.ResourceExhausted)), undefined);
    assert.equal(retryDelayMs(asking(Code.ResourceExhausted, "OVERLOADED", 1_500)), 1_500);
    const several = new ConnectError("x", Code.Unavailable, undefined, [
      { desc: RetryInfoSchema, value: { retryDelay: { seconds: 1n } } },
      { desc: RetryInfoSchema, value: { retryDelay: { seconds: 3n } } },
      { desc: RetryInfoSchema, value: { retryDelay: { seconds: -5n } } },
    ]);
    assert.equal(retryDelayMs(several), 3_000);
  });
});
