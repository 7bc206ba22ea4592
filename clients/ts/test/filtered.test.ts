/** Filtered streams: the grammar's relaxation rule (clients/GRAMMAR.md) and watch with a filter. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RunEvent } from "../src/gen/runwire/v1/events_pb.js";
import { EventFilterSchema, type EventFilter } from "../src/gen/runwire/v1/run_service_pb.js";
import {
  GrammarChecker,
  GrammarViolationError,
  SeqGapError,
  checkStream,
  createRunServiceClient,
  watch,
  type RunEnd,
} from "../src/index.js";
import { E, RUN_ID, scriptedServers, ev } from "./_support.js";

const FAST = { initialBackoffMs: 1, maxBackoffMs: 20 };

const { serve } = scriptedServers();

/** seq 1..9: a whole run with one attempt each of nodes a and b, as in every client's tests. */
const RUN = [
  ev(1, E.runStarted),
  ev(2, E.runStatusChanged),
  ev(3, E.nodeStarted, "a"),
  ev(4, E.nodeLog, "a"),
  ev(5, E.nodeStarted, "b"),
  ev(6, E.nodeLog, "b"),
  ev(7, E.nodeSucceeded, "a"),
  ev(8, E.nodeSucceeded, "b"),
  ev(9, E.runCompleted),
];

function pick(...seqs: number[]): RunEvent[] {
  return seqs.map((seq) => RUN[seq - 1] as RunEvent);
}

const filter = (kinds: string[], nodeIds: string[] = []): EventFilter =>
  create(EventFilterSchema, { kinds, nodeIds });
const LOGS = filter(["node_log"]);
const ATTEMPTS = filter(["node_started", "node_succeeded", "node_failed", "node_log"]);
const NODE_A = filter([], ["a"]);

function violation(
  events: RunEvent[],
  afterSeq: number,
  f: EventFilter | undefined,
): [string, bigint] | undefined {
  try {
    checkStream(events, afterSeq, f);
    return undefined;
  } catch (err) {
    assert.ok(err instanceof GrammarViolationError, String(err));
    return [err.rule, err.seq];
  }
}

describe("filtered grammar", () => {
  const accepted: [string, EventFilter, number[], number][] = [
    ["logs", LOGS, [4, 6, 9], 0],
    ["logs resumed", LOGS, [6, 9], 4],
    ["attempt kinds", ATTEMPTS, [3, 4, 5, 6, 7, 8, 9], 0],
    ["node a", NODE_A, [1, 2, 3, 4, 7, 9], 0],
    ["only run_completed", filter(["run_completed"]), [9], 0],
  ];
  for (const [name, f, seqs, afterSeq] of accepted) {
    test(`test_grammar_accepts_filtered_stream_${name.replaceAll(" ", "_")}`, () => {
      assert.equal(violation(pick(...seqs), afterSeq, f), undefined);
    });
  }

  const late = ev(10, E.nodeLog, "b");
  const rejected: [string, EventFilter | undefined, RunEvent[], number, string, number][] = [
    ["no filter", undefined, pick(4, 6, 9), 0, "seq-start", 4],
    ["empty filter", filter([]), pick(4, 6, 9), 0, "seq-start", 4],
    ["no filter gap", undefined, pick(1, 2, 4), 0, "seq-gapless", 4],
    ["repeat", LOGS, pick(4, 4), 0, "seq-gapless", 4],
    ["reorder", LOGS, pick(6, 4), 0, "seq-gapless", 4],
    ["not after after_seq", LOGS, pick(4), 4, "seq-start", 4],
    ["after run_completed", LOGS, [...pick(4, 9), late], 0, "run-completed-last", 10],
    ["no run_completed", LOGS, pick(4), 0, "run-completed-last", 4],
    ["attempt kinds keep attempt-unclosed", ATTEMPTS, pick(3, 4, 5, 9), 0, "attempt-unclosed", 9],
    ["attempt kinds keep output-outside", ATTEMPTS, pick(4), 0, "output-outside-attempt", 4],
    ["node ids keep the attempt rules", NODE_A, pick(1, 2, 4), 0, "output-outside-attempt", 4],
    ["run id", LOGS, [...pick(4), ev(6, E.nodeLog, "b", "run_other")], 0, "run-id-stable", 6],
  ];
  for (const [name, f, events, afterSeq, rule, seq] of rejected) {
    test(`test_grammar_rejects_filtered_${name.replaceAll(" ", "_")}`, () => {
      assert.deepEqual(violation(events, afterSeq, f), [rule, BigInt(seq)]);
    });
  }

  test("test_grammar_filtered_checker_reports_progress", () => {
    const checker = new GrammarChecker(0n, LOGS);
    for (const event of pick(4, 9)) checker.feed(event);
    assert.equal(checker.lastSeq, 9n);
    checker.finish();
  });
});

describe("watch with a filter", () => {
  test("test_watch_with_a_filter_resumes_after_resume_after_seq", async () => {
    const server = await serve(async function* (_req, call) {
      if (call.index === 0) {
        yield { events: pick(4, 6), resumeAfterSeq: 8n };
        throw new ConnectError("draining", Code.Unavailable);
      }
      yield { events: pick(6), resumeAfterSeq: 8n };
      yield { events: pick(9), resumeAfterSeq: 9n };
    });
    const client = createRunServiceClient(server.address);
    const got: RunEvent[] = [];
    const it = watch(client, RUN_ID, 0n, { ...FAST, filter: LOGS });
    let end: RunEnd | undefined;
    for (;;) {
      const next = await it.next();
      if (next.done === true) {
        end = next.value;
        break;
      }
      got.push(next.value);
    }
    assert.deepEqual(
      got.map((e) => Number(e.seq)),
      [4, 6, 9],
    );
    checkStream(got, 0n, LOGS);
    assert.deepEqual(
      server.requests.map((r) => [Number(r.afterSeq), r.filter?.kinds]),
      [
        [0, ["node_log"]],
        [8, ["node_log"]],
      ],
    );
    assert.equal(end.lastSeq, 9n);
  });

  test("test_watch_with_a_filter_resumes_past_a_response_without_events", async () => {
    const server = await serve(async function* (_req, call) {
      if (call.index === 0) {
        yield { resumeAfterSeq: 5n };
        throw new ConnectError("draining", Code.Unavailable);
      }
      yield { events: pick(6, 9), resumeAfterSeq: 9n };
    });
    const client = createRunServiceClient(server.address);
    const got: RunEvent[] = [];
    for await (const event of watch(client, RUN_ID, 0n, { ...FAST, filter: LOGS })) got.push(event);
    assert.deepEqual(
      got.map((e) => Number(e.seq)),
      [6, 9],
    );
    assert.deepEqual(
      server.requests.map((r) => Number(r.afterSeq)),
      [0, 5],
    );
  });

  test("test_watch_with_a_filter_fails_when_run_completed_was_skipped", async () => {
    const server = await serve(async function* () {
      yield { events: pick(4), resumeAfterSeq: 6n };
      yield { streamEnd: { lastSeq: 9n }, resumeAfterSeq: 9n };
    });
    const client = createRunServiceClient(server.address);
    await assert.rejects(async () => {
      for await (const _ of watch(client, RUN_ID, 0n, { ...FAST, filter: LOGS })) {
        // drain
      }
    }, SeqGapError);
  });
});
