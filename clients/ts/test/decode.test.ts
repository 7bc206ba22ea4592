/** Decoding edge values the way every runwire client does. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import { RunEventSchema } from "../src/gen/runwire/v1/events_pb.js";
import "../src/index.js";

// A NodeLog line read from a file that starts with a BOM kept it in every
// language but TypeScript, whose default TextDecoder stripped it.
test("test_decode_binary_keeps_a_leading_byte_order_mark", () => {
  const line = "\uFEFF\uFEFFfirst line";
  const event = create(RunEventSchema, {
    runId: "\uFEFFrun",
    seq: 1n,
    event: { case: "nodeLog", value: { line } },
  });
  const decoded = fromBinary(RunEventSchema, toBinary(RunEventSchema, event));
  assert.equal(decoded.runId, "\uFEFFrun");
  assert.equal(decoded.event.case === "nodeLog" && decoded.event.value.line, line);
  const viaJson = fromJsonString(RunEventSchema, toJsonString(RunEventSchema, decoded));
  assert.deepEqual(toBinary(RunEventSchema, viaJson), toBinary(RunEventSchema, event));
});
