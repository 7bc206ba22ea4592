"""CLI: the `--kind` / `--node` options of an event filter, and the EventFilter they build.

`runwire watch`, `runwire run --watch` and `runwire subscriptions create` take
the same two options. For `watch` and `subscriptions create` the server checks
the values (an unknown kind is its INVALID_ARGUMENT naming `filter.kinds[i]`),
so the CLI passes them as written. `run --watch` checks them before it starts
the run (`check_for_flow`): a typo must not leave a started run behind a
refused watch.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection

from runwire._connect import UsageError
from runwire.v1 import events_pb2, run_service_pb2

__all__ = ["add_event_filter_arguments", "check_for_flow", "event_filter"]

# The cases of RunEvent's `event` oneof: what `--kind` may name.
_KINDS = frozenset(f.name for f in events_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["event"].fields)


def add_event_filter_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help=f"{prefix}only events of this kind (node_log, run_completed, ...); repeatable; "
        "run_completed always passes",
    )
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NODE_ID",
        help=f"{prefix}only events of this node (and run-level events); repeatable",
    )


def event_filter(args: argparse.Namespace) -> run_service_pb2.EventFilter:
    """The EventFilter of `--kind` / `--node` (empty when neither was given)."""
    return run_service_pb2.EventFilter(kinds=args.kind, node_ids=args.node)


def check_for_flow(args: argparse.Namespace, node_ids: Collection[str]) -> None:
    """Refuse (UsageError, exit 2) `--kind`/`--node` that cannot select anything
    in a run of a flow with these nodes, or that are given without `--watch`."""
    if not (args.kind or args.node):
        return
    if not args.watch:
        raise UsageError("--kind and --node choose what --watch shows; add --watch")
    for kind in args.kind:
        if kind not in _KINDS:
            raise UsageError(
                f"--kind {kind!r} is not a RunEvent kind; one of: {', '.join(sorted(_KINDS))}"
            )
    for node in args.node:
        if node not in node_ids:
            raise UsageError(
                f"--node {node!r} is not a node of this flow; its nodes: {', '.join(node_ids)}"
            )
