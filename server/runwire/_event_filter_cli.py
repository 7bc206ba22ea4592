"""CLI: the `--kind` / `--node` options of an event filter, and the EventFilter they build.

`runwire watch` and `runwire subscriptions create` take the same two options;
the server checks the values (an unknown kind is its INVALID_ARGUMENT naming
`filter.kinds[i]`), so the CLI passes them as written.
"""

from __future__ import annotations

import argparse

from runwire.v1 import run_service_pb2

__all__ = ["add_event_filter_arguments", "event_filter"]


def add_event_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help="only events of this kind (node_log, run_completed, ...); repeatable; run_completed always passes",
    )
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NODE_ID",
        help="only events of this node (and run-level events); repeatable",
    )


def event_filter(args: argparse.Namespace) -> run_service_pb2.EventFilter:
    """The EventFilter of `--kind` / `--node` (empty when neither was given)."""
    return run_service_pb2.EventFilter(kinds=args.kind, node_ids=args.node)
