/** The grammar checker against clients/GRAMMAR.md: valid streams, and one invalid stream per rule. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";
import type { RunEvent } from "../src/gen/runwire/v1/events_pb.js";
import { RunEventSchema } from "../src/gen/runwire/v1/events_pb.js";
import {
  EVENT_ROLES,
  GrammarChecker,
  GrammarViolationError,
  UnknownEventError,
  checkStream,
  type GrammarRule,
} from "../src/index.js";
import { E, ev, packageRoot, validRun } from "./_support.js";

interface Case {
  readonly name: string;
  readonly afterSeq?: number;
  readonly events: RunEvent[];
}

const VALID: Case[] = [
  { name: "smallest run", events: [ev(1, E.runStarted), ev(2, E.runCompleted)] },
  {
    name: "a fan-out: the node's attempt frames interleaved items, item 0 retried",
    events: [
      ev(1, E.runStarted),
      ev(2, E.nodeStarted, "a"),
      ev(3, E.nodeStarted, "a/1/1/0"),
      ev(4, E.nodeStarted, "a/1/1/1"),
      ev(5, E.nodeLog, "a/1/1/1"),
      ev(6, E.nodeFailed, "a/1/1/0"),
      ev(7, E.nodeRetrying, "a/1/1/0"),
      ev(8, E.nodeSucceeded, "a/1/1/1"),
      ev(9, E.nodeStarted, "a/1/2/0"),
      ev(10, E.nodeSucceeded, "a/1/2/0"),
      ev(11, E.nodeSkipped, "a/1/0/2"),
      ev(12, E.nodeSucceeded, "a"),
      ev(13, E.runCompleted),
    ],
  },
  {
    name: "a resumed stream: an item starts inside a visit opened before after_seq",
    afterSeq: 9,
    events: [
      ev(10, E.nodeStarted, "a/1/1/3"),
      ev(11, E.nodeSucceeded, "a/1/1/3"),
      ev(12, E.nodeSucceeded, "a"),
      ev(13, E.runCompleted),
    ],
  },
  {
    name: "logs, a retry, a skip and a failure edge",
    events: [
      ev(1, E.runStarted),
      ev(2, E.runStatusChanged),
      ev(3, E.nodeStarted, "build/1/1"),
      ev(4, E.nodeLog, "build/1/1"),
      ev(5, E.nodeHeartbeat, "build/1/1"),
      ev(6, E.nodeFailed, "build/1/1"),
      ev(7, E.nodeRetrying, "build/1/1"),
      ev(8, E.nodeStarted, "build/1/2"),
      ev(9, E.nodeLog, "build/1/2"),
      ev(10, E.nodeFailed, "build/1/2"),
      ev(11, E.nodeSkipped, "deploy/0/0"),
      ev(12, E.nodeStarted, "report"),
      ev(13, E.nodeSucceeded, "report"),
      ev(14, E.runStatusChanged),
      ev(15, E.runCompleted),
    ],
  },
  {
    name: "interleaved attempts of parallel nodes, AI output and gates",
    events: [
      ev(1, E.runStarted),
      ev(2, E.nodeStarted, "a"),
      ev(3, E.nodeStarted, "ai"),
      ev(4, E.nodeLog, "a"),
      ev(5, E.nodeToken, "ai"),
      ev(6, E.toolCall, "ai"),
      ev(7, E.aiInvocation, "ai"),
      ev(8, E.sandboxViolation, "a"),
      ev(9, E.nodeSucceeded, "ai"),
      ev(10, E.runPaused),
      ev(11, E.runResumed),
      ev(12, E.nodeFailed, "a"),
      ev(13, E.nodeStarted, "gate"),
      ev(14, E.approvalRequested, "gate"),
      ev(15, E.approvalResolved, "gate"),
      ev(16, E.nodeSucceeded, "gate"),
      ev(17, E.runCompleted),
    ],
  },
  {
    name: "a bounded loop visits a node again",
    events: [
      ev(1, E.runStarted),
      ev(2, E.nodeStarted, "poll/1/1"),
      ev(3, E.nodeSucceeded, "poll/1/1"),
      ev(4, E.nodeStarted, "poll/2/1"),
      ev(5, E.nodeSucceeded, "poll/2/1"),
      ev(6, E.iterationCapped, "poll/2/1"),
      ev(7, E.runCompleted),
    ],
  },
  {
    name: "a resumed stream inside attempts that opened before after_seq",
    afterSeq: 4,
    events: [
      ev(5, E.nodeLog, "a"),
      ev(6, E.nodeSucceeded, "a"),
      ev(7, E.nodeSucceeded, "b/1/2"),
      ev(8, E.nodeStarted, "c"),
      ev(9, E.nodeSucceeded, "c"),
      ev(10, E.runCompleted),
    ],
  },
  { name: "a resumed stream of only RunCompleted", afterSeq: 9, events: [ev(10, E.runCompleted)] },
];

/** One invalid stream per rule, each breaking only that rule first. */
const INVALID: Array<Case & { rule: GrammarRule; seq: number }> = [
  {
    rule: "seq-start",
    seq: 2,
    name: "the stream starts past after_seq + 1",
    events: [ev(2, E.runStarted), ev(3, E.runCompleted)],
  },
  {
    rule: "seq-start",
    seq: 1,
    name: "a resumed stream starts at the beginning",
    afterSeq: 3,
    events: [ev(1, E.runStarted)],
  },
  {
    rule: "seq-gapless",
    seq: 4,
    name: "a gap",
    events: [ev(1, E.runStarted), ev(2, E.runStatusChanged), ev(4, E.runCompleted)],
  },
  {
    rule: "seq-gapless",
    seq: 2,
    name: "a repeated seq",
    events: [ev(1, E.runStarted), ev(2, E.runStatusChanged), ev(2, E.runStatusChanged)],
  },
  {
    rule: "run-id-stable",
    seq: 2,
    name: "another run's event",
    events: [ev(1, E.runStarted), ev(2, E.runStatusChanged, "", "run_other")],
  },
  {
    rule: "run-started-first",
    seq: 1,
    name: "seq 1 is not RunStarted",
    events: [ev(1, E.runStatusChanged), ev(2, E.runCompleted)],
  },
  {
    rule: "run-started-first",
    seq: 2,
    name: "a second RunStarted",
    events: [ev(1, E.runStarted), ev(2, E.runStarted), ev(3, E.runCompleted)],
  },
  {
    rule: "run-completed-last",
    seq: 3,
    name: "an event after RunCompleted",
    events: [ev(1, E.runStarted), ev(2, E.runCompleted), ev(3, E.runStatusChanged)],
  },
  {
    rule: "run-completed-last",
    seq: 3,
    name: "a second RunCompleted",
    events: [ev(1, E.runStarted), ev(2, E.runCompleted), ev(3, E.runCompleted)],
  },
  {
    rule: "run-completed-last",
    seq: 2,
    name: "the stream ends without RunCompleted",
    events: [ev(1, E.runStarted), ev(2, E.runStatusChanged)],
  },
  {
    rule: "attempt-open",
    seq: 3,
    name: "NodeStarted while the node's attempt is open",
    events: [ev(1, E.runStarted), ev(2, E.nodeStarted, "a/1/1"), ev(3, E.nodeStarted, "a/1/2")],
  },
  {
    rule: "output-outside-attempt",
    seq: 2,
    name: "a log line before NodeStarted",
    events: [ev(1, E.runStarted), ev(2, E.nodeLog, "a")],
  },
  {
    rule: "output-outside-attempt",
    seq: 4,
    name: "a token after the attempt closed",
    events: [
      ev(1, E.runStarted),
      ev(2, E.nodeStarted, "a"),
      ev(3, E.nodeSucceeded, "a"),
      ev(4, E.nodeToken, "a"),
    ],
  },
  {
    rule: "output-outside-attempt",
    seq: 3,
    name: "a heartbeat for another attempt of the node",
    events: [ev(1, E.runStarted), ev(2, E.nodeStarted, "a/1/2"), ev(3, E.nodeHeartbeat, "a/1/1")],
  },
  {
    rule: "output-outside-attempt",
    seq: 7,
    name: "a resumed stream: a tool call after the attempt closed",
    afterSeq: 4,
    events: [ev(5, E.nodeLog, "a"), ev(6, E.nodeSucceeded, "a"), ev(7, E.toolCall, "a")],
  },
  {
    rule: "terminal-outside-attempt",
    seq: 2,
    name: "NodeSucceeded without NodeStarted",
    events: [ev(1, E.runStarted), ev(2, E.nodeSucceeded, "a")],
  },
  {
    rule: "terminal-outside-attempt",
    seq: 4,
    name: "a second terminal event for one attempt",
    events: [
      ev(1, E.runStarted),
      ev(2, E.nodeStarted, "a"),
      ev(3, E.nodeFailed, "a"),
      ev(4, E.nodeSucceeded, "a"),
    ],
  },
  {
    rule: "terminal-outside-attempt",
    seq: 3,
    name: "NodeFailed for another iteration",
    events: [ev(1, E.runStarted), ev(2, E.nodeStarted, "a/2/1"), ev(3, E.nodeFailed, "a/1/1")],
  },
  {
    rule: "skip-inside-attempt",
    seq: 3,
    name: "NodeSkipped while the node's attempt is open",
    events: [ev(1, E.runStarted), ev(2, E.nodeStarted, "a"), ev(3, E.nodeSkipped, "a")],
  },
  {
    rule: "item-outside-frame",
    seq: 2,
    name: "an item starts with no open attempt of its node",
    events: [ev(1, E.runStarted), ev(2, E.nodeStarted, "a/1/1/0")],
  },
  {
    rule: "item-outside-frame",
    seq: 3,
    name: "an item starts in another iteration than its node's visit",
    events: [ev(1, E.runStarted), ev(2, E.nodeStarted, "a"), ev(3, E.nodeStarted, "a/2/1/0")],
  },
  {
    rule: "item-unclosed",
    seq: 4,
    name: "the node's visit closes while an item is open",
    events: [
      ev(1, E.runStarted),
      ev(2, E.nodeStarted, "a"),
      ev(3, E.nodeStarted, "a/1/1/0"),
      ev(4, E.nodeSucceeded, "a"),
    ],
  },
  {
    rule: "attempt-unclosed",
    seq: 3,
    name: "RunCompleted while an attempt is open",
    events: [ev(1, E.runStarted), ev(2, E.nodeStarted, "a"), ev(3, E.runCompleted)],
  },
  {
    rule: "attempt-unclosed",
    seq: 7,
    name: "a resumed stream: RunCompleted while an attempt it saw open is open",
    afterSeq: 4,
    events: [ev(5, E.nodeLog, "a"), ev(6, E.nodeStarted, "b"), ev(7, E.runCompleted)],
  },
];

describe("grammar checker", () => {
  for (const c of VALID) {
    test(`test_grammar_accepts_${c.name}`, () => {
      checkStream(c.events, c.afterSeq ?? 0);
    });
  }

  for (const c of INVALID) {
    test(`test_grammar_${c.rule}_rejects_${c.name}`, () => {
      assert.throws(
        () => checkStream(c.events, c.afterSeq ?? 0),
        (err: unknown) => {
          assert.ok(err instanceof GrammarViolationError, String(err));
          assert.equal(err.rule, c.rule, err.message);
          assert.equal(err.seq, BigInt(c.seq), err.message);
          assert.match(err.message, new RegExp(`^${c.rule} at seq ${c.seq}: \\S`));
          return true;
        },
      );
    });
  }

  test("test_grammar_every_rule_has_an_invalid_stream", () => {
    const documented = rulesOfGrammarMd();
    assert.deepEqual([...new Set(INVALID.map((c) => c.rule))].sort(), [...documented].sort());
  });

  test("test_grammar_roles_cover_the_oneof", () => {
    const oneof = RunEventSchema.oneofs.find((o) => o.name === "event");
    assert.deepEqual(oneof?.fields.map((f) => f.localName).sort(), Object.keys(EVENT_ROLES).sort());
  });

  test("test_grammar_checker_reports_and_keeps_going", () => {
    const checker = new GrammarChecker();
    checker.feed(ev(1, E.runStarted));
    assert.throws(() => checker.feed(ev(3, E.runStatusChanged)), {
      message: /^seq-gapless at seq 3: /,
    });
    checker.feed(ev(4, E.runCompleted));
    checker.finish();
    assert.equal(checker.lastSeq, 4n);
  });

  test("test_grammar_unknown_variant_is_not_a_violation_but_an_upgrade_error", () => {
    const checker = new GrammarChecker();
    const unknown = ev(1, E.runStarted);
    unknown.event = { case: undefined };
    assert.throws(() => checker.feed(unknown), UnknownEventError);
  });

  test("test_grammar_long_valid_run", () => {
    checkStream(validRun(1000));
  });
});

/** The rule names in the table of clients/GRAMMAR.md. */
function rulesOfGrammarMd(): string[] {
  const text = readFileSync(path.resolve(packageRoot(), "../GRAMMAR.md"), "utf8");
  return [...text.matchAll(/^\| `([a-z-]+)` \|/gm)].map((m) => m[1] ?? "");
}
