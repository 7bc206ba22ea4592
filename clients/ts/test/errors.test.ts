/** Typed errors from google.rpc details, and which statuses watch() retries. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "../src/gen/runwire/v1/errors_pb.js";
import { RpcError, RunwireError, isRetryable, toRpcError } from "../src/index.js";

function withInfo(code: Code, reason: string, domain = "runwire.v1"): ConnectError {
  return new ConnectError("msg", code, undefined, [
    { desc: ErrorInfoSchema, value: { reason, domain } },
  ]);
}

/** An error carrying one ErrorInfo per `[domain, reason]`, in this order, metadata `{i}`. */
function withInfos(code: Code, ...infos: Array<[string, string]>): ConnectError {
  return new ConnectError(
    "msg",
    code,
    undefined,
    infos.map(([domain, reason], i) => ({
      desc: ErrorInfoSchema,
      value: { reason, domain, metadata: { i: `${i}` } },
    })),
  );
}

describe("errors", () => {
  const RETRY: Array<[string, ConnectError, boolean]> = [
    ["unavailable", new ConnectError("gone", Code.Unavailable), true],
    ["draining", withInfo(Code.Unavailable, "SERVER_DRAINING"), true],
    ["reset stream", new ConnectError("rst", Code.Internal), true],
    ["dropped connection", new ConnectError("cancel", Code.Canceled), true],
    ["econnreset", new ConnectError("reset", Code.Aborted), true],
    ["half-written trailer", new ConnectError("?", Code.Unknown), true],
    ["proxy timeout", new ConnectError("late", Code.DeadlineExceeded), true],
    ["proxy internal", withInfo(Code.Internal, "UPSTREAM_RESET", "proxy.example.com"), true],
    ["proxy unknown", withInfo(Code.Unknown, "BAD_GATEWAY", "proxy.example.com"), true],
    ["proxy cancel", withInfo(Code.Canceled, "CLIENT_GONE", "proxy.example.com"), true],
    ["proxy abort", withInfo(Code.Aborted, "CONN_RESET", "proxy.example.com"), true],
    ["proxy timeout info", withInfo(Code.DeadlineExceeded, "TIMEOUT", "proxy.example.com"), true],
    ["proxy internal named like runwire", withInfo(Code.Internal, "INTERNAL", "example.com"), true],
    ["server fault", withInfo(Code.Internal, "INTERNAL"), false],
    [
      "server fault behind proxy info",
      withInfos(Code.Internal, ["proxy.example.com", "UPSTREAM_RESET"], ["runwire.v1", "INTERNAL"]),
      false,
    ],
    ["server unknown", withInfo(Code.Unknown, "INTERNAL"), false],
    ["server aborted", withInfo(Code.Aborted, "INTERNAL"), false],
    ["server deadline", withInfo(Code.DeadlineExceeded, "INTERNAL"), false],
    ["not found from proxy", withInfo(Code.NotFound, "NO_ROUTE", "proxy.example.com"), false],
    ["not found", withInfo(Code.NotFound, "RUN_NOT_FOUND"), false],
    ["bad request", withInfo(Code.InvalidArgument, "REQUEST_INVALID"), false],
    ["unauthenticated", withInfo(Code.Unauthenticated, "UNAUTHENTICATED"), false],
    ["unimplemented", new ConnectError("no", Code.Unimplemented), false],
    ["overloaded", withInfo(Code.ResourceExhausted, "OVERLOADED"), true],
    ["too large from the transport", new ConnectError("too big", Code.ResourceExhausted), false],
    [
      "exhausted, named by a proxy",
      withInfo(Code.ResourceExhausted, "OVERLOADED", "proxy.example.com"),
      false,
    ],
  ];
  for (const [name, err, want] of RETRY) {
    test(`test_errors_is_retryable_${name.replaceAll(" ", "_")}_${want}`, () => {
      assert.equal(isRetryable(err), want);
    });
  }

  test("test_errors_rpc_error_reads_error_info_and_bad_request", () => {
    const err = toRpcError(
      new ConnectError("flow is invalid", Code.InvalidArgument, undefined, [
        {
          desc: ErrorInfoSchema,
          value: { reason: "FLOW_INVALID", domain: "runwire.v1", metadata: { flow: "demo" } },
        },
        {
          desc: BadRequestSchema,
          value: {
            fieldViolations: [
              { field: "flow.nodes[2].timeout", description: "-1s is negative" },
              { field: "flow.edges[0].target", description: 'no node "x"' },
            ],
          },
        },
      ]),
    );
    assert.ok(err instanceof RpcError);
    assert.ok(err instanceof RunwireError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.reason, ErrorReason.FLOW_INVALID);
    assert.equal(err.reasonName, "FLOW_INVALID");
    assert.deepEqual(err.metadata, { flow: "demo" });
    assert.deepEqual(err.fieldViolations, [
      { field: "flow.nodes[2].timeout", description: "-1s is negative" },
      { field: "flow.edges[0].target", description: 'no node "x"' },
    ]);
    assert.equal(
      err.message,
      'InvalidArgument: flow is invalid (reason FLOW_INVALID); flow.nodes[2].timeout: -1s is negative; flow.edges[0].target: no node "x"',
    );
  });

  test("test_errors_reason_of_another_domain_is_unspecified", () => {
    const err = toRpcError(withInfo(Code.PermissionDenied, "RUN_NOT_FOUND", "example.com"));
    assert.ok(err instanceof RpcError);
    assert.equal(err.reason, ErrorReason.UNSPECIFIED);
    assert.equal(err.reasonName, "RUN_NOT_FOUND");
    assert.equal(err.domain, "example.com");
  });

  test("test_errors_foreign_reason_names_its_domain_in_the_message", () => {
    const err = toRpcError(withInfo(Code.Internal, "INTERNAL", "proxy.example.com"));
    assert.ok(err instanceof RpcError);
    assert.equal(err.reason, ErrorReason.UNSPECIFIED);
    assert.equal(err.message, "Internal: msg (reason INTERNAL from proxy.example.com)");
  });

  test("test_errors_runwire_error_info_wins_over_a_foreign_one_before_it", () => {
    const err = toRpcError(
      withInfos(Code.Internal, ["proxy.example.com", "UPSTREAM_RESET"], ["runwire.v1", "INTERNAL"]),
    );
    assert.ok(err instanceof RpcError);
    assert.equal(err.domain, "runwire.v1");
    assert.equal(err.reason, ErrorReason.INTERNAL);
    assert.equal(err.reasonName, "INTERNAL");
    assert.deepEqual(err.metadata, { i: "1" });
    assert.equal(err.message, "Internal: msg (reason INTERNAL)");
  });

  test("test_errors_unknown_reason_is_unspecified_but_kept", () => {
    const err = toRpcError(withInfo(Code.FailedPrecondition, "SOMETHING_NEWER"));
    assert.ok(err instanceof RpcError);
    assert.equal(err.reason, ErrorReason.UNSPECIFIED);
    assert.equal(err.reasonName, "SOMETHING_NEWER");
  });

  test("test_errors_plain_error_becomes_rpc_error_without_reason", () => {
    const err = toRpcError(new Error("socket hang up"));
    assert.ok(err instanceof RpcError);
    assert.equal(err.reasonName, "");
    assert.deepEqual(err.fieldViolations, []);
  });
});
