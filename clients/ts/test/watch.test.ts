/** watch() against a real gRPC server on 127.0.0.1:0 that drops, resets, drains and restarts. */

import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "../src/gen/runwire/v1/errors_pb.js";
import { RunEventSchema, RunStatus, type RunEvent } from "../src/gen/runwire/v1/events_pb.js";
import {
  RpcError,
  SeqGapError,
  UnknownEventError,
  WATCH_DEFAULTS,
  WatchGaveUpError,
  checkStream,
  createRunServiceClient,
  runStatusName,
  watch,
  type RunEnd,
  type WatchOptions,
  type WatchRetry,
} from "../src/index.js";
import { E, RUN_ID, scriptedServers, aborted, ev, latch, validRun } from "./_support.js";

/** Fast backoff so retries cost milliseconds; nothing waits on these timers. */
const FAST: WatchOptions = { initialBackoffMs: 1, maxBackoffMs: 20 };

const { serve } = scriptedServers();

/** The events with seq in [from, to]. */
function seqs(events: RunEvent[], from: number, to: number): RunEvent[] {
  return events.filter((e) => e.seq >= BigInt(from) && e.seq <= BigInt(to));
}

function seqList(events: RunEvent[]): number[] {
  return events.map((e) => Number(e.seq));
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function runwireError(
  message: string,
  code: Code,
  reason: string,
  extra: ConstructorParameters<typeof ConnectError>[3] = [],
): ConnectError {
  return new ConnectError(message, code, undefined, [
    {
      desc: ErrorInfoSchema,
      value: { reason, domain: "runwire.v1", metadata: { run_id: RUN_ID } },
    },
    ...(extra ?? []),
  ]);
}

describe("watch", () => {
  test("test_watch_resumes_after_dropped_connection_and_drain_without_duplicates_or_loss", async () => {
    // The server delivers 1..3, then the connection dies under it. The
    // client resumes from 3; the server re-sends 2 and 3 (as a replica
    // replaying a committed batch would), adds 4..8 and then drains with
    // UNAVAILABLE. The client resumes from 8, gets 8 again and the rest.
    const run = validRun(12);
    const server = await serve(async function* (req, call) {
      if (call.index === 0) {
        yield { events: seqs(run, 1, 2) };
        yield { events: seqs(run, 3, 3) };
        await aborted(call.signal);
      } else if (call.index === 1) {
        yield { events: seqs(run, 2, 6) };
        yield { events: seqs(run, 7, 8) };
        throw runwireError("server is draining", Code.Unavailable, "SERVER_DRAINING");
      } else {
        yield { events: seqs(run, Number(req.afterSeq), 12) };
      }
    });
    const client = createRunServiceClient(server.address);
    const retries: WatchRetry[] = [];
    const received: RunEvent[] = [];
    for await (const event of watch(client, RUN_ID, 0n, {
      ...FAST,
      onRetry: (r) => retries.push(r),
    })) {
      received.push(event);
      if (event.seq === 3n) server.dropConnections();
    }

    assert.deepEqual(seqList(received), range(1, 12));
    assert.deepEqual(
      server.requests.map((r) => [r.runId, r.afterSeq]),
      [
        [RUN_ID, 0n],
        [RUN_ID, 3n],
        [RUN_ID, 8n],
      ],
    );
    assert.deepEqual(
      retries.map((r) => r.afterSeq),
      [3n, 8n],
    );
    assert.equal(retries[1]?.error.code, Code.Unavailable);
    checkStream(received);
  });

  test("test_watch_rides_out_a_server_restart", async () => {
    const run = validRun(9);
    let restarted: Promise<void> | undefined;
    const server = await serve(async function* (req, call) {
      if (call.index === 0) {
        yield { events: seqs(run, 1, 4) };
        await aborted(call.signal);
      } else {
        yield { events: seqs(run, Number(req.afterSeq) + 1, 9) };
      }
    });
    const client = createRunServiceClient(server.address);
    const retries: WatchRetry[] = [];
    const onRetry = (r: WatchRetry): void => {
      retries.push(r);
      // Come back only once the client has been refused while the server
      // was away, so the test proves the retry over a missing server.
      if (restarted === undefined && r.error.code === Code.Unavailable) restarted = server.listen();
    };
    const received: RunEvent[] = [];
    for await (const event of watch(client, RUN_ID, 0n, { ...FAST, onRetry })) {
      received.push(event);
      if (event.seq === 4n) await server.stop();
    }

    assert.deepEqual(seqList(received), range(1, 9));
    assert.ok(restarted, "the client never saw the server gone");
    assert.ok(retries.length >= 2, `retries: ${retries.map((r) => r.error.message).join("; ")}`);
    assert.deepEqual(
      server.requests.map((r) => r.afterSeq),
      [0n, 4n],
    );
    checkStream(received);
  });

  test("test_watch_retries_an_http2_stream_reset_with_internal_error", async () => {
    const run = validRun(6);
    const sawTwo = latch();
    const server = await serve(async function* (req, call) {
      if (call.index === 0) {
        yield { events: seqs(run, 1, 2) };
        await sawTwo.promise;
        call.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        await aborted(call.signal);
      } else {
        yield { events: seqs(run, Number(req.afterSeq) + 1, 6) };
      }
    });
    const client = createRunServiceClient(server.address);
    const retries: WatchRetry[] = [];
    const received: RunEvent[] = [];
    for await (const event of watch(client, RUN_ID, 0n, {
      ...FAST,
      onRetry: (r) => retries.push(r),
    })) {
      received.push(event);
      if (event.seq === 2n) sawTwo.resolve();
    }

    assert.deepEqual(seqList(received), range(1, 6));
    assert.deepEqual(
      retries.map((r) => r.error.code),
      [Code.Internal],
    );
    assert.deepEqual(
      server.requests.map((r) => r.afterSeq),
      [0n, 2n],
    );
  });

  test("test_watch_resumes_when_the_stream_ends_ok_before_run_completed", async () => {
    const run = validRun(5);
    const server = await serve(async function* (req) {
      yield { events: seqs(run, Number(req.afterSeq) + 1, Math.min(Number(req.afterSeq) + 2, 5)) };
    });
    const client = createRunServiceClient(server.address);
    const received: RunEvent[] = [];
    for await (const event of watch(client, RUN_ID, 0n, FAST)) received.push(event);

    assert.deepEqual(seqList(received), range(1, 5));
    assert.deepEqual(
      server.requests.map((r) => r.afterSeq),
      [0n, 2n, 4n],
    );
  });

  test("test_watch_starts_after_after_seq", async () => {
    const run = validRun(7);
    const server = await serve(async function* (req) {
      yield { events: seqs(run, Number(req.afterSeq) + 1, 7) };
    });
    const client = createRunServiceClient(server.address);
    const received: RunEvent[] = [];
    for await (const event of watch(client, RUN_ID, 4, FAST)) received.push(event);

    assert.deepEqual(seqList(received), [5, 6, 7]);
    checkStream(received, 4);
  });

  test("test_watch_not_found_is_a_typed_error_without_retry", async () => {
    const server = await serve(async function* () {
      yield* [];
      throw runwireError("run run_test not found", Code.NotFound, "RUN_NOT_FOUND");
    });
    const client = createRunServiceClient(server.address);
    await assert.rejects(collect(watch(client, RUN_ID, 0n, FAST)), (err: unknown) => {
      assert.ok(err instanceof RpcError, String(err));
      assert.equal(err.code, Code.NotFound);
      assert.equal(err.reason, ErrorReason.RUN_NOT_FOUND);
      assert.equal(err.reasonName, "RUN_NOT_FOUND");
      assert.equal(err.domain, "runwire.v1");
      assert.deepEqual(err.metadata, { run_id: RUN_ID });
      assert.equal(err.statusMessage, "run run_test not found");
      return true;
    });
    assert.equal(server.requests.length, 1);
  });

  test("test_watch_invalid_argument_carries_bad_request_field_violations", async () => {
    const server = await serve(async function* () {
      yield* [];
      throw runwireError(
        "after_seq must not be negative",
        Code.InvalidArgument,
        "REQUEST_INVALID",
        [
          {
            desc: BadRequestSchema,
            value: { fieldViolations: [{ field: "after_seq", description: "-1 is negative" }] },
          },
        ],
      );
    });
    const client = createRunServiceClient(server.address);
    await assert.rejects(collect(watch(client, RUN_ID, -1n, FAST)), (err: unknown) => {
      assert.ok(err instanceof RpcError, String(err));
      assert.equal(err.code, Code.InvalidArgument);
      assert.equal(err.reason, ErrorReason.REQUEST_INVALID);
      assert.deepEqual(err.fieldViolations, [
        { field: "after_seq", description: "-1 is negative" },
      ]);
      assert.match(err.message, /after_seq: -1 is negative/);
      return true;
    });
    assert.equal(server.requests.length, 1);
  });

  /**
   * How a WatchRun that fails with a status is handled, by code and the
   * ErrorInfos it carries: only an ErrorInfo of domain `runwire.v1` marks an
   * INTERNAL (UNKNOWN, CANCELLED, ABORTED, DEADLINE_EXCEEDED) as the
   * service's own answer; a proxy's ErrorInfo does not, and such a status is
   * resumed. The first call fails after `before` events; a resumed watch
   * must then get the rest exactly once.
   */
  type ErrorDetail = NonNullable<ConstructorParameters<typeof ConnectError>[3]>[number];
  const PROXY_INFO: ErrorDetail = {
    desc: ErrorInfoSchema,
    value: { reason: "UPSTREAM_RESET", domain: "proxy.example.com", metadata: { hop: "edge-1" } },
  };
  const RUNWIRE_INFO: ErrorDetail = {
    desc: ErrorInfoSchema,
    value: { reason: "INTERNAL", domain: "runwire.v1", metadata: { run_id: RUN_ID } },
  };
  interface StatusCase {
    name: string;
    code: Code;
    details: ErrorDetail[];
    /** Events the failing call delivers first; 0 makes it a trailers-only response. */
    before: number;
    /** What the RpcError exposes, or undefined when the watch must resume. */
    raises?: { domain: string; reasonName: string; reason: ErrorReason; metadata: object };
  }
  const RUNWIRE_INTERNAL = {
    domain: "runwire.v1",
    reasonName: "INTERNAL",
    reason: ErrorReason.INTERNAL,
    metadata: { run_id: RUN_ID },
  };
  const STATUS_CASES: StatusCase[] = [
    {
      name: "internal_with_proxy_error_info",
      code: Code.Internal,
      details: [PROXY_INFO],
      before: 2,
    },
    {
      name: "internal_with_proxy_error_info_before_any_event",
      code: Code.Internal,
      details: [PROXY_INFO],
      before: 0,
    },
    { name: "unknown_with_proxy_error_info", code: Code.Unknown, details: [PROXY_INFO], before: 2 },
    { name: "aborted_with_proxy_error_info", code: Code.Aborted, details: [PROXY_INFO], before: 2 },
    {
      name: "cancelled_with_proxy_error_info",
      code: Code.Canceled,
      details: [PROXY_INFO],
      before: 2,
    },
    {
      name: "deadline_exceeded_with_proxy_error_info",
      code: Code.DeadlineExceeded,
      details: [PROXY_INFO],
      before: 2,
    },
    { name: "internal_without_error_info", code: Code.Internal, details: [], before: 2 },
    {
      name: "internal_with_runwire_error_info",
      code: Code.Internal,
      details: [RUNWIRE_INFO],
      before: 0,
      raises: RUNWIRE_INTERNAL,
    },
    {
      name: "internal_with_runwire_error_info_after_events",
      code: Code.Internal,
      details: [RUNWIRE_INFO],
      before: 2,
      raises: RUNWIRE_INTERNAL,
    },
    {
      name: "internal_with_proxy_then_runwire_error_info",
      code: Code.Internal,
      details: [PROXY_INFO, RUNWIRE_INFO],
      before: 0,
      raises: RUNWIRE_INTERNAL,
    },
    {
      name: "not_found_with_proxy_error_info",
      code: Code.NotFound,
      details: [PROXY_INFO],
      before: 0,
      // Only a foreign ErrorInfo: shown as received, but no runwire reason.
      raises: {
        domain: "proxy.example.com",
        reasonName: "UPSTREAM_RESET",
        reason: ErrorReason.UNSPECIFIED,
        metadata: { hop: "edge-1" },
      },
    },
  ];
  for (const c of STATUS_CASES) {
    const verdict = c.raises === undefined ? "is_retried" : "is_raised";
    test(`test_watch_status_${c.name}_${verdict}`, async () => {
      const run = validRun(6);
      const server = await serve(async function* (req, call) {
        if (call.index === 0) {
          if (c.before > 0) yield { events: seqs(run, 1, c.before) };
          throw new ConnectError("stream failed", c.code, undefined, c.details);
        }
        yield { events: seqs(run, Number(req.afterSeq) + 1, 6) };
      });
      const client = createRunServiceClient(server.address);
      const retries: WatchRetry[] = [];
      const received: RunEvent[] = [];
      const watching = (async () => {
        for await (const event of watch(client, RUN_ID, 0n, {
          ...FAST,
          onRetry: (r) => retries.push(r),
        })) {
          received.push(event);
        }
      })();

      const { raises } = c;
      if (raises === undefined) {
        await watching;
        assert.deepEqual(seqList(received), range(1, 6));
        assert.deepEqual(
          retries.map((r) => r.error.code),
          [c.code],
        );
        assert.deepEqual(
          retries[0]?.error.findDetails(ErrorInfoSchema).map((i) => i.domain),
          c.details.map(() => "proxy.example.com"),
        );
        assert.deepEqual(
          server.requests.map((r) => r.afterSeq),
          [0n, BigInt(c.before)],
        );
        checkStream(received);
        return;
      }
      await assert.rejects(watching, (err: unknown) => {
        assert.ok(err instanceof RpcError, String(err));
        assert.equal(err.code, c.code);
        assert.equal(err.domain, raises.domain);
        assert.equal(err.reasonName, raises.reasonName);
        assert.equal(err.reason, raises.reason);
        assert.deepEqual(err.metadata, raises.metadata);
        assert.equal(err.statusMessage, "stream failed");
        return true;
      });
      assert.deepEqual(seqList(received), range(1, c.before));
      assert.deepEqual(retries, []);
      assert.equal(server.requests.length, 1);
    });
  }

  test("test_watch_unknown_variant_is_an_upgrade_error", async () => {
    const future = fromBinary(
      RunEventSchema,
      new BinaryWriter()
        .tag(1, WireType.LengthDelimited)
        .string(RUN_ID)
        .tag(2, WireType.Varint)
        .int64(2n)
        .tag(127, WireType.LengthDelimited)
        .bytes(new Uint8Array())
        .finish(),
    );
    const server = await serve(async function* () {
      yield { events: [ev(1, E.runStarted), future] };
    });
    const client = createRunServiceClient(server.address);
    const received: RunEvent[] = [];
    await assert.rejects(
      async () => {
        for await (const event of watch(client, RUN_ID, 0n, FAST)) received.push(event);
      },
      (err: unknown) => {
        assert.ok(err instanceof UnknownEventError, String(err));
        assert.match(err.message, /^unknown event, upgrade the client/);
        assert.equal(err.seq, 2n);
        return true;
      },
    );
    assert.deepEqual(seqList(received), [1]);
  });

  test("test_watch_seq_gap_is_an_error_not_a_silent_loss", async () => {
    const server = await serve(async function* () {
      yield { events: [ev(1, E.runStarted), ev(3, E.runCompleted)] };
    });
    const client = createRunServiceClient(server.address);
    await assert.rejects(collect(watch(client, RUN_ID, 0n, FAST)), (err: unknown) => {
      assert.ok(err instanceof SeqGapError, String(err));
      assert.equal(err.expectedSeq, 2n);
      assert.equal(err.receivedSeq, 3n);
      return true;
    });
  });

  test("test_watch_gives_up_after_its_budget_without_a_healthy_stream", async () => {
    const server = await serve(async function* () {
      yield* [];
      throw runwireError("server is draining", Code.Unavailable, "SERVER_DRAINING");
    });
    const client = createRunServiceClient(server.address);
    await assert.rejects(
      collect(watch(client, RUN_ID, 0n, { ...FAST, giveUpAfterMs: 30 })),
      (err: unknown) => {
        assert.ok(err instanceof WatchGaveUpError, String(err));
        assert.ok(err.cause instanceof ConnectError);
        assert.equal(err.cause.code, Code.Unavailable);
        assert.equal(err.lastSeq, 0n);
        assert.ok(err.failedAttempts >= 2);
        return true;
      },
    );
    assert.ok(server.requests.length >= 2);
  });

  test("test_watch_break_cancels_the_call", async () => {
    const serverSawCancel = latch();
    const server = await serve(async function* (_req, call) {
      yield { events: [ev(1, E.runStarted)] };
      await aborted(call.signal);
      serverSawCancel.resolve();
    });
    const client = createRunServiceClient(server.address);
    for await (const event of watch(client, RUN_ID, 0n, FAST)) {
      assert.equal(event.seq, 1n);
      break;
    }
    await serverSawCancel.promise;
    assert.equal(server.requests.length, 1);
  });

  test("test_watch_abort_signal_stops_it", async () => {
    const server = await serve(async function* (_req, call) {
      yield { events: [ev(1, E.runStarted)] };
      await aborted(call.signal);
    });
    const client = createRunServiceClient(server.address);
    const stop = new AbortController();
    const reason = new Error("stopped by test");
    await assert.rejects(async () => {
      for await (const _ of watch(client, RUN_ID, 0n, { ...FAST, signal: stop.signal })) {
        stop.abort(reason);
      }
    }, reason);
  });

  test("test_watch_defaults_are_the_same_in_every_client", () => {
    assert.deepEqual(
      { ...WATCH_DEFAULTS },
      {
        initialBackoffMs: 100,
        maxBackoffMs: 2_000,
        giveUpAfterMs: 120_000,
        maxServerDelayMs: 30_000,
      },
    );
  });

  // A watcher that saw RunCompleted's seq but not the stream's end resumes
  // at afterSeq = last: the server's streamEnd ends the watch, no retry.
  test("test_watch_at_the_last_seq_of_a_finished_run_ends_with_its_status", async () => {
    const server = await serve(async function* () {
      yield { streamEnd: { lastSeq: 5n, status: RunStatus.FAILED } };
    });
    const client = createRunServiceClient(server.address);
    const ends: RunEnd[] = [];
    const events = watch(client, RUN_ID, 5n, { ...FAST, onEnd: (e) => ends.push(e) });
    const first = await events.next();
    const want = { runId: RUN_ID, lastSeq: 5n, status: RunStatus.FAILED, beyondEnd: false };
    assert.deepEqual(first, { done: true, value: want });
    assert.deepEqual(ends, [want]);
    assert.equal(runStatusName(want.status), "RUN_STATUS_FAILED");
    assert.deepEqual(
      server.requests.map((r) => r.afterSeq),
      [5n],
    );
  });

  test("test_watch_past_the_end_of_a_finished_run_ends_with_its_status", async () => {
    const server = await serve(async function* () {
      yield* [];
      throw new ConnectError("beyond", Code.OutOfRange, undefined, [
        {
          desc: ErrorInfoSchema,
          value: {
            reason: "AFTER_SEQ_BEYOND_END",
            domain: "runwire.v1",
            metadata: { last_seq: "5", status: "RUN_STATUS_SUCCEEDED", after_seq: "10" },
          },
        },
      ]);
    });
    const client = createRunServiceClient(server.address);
    const ends: RunEnd[] = [];
    const received = await collect(
      watch(client, RUN_ID, 10n, { ...FAST, onEnd: (e) => ends.push(e) }),
    );
    assert.deepEqual(received, []);
    assert.deepEqual(ends, [
      { runId: RUN_ID, lastSeq: 5n, status: RunStatus.SUCCEEDED, beyondEnd: true },
    ]);
    assert.equal(server.requests.length, 1);
  });

  test("test_watch_resumed_after_the_run_finished_between_reconnects", async () => {
    const run = validRun(6);
    const server = await serve(async function* (req, call) {
      if (call.index === 0) {
        yield { events: seqs(run, 1, 3) };
        throw new ConnectError("restarting", Code.Unavailable);
      }
      yield { events: seqs(run, Number(req.afterSeq) + 1, 6) };
      yield { streamEnd: { lastSeq: 6n, status: RunStatus.SUCCEEDED } };
    });
    const client = createRunServiceClient(server.address);
    const ends: RunEnd[] = [];
    const received = await collect(
      watch(client, RUN_ID, 0n, { ...FAST, onEnd: (e) => ends.push(e) }),
    );
    assert.deepEqual(seqList(received), range(1, 6));
    assert.deepEqual(
      ends.map((e) => e.lastSeq),
      [6n],
    );
    assert.deepEqual(
      server.requests.map((r) => r.afterSeq),
      [0n, 3n],
    );
  });

  test("test_watch_end_keeps_a_status_newer_than_the_client", async () => {
    const server = await serve(async function* () {
      yield { streamEnd: { lastSeq: 5n, status: 42 as RunStatus } };
    });
    const client = createRunServiceClient(server.address);
    const ends: RunEnd[] = [];
    await collect(watch(client, RUN_ID, 5n, { ...FAST, onEnd: (e) => ends.push(e) }));
    assert.equal(ends[0]?.status, 42);
    assert.equal(runStatusName(42 as RunStatus), "42");
  });

  test("test_watch_end_past_the_last_event_is_a_seq_gap", async () => {
    const run = validRun(6);
    const server = await serve(async function* () {
      yield { events: seqs(run, 1, 3) };
      yield { streamEnd: { lastSeq: 6n, status: RunStatus.SUCCEEDED } };
    });
    const client = createRunServiceClient(server.address);
    const received: RunEvent[] = [];
    await assert.rejects(async () => {
      for await (const e of watch(client, RUN_ID, 0n, FAST)) received.push(e);
    }, SeqGapError);
    assert.deepEqual(seqList(received), [1, 2, 3]);
  });
});

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}
