"""Watch a runwire run: one line of proto3 JSON per event, checked against the stream grammar.

    python clients/python/examples/watch.py --addr 127.0.0.1:50051 --run-id RUN_ID [--after-seq N]
        [--kinds KIND,...] [--node-ids NODE,...]
        [--token TOKEN] [--tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem]]
        [--give-up-after SECONDS]
    python clients/python/examples/watch.py --events [--cursor CURSOR] [--start latest|earliest]
        [--flow-name NAME] [--kinds KIND,...] [--node-ids NODE,...] [--count N] [connection flags]

--kinds and --node-ids filter the watch (the grammar check then follows the
filtered-stream rule). --events watches every run instead (WatchEvents,
resumed from the last cursor), printing the same lines, until --count events
(forever without it); it checks no grammar.

Exit status (the same in every client's example): 0 at the run's end (after
RunCompleted, or told by the server that the run finished at or before
--after-seq) when the grammar held; 1 when the stream broke a grammar rule or
skipped a seq; 2 for bad arguments; 3 when the watch failed: the server
answered with an error (for example NOT_FOUND), sent an event this client
does not know, or could not be reached within the give-up budget.
Reconnects on its own across transport errors and server restarts, noting
each reconnect on stderr, and on stderr the run's final status when it
ended at or before --after-seq.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import ssl
import sys

from grpclib.client import Channel
from grpclib.events import SendRequest, listen

from runwire_client import (
    Backoff,
    GrammarChecker,
    GrammarViolation,
    RunwireError,
    SeqGapError,
    UnknownEventError,
    event_to_json,
    v1,
    watch,
    watch_events,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--addr", default="127.0.0.1:50051", help="server address, HOST:PORT (default %(default)s)"
    )
    parser.add_argument("--run-id", help="the run to watch (not with --events)")
    parser.add_argument(
        "--after-seq", type=int, default=0, help="print only events after this seq (default 0)"
    )
    parser.add_argument(
        "--kinds", default="", help="only these event kinds (oneof names, comma-separated)"
    )
    parser.add_argument("--node-ids", default="", help="only these nodes' events (comma-separated)")
    parser.add_argument(
        "--events", action="store_true", help="watch every run's events (WatchEvents) instead"
    )
    parser.add_argument("--cursor", default="", help="--events: resume after this cursor")
    parser.add_argument(
        "--start",
        choices=["latest", "earliest"],
        default="latest",
        help="--events without --cursor: where to start (default %(default)s)",
    )
    parser.add_argument("--flow-name", default="", help="--events: only runs of this flow")
    parser.add_argument(
        "--count", type=int, default=0, help="--events: exit 0 after this many events"
    )
    parser.add_argument("--token", help="send `authorization: Bearer TOKEN`")
    parser.add_argument("--tls-ca", help="connect with TLS, trusting this PEM CA bundle")
    parser.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--tls-key", help="private key (PEM) of --tls-cert")
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=Backoff().give_up_after,
        metavar="SECONDS",
        help="give up after failing this long without an answer; 0 retries forever "
        "(default %(default)s)",
    )
    args = parser.parse_args(argv)
    host, _, port = args.addr.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--addr must be HOST:PORT, got {args.addr!r}")
    if args.events == (args.run_id is not None):
        parser.error("give either --run-id or --events")
    if args.count < 0:
        parser.error(f"--count must not be negative, got {args.count}")
    if args.after_seq < 0:
        parser.error(f"--after-seq must not be negative, got {args.after_seq}")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert is not None and args.tls_ca is None:
        parser.error("--tls-cert needs --tls-ca")
    args.host, args.port = host.strip("[]"), int(port)
    return args


def connect(args: argparse.Namespace) -> Channel:
    """A channel with the connection options of the command line."""
    context: ssl.SSLContext | None = None
    if args.tls_ca is not None:
        context = ssl.create_default_context(cafile=args.tls_ca)
        context.set_alpn_protocols(["h2"])
        if args.tls_cert is not None:
            context.load_cert_chain(args.tls_cert, args.tls_key)
    channel = Channel(args.host, args.port, ssl=context)
    if args.token is not None:
        bearer = f"Bearer {args.token}"

        async def authorize(event: SendRequest) -> None:
            event.metadata["authorization"] = bearer

        listen(channel, SendRequest, authorize)
    return channel


def event_filter(args: argparse.Namespace) -> v1.EventFilter | None:
    kinds = [k for k in args.kinds.split(",") if k]
    node_ids = [n for n in args.node_ids.split(",") if n]
    return v1.EventFilter(kinds=kinds, node_ids=node_ids) if kinds or node_ids else None


async def run_events(args: argparse.Namespace) -> int:
    """--events: every run's events from WatchEvents, until --count."""
    channel = connect(args)
    flt = v1.RunEventsFilter(flow_name=args.flow_name, events=event_filter(args))
    start = v1.StreamStart.EARLIEST if args.start == "earliest" else v1.StreamStart.LATEST
    backoff = Backoff(give_up_after=args.give_up_after or None)
    watching = watch_events(channel, flt, cursor=args.cursor, start=start, backoff=backoff)
    printed = 0
    try:
        async for item in watching:
            print(event_to_json(item.event), flush=True)
            printed += 1
            if printed == args.count:
                break
    except (RunwireError, UnknownEventError) as error:
        print(f"watch: {error}", file=sys.stderr)
        return 3
    finally:
        await watching.aclose()
        channel.close()
    return 0


async def run(args: argparse.Namespace) -> int:
    if args.events:
        return await run_events(args)
    channel = connect(args)
    flt = event_filter(args)
    checker = GrammarChecker(args.after_seq, flt)
    backoff = Backoff(give_up_after=args.give_up_after or None)
    watching = watch(channel, args.run_id, args.after_seq, backoff=backoff, event_filter=flt)
    try:
        async for event in watching:
            # Print first, so the line that breaks the grammar is on stdout too.
            print(event_to_json(event), flush=True)
            checker.feed(event)
        end = watching.end
        assert end is not None  # the watch stops only at the run's end or by raising
        if end.last_seq > args.after_seq:  # else nothing was watched: nothing to check
            checker.finish()
    except (GrammarViolation, SeqGapError) as error:
        print(f"watch: stream grammar broken: {error}", file=sys.stderr)
        return 1
    except (RunwireError, UnknownEventError) as error:
        print(f"watch: {error}", file=sys.stderr)
        return 3
    finally:
        channel.close()
    if end.last_seq <= args.after_seq:
        # No RunCompleted line printed to say it: the run ended before --after-seq.
        print(
            f"watch: run {end.run_id} finished {end.status_name} at seq {end.last_seq}",
            file=sys.stderr,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One line on stderr per reconnect, from watch's note on the runwire_client
    # logger; stdout carries only the events. Only that logger is set to INFO,
    # so no other library's chatter lands between the notes.
    note = logging.StreamHandler(sys.stderr)
    note.setFormatter(logging.Formatter("watch: %(message)s"))
    reconnects = logging.getLogger("runwire_client")
    reconnects.addHandler(note)
    reconnects.setLevel(logging.INFO)
    reconnects.propagate = False
    # One event per line, non-ASCII as is, whatever the locale says.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
