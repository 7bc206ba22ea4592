/** The public surface of the package is exactly this list. */

import assert from "node:assert/strict";
import { test } from "node:test";
import * as runwire from "../src/index.js";

test("test_exports_public_api_is_locked", () => {
  assert.deepEqual(Object.keys(runwire).sort(), [
    "ERROR_DOMAIN",
    "EVENT_ROLES",
    "GrammarChecker",
    "GrammarViolationError",
    "RpcError",
    "RunwireError",
    "SeqGapError",
    "UnknownEventError",
    "WATCH_DEFAULTS",
    "WatchEventsGaveUpError",
    "WatchGaveUpError",
    "checkStream",
    "createRunServiceClient",
    "isFiltered",
    "isRetryable",
    "requireKnownEvent",
    "runStatusName",
    "toRpcError",
    "watch",
    "watchEvents",
  ]);
});

// The package's `exports` map: the API by the package's name (Node resolves
// a package's own name through it), and the generated messages under gen/.
test("test_exports_map_serves_the_api_and_the_generated_code", async () => {
  const name = "@runwire/client";
  const byName = (await import(name)) as Record<string, unknown>;
  assert.deepEqual(Object.keys(byName).sort(), Object.keys(runwire).sort());
  assert.equal(byName["watch"], runwire.watch);
  const events = (await import(`${name}/gen/runwire/v1/events_pb.js`)) as Record<string, unknown>;
  assert.ok("RunEventSchema" in events);
  await assert.rejects(import(`${name}/build/src/_watch.js`), /ERR_PACKAGE_PATH_NOT_EXPORTED/);
});
