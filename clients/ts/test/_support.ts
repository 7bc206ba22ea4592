/** Test helpers: event builders, canonical JSON and a scripted gRPC server on 127.0.0.1:0. */

import { AsyncLocalStorage } from "node:async_hooks";
import { existsSync } from "node:fs";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { afterEach } from "node:test";
import { fileURLToPath } from "node:url";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { RunEventSchema, type RunEvent } from "../src/gen/runwire/v1/events_pb.js";
import {
  RunService,
  type WatchEventsRequest,
  type WatchEventsResponseSchema,
  type WatchRunRequest,
  type WatchRunResponseSchema,
} from "../src/gen/runwire/v1/run_service_pb.js";

/** clients/ts, found from this file whether it runs from test/ or build/test/. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error("clients/ts/package.json not found");
    dir = up;
  }
  return dir;
}

/** fixtures/corpus of the repository. */
export function corpusDir(): string {
  return process.env["RUNWIRE_CORPUS_DIR"] ?? path.resolve(packageRoot(), "../../fixtures/corpus");
}

/**
 * The corpus README's canonical JSON: keys sorted recursively, compact
 * separators, non-ASCII left as is (JSON.stringify never escapes it).
 */
export function canonicalJson(text: string): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === "object") {
      const entries = Object.entries(v as Record<string, unknown>);
      entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return Object.fromEntries(entries.map(([k, x]) => [k, sort(x)]));
    }
    return v;
  };
  return JSON.stringify(sort(JSON.parse(text)));
}

export const RUN_ID = "run_test";

type EventInit = NonNullable<MessageInitShape<typeof RunEventSchema>["event"]>;

/**
 * A RunEvent of run `RUN_ID`. `node` is `"name"` or `"name/iteration/attempt"`
 * (iteration and attempt default to 1).
 */
export function ev(seq: number, event: EventInit, node = "", runId = RUN_ID): RunEvent {
  // node is "id", "id/iteration/attempt" or, for a fan-out item, "id/iteration/attempt/item".
  const [nodeId = "", iteration = node ? "1" : "0", attempt = node ? "1" : "0", item] =
    node.split("/");
  return create(RunEventSchema, {
    runId,
    seq: BigInt(seq),
    nodeId,
    iteration: Number(iteration),
    attempt: Number(attempt),
    ...(item === undefined ? {} : { itemIndex: Number(item) }),
    event,
  });
}

/** Shorthands for the variants tests use most, with empty payloads. */
export const E = {
  runStarted: { case: "runStarted", value: { flowName: "demo", nodeCount: 3 } },
  runStatusChanged: { case: "runStatusChanged", value: {} },
  runCompleted: { case: "runCompleted", value: {} },
  nodeStarted: { case: "nodeStarted", value: { adapter: "shell" } },
  nodeLog: { case: "nodeLog", value: { line: "hello" } },
  nodeToken: { case: "nodeToken", value: { delta: "hi" } },
  nodeHeartbeat: { case: "nodeHeartbeat", value: {} },
  toolCall: { case: "toolCall", value: { toolName: "fs.read" } },
  nodeSucceeded: { case: "nodeSucceeded", value: {} },
  nodeFailed: { case: "nodeFailed", value: { willRetry: true } },
  nodeSkipped: { case: "nodeSkipped", value: { reason: "condition" } },
  nodeRetrying: { case: "nodeRetrying", value: { nextAttempt: 2 } },
  iterationCapped: { case: "iterationCapped", value: { maxVisits: 2 } },
  approvalRequested: { case: "approvalRequested", value: { message: "ok?" } },
  approvalResolved: { case: "approvalResolved", value: {} },
  runPaused: { case: "runPaused", value: {} },
  runResumed: { case: "runResumed", value: {} },
  aiInvocation: { case: "aiInvocation", value: { model: "m" } },
  sandboxViolation: { case: "sandboxViolation", value: { target: "/etc" } },
} as const satisfies Record<string, EventInit>;

/**
 * A small valid run of `n` events (n >= 3): RunStarted, then an attempt of
 * node "a" with n-3 log lines, then its success ... then RunCompleted.
 */
export function validRun(n: number): RunEvent[] {
  const out = [ev(1, E.runStarted), ev(2, E.nodeStarted, "a")];
  for (let seq = 3; seq < n - 1; seq++) out.push(ev(seq, E.nodeLog, "a"));
  out.push(ev(n - 1, E.nodeSucceeded, "a"), ev(n, E.runCompleted));
  return out;
}

/** What a WatchRun script learns about its call. */
export interface ScriptCall {
  /** 0 for the first WatchRun the server saw, then 1, 2, … */
  readonly index: number;
  /** Aborted when the client goes away or the connection drops. */
  readonly signal: AbortSignal;
  /** The HTTP/2 stream under the call, to reset it. */
  readonly stream: http2.ServerHttp2Stream;
}

type Response = MessageInitShape<typeof WatchRunResponseSchema>;

/** The scripted body of WatchRun; it may also throw a ConnectError. */
export type WatchScript = (req: WatchRunRequest, call: ScriptCall) => AsyncIterable<Response>;

/** The scripted body of WatchEvents; it may also throw a ConnectError. */
export type EventsScript = (
  req: WatchEventsRequest,
  call: ScriptCall,
) => AsyncIterable<MessageInitShape<typeof WatchEventsResponseSchema>>;

/**
 * A real gRPC server (connect-node's handler on node:http2) on 127.0.0.1
 * whose WatchRun follows a script. It can drop every connection, stop and
 * come back on the same port, like a restarted runwire server.
 */
export class ScriptedServer {
  /** Every WatchRun request in arrival order. */
  readonly requests: WatchRunRequest[] = [];
  /** Every WatchEvents request in arrival order. */
  readonly eventsRequests: WatchEventsRequest[] = [];
  #server: http2.Http2Server | undefined;
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  readonly #handler: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;
  #port = 0;

  private constructor(script: WatchScript, eventsScript?: EventsScript) {
    const streams = new AsyncLocalStorage<http2.ServerHttp2Stream>();
    const adapter = connectNodeAdapter({
      grpc: true,
      grpcWeb: false,
      connect: false,
      routes: (router) =>
        router.service(RunService, {
          watchRun: (req: WatchRunRequest, ctx: HandlerContext) => {
            const index = this.requests.push(req) - 1;
            const stream = streams.getStore();
            if (stream === undefined) throw new Error("no HTTP/2 stream in context");
            return script(req, { index, signal: ctx.signal, stream });
          },
          watchEvents: (req: WatchEventsRequest, ctx: HandlerContext) => {
            const index = this.eventsRequests.push(req) - 1;
            const stream = streams.getStore();
            if (stream === undefined) throw new Error("no HTTP/2 stream in context");
            if (eventsScript === undefined) throw new Error("no WatchEvents script");
            return eventsScript(req, { index, signal: ctx.signal, stream });
          },
        }),
    });
    this.#handler = (req, res) => streams.run(req.stream, () => adapter(req, res));
  }

  /** Starts a server running `script` on a free port. */
  static async start(script: WatchScript): Promise<ScriptedServer> {
    const s = new ScriptedServer(script);
    await s.listen();
    return s;
  }

  /** Starts a server whose WatchEvents runs `script` on a free port. */
  static async startEvents(script: EventsScript): Promise<ScriptedServer> {
    // eslint-disable-next-line require-yield
    const s = new ScriptedServer(async function* () {
      throw new Error("no WatchRun script");
    }, script);
    await s.listen();
    return s;
  }

  /** `127.0.0.1:<port>`. */
  get address(): string {
    return `127.0.0.1:${this.#port}`;
  }

  /** Listens again, on the same port after the first time. */
  async listen(): Promise<void> {
    const server = http2.createServer(this.#handler);
    server.on("session", (session) => {
      this.#sessions.add(session);
      session.on("close", () => this.#sessions.delete(session));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#port, "127.0.0.1", () => resolve());
    });
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  /** Destroys every open connection, as a crashing peer or a proxy would. */
  dropConnections(): void {
    for (const session of this.#sessions) session.destroy();
  }

  /** Stops listening and drops every connection; `listen()` brings it back. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server === undefined) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    this.dropConnections();
    await closed;
  }
}

/** Resolves when `signal` aborts: a script holding its stream open until the drop. */
export function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** A promise with its resolve function, for event-driven hand-offs in tests. */
export function latch<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * Scripted servers for one test file: `serve` (WatchRun) and `serveEvents` (WatchEvents)
 * start one, and each is stopped after the test that started it.
 */
export function scriptedServers(): {
  serve: (script: WatchScript) => Promise<ScriptedServer>;
  serveEvents: (script: EventsScript) => Promise<ScriptedServer>;
} {
  const servers: ScriptedServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });
  const track = (server: ScriptedServer): ScriptedServer => {
    servers.push(server);
    return server;
  };
  return {
    serve: async (script) => track(await ScriptedServer.start(script)),
    serveEvents: async (script) => track(await ScriptedServer.startEvents(script)),
  };
}
