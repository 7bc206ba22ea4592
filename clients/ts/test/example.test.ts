/** examples/watch.ts as a process: one JSON line per event, grammar checked, exit status. */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { describe, test } from "node:test";
import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { RunEventSchema, RunStatus } from "../src/gen/runwire/v1/events_pb.js";
import {
  E,
  RUN_ID,
  scriptedServers,
  aborted,
  canonicalJson,
  ev,
  packageRoot,
  validRun,
} from "./_support.js";

const EXAMPLE = path.join(packageRoot(), "build", "examples", "watch.js");

const { serve, serveEvents } = scriptedServers();

interface Outcome {
  code: number | null;
  lines: string[];
  stderr: string;
}

/** Runs the example; `onLine` sees each stdout line as it arrives. */
function runExample(args: string[], onLine: (line: string) => void = () => {}): Promise<Outcome> {
  const child = spawn(process.execPath, [EXAMPLE, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  createInterface({ input: child.stdout }).on("line", (line) => {
    lines.push(line);
    onLine(line);
  });
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, lines, stderr }));
  });
}

describe("example watch script", () => {
  test("test_example_prints_every_event_once_across_a_dropped_connection", async () => {
    const run = validRun(8);
    const server = await serve(async function* (req, call) {
      if (call.index === 0) {
        yield { events: run.slice(0, 3) };
        await aborted(call.signal);
      } else {
        // Resend the last event the client saw, then the rest.
        yield { events: run.slice(Number(req.afterSeq) - 1) };
      }
    });
    const out = await runExample(["--addr", server.address, "--run-id", RUN_ID], (line) => {
      if (JSON.parse(line).seq === "3") server.dropConnections();
    });

    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(
      out.lines.map(canonicalJson),
      run.map((e) => canonicalJson(toJsonString(RunEventSchema, e))),
    );
    assert.match(out.stderr, /resuming after seq 3/);
    assert.deepEqual(
      server.requests.map((r) => r.afterSeq),
      [0n, 3n],
    );
  });

  test("test_example_resumes_from_after_seq", async () => {
    const run = validRun(6);
    const server = await serve(async function* (req) {
      yield { events: run.slice(Number(req.afterSeq)) };
    });
    const out = await runExample([
      "--addr",
      server.address,
      "--run-id",
      RUN_ID,
      "--after-seq",
      "4",
    ]);

    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(
      out.lines.map((l) => JSON.parse(l).seq),
      ["5", "6"],
    );
  });

  test("test_example_exits_1_when_the_grammar_breaks", async () => {
    const server = await serve(async function* () {
      yield { events: [ev(1, E.runStarted), ev(2, E.nodeLog, "a"), ev(3, E.runCompleted)] };
    });
    const out = await runExample(["--addr", server.address, "--run-id", RUN_ID]);

    assert.equal(out.code, 1);
    assert.equal(out.lines.length, 3);
    assert.match(out.stderr, /^grammar: output-outside-attempt at seq 2: /m);
  });

  test("test_example_exits_3_on_a_typed_error", async () => {
    const server = await serve(async function* () {
      yield* [];
      throw new ConnectError("run run_test not found", Code.NotFound, undefined, [
        { desc: ErrorInfoSchema, value: { reason: "RUN_NOT_FOUND", domain: "runwire.v1" } },
      ]);
    });
    const out = await runExample(["--addr", server.address, "--run-id", RUN_ID]);

    assert.equal(out.code, 3);
    assert.deepEqual(out.lines, []);
    assert.match(out.stderr, /NotFound: run run_test not found \(reason RUN_NOT_FOUND\)/);
  });

  test("test_example_exits_2_on_bad_usage", async () => {
    for (const args of [[], ["--run-id", RUN_ID, "--tls-cert", "c.pem"], ["--nope"]]) {
      const out = await runExample(args);
      assert.equal(out.code, 2, args.join(" "));
      assert.match(out.stderr, /^usage: /m);
    }
  });

  test("test_example_help_works", async () => {
    const out = await runExample(["--help"]);
    assert.equal(out.code, 0);
    const help = out.lines.join("\n");
    for (const flag of [
      "--addr",
      "--run-id",
      "--after-seq",
      "--token",
      "--tls-ca",
      "--tls-cert",
      "--tls-key",
      "--give-up-after",
    ]) {
      assert.ok(help.includes(flag), flag);
    }
  });

  test("test_example_at_the_end_of_a_finished_run_exits_0", async () => {
    const server = await serve(async function* () {
      yield { streamEnd: { lastSeq: 5n, status: RunStatus.SUCCEEDED } };
    });
    const out = await runExample([
      "--addr",
      server.address,
      "--run-id",
      RUN_ID,
      "--after-seq",
      "5",
    ]);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(out.lines, []);
    assert.equal(out.stderr, "watch: run run_test finished RUN_STATUS_SUCCEEDED at seq 5\n");
    assert.equal(server.requests.length, 1);
  });

  test("test_example_past_the_end_of_a_finished_run_exits_0", async () => {
    const server = await serve(async function* () {
      yield* [];
      throw new ConnectError("beyond", Code.OutOfRange, undefined, [
        {
          desc: ErrorInfoSchema,
          value: {
            reason: "AFTER_SEQ_BEYOND_END",
            domain: "runwire.v1",
            metadata: { last_seq: "5", status: "RUN_STATUS_FAILED" },
          },
        },
      ]);
    });
    const out = await runExample([
      "--addr",
      server.address,
      "--run-id",
      RUN_ID,
      "--after-seq",
      "10",
    ]);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(out.lines, []);
    assert.equal(out.stderr, "watch: run run_test finished RUN_STATUS_FAILED at seq 5\n");
    assert.equal(server.requests.length, 1);
  });
});

describe("example watch script, filtered and across runs", () => {
  test("test_example_kinds_checks_the_filtered_grammar", async () => {
    const run = validRun(5); // seq 3 is a log line
    const picked = [run[2], run[4]].filter((e) => e !== undefined);
    const server = await serve(async function* () {
      yield { events: picked, resumeAfterSeq: 5n };
    });
    const out = await runExample([
      "--addr",
      server.address,
      "--run-id",
      RUN_ID,
      "--kinds",
      "node_log",
    ]);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(
      out.lines,
      picked.map((e) => toJsonString(RunEventSchema, e)),
    );
    assert.deepEqual(server.requests[0]?.filter?.kinds, ["node_log"]);
  });

  test("test_example_events_prints_count_events_across_runs", async () => {
    const a = ev(1, E.runStarted);
    const b = ev(1, E.runStarted, "", "run_other");
    const b2 = ev(2, E.runCompleted, "", "run_other");
    const server = await serveEvents(async function* (_req, call) {
      if (call.index === 0) {
        yield { events: [a, b], cursor: "c2" };
        throw new ConnectError("draining", Code.Unavailable);
      }
      yield { events: [b, b2], cursor: "c3" };
      await aborted(call.signal);
    });
    const out = await runExample([
      "--addr", server.address, "--events", "--start", "earliest", "--flow-name", "deploy", "--count", "3",
    ]); // prettier-ignore
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(
      out.lines,
      [a, b, b2].map((e) => toJsonString(RunEventSchema, e)),
    );
    assert.deepEqual(
      server.eventsRequests.map((r) => [r.cursor, r.filter?.flowName]),
      [
        ["", "deploy"],
        ["c2", "deploy"],
      ],
    );
  });

  test("test_example_wants_either_run_id_or_events", async () => {
    for (const args of [
      ["--events", "--run-id", RUN_ID],
      ["--addr", "127.0.0.1:1"],
    ]) {
      const out = await runExample(args);
      assert.equal(out.code, 2, args.join(" "));
    }
  });
});
