"""Watch a runwire run: one line of proto3 JSON per event, checked against the stream grammar.

    python clients/python/examples/watch.py --addr 127.0.0.1:50051 --run-id RUN_ID [--after-seq N]

Exit status: 0 after RunCompleted when the grammar held; 1 when the stream
broke a grammar rule; 2 for bad arguments; 3 when the server answered with an
error (for example NOT_FOUND) or sent an event this client does not know.
Reconnects on its own across transport errors and server restarts, noting
each reconnect on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys

from grpclib.client import Channel

from runwire_client import (
    GrammarChecker,
    GrammarViolation,
    RunwireError,
    UnknownEventError,
    event_to_json,
    watch,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="server address, HOST:PORT")
    parser.add_argument("--run-id", required=True, help="the run to watch")
    parser.add_argument(
        "--after-seq", type=int, default=0, help="print only events after this seq (default 0)"
    )
    args = parser.parse_args(argv)
    host, _, port = args.addr.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--addr must be HOST:PORT, got {args.addr!r}")
    args.host, args.port = host.strip("[]"), int(port)
    return args


async def run(host: str, port: int, run_id: str, after_seq: int) -> int:
    channel = Channel(host, port)
    checker = GrammarChecker(after_seq)
    try:
        async for event in watch(channel, run_id, after_seq):
            # Print first, so the line that breaks the grammar is on stdout too.
            print(event_to_json(event), flush=True)
            checker.feed(event)
        checker.finish()
    except GrammarViolation as error:
        print(f"watch: stream grammar broken: {error}", file=sys.stderr)
        return 1
    except (RunwireError, UnknownEventError) as error:
        print(f"watch: {error}", file=sys.stderr)
        return 3
    finally:
        channel.close()
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
    return asyncio.run(run(args.host, args.port, args.run_id, args.after_seq))


if __name__ == "__main__":
    sys.exit(main())
