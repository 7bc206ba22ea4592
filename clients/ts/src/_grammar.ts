/** The stream grammar checker of clients/GRAMMAR.md, with its rule names. */

import { RunEventSchema, type RunEvent } from "./gen/runwire/v1/events_pb.js";
import type { EventFilter } from "./gen/runwire/v1/run_service_pb.js";
import { EVENT_ROLES, requireKnownEvent, type KnownRunEvent } from "./_events.js";
import { GrammarViolationError, type GrammarRule } from "./_errors.js";

/** `(iteration, attempt)` of a node's attempt; the node id is the map key. */
interface Attempt {
  readonly iteration: number;
  readonly attempt: number;
}

/**
 * Checks one run's stream against the grammar, one event at a time.
 *
 * Create it with the `afterSeq` the watch started from, `feed` it every event
 * in order and call `finish` when the stream ends. Both throw
 * `GrammarViolationError` with the rule broken; when an event breaks several
 * rules, the first of the table in clients/GRAMMAR.md is reported. The
 * checker keeps its state after a violation, so feeding may go on.
 *
 * Given the watch's `EventFilter`, it applies the filtered-stream rule of
 * clients/GRAMMAR.md: seqs must increase but may skip, and the attempt rules
 * hold only when the filter's kinds select node_started, node_succeeded and
 * node_failed.
 *
 * @example
 *   const checker = new GrammarChecker(afterSeq);
 *   for await (const event of watch(client, runId, afterSeq)) checker.feed(event);
 *   checker.finish();
 */
export class GrammarChecker {
  readonly #afterSeq: bigint;
  #lastSeq: bigint | undefined;
  #runId: string | undefined;
  #completed = false;
  /** Each node's open attempt. */
  readonly #open = new Map<string, Attempt>();
  /**
   * Nodes whose attempt the checker saw open or close. On a resumed stream
   * (`afterSeq > 0`) the attempt rules only apply to these: an attempt of
   * another node may have opened before `afterSeq`.
   */
  readonly #seen = new Set<string>();
  /** "Filtered streams" of clients/GRAMMAR.md: seqs may skip. */
  readonly #filtered: boolean;
  /** Whether the attempt rules apply (not when the filter drops the framing). */
  readonly #attemptRules: boolean;

  constructor(afterSeq: bigint | number = 0n, filter?: EventFilter) {
    this.#afterSeq = BigInt(afterSeq);
    this.#filtered = isFiltered(filter);
    const kinds = filter?.kinds ?? [];
    this.#attemptRules =
      kinds.length === 0 || ATTEMPT_FRAMING.every((kind) => kinds.includes(kind));
  }

  /** The seq of the last event fed, or `afterSeq` before the first. */
  get lastSeq(): bigint {
    return this.#lastSeq ?? this.#afterSeq;
  }

  /**
   * Checks the next event of the stream.
   *
   * @throws GrammarViolationError when the event breaks a rule.
   * @throws UnknownEventError when the event's variant is unknown to this client.
   */
  feed(event: RunEvent): void {
    const known = requireKnownEvent(event);
    const violation = this.#check(known);
    this.#lastSeq = event.seq;
    this.#runId ??= event.runId;
    if (violation !== undefined) {
      throw new GrammarViolationError(violation[0], event.seq, violation[1]);
    }
  }

  /**
   * Checks the end of the stream.
   *
   * @throws GrammarViolationError (`run-completed-last`) when RunCompleted never came.
   */
  finish(): void {
    if (!this.#completed) {
      throw new GrammarViolationError(
        "run-completed-last",
        this.lastSeq,
        "stream finished without run_completed",
      );
    }
  }

  /** The first rule the event breaks; attempt state is updated either way. */
  #check(event: KnownRunEvent): [GrammarRule, string] | undefined {
    const envelope = this.#checkEnvelope(event);
    if (!this.#attemptRules) {
      if (event.event.case === "runCompleted") this.#completed = true;
      return envelope;
    }
    const attempt = this.#checkAttempt(event);
    return envelope ?? attempt;
  }

  #checkEnvelope(event: KnownRunEvent): [GrammarRule, string] | undefined {
    const seq = event.seq;
    const name = event.event.case;
    if (this.#filtered) {
      if (seq <= this.lastSeq) {
        const rule = this.#lastSeq === undefined ? "seq-start" : "seq-gapless";
        return [rule, `seq ${seq} follows seq ${this.lastSeq}, want more`];
      }
    } else if (this.#lastSeq === undefined) {
      if (seq !== this.#afterSeq + 1n) {
        return [
          "seq-start",
          `first event has seq ${seq}, want ${this.#afterSeq + 1n} (after_seq ${this.#afterSeq})`,
        ];
      }
    } else if (seq !== this.#lastSeq + 1n) {
      return ["seq-gapless", `seq ${seq} follows seq ${this.#lastSeq}, want ${this.#lastSeq + 1n}`];
    }
    if (this.#runId !== undefined && event.runId !== this.#runId) {
      return ["run-id-stable", `run_id ${q(event.runId)} differs from ${q(this.#runId)}`];
    }
    if (this.#completed) {
      return ["run-completed-last", `${variantName(event)} follows run_completed`];
    }
    if (seq === 1n && name !== "runStarted") {
      return ["run-started-first", `${variantName(event)} at seq 1, want run_started`];
    }
    if (seq !== 1n && name === "runStarted") {
      return ["run-started-first", `run_started at seq ${seq}, want seq 1`];
    }
    return undefined;
  }

  #checkAttempt(event: KnownRunEvent): [GrammarRule, string] | undefined {
    // A fan-out item is a track of its own, named `node[item_index]`; the
    // node's own attempt (no item) frames its items.
    const frame = event.nodeId;
    const item = event.itemIndex;
    const node = item === undefined ? frame : `${frame}[${item}]`;
    const here: Attempt = { iteration: event.iteration, attempt: event.attempt };
    const open = this.#open.get(node);
    const known = this.#afterSeq === 0n || this.#seen.has(node);
    const role = EVENT_ROLES[event.event.case];
    if (role === "attempt-start" && item !== undefined) {
      const openFrame = this.#open.get(frame);
      const frameKnown = this.#afterSeq === 0n || this.#seen.has(frame);
      if (
        (openFrame === undefined && frameKnown) ||
        (openFrame !== undefined && openFrame.iteration !== here.iteration)
      ) {
        this.#open.set(node, here);
        this.#seen.add(node);
        return [
          "item-outside-frame",
          `node_started for item ${q(node)} (${attemptText(here)}) outside an open visit of node ${q(frame)}`,
        ];
      }
    }
    if (role === "attempt-terminal" && item === undefined) {
      const items = [...this.#open.keys()].filter((n) => n.startsWith(`${frame}[`)).sort();
      if (items.length > 0) {
        if (open === undefined || same(open, here)) this.#open.delete(node);
        this.#seen.add(node);
        return [
          "item-unclosed",
          `${variantName(event)} for node ${q(frame)} while items are open: ${items.join(", ")}`,
        ];
      }
    }
    switch (role) {
      case "run-completed": {
        this.#completed = true;
        if (this.#open.size === 0) return undefined;
        const still = [...this.#open]
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([n, a]) => `node ${q(n)} (${attemptText(a)})`);
        return ["attempt-unclosed", `run_completed while attempts are open: ${still.join(", ")}`];
      }
      case "attempt-start":
        this.#open.set(node, here);
        this.#seen.add(node);
        if (open !== undefined) {
          return [
            "attempt-open",
            `node_started for node ${q(node)} (${attemptText(here)}) while its ${attemptText(open)} is open`,
          ];
        }
        return undefined;
      case "attempt-output":
        return this.#checkInAttempt("output-outside-attempt", event, node, here, open, known);
      case "attempt-terminal": {
        const violation = this.#checkInAttempt(
          "terminal-outside-attempt",
          event,
          node,
          here,
          open,
          known,
        );
        if (open === undefined || same(open, here)) this.#open.delete(node);
        this.#seen.add(node);
        return violation;
      }
      case "node-skip":
        if (open !== undefined) {
          return [
            "skip-inside-attempt",
            `node_skipped for node ${q(node)} while its ${attemptText(open)} is open`,
          ];
        }
        return undefined;
      case "run-started":
      case "anywhere":
        return undefined;
    }
  }

  #checkInAttempt(
    rule: GrammarRule,
    event: KnownRunEvent,
    node: string,
    here: Attempt,
    open: Attempt | undefined,
    known: boolean,
  ): [GrammarRule, string] | undefined {
    const what = `${variantName(event)} for node ${q(node)} (${attemptText(here)})`;
    if (open !== undefined && !same(open, here)) {
      return [rule, `${what} while its open attempt is ${attemptText(open)}`];
    }
    if (open === undefined && known) return [rule, `${what} with no open attempt`];
    return undefined;
  }
}

/**
 * Checks a whole stream: feeds every event, then finishes.
 *
 * @throws GrammarViolationError at the first rule broken.
 */
export function checkStream(
  events: Iterable<RunEvent>,
  afterSeq: bigint | number = 0n,
  filter?: EventFilter,
): void {
  const checker = new GrammarChecker(afterSeq, filter);
  for (const event of events) checker.feed(event);
  checker.finish();
}

/** The kinds a filter must select for the attempt rules to hold on its stream. */
const ATTEMPT_FRAMING = ["node_started", "node_succeeded", "node_failed"];

/** Whether a WatchRun with this filter may skip events: it names kinds or node ids. */
export function isFiltered(filter: EventFilter | undefined): boolean {
  return filter !== undefined && (filter.kinds.length > 0 || filter.nodeIds.length > 0);
}

function same(a: Attempt, b: Attempt): boolean {
  return a.iteration === b.iteration && a.attempt === b.attempt;
}

function attemptText(a: Attempt): string {
  return `iteration ${a.iteration} attempt ${a.attempt}`;
}

/** The proto name of the event's variant, e.g. `node_log`, as every client prints it. */
function variantName(event: KnownRunEvent): string {
  return RunEventSchema.field[event.event.case]?.name ?? event.event.case;
}

function q(s: string): string {
  return JSON.stringify(s);
}
