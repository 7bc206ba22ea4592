/**
 * Decodes and re-encodes RunEvents for the randomized cross-language test
 * (tests/test_random_events.py).
 *
 * Each stdin line is `<hex of the binary encoding>\t<proto3 JSON>`. For each
 * it writes `<hex>\t<json>\t<hex>\t<json>`: the event decoded from binary
 * re-encoded (binary, then JSON) and the event decoded from JSON re-encoded
 * the same way; or `ERROR\t<message>`.
 */

import { createInterface } from "node:readline";
import { fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import { RunEventSchema } from "../src/gen/runwire/v1/events_pb.js";
import "../src/index.js"; // the client's decoding configuration (a leading U+FEFF is kept)

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

function roundtrip(line: string): string {
  const tab = line.indexOf("\t");
  if (tab < 0) throw new Error("no tab in the input line");
  const fromBin = fromBinary(RunEventSchema, Buffer.from(line.slice(0, tab), "hex"));
  const fromJson = fromJsonString(RunEventSchema, line.slice(tab + 1));
  return [fromBin, fromJson]
    .flatMap((e) => [hex(toBinary(RunEventSchema, e)), toJsonString(RunEventSchema, e)])
    .join("\t");
}

const out: string[] = [];
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  try {
    out.push(roundtrip(line));
  } catch (err) {
    out.push(`ERROR\t${String(err).replace(/[\t\n]/g, " ")}`);
  }
}
process.stdout.write(out.map((l) => `${l}\n`).join(""));
