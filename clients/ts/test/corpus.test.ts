/** The golden corpus (fixtures/corpus/README.md), checked both ways against the generated oneof. */

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";
import { equals, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { RunEventSchema } from "../src/gen/runwire/v1/events_pb.js";
import { UnknownEventError, requireKnownEvent } from "../src/index.js";
import { canonicalJson, corpusDir } from "./_support.js";

/** Files of the corpus directory that are not goldens. */
const NOT_GOLDEN = new Set(["README.md", "make_corpus.py", "edge"]);
const GOLDEN_EXTENSIONS = [".json", ".binpb"];

const dir = corpusDir();
const files = readdirSync(dir).filter((f) => !NOT_GOLDEN.has(f));

/** The variants as this client's generated code sees them: proto name -> oneof case. */
function variants(): Map<string, string> {
  const oneof = RunEventSchema.oneofs.find((o) => o.name === "event");
  assert.ok(oneof, "RunEvent has no oneof named event");
  return new Map(oneof.fields.map((f) => [f.name, f.localName]));
}

function stem(file: string): string {
  return file.slice(0, file.lastIndexOf("."));
}

describe("corpus completeness", () => {
  test("test_corpus_every_variant_has_a_json_and_a_binpb_golden", () => {
    const missing = [...variants().keys()].flatMap((v) =>
      GOLDEN_EXTENSIONS.filter((ext) => !files.includes(v + ext)).map((ext) => v + ext),
    );
    assert.deepEqual(missing, [], `variants without golden files in ${dir}`);
  });

  test("test_corpus_every_golden_names_a_variant", () => {
    const known = variants();
    const strays = files.filter(
      (f) => !GOLDEN_EXTENSIONS.includes(path.extname(f)) || !known.has(stem(f)),
    );
    assert.deepEqual(strays, [], `files in ${dir} that name no RunEvent.event variant`);
  });
});

// fixtures/corpus/edge/: BOMs, astral and combining characters, escapes,
// int64 limits, the first and last timestamps, negative durations, enum
// numbers this client does not name, empty payloads; each round-trips like
// a golden.
describe("edge corpus round trips", () => {
  const edgeDir = path.join(dir, "edge");
  const cases = readdirSync(edgeDir)
    .filter((f) => f.endsWith(".json"))
    .map((f) => f.slice(0, -".json".length));
  test("test_edge_corpus_has_cases", () => assert.ok(cases.length >= 10, String(cases)));
  for (const name of cases) {
    test(`test_edge_corpus_${name}_round_trips`, () => {
      const jsonText = readFileSync(path.join(edgeDir, `${name}.json`), "utf8");
      const bytes = new Uint8Array(readFileSync(path.join(edgeDir, `${name}.binpb`)));
      const fromJsonMsg = fromJsonString(RunEventSchema, jsonText);
      const fromBinMsg = fromBinary(RunEventSchema, bytes);
      assert.ok(equals(RunEventSchema, fromJsonMsg, fromBinMsg), `${name}: JSON and binary differ`);
      assert.equal(
        canonicalJson(toJsonString(RunEventSchema, fromBinMsg)),
        canonicalJson(jsonText),
        `${name}: JSON round trip differs`,
      );
      assert.deepEqual(toBinary(RunEventSchema, fromJsonMsg), bytes, `${name}: binary differs`);
    });
  }
});

describe("corpus round trips", () => {
  for (const [name, localName] of variants()) {
    const jsonPath = path.join(dir, `${name}.json`);
    const binPath = path.join(dir, `${name}.binpb`);
    if (!files.includes(`${name}.json`) || !files.includes(`${name}.binpb`)) continue;

    test(`test_corpus_${name}_round_trips`, () => {
      const jsonText = readFileSync(jsonPath, "utf8");
      const bytes = new Uint8Array(readFileSync(binPath));

      const fromJsonMsg = fromJsonString(RunEventSchema, jsonText);
      const fromBinMsg = fromBinary(RunEventSchema, bytes);

      assert.equal(fromJsonMsg.event.case, localName, "the JSON golden holds another variant");
      assert.equal(fromBinMsg.event.case, localName, "the binary golden holds another variant");
      assert.deepEqual(fromBinMsg.$unknown ?? [], [], "binary golden has fields this client drops");
      assert.ok(
        equals(RunEventSchema, fromJsonMsg, fromBinMsg),
        "JSON and binary decode differently",
      );

      const golden = canonicalJson(jsonText);
      assert.equal(
        canonicalJson(toJsonString(RunEventSchema, fromJsonMsg)),
        golden,
        "JSON round trip",
      );
      assert.equal(
        canonicalJson(toJsonString(RunEventSchema, fromBinMsg)),
        golden,
        "binary -> JSON",
      );

      assert.deepEqual(toBinary(RunEventSchema, fromBinMsg), bytes, "binary round trip");
      assert.deepEqual(toBinary(RunEventSchema, fromJsonMsg), bytes, "JSON -> binary");
    });
  }
});

describe("unknown variants", () => {
  /** A RunEvent as a newer server would send it, with a variant at field 127. */
  function futureEvent(variantField: number): Uint8Array {
    return new BinaryWriter()
      .tag(1, WireType.LengthDelimited)
      .string("run_future")
      .tag(2, WireType.Varint)
      .int64(7n)
      .tag(variantField, WireType.LengthDelimited)
      .bytes(new BinaryWriter().tag(1, WireType.LengthDelimited).string("new").finish())
      .finish();
  }

  test("test_corpus_unknown_variant_is_an_upgrade_error", () => {
    const event = fromBinary(RunEventSchema, futureEvent(127));
    assert.equal(event.event.case, undefined);
    assert.throws(
      () => requireKnownEvent(event),
      (err: unknown) => {
        assert.ok(err instanceof UnknownEventError);
        assert.match(err.message, /^unknown event, upgrade the client: run run_future seq 7 /);
        assert.deepEqual(err.fieldNumbers, [127]);
        assert.equal(err.seq, 7n);
        return true;
      },
    );
  });

  test("test_corpus_unknown_variant_survives_reencoding", () => {
    const bytes = futureEvent(127);
    assert.deepEqual(toBinary(RunEventSchema, fromBinary(RunEventSchema, bytes)), bytes);
  });

  test("test_corpus_event_without_variant_is_an_upgrade_error", () => {
    const bytes = new BinaryWriter().tag(2, WireType.Varint).int64(3n).finish();
    assert.throws(() => requireKnownEvent(fromBinary(RunEventSchema, bytes)), UnknownEventError);
  });
});
