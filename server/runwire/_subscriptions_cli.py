"""CLI: `runwire subscriptions create|list|get|delete|resume` (webhook subscriptions)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC

import grpc

from runwire._connect import Connection, UsageError
from runwire._event_filter_cli import add_event_filter_arguments, event_filter
from runwire._output import dump
from runwire.v1 import (
    events_pb2,
    run_service_pb2,
    subscription_service_pb2,
    subscription_service_pb2_grpc,
)

__all__ = ["add_subscription_commands"]

pb = subscription_service_pb2
_STARTS = {
    "latest": run_service_pb2.STREAM_START_LATEST,
    "earliest": run_service_pb2.STREAM_START_EARLIEST,
}


def _state(sub: pb.Subscription) -> str:
    return pb.SubscriptionState.Name(sub.state).removeprefix("SUBSCRIPTION_STATE_")


def _time(sub: pb.Subscription, field: str) -> str:
    if not sub.HasField(field):
        return "-"
    moment = getattr(sub, field).ToDatetime(tzinfo=UTC)
    return str(moment.isoformat(timespec="seconds").replace("+00:00", "Z"))


def _filter_text(sub: pb.Subscription) -> str:
    f = sub.filter
    parts = [f"flow={f.flow_name}"] if f.flow_name else []
    parts += [f"label {k}={v}" for k, v in sorted(f.labels.items())]
    parts += [
        "status=" + ",".join(events_pb2.RunStatus.Name(s).removeprefix("RUN_STATUS_") for s in f.run_statuses)
    ] if f.run_statuses else []  # fmt: skip
    parts += ["kind=" + ",".join(f.events.kinds)] if f.events.kinds else []
    parts += ["node=" + ",".join(f.events.node_ids)] if f.events.node_ids else []
    return "; ".join(parts) or "every event"


def _lines(sub: pb.Subscription) -> str:
    rows = [
        ("name", sub.name),
        ("target_url", sub.target_url),
        ("state", _state(sub)),
        ("filter", _filter_text(sub)),
        ("created", _time(sub, "create_time")),
        ("delivered_events", str(sub.delivered_event_count)),
        ("last_delivery", _time(sub, "last_delivery_time")),
        ("delivered_cursor", sub.delivered_cursor),
        ("consecutive_failures", str(sub.consecutive_failures)),
        ("last_error", sub.last_error or "-"),
    ]
    return "\n".join(f"{k}: {v}" for k, v in rows)


def _table(subs: list[pb.Subscription]) -> str:
    header = ["NAME", "STATE", "DELIVERED", "FAILURES", "TARGET"]
    rows = [header] + [
        [s.name, _state(s), str(s.delivered_event_count), str(s.consecutive_failures), s.target_url]
        for s in subs
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _show(sub: pb.Subscription, message: object, args: argparse.Namespace) -> None:
    if args.output in ("json", "yaml"):
        print(dump(message, args.output))  # type: ignore[arg-type]  # a protobuf message
    else:
        print(_lines(sub))


def _stub(
    args: argparse.Namespace,
) -> tuple[Connection, grpc.Channel, subscription_service_pb2_grpc.SubscriptionServiceStub]:
    connection = Connection.from_args(args)
    channel = connection.channel()
    return connection, channel, subscription_service_pb2_grpc.SubscriptionServiceStub(channel)


def _create(args: argparse.Namespace) -> int:
    sub = pb.Subscription(target_url=args.url, secret=args.secret or "", start=_STARTS[args.start])
    if args.flow:
        sub.filter.flow_name = args.flow
    for label in args.label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise UsageError(f"--label takes KEY=VALUE, got {label!r}")
        sub.filter.labels[key] = value
    for status in args.status:
        name = status.upper()
        name = name if name.startswith("RUN_STATUS_") else f"RUN_STATUS_{name}"
        if name not in events_pb2.RunStatus.keys():  # noqa: SIM118 - an enum wrapper, not a dict
            raise UsageError(f"--status: unknown run status {status!r}")
        sub.filter.run_statuses.append(events_pb2.RunStatus.Value(name))  # type: ignore[arg-type]  # a RunStatus number
    sub.filter.events.MergeFrom(event_filter(args))
    request = pb.CreateSubscriptionRequest(subscription=sub, request_id=args.request_id)
    connection, channel, stub = _stub(args)
    with channel:
        created = stub.CreateSubscription(request, metadata=connection.metadata()).subscription
    if args.output in ("json", "yaml"):
        print(dump(created, args.output))
    else:
        print(created.name)
        print(f"secret: {created.secret}  (shown once: keep it to verify signatures)")
    return 0


def _list(args: argparse.Namespace) -> int:
    connection, channel, stub = _stub(args)
    with channel:
        reply = stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(page_size=args.limit, page_token=args.page_token),
            metadata=connection.metadata(),
        )
    if args.output in ("json", "yaml"):
        print(dump(reply, args.output))
        return 0
    print(_table(list(reply.subscriptions)))
    if reply.next_page_token:
        print(f"more: --page-token {reply.next_page_token}")
    return 0


def _one(verb: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        name = args.name if args.name.startswith("subscriptions/") else f"subscriptions/{args.name}"
        connection, channel, stub = _stub(args)
        md = connection.metadata()
        with channel:
            if verb == "get":
                got = stub.GetSubscription(pb.GetSubscriptionRequest(name=name), metadata=md)
                _show(got.subscription, got, args)
            elif verb == "resume":
                res = stub.ResumeSubscription(pb.ResumeSubscriptionRequest(name=name), metadata=md)
                _show(res.subscription, res, args)
            else:
                stub.DeleteSubscription(pb.DeleteSubscriptionRequest(name=name), metadata=md)
                print(f"deleted {name}")
        return 0

    return command


def add_subscription_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    client: Callable[..., argparse.ArgumentParser],
) -> None:
    """Declare `runwire subscriptions ...`; `client` adds a command with connection options."""
    subs = sub.add_parser("subscriptions", help="manage webhook subscriptions")
    cmds = subs.add_subparsers(dest="subscriptions_command", required=True, metavar="COMMAND")
    create = client(cmds, "create", "subscribe a URL to events (signed POSTs)")
    create.add_argument("url", help="https URL that receives the POSTs")
    create.add_argument("--flow", help="only runs of the flow with this name")
    create.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this label; repeatable",
    )
    create.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help="only runs in this status when read (RUNNING, FAILED, ...); repeatable",
    )
    add_event_filter_arguments(create)
    create.add_argument(
        "--start",
        choices=sorted(_STARTS),
        default="latest",
        help="latest (default): events from now on; earliest: every retained event",
    )
    create.add_argument(
        "--secret", help="signing secret whsec_<base64>; default: the server makes one"
    )
    create.add_argument("--request-id", default="", help="idempotency key")
    create.set_defaults(func=_create)  # fmt: skip
    listing = client(cmds, "list", "list subscriptions, oldest first")
    listing.add_argument("--limit", type=int, default=50, help="subscriptions per page (50)")
    listing.add_argument("--page-token", default="", help="continue where a listing stopped")
    listing.set_defaults(func=_list)
    for verb, text in (
        ("get", "show a subscription and its delivery state"),
        ("delete", "delete a subscription; delivery stops"),
        ("resume", "resume a subscription paused after failed deliveries"),
    ):
        p = client(cmds, verb, text)
        p.add_argument("name", help="subscriptions/<id> (or just the id)")
        p.set_defaults(func=_one(verb))
