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
    "WatchGaveUpError",
    "checkStream",
    "createRunServiceClient",
    "isRetryable",
    "requireKnownEvent",
    "runStatusName",
    "toRpcError",
    "watch",
  ]);
});
