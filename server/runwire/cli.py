"""The `runwire` command: serve, and talk to a server as a person would."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format

from runwire.config import add_serve_arguments, settings_from_args
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

__all__ = ["main"]

DEFAULT_ADDR = "127.0.0.1:50051"


def _serve(args: argparse.Namespace) -> int:
    from runwire.rpc import RunwireServer, ServerFailed

    logging.basicConfig(
        level=os.environ.get("RUNWIRE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = settings_from_args(args)

    async def run() -> None:
        server = RunwireServer(settings)
        port = await server.start()
        print(f"runwire listening on {settings.listen.rsplit(':', 1)[0]}:{port}", flush=True)
        await server.serve_until_signal()

    try:
        asyncio.run(run())
    except ValueError as exc:
        print(f"runwire: {exc}", file=sys.stderr)
        return 2
    except ServerFailed as exc:
        print(f"runwire: server failed: {exc}", file=sys.stderr)
        return 3
    return 0


def load_flow(path: Path) -> flow_pb2.Flow:
    """Read a YAML or JSON flow file (the proto3 JSON mapping of Flow)."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return json_format.ParseDict(data, flow_pb2.Flow())


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"runwire: --input takes key=value, got {pair!r}")
        try:
            inputs[key] = json.loads(value)
        except json.JSONDecodeError:
            inputs[key] = value
    return inputs


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    md = []
    token = getattr(args, "token", None) or os.environ.get("RUNWIRE_TOKEN")
    if token:
        md.append(("authorization", f"Bearer {token}"))
    principal = os.environ.get("RUNWIRE_PRINCIPAL") or os.environ.get("USER")
    if principal:
        md.append(("x-runwire-principal", f"user:{principal}"))
    return md


def _stub(args: argparse.Namespace) -> tuple[grpc.Channel, run_service_pb2_grpc.RunServiceStub]:
    channel = grpc.insecure_channel(args.addr)
    return channel, run_service_pb2_grpc.RunServiceStub(channel)


def _fail(exc: grpc.RpcError) -> int:
    from grpc_status import rpc_status

    from runwire.v1 import errors_pb2  # noqa: F401 - registers ErrorReason

    print(f"runwire: {exc.code().name}: {exc.details()}", file=sys.stderr)
    status = rpc_status.from_call(exc)
    if status is not None:
        from google.rpc import error_details_pb2

        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                for v in bad.field_violations:
                    print(f"  {v.field}: {v.description}", file=sys.stderr)
    return 1


def _print_run(run: run_service_pb2.Run) -> None:
    print(json.dumps(json_format.MessageToDict(run), indent=2, ensure_ascii=False))


def _run(args: argparse.Namespace) -> int:
    flow = load_flow(Path(args.flow))
    request = run_service_pb2.StartRunRequest(flow=flow, request_id=args.request_id or "")
    json_format.ParseDict(_parse_inputs(args.input), request.inputs)
    for label in args.label:
        key, _, value = label.partition("=")
        request.labels[key] = value
    channel, stub = _stub(args)
    with channel:
        try:
            run = stub.StartRun(request, metadata=_metadata(args)).run
        except grpc.RpcError as exc:
            return _fail(exc)
    print(run.run_id if not args.watch else f"started {run.run_id}", flush=True)
    if args.watch:
        args.run_id, args.after_seq = run.run_id, 0
        return _watch(args)
    return 0


def _watch(args: argparse.Namespace) -> int:
    from runwire._render import watch_and_render

    return watch_and_render(
        args.addr, args.run_id, args.after_seq, _metadata(args), plain=args.plain
    )


def _control(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        try:
            if args.command == "pause":
                run = stub.PauseRun(
                    run_service_pb2.PauseRunRequest(run_id=args.run_id, reason=args.reason),
                    metadata=_metadata(args),
                ).run
            elif args.command == "resume":
                run = stub.ResumeRun(
                    run_service_pb2.ResumeRunRequest(run_id=args.run_id, reason=args.reason),
                    metadata=_metadata(args),
                ).run
            else:
                run = stub.CancelRun(
                    run_service_pb2.CancelRunRequest(run_id=args.run_id, reason=args.reason),
                    metadata=_metadata(args),
                ).run
        except grpc.RpcError as exc:
            return _fail(exc)
    print(f"{run.run_id} {events_pb2.RunStatus.Name(run.status)}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    """confirm / approve / reject: resolve the node's pending gate, whatever its kind."""
    channel, stub = _stub(args)
    md = _metadata(args)
    approve = args.command != "reject"
    with channel:
        try:
            run = stub.GetRun(run_service_pb2.GetRunRequest(run_id=args.run_id), metadata=md).run
            kinds = [g.kind for g in run.pending_gates if g.node_id == args.node_id]
            kind = (
                kinds[0]
                if kinds
                else (
                    run_service_pb2.GATE_KIND_CONFIRMATION
                    if args.command == "confirm"
                    else run_service_pb2.GATE_KIND_APPROVAL
                )
            )
            method, request_type = {
                run_service_pb2.GATE_KIND_CONFIRMATION: (
                    stub.ConfirmAction,
                    run_service_pb2.ConfirmActionRequest,
                ),
                run_service_pb2.GATE_KIND_REVIEW: (
                    stub.ResolveReview,
                    run_service_pb2.ResolveReviewRequest,
                ),
            }.get(kind, (stub.ResolveApproval, run_service_pb2.ResolveApprovalRequest))
            request = request_type(
                run_id=args.run_id, node_id=args.node_id, approve=approve, comment=args.comment
            )
            run = method(request, metadata=md).run
        except grpc.RpcError as exc:
            return _fail(exc)
    word = "approved" if approve else "rejected"
    print(f"{args.run_id} {args.node_id}: {word}; run is {events_pb2.RunStatus.Name(run.status)}")
    return 0


def _runs_list(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        try:
            response = stub.ListRuns(
                run_service_pb2.ListRunsRequest(page_size=args.limit, filter=args.filter),
                metadata=_metadata(args),
            )
        except grpc.RpcError as exc:
            return _fail(exc)
    for run in response.runs:
        status = events_pb2.RunStatus.Name(run.status).removeprefix("RUN_STATUS_")
        print(
            f"{run.run_id}  {status:<10} {run.create_time.ToDatetime().isoformat(timespec='seconds')}  {run.flow_name}"
        )
    if response.next_page_token:
        print(f"(more: page token {response.next_page_token})")
    return 0


def _get(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        try:
            run = stub.GetRun(
                run_service_pb2.GetRunRequest(run_id=args.run_id), metadata=_metadata(args)
            ).run
        except grpc.RpcError as exc:
            return _fail(exc)
    _print_run(run)
    return 0


def _validate(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        try:
            response = stub.ValidateFlow(
                run_service_pb2.ValidateFlowRequest(flow=load_flow(Path(args.flow))),
                metadata=_metadata(args),
            )
        except grpc.RpcError as exc:
            return _fail(exc)
    print(
        f"valid: {response.node_count} nodes, starts at {', '.join(response.root_node_ids)}; digest {response.flow_digest}"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--addr",
            default=os.environ.get("RUNWIRE_ADDR", DEFAULT_ADDR),
            help="server address (RUNWIRE_ADDR; default %(default)s)",
        )
        p.add_argument("--token", default=None, help="bearer token (RUNWIRE_TOKEN)")
        return p

    run = client("run", "start a run from a YAML or JSON flow file")
    run.add_argument(
        "flow", help="flow file: the proto3 JSON mapping of runwire.v1.Flow, as YAML or JSON"
    )
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run input; VALUE is JSON or a string",
    )
    run.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--request-id", default="", help="idempotency key")
    run.add_argument("--watch", action="store_true", help="watch the run until it completes")
    run.add_argument(
        "--plain", action="store_true", help="with --watch: one line per event, no live display"
    )
    run.set_defaults(func=_run)

    watch = client("watch", "render a run's live event stream")
    watch.add_argument("run_id")
    watch.add_argument("--after-seq", type=int, default=0)
    watch.add_argument("--plain", action="store_true", help="one line per event, no live display")
    watch.set_defaults(func=_watch)

    get = client("get", "show one run")
    get.add_argument("run_id")
    get.set_defaults(func=_get)

    validate = client("validate", "check a flow file without running it")
    validate.add_argument("flow")
    validate.set_defaults(func=_validate)

    runs = sub.add_parser("runs", help="list runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    runs_list = runs_sub.add_parser("list", help="list runs, newest first")
    runs_list.add_argument("--addr", default=os.environ.get("RUNWIRE_ADDR", DEFAULT_ADDR))
    runs_list.add_argument("--token", default=None)
    runs_list.add_argument(
        "--filter", default="", help='e.g. status = RUNNING AND labels.team = "infra"'
    )
    runs_list.add_argument("--limit", type=int, default=20)
    runs_list.set_defaults(func=_runs_list)

    for name, text in (
        ("confirm", "approve a destructive action held for confirmation"),
        ("approve", "approve a pending gate (approval node or held action)"),
        ("reject", "reject a pending gate"),
    ):
        p = client(name, text)
        p.add_argument("run_id")
        p.add_argument("node_id")
        p.add_argument("--comment", default="")
        p.set_defaults(func=_decide)

    for name in ("pause", "resume", "cancel"):
        p = client(name, f"{name} a run at the next node boundary")
        p.add_argument("run_id")
        p.add_argument("--reason", default="")
        p.set_defaults(func=_control)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `runwire` console script."""
    args = _parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
