/**
 * Watches one run: prints each event as one line of proto3 JSON on stdout and
 * checks the stream grammar over what it received.
 *
 *     node build/examples/watch.js --addr 127.0.0.1:50051 --run-id RUN_ID [--after-seq N]
 *         [--token TOKEN] [--tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem]]
 *         [--give-up-after SECONDS] [--kinds KIND,...] [--node-ids NODE,...]
 *     node build/examples/watch.js --events [--cursor CURSOR] [--start latest|earliest]
 *         [--flow-name NAME] [--kinds KIND,...] [--node-ids NODE,...] [--count N] [connection flags]
 *
 * --kinds and --node-ids filter the watch (the grammar check then follows the
 * filtered-stream rule). --events watches every run instead (WatchEvents,
 * resumed from the last cursor), printing the same lines, until --count
 * events (forever without it); it checks no grammar.
 *
 * Exit status, the same in every client's example: 0 at the run's end (after
 * RunCompleted, or told by the server that the run finished at or before
 * --after-seq) with the grammar held; 1 when the stream broke a grammar rule
 * or skipped a seq; 2 for bad usage; 3 when the watch failed (an RPC error,
 * an unknown event, the give-up budget). Reconnects and errors go to stderr,
 * so stdout holds only events.
 */

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { toJsonString } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { RunEventSchema } from "../src/gen/runwire/v1/events_pb.js";
import {
  EventFilterSchema,
  RunEventsFilterSchema,
  StreamStart,
  type EventFilter,
} from "../src/gen/runwire/v1/run_service_pb.js";
import {
  GrammarChecker,
  GrammarViolationError,
  SeqGapError,
  WATCH_DEFAULTS,
  createRunServiceClient,
  runStatusName,
  watch,
  watchEvents,
  type RunEnd,
} from "../src/index.js";

const USAGE =
  "usage: watch.js --addr HOST:PORT --run-id ID [--after-seq N] [--token TOKEN] " +
  "[--tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem]] [--give-up-after SECONDS] " +
  "[--kinds K,...] [--node-ids N,...]\n" +
  "       watch.js --addr HOST:PORT --events [--cursor C] [--start latest|earliest] " +
  "[--flow-name F] [--kinds K,...] [--node-ids N,...] [--count N] [connection flags]";

const HELP = `${USAGE}

  --addr HOST:PORT         the server (default 127.0.0.1:50051)
  --run-id ID              the run to watch (not with --events)
  --kinds K,...            only these event kinds (oneof names, comma-separated)
  --node-ids N,...         only these nodes' events (comma-separated)
  --events                 watch every run's events (WatchEvents) instead
  --cursor C               --events: resume after this cursor
  --start latest|earliest  --events without --cursor: where to start (default latest)
  --flow-name F            --events: only runs of this flow
  --count N                --events: exit 0 after this many events
  --after-seq N            print only the events after this seq (default 0)
  --token TOKEN            send \`authorization: Bearer TOKEN\`
  --tls-ca CA.pem          connect with TLS, trusting this PEM CA bundle
  --tls-cert CERT.pem      client certificate (PEM) for mutual TLS
  --tls-key KEY.pem        private key (PEM) of --tls-cert
  --give-up-after SECONDS  give up after failing this long without an answer;
                           0 retries forever (default ${WATCH_DEFAULTS.giveUpAfterMs / 1000})
`;

async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      strict: true,
      options: {
        addr: { type: "string", default: "127.0.0.1:50051" },
        "run-id": { type: "string" },
        kinds: { type: "string", default: "" },
        "node-ids": { type: "string", default: "" },
        events: { type: "boolean", default: false },
        cursor: { type: "string", default: "" },
        start: { type: "string", default: "latest" },
        "flow-name": { type: "string", default: "" },
        count: { type: "string", default: "0" },
        "after-seq": { type: "string", default: "0" },
        token: { type: "string" },
        "tls-ca": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "give-up-after": { type: "string", default: String(WATCH_DEFAULTS.giveUpAfterMs / 1000) },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const runId = args["run-id"];
  const giveUpAfter = Number(args["give-up-after"]);
  const [tlsCa, tlsCert, tlsKey] = [args["tls-ca"], args["tls-cert"], args["tls-key"]];
  if (
    (runId === undefined) !== args.events ||
    !/^\d+$/.test(args.count) ||
    !["latest", "earliest"].includes(args.start) ||
    !/^\d+$/.test(args["after-seq"]) ||
    !(giveUpAfter >= 0) ||
    (tlsCert === undefined) !== (tlsKey === undefined) ||
    (tlsCert !== undefined && tlsCa === undefined)
  ) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const afterSeq = BigInt(args["after-seq"]);

  const interceptors: Interceptor[] = [];
  const token = args.token;
  if (token !== undefined) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const client = createRunServiceClient(tlsCa === undefined ? args.addr : `https://${args.addr}`, {
    interceptors,
    ...(tlsCa === undefined
      ? {}
      : {
          nodeOptions: {
            ca: readFileSync(tlsCa),
            ...(tlsCert === undefined
              ? {}
              : { cert: readFileSync(tlsCert), key: readFileSync(tlsKey as string) }),
          },
        }),
  });
  const list = (value: string): string[] => value.split(",").filter((part) => part !== "");
  const filter: EventFilter | undefined =
    args.kinds === "" && args["node-ids"] === ""
      ? undefined
      : create(EventFilterSchema, { kinds: list(args.kinds), nodeIds: list(args["node-ids"]) });
  const giveUpAfterMs = giveUpAfter === 0 ? Infinity : giveUpAfter * 1000;
  if (args.events) {
    const count = Number(args.count);
    let printed = 0;
    try {
      const request = {
        cursor: args.cursor,
        start: args.start === "earliest" ? StreamStart.EARLIEST : StreamStart.LATEST,
        filter: create(RunEventsFilterSchema, {
          flowName: args["flow-name"],
          ...(filter === undefined ? {} : { events: filter }),
        }),
      };
      const items = watchEvents(client, request, {
        giveUpAfterMs,
        onRetry: (r) =>
          process.stderr.write(
            `watch: ${r.error.message}; resuming from cursor ${JSON.stringify(r.cursor)} in ${r.delayMs} ms\n`,
          ),
      });
      for await (const item of items) {
        process.stdout.write(`${toJsonString(RunEventSchema, item.event)}\n`);
        printed += 1;
        if (printed === count) return 0;
      }
    } catch (err) {
      process.stderr.write(`watch: ${err instanceof Error ? err.message : String(err)}\n`);
    }
    return 3;
  }
  if (runId === undefined) throw new Error("checked above");
  const checker = new GrammarChecker(afterSeq, filter);
  let violations = 0;
  const check = (fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      if (!(err instanceof GrammarViolationError)) throw err;
      violations += 1;
      process.stderr.write(`grammar: ${err.message}\n`);
    }
  };

  let end: RunEnd | undefined;
  try {
    const events = watch(client, runId, afterSeq, {
      giveUpAfterMs,
      filter,
      onRetry: (r) =>
        process.stderr.write(
          `watch: ${r.error.message}; resuming after seq ${r.afterSeq} in ${r.delayMs} ms\n`,
        ),
      onEnd: (e) => (end = e),
    });
    for await (const event of events) {
      process.stdout.write(`${toJsonString(RunEventSchema, event)}\n`);
      check(() => checker.feed(event));
    }
  } catch (err) {
    process.stderr.write(`watch: ${err instanceof Error ? err.message : String(err)}\n`);
    return err instanceof SeqGapError ? 1 : 3;
  }
  if (end === undefined) throw new Error("watch stopped without the run's end");
  if (end.lastSeq > afterSeq) {
    check(() => checker.finish());
  } else {
    // No RunCompleted line printed to say it: the run ended before --after-seq.
    process.stderr.write(
      `watch: run ${end.runId} finished ${runStatusName(end.status)} at seq ${end.lastSeq}\n`,
    );
  }
  return violations === 0 ? 0 : 1;
}

// Exit explicitly: the HTTP/2 connection would otherwise keep the process
// alive until it idles out. Waiting for stdout's drain keeps piped output whole.
const code = await main(process.argv.slice(2));
process.stdout.write("", () => process.exit(code));
