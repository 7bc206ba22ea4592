/**
 * Watches one run: prints each event as one line of proto3 JSON on stdout and
 * checks the stream grammar over what it received.
 *
 *     node build/examples/watch.js --addr 127.0.0.1:50051 --run-id RUN_ID [--after-seq N]
 *
 * Exit status: 0 after RunCompleted with the grammar held; 1 when the stream
 * broke the grammar; 2 when the watch failed (an RPC error, an unknown
 * event, retries exhausted); 64 for bad usage. Reconnects and errors go to
 * stderr, so stdout holds only events.
 */

import { parseArgs } from "node:util";
import { toJsonString } from "@bufbuild/protobuf";
import { RunEventSchema } from "../src/gen/runwire/v1/events_pb.js";
import {
  GrammarChecker,
  GrammarViolationError,
  createRunServiceClient,
  watch,
} from "../src/index.js";

const USAGE =
  "usage: watch.js --addr HOST:PORT --run-id RUN_ID [--after-seq N] [--give-up-after-ms MS]";

async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      strict: true,
      options: {
        addr: { type: "string" },
        "run-id": { type: "string" },
        "after-seq": { type: "string", default: "0" },
        "give-up-after-ms": { type: "string", default: "60000" },
      },
    }).values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 64;
  }
  const addr = args.addr;
  const runId = args["run-id"];
  const afterSeqText = args["after-seq"];
  const giveUpText = args["give-up-after-ms"];
  if (addr === undefined || runId === undefined || !/^\d+$/.test(afterSeqText)) {
    process.stderr.write(`${USAGE}\n`);
    return 64;
  }
  const afterSeq = BigInt(afterSeqText);
  const giveUpAfterMs = Number(giveUpText);

  const client = createRunServiceClient(addr);
  const checker = new GrammarChecker(afterSeq);
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

  try {
    const events = watch(client, runId, afterSeq, {
      giveUpAfterMs,
      onRetry: (r) =>
        process.stderr.write(
          `watch: ${r.error.message}; resuming after seq ${r.afterSeq} in ${r.delayMs} ms\n`,
        ),
    });
    for await (const event of events) {
      process.stdout.write(`${toJsonString(RunEventSchema, event)}\n`);
      check(() => checker.feed(event));
    }
  } catch (err) {
    process.stderr.write(`watch: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  check(() => checker.finish());
  return violations === 0 ? 0 : 1;
}

// Exit explicitly: the HTTP/2 connection would otherwise keep the process
// alive until it idles out. Waiting for stdout's drain keeps piped output whole.
const code = await main(process.argv.slice(2));
process.stdout.write("", () => process.exit(code));
