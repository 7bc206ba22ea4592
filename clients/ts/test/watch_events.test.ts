/** watchEvents() against a real gRPC server on 127.0.0.1:0: cursors, resumes, dedup, typed errors. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { RunEventSchema } from "../src/gen/runwire/v1/events_pb.js";
import { RunEventsFilterSchema, StreamStart } from "../src/gen/runwire/v1/run_service_pb.js";
import {
  RpcError,
  UnknownEventError,
  WatchEventsGaveUpError,
  createRunServiceClient,
  watchEvents,
  type WatchEventsRequestInit,
  type WatchedEvent,
} from "../src/index.js";
import { E, ScriptedServer, scriptedServers, aborted, ev } from "./_support.js";

const FAST = { initialBackoffMs: 1, maxBackoffMs: 20 };

const { serveEvents: serve } = scriptedServers();

// Two runs interleaved in commit order.
const A1 = ev(1, E.runStarted, "", "run_a");
const B1 = ev(1, E.runStarted, "", "run_b");
const A2 = ev(2, E.runStatusChanged, "", "run_a");
const B2 = ev(2, E.runStatusChanged, "", "run_b");
const A3 = ev(3, E.runCompleted, "", "run_a");
const FILTER = create(RunEventsFilterSchema, { flowName: "deploy", labels: { team: "infra" } });

/** The first `n` items of a watch, which never ends by itself; then stops it. */
async function take(
  server: ScriptedServer,
  request: WatchEventsRequestInit,
  n: number,
  options = {},
): Promise<WatchedEvent[]> {
  const client = createRunServiceClient(server.address);
  const got: WatchedEvent[] = [];
  for await (const item of watchEvents(client, request, { ...FAST, ...options })) {
    got.push(item);
    if (got.length === n) break;
  }
  return got;
}

const keys = (items: WatchedEvent[]): string[] =>
  items.map((i) => `${i.event.runId}/${i.event.seq}`);

function runwireError(code: Code, reason: string): ConnectError {
  return new ConnectError("scripted", code, undefined, [
    { desc: ErrorInfoSchema, value: { reason, domain: "runwire.v1", metadata: {} } },
  ]);
}

describe("watchEvents", () => {
  test("test_watch_events_yields_events_with_the_cursor_to_resume_after_each", async () => {
    const server = await serve(async function* (_req, call) {
      yield { events: [A1, B1], cursor: "c2" };
      yield { events: [A2], cursor: "c3" };
      await aborted(call.signal);
    });
    const got = await take(server, { start: StreamStart.EARLIEST, filter: FILTER }, 3);
    assert.deepEqual(keys(got), ["run_a/1", "run_b/1", "run_a/2"]);
    assert.deepEqual(
      got.map((i) => i.cursor),
      ["", "c2", "c3"],
    );
    const [req] = server.eventsRequests;
    assert.equal(req?.cursor, "");
    assert.equal(req?.start, StreamStart.EARLIEST);
    assert.equal(req?.filter?.flowName, "deploy");
  });

  const failures: [string, ConnectError | undefined][] = [
    ["unavailable", new ConnectError("draining", Code.Unavailable)],
    ["internal_without_info", new ConnectError("stream reset", Code.Internal)],
    ["overloaded", runwireError(Code.ResourceExhausted, "OVERLOADED")],
    ["ok_end", undefined],
  ];
  for (const [name, failure] of failures) {
    test(`test_watch_events_resumes_from_the_last_cursor_and_drops_resent_events_${name}`, async () => {
      const server = await serve(async function* (_req, call) {
        if (call.index === 0) {
          yield { events: [A1, B1], cursor: "c2" };
          yield { cursor: "c5" };
          if (failure !== undefined) throw failure;
          return;
        }
        yield { events: [A1, B1, A2], cursor: "c6" };
        yield { events: [B2, A3], cursor: "c8" };
        await aborted(call.signal);
      });
      const got = await take(server, { filter: FILTER }, 5);
      assert.deepEqual(keys(got), ["run_a/1", "run_b/1", "run_a/2", "run_b/2", "run_a/3"]);
      assert.equal(got[2]?.cursor, "c6");
      assert.deepEqual(
        server.eventsRequests.map((r) => [r.cursor, r.filter?.flowName]),
        [
          ["", "deploy"],
          ["c5", "deploy"],
        ],
      );
    });
  }

  test("test_watch_events_restarts_at_start_when_no_response_came", async () => {
    const server = await serve(async function* (_req, call) {
      if (call.index === 0) throw new ConnectError("draining", Code.Unavailable);
      yield { events: [A1], cursor: "c1" };
      await aborted(call.signal);
    });
    await take(server, { start: StreamStart.EARLIEST }, 1);
    assert.deepEqual(
      server.eventsRequests.map((r) => [r.cursor, r.start]),
      [
        ["", StreamStart.EARLIEST],
        ["", StreamStart.EARLIEST],
      ],
    );
  });

  const cursorErrors: [Code, string][] = [
    [Code.InvalidArgument, "CURSOR_INVALID"],
    [Code.OutOfRange, "CURSOR_EXPIRED"],
    [Code.Internal, "INTERNAL"],
  ];
  for (const [code, reason] of cursorErrors) {
    test(`test_watch_events_throws_${reason}_without_retrying`, async () => {
      // eslint-disable-next-line require-yield
      const server = await serve(async function* () {
        throw runwireError(code, reason);
      });
      await assert.rejects(take(server, { cursor: "c9" }, 1), (err: unknown) => {
        assert.ok(err instanceof RpcError, String(err));
        assert.equal(err.code, code);
        assert.equal(err.reasonName, reason);
        return true;
      });
      assert.deepEqual(
        server.eventsRequests.map((r) => r.cursor),
        ["c9"],
      );
    });
  }

  test("test_watch_events_unknown_variant_is_an_upgrade_error", async () => {
    const future = fromBinary(
      RunEventSchema,
      new BinaryWriter()
        .tag(1, WireType.LengthDelimited)
        .string("run_a")
        .tag(2, WireType.Varint)
        .int64(2n)
        .tag(127, WireType.LengthDelimited)
        .bytes(new Uint8Array())
        .finish(),
    );
    const server = await serve(async function* (_req, call) {
      yield { events: [A1, future], cursor: "c2" };
      await aborted(call.signal);
    });
    await assert.rejects(take(server, {}, 2), UnknownEventError);
  });

  test("test_watch_events_gives_up_after_its_budget", async () => {
    // eslint-disable-next-line require-yield
    const server = await serve(async function* () {
      throw new ConnectError("down", Code.Unavailable);
    });
    await assert.rejects(take(server, {}, 1, { giveUpAfterMs: 20 }), WatchEventsGaveUpError);
  });
});
