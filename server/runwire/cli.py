"""The `runwire` command: serve, and talk to a server as a person would.

Exit codes:
  0    success
  1    the run did not succeed (run --watch, watch, --wait), or the server
       refused the request (the gRPC code and message go to stderr)
  2    usage: a bad option, or a flow / inputs file that cannot be read or parsed
  3    the server cannot be reached (UNAVAILABLE, DEADLINE_EXCEEDED)
  130  interrupted (Ctrl-C)
  141  the output pipe was closed (`runwire runs list | head -1`)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import json_format

from runwire._connect import Connection, UsageError, add_connection_arguments
from runwire._event_filter_cli import add_event_filter_arguments, check_for_flow, event_filter
from runwire._files import load_flow, parse_inputs
from runwire._migrate_cli import add_migrate_arguments, run_migrate
from runwire._output import FORMATS, dump, run_lines, runs_table, status_name
from runwire._subscriptions_cli import add_subscription_commands
from runwire._workers import REUSE_PORT_ENV
from runwire.config import add_serve_arguments, parse_duration, settings_from_args
from runwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    events_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
)

__all__ = ["EXIT_FAILED", "EXIT_UNREACHABLE", "EXIT_USAGE", "load_flow", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _version() -> str:
    try:
        return importlib.metadata.version("runwire")
    except importlib.metadata.PackageNotFoundError:  # a source tree without an install
        return "unknown"


def _serve(args: argparse.Namespace) -> int:
    from runwire.rpc import RunwireServer, ServerFailed
    from runwire.store import SchemaBehind

    logging.basicConfig(
        level=os.environ.get("RUNWIRE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = settings_from_args(args)
    if args.workers > 1:
        from runwire._workers import serve_workers

        return serve_workers(settings, args.workers, args.raw_argv)
    if os.environ.get(REUSE_PORT_ENV) == "1":
        settings = dataclasses.replace(settings, reuse_port=True)

    async def run() -> None:
        server = RunwireServer(settings)
        server.watch_signals()
        port = await server.start()
        print(f"runwire listening on {settings.listen.rsplit(':', 1)[0]}:{port}", flush=True)
        if server.metrics_port is not None:
            host = settings.metrics_listen.rsplit(":", 1)[0] if settings.metrics_listen else ""
            print(f"runwire metrics on http://{host}:{server.metrics_port}/metrics", flush=True)
        await server.serve_until_signal()

    try:
        asyncio.run(run())
    except ValueError as exc:
        print(f"runwire: {exc}", file=sys.stderr)
        return 2
    except ServerFailed as exc:
        print(f"runwire: server failed: {exc}", file=sys.stderr)
        return 3
    except SchemaBehind as exc:  # serve --no-migrate before the migrate job ran
        print(f"runwire: {exc}", file=sys.stderr)
        return 3
    return 0


def _fail(exc: grpc.RpcError) -> int:
    """Print a gRPC error with its field violations; the exit code for it."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from runwire.v1 import errors_pb2  # noqa: F401 - registers ErrorReason

    code: grpc.StatusCode = exc.code()
    print(f"runwire: {code.name}: {exc.details()}", file=sys.stderr)
    if code in _UNREACHABLE:
        return EXIT_UNREACHABLE
    try:
        status = rpc_status.from_call(exc)
    except ValueError:  # a status whose message disagrees with its details
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                for v in bad.field_violations:
                    print(f"  {v.field}: {v.description}", file=sys.stderr)
    return EXIT_FAILED


class _Client:
    """A channel and stub for one command, with the caller's metadata on every call."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.connection = Connection.from_args(args)
        self.metadata = self.connection.metadata()
        self.channel = self.connection.channel()
        self.stub = run_service_pb2_grpc.RunServiceStub(self.channel)

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()

    def get(self, run_id: str) -> run_service_pb2.Run:
        request = run_service_pb2.GetRunRequest(run_id=run_id)
        run: run_service_pb2.Run = self.stub.GetRun(request, metadata=self.metadata).run
        return run

    def events(self, run_id: str, after_seq: int = 0) -> Iterator[events_pb2.RunEvent]:
        request = run_service_pb2.WatchRunRequest(run_id=run_id, after_seq=after_seq)
        for response in self.stub.WatchRun(request, metadata=self.metadata):
            yield from response.events


def _print_run(run: run_service_pb2.Run, args: argparse.Namespace, text: str) -> None:
    fmt = getattr(args, "output", "table")
    if fmt in ("json", "yaml"):
        print(dump(run, fmt))
    elif fmt == "wide":
        print(run_lines(run, wide=True))
    else:
        print(text)


def _run(args: argparse.Namespace) -> int:
    flow = load_flow(Path(args.flow))
    check_for_flow(args, [node.id for node in flow.nodes])
    inputs = parse_inputs(args.input, args.inputs_file)
    request = run_service_pb2.StartRunRequest(flow=flow, request_id=args.request_id or "")
    json_format.ParseDict(inputs, request.inputs)
    for label in args.label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise UsageError(f"--label takes KEY=VALUE, got {label!r}")
        request.labels[key] = value
    with _Client(args) as client:
        run = client.stub.StartRun(request, metadata=client.metadata).run
    if args.watch:
        print(f"started {run.run_id}", flush=True)
        args.run_id, args.after_seq = run.run_id, 0
        # The live view lists these nodes from the start: the flow's, or those --node chose.
        args.node_ids = args.node or [node.id for node in flow.nodes]
        return _watch(args)
    _print_run(run, args, run.run_id)
    return 0


def _give_up_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="while the server cannot be reached, retry (saying so) for this long without a "
        "response, then exit 3 (default %(default)s; 0 retries forever)",
    )


def _watch(args: argparse.Namespace) -> int:
    from runwire._render import watch_and_render

    connection = Connection.from_args(args)
    return watch_and_render(
        connection.addr,
        args.run_id,
        args.after_seq,
        connection.metadata(),
        plain=args.plain,
        credentials=connection.credentials(),
        node_ids=getattr(args, "node_ids", ()),
        give_up_after=args.give_up_after,
        event_filter=event_filter(args) if hasattr(args, "kind") else None,
    )


# What each control request waits for with --wait: the event that says it took effect.
_EFFECT = {"pause": "run_paused", "resume": "run_resumed", "cancel": "run_completed"}
_WORD = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
_FINISHED = {
    events_pb2.RUN_STATUS_SUCCEEDED,
    events_pb2.RUN_STATUS_FAILED,
    events_pb2.RUN_STATUS_CANCELLED,
    events_pb2.RUN_STATUS_PARTIAL,
}


def _took_effect(command: str, run: run_service_pb2.Run) -> bool:
    if run.status in _FINISHED:
        return True
    if command == "pause":
        return run.status == events_pb2.RUN_STATUS_PAUSED
    if command == "resume":
        # Resuming a run that is not paused (or whose pause has not yet taken
        # effect) changes nothing that a later event would announce.
        return run.status != events_pb2.RUN_STATUS_PAUSED
    return False


def _control(args: argparse.Namespace) -> int:
    with _Client(args) as client:
        md = client.metadata
        if args.command == "pause":
            run = client.stub.PauseRun(
                run_service_pb2.PauseRunRequest(run_id=args.run_id, reason=args.reason), metadata=md
            ).run
        elif args.command == "resume":
            run = client.stub.ResumeRun(
                run_service_pb2.ResumeRunRequest(run_id=args.run_id, reason=args.reason),
                metadata=md,
            ).run
        else:
            run = client.stub.CancelRun(
                run_service_pb2.CancelRunRequest(run_id=args.run_id, reason=args.reason),
                metadata=md,
            ).run
        if run.status in _FINISHED:
            _print_run(run, args, f"{run.run_id} already finished: {status_name(run.status)}")
            return 0
        if not args.wait:
            _print_run(
                run,
                args,
                f"{run.run_id} {_WORD[args.command]}; now {status_name(run.status)}"
                if _took_effect(args.command, run)
                else f"{args.command} requested for {run.run_id} (now {status_name(run.status)});"
                " it takes effect at the next node boundary",
            )
            return 0
        if not _took_effect(args.command, run):
            print(f"{args.command} requested for {run.run_id}; waiting…", file=sys.stderr)
            wanted = {_EFFECT[args.command], "run_completed"}
            for event in client.events(run.run_id, run.last_seq):
                if event.WhichOneof("event") in wanted:
                    break
        run = client.get(run.run_id)
    ok = (
        run.status == events_pb2.RUN_STATUS_PAUSED
        if args.command == "pause"
        else run.status == events_pb2.RUN_STATUS_CANCELLED
        if args.command == "cancel"
        else run.status not in (events_pb2.RUN_STATUS_PAUSED,)
    )
    text = (
        f"{run.run_id} {_WORD[args.command]}; now {status_name(run.status)}"
        if ok
        else f"{run.run_id} finished before the {args.command} took effect: {status_name(run.status)}"
    )
    _print_run(run, args, text)
    return 0 if ok else EXIT_FAILED


def _decide(args: argparse.Namespace) -> int:
    """confirm / approve / reject: resolve the node's pending gate, whatever its kind."""
    approve = args.command != "reject"
    with _Client(args) as client:
        stub, md = client.stub, client.metadata
        run = client.get(args.run_id)
        item = args.item
        kinds = [
            g.kind
            for g in run.pending_gates
            if g.node_id == args.node_id
            and (g.item_index if g.HasField("item_index") else None) == item
        ]
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
        if isinstance(request, run_service_pb2.ConfirmActionRequest):
            if item is not None:
                request.item_index = item
            request.tool_call_id = args.tool_call
        run = method(request, metadata=md).run
    word = "approved" if approve else "rejected"
    which = args.node_id if item is None else f"{args.node_id}[{item}]"
    if args.tool_call:
        which += f" tool call {args.tool_call}"
    _print_run(run, args, f"{args.run_id} {which}: {word}; run is {status_name(run.status)}")
    return 0


def _review(args: argparse.Namespace) -> int:
    """review: approve (optionally with an edited answer) or reject an AI node's held answer."""
    output_json = ""
    if args.answer is not None:
        try:
            text = sys.stdin.read() if str(args.answer) == "-" else args.answer.read_text()
            output_json = json.dumps(json.loads(text), ensure_ascii=False)
        except OSError as exc:
            print(f"runwire: --answer {args.answer}: {exc.strerror}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"runwire: --answer {args.answer}: not JSON: {exc}", file=sys.stderr)
            return 2
    with _Client(args) as client:
        request = run_service_pb2.ResolveReviewRequest(
            run_id=args.run_id,
            node_id=args.node_id,
            approve=args.approve,
            comment=args.comment,
            output_json=output_json,
        )
        run = client.stub.ResolveReview(request, metadata=client.metadata).run
    word = "approved" if args.approve else "rejected"
    if output_json and args.approve:
        word += " with an edited answer"
    _print_run(run, args, f"{args.run_id} {args.node_id}: {word}; run is {status_name(run.status)}")
    return 0


_RELATIVE = re.compile(r"^(?P<n>\d+)(?P<unit>[smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _moment(text: str) -> datetime:
    """`2026-11-30T12:00:00Z`, `2026-11-30`, or an age such as `90s`, `15m`, `2h`, `7d`."""
    if m := _RELATIVE.match(text.strip()):
        return datetime.now(UTC) - timedelta(**{_UNIT[m["unit"]]: int(m["n"])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time or an age like 15m, 2h, 7d; got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _runs_filter(args: argparse.Namespace) -> str:
    terms = [args.filter.strip()] if args.filter.strip() else []
    if args.status:
        terms.append(f"status = {args.status.upper()}")
    for label in args.label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise UsageError(f"--label takes KEY=VALUE, got {label!r}")
        terms.append(f'labels.{key} = "{value}"')
    return " AND ".join(terms)


def _runs_list(args: argparse.Namespace) -> int:
    """One page of runs. The server filters by status and labels; flow name and
    creation time are matched here, over server pages fetched `limit - found`
    at a time, so the page token printed still resumes exactly after the last
    run looked at."""
    filter_text = _runs_filter(args)
    since, until = args.since, args.until
    local: Callable[[run_service_pb2.Run], bool] = lambda run: (  # noqa: E731 - one expression
        (not args.flow or run.flow_name == args.flow)
        and (until is None or run.create_time.ToDatetime(tzinfo=UTC) < until)
    )
    found: list[run_service_pb2.Run] = []
    token = args.page_token
    with _Client(args) as client:
        while True:
            response = client.stub.ListRuns(
                run_service_pb2.ListRunsRequest(
                    page_size=args.limit - len(found), page_token=token, filter=filter_text
                ),
                metadata=client.metadata,
            )
            token = response.next_page_token
            for run in response.runs:
                if since is not None and run.create_time.ToDatetime(tzinfo=UTC) < since:
                    token = ""  # newest first: every later run is older still
                    break
                if local(run):
                    found.append(run)
            if not token or len(found) >= args.limit:
                break
    if args.output in ("json", "yaml"):
        page = run_service_pb2.ListRunsResponse(runs=found, next_page_token=token)
        print(dump(page, args.output))
        return 0
    print(runs_table(found, wide=args.output == "wide"), flush=True)
    if token:
        print(f"more: --page-token {token}", file=sys.stderr)
    return 0


def _age(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _runs_prune(args: argparse.Namespace) -> int:
    """Delete (or, dry, count) the runs that finished more than --older-than ago."""
    request = admin_service_pb2.PruneRunsRequest(dry_run=args.dry_run)
    request.older_than.FromTimedelta(timedelta(seconds=args.older_than))
    with _Client(args) as client:
        stub = admin_service_pb2_grpc.AdminServiceStub(client.channel)
        response = stub.PruneRuns(request, metadata=client.metadata)
    if args.output in ("json", "yaml"):
        print(dump(response, args.output))
    elif args.dry_run:
        print(f"{response.run_count} finished runs would be deleted (dry run: nothing deleted)")
    else:
        print(
            f"deleted {response.run_count} finished runs; dropped "
            f"{response.dropped_partition_count} events partitions; removed "
            f"{response.removed_workspace_count} workspaces here"
        )
    return 0


def _get(args: argparse.Namespace) -> int:
    with _Client(args) as client:
        run = client.get(args.run_id)
    if args.output in ("json", "yaml"):
        print(dump(run, args.output))
    else:
        print(run_lines(run, wide=args.output == "wide"))
    return 0


def _logs(args: argparse.Namespace) -> int:
    """Log lines only, like `kubectl logs`: what is there now, or with -f until the run ends."""
    with _Client(args) as client:
        last = None if args.follow else client.get(args.run_id).last_seq
        if last == 0:
            return 0
        for event in client.events(args.run_id):
            if event.HasField("node_log") and args.node in (None, event.node_id):
                line = event.node_log.line
                if args.output == "json":
                    line = json.dumps(json_format.MessageToDict(event), ensure_ascii=False)
                elif not args.node:
                    line = f"{event.node_id}: {line}"
                print(line, flush=args.follow)
            if last is not None and event.seq >= last:
                break
    return 0


def _validate(args: argparse.Namespace) -> int:
    flow = load_flow(Path(args.flow))
    with _Client(args) as client:
        response = client.stub.ValidateFlow(
            run_service_pb2.ValidateFlowRequest(flow=flow), metadata=client.metadata
        )
    if args.output in ("json", "yaml"):
        print(dump(response, args.output))
    else:
        print(
            f"valid: {response.node_count} nodes, starts at {', '.join(response.root_node_ids)};"
            f" digest {response.flow_digest}"
        )
    return 0


def _completion(args: argparse.Namespace) -> int:
    from runwire._completion import completion_script

    print(completion_script(_parser(), args.shell), end="")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runwire",
        description="Run flows on a runwire server and watch them.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runwire {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gRPC server")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser(
        "migrate",
        help="apply the database schema migrations and exit",
        description="Apply the schema migrations the database lacks, under the advisory lock "
        "serve takes, and exit: for deployments that migrate in a job and run serve "
        "--no-migrate. Running it again is a no-op. Exits 3 when the database cannot be "
        "reached, 1 when it refuses the connection or a migration fails.",
    )
    add_migrate_arguments(migrate)
    migrate.set_defaults(func=run_migrate)

    def client(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_text: str,
        *,
        output: bool = True,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        add_connection_arguments(p)
        if output:
            p.add_argument(
                "-o",
                "--output",
                choices=FORMATS,
                default="table",
                help="table (default), wide, or json / yaml: the proto3 JSON mapping of the reply",
            )
        return p

    run = client(sub, "run", "start a run from a YAML or JSON flow file")
    run.add_argument(
        "flow", help="flow file: the proto3 JSON mapping of runwire.v1.Flow, as YAML or JSON"
    )
    run.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="KEY=STRING|KEY:=JSON",
        help="run input: KEY=STRING is the string as written; KEY:=JSON is a JSON value"
        " (KEY:=3, KEY:=true, KEY:='[1,2]'); repeatable, overrides --inputs-file",
    )
    run.add_argument(
        "--inputs-file",
        action="append",
        default=[],
        metavar="FILE",
        help="run inputs as one YAML or JSON mapping (.json is JSON, anything else YAML)",
    )
    run.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label the run (runs list --label finds it); repeatable",
    )
    run.add_argument("--request-id", default="", help="idempotency key")
    run.add_argument("--watch", action="store_true", help="watch the run until it completes")
    _give_up_argument(run)
    run.add_argument(
        "--plain", action="store_true", help="with --watch: one line per event, no live display"
    )
    add_event_filter_arguments(run, "with --watch: ")
    run.set_defaults(func=_run)

    watch = client(sub, "watch", "render a run's live event stream", output=False)
    watch.add_argument("run_id")
    watch.add_argument("--after-seq", type=int, default=0)
    watch.add_argument("--plain", action="store_true", help="one line per event, no live display")
    add_event_filter_arguments(watch)
    _give_up_argument(watch)
    watch.set_defaults(func=_watch)

    logs = client(sub, "logs", "print a run's log lines (all nodes, or one)", output=False)
    logs.add_argument("run_id")
    logs.add_argument("node", nargs="?", default=None, help="only this node's lines, unprefixed")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the run completes"
    )
    logs.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: one NodeLog RunEvent per line in the proto3 JSON mapping",
    )
    logs.set_defaults(func=_logs)

    get = client(sub, "get", "show one run")
    get.add_argument("run_id")
    get.set_defaults(func=_get)

    validate = client(sub, "validate", "check a flow file on the server without running it")
    validate.add_argument("flow")
    validate.set_defaults(func=_validate)

    runs = sub.add_parser("runs", help="list runs, delete old ones")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    runs_list = client(runs_sub, "list", "list runs, newest first")
    runs_list.add_argument(
        "--filter",
        default="",
        help='server filter, e.g. status = RUNNING AND labels.team = "infra"',
    )
    runs_list.add_argument("--status", help="only runs in this status (RUNNING, FAILED, …)")
    runs_list.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    runs_list.add_argument("--flow", help="only runs of the flow with this name")
    runs_list.add_argument(
        "--since", type=_moment, help="created at or after: ISO 8601 time or an age (15m, 2h, 7d)"
    )
    runs_list.add_argument("--until", type=_moment, help="created before: ISO 8601 time or an age")
    runs_list.add_argument("--limit", type=_positive, default=20, help="runs per page (20)")
    runs_list.add_argument("--page-token", default="", help="continue where a listing stopped")
    runs_list.set_defaults(func=_runs_list)
    runs_prune = client(
        runs_sub,
        "prune",
        "delete runs that finished more than --older-than ago, with their events, gates and "
        "workspaces (AdminService: needs an --admin-token when the server checks credentials)",
    )
    runs_prune.add_argument(
        "--older-than",
        type=_age,
        required=True,
        metavar="AGE",
        help="runs whose end is longer ago than this: 30d, 12h, 90m, 1d12h",
    )
    runs_prune.add_argument(
        "--dry-run", action="store_true", help="count the runs that would go; delete nothing"
    )
    runs_prune.set_defaults(func=_runs_prune)

    for name, text in (
        ("confirm", "approve a destructive action held for confirmation"),
        ("approve", "approve a pending gate (approval node or held action)"),
        ("reject", "reject a pending gate"),
    ):
        p = client(sub, name, text)
        p.add_argument("run_id")
        p.add_argument("node_id")
        p.add_argument("--comment", default="")
        p.add_argument(
            "--item",
            type=int,
            default=None,
            metavar="N",
            help="the item of a fan-out node whose gate to resolve (its item_index)",
        )
        p.add_argument(
            "--tool-call",
            default="",
            metavar="ID",
            help="the AI node's held tool call to resolve (its tool_call_id); default: the pending one",
        )
        p.set_defaults(func=_decide)

    p = client(sub, "review", "approve or reject an AI node's answer held for review")
    p.add_argument("run_id")
    p.add_argument("node_id")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", action="store_true", help="accept the held answer")
    verdict.add_argument("--reject", action="store_true", help="reject it: the node fails")
    p.add_argument(
        # Not --output: that is the -o format flag of every client command.
        "--answer",
        type=Path,
        metavar="FILE",
        help="with --approve: the answer to accept instead, as JSON (- for stdin); "
        "it must satisfy the node's contract",
    )
    p.add_argument("--comment", default="")
    p.set_defaults(func=_review)

    for name in ("pause", "resume", "cancel"):
        p = client(sub, name, f"{name} a run at the next node boundary")
        p.add_argument("run_id")
        p.add_argument("--reason", default="")
        p.add_argument(
            "--wait", action="store_true", help=f"wait until the run has {_WORD[name]} and say so"
        )
        p.set_defaults(func=_control)

    add_subscription_commands(sub, client)

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script: `source <(runwire completion bash)` in"
        " ~/.bashrc, `source <(runwire completion zsh)` in ~/.zshrc, or"
        " `runwire completion fish > ~/.config/fish/completions/runwire.fish`.",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))
    completion.set_defaults(func=_completion)
    return parser


# Set by Ctrl-C (see _on_interrupt).
_interrupted = threading.Event()


def _on_interrupt(_signum: int, _frame: object) -> None:
    """Python's own SIGINT handler, remembering that it ran.

    KeyboardInterrupt is raised wherever the main thread happens to be. Inside
    a gRPC call, unwinding the call can end in an error of its own (a
    cancelled call's status, a closed channel's ValueError) that replaces the
    KeyboardInterrupt; after Ctrl-C the exit status is 130 all the same.
    """
    _interrupted.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `runwire` console script; returns the exit code."""
    # Only where Python's handler is in place: an inherited ignore (a
    # background job) stays ignored, as it does for any program.
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _on_interrupt)
    try:
        args = _parser().parse_args(argv)
        args.raw_argv = list(sys.argv[1:] if argv is None else argv)
        result: int = args.func(args)
        sys.stdout.flush()
    except UsageError as exc:
        print(f"runwire: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly, and point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except Exception as exc:
        if _interrupted.is_set():
            print(file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, grpc.RpcError):
            return _fail(exc)
        raise
    return EXIT_INTERRUPTED if _interrupted.is_set() else result


if __name__ == "__main__":
    sys.exit(main())
