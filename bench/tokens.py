"""`make bench` (last line) and `make bench-tokens`: model tokens through runwire to one watcher.

A fake model server (this file with `--fake`, a separate process speaking the
OpenAI Chat Completions SSE format on loopback) streams tokens; a `runwire
serve` process (embedded Postgres, `--ai-provider fake=...`) runs a flow of
one AI node against it; one watcher in this process reads the run's stream
over gRPC. Each token the fake sends is ` <its send time in ns>`, so the
watcher knows when every token left the model.

1. Throughput: the fake streams `--tokens` tokens as fast as it can. Printed:
   durable NodeToken events/s and model tokens/s at the watcher (first to
   last NodeToken received), beside a reference measured in the same run: the
   same fake stream read directly with the `openai` SDK, no runwire between.
2. Latency: the fake streams at `--rate` tokens/s (50 by default) for
   `--seconds`. Printed: per token, model send -> watcher receive (includes
   runwire's ~20 ms coalescing, the group commit and delivery) and the
   NodeToken's event_time -> watcher receive (commit and delivery only), p50
   and p99.

Each figure is min / median / max over `--repeats`; the load average is
printed before, between and after. Everything runs on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from engine import Server  # noqa: E402  (a sibling script, not a package)

ROOT = BENCH.parent
_ASK = re.compile(r"tokens=(\d+) rate=([\d.]+)")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


# -- the fake model (a subprocess) -----------------------------------------------


def _event(payload: dict[str, object] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    body = f"data: {data}\n\n".encode()
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


def _chunk(content: str | None, finish: str | None = None) -> dict[str, object]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n")[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            request = json.loads(await reader.readexactly(length))
            text = str(request["messages"][-1]["content"])
            found = _ASK.search(text)
            count, rate = (int(found[1]), float(found[2])) if found else (10, 0.0)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
            )
            start = time.monotonic()
            for i in range(count):
                if rate:
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                writer.write(_event(_chunk(f" {time.time_ns()}")))
                await writer.drain()
            writer.write(_event(_chunk(None, "stop")))
            writer.write(_event("[DONE]") + b"0\r\n\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _fake_main() -> None:
    server = await asyncio.start_server(_serve_one, "127.0.0.1", 0)
    print(f"fake model listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


# -- the measurements ----------------------------------------------------------------


def _flow(tokens: int, rate: float) -> flow_pb2.Flow:
    node = flow_pb2.Node(id="talk")
    node.ai.provider = "fake"
    node.ai.task = f"tokens={tokens} rate={rate:g}"
    node.timeout.FromSeconds(600)
    return flow_pb2.Flow(name="bench-tokens", nodes=[node])


async def _watch(addr: str, tokens: int, rate: float) -> dict[str, list[float]]:
    """Run the flow and watch it; per NodeToken the receive time and what it carried."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=_flow(tokens, rate)))).run
        received: list[float] = []
        model_ms: list[float] = []
        event_ms: list[float] = []
        count = 0
        async for response in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
            now = time.time_ns()
            for e in response.events:
                if e.HasField("node_token"):
                    received.append(now / 1e9)
                    event_ms.append((now - e.event_time.ToNanoseconds()) / 1e6)
                    for stamp in e.node_token.delta.split():
                        count += 1
                        model_ms.append((now - int(stamp)) / 1e6)
                elif (
                    e.HasField("run_completed")
                    and e.run_completed.status != events_pb2.RUN_STATUS_SUCCEEDED
                ):
                    raise SystemExit(f"bench: run {run.run_id} ended {e.run_completed}")
        if count != tokens:
            raise SystemExit(f"bench: the watcher saw {count} of {tokens} tokens")
        return {"received": received, "model_ms": model_ms, "event_ms": event_ms}


async def _direct(base_url: str, tokens: int) -> float:
    """The reference: model tokens/s read straight from the fake with the openai SDK."""
    from openai import AsyncOpenAI  # the server's own client library

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="bench-model",
            messages=[{"role": "user", "content": f"tokens={tokens} rate=0"}],
            stream=True,
        )
        first = last = 0.0
        seen = 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                last = time.monotonic()
                first = first or last
                seen += 1
        return (seen - 1) / (last - first)
    finally:
        await client.close()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _fmt(values: list[float]) -> str:
    digits = 0 if max(values) >= 100 else 1
    return " / ".join(
        f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values))
    )


async def _measure(addr: str, base_url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        out.setdefault(name, []).append(value)

    await _watch(addr, 50, 0)  # warm up: connections, the SDK import, the first run
    for r in range(args.repeats):
        add(
            "reference: model tokens/s read directly (openai SDK)",
            await _direct(base_url, args.tokens),
        )
        fast = await _watch(addr, args.tokens, 0)
        span = fast["received"][-1] - fast["received"][0]
        add("fast: durable NodeToken events/s at the watcher", (len(fast["received"]) - 1) / span)
        add("fast: model tokens/s at the watcher", (args.tokens - 1) / span)
        paced = await _watch(addr, int(args.rate * args.seconds), args.rate)
        add("paced: NodeToken events/s", len(paced["received"]) / args.seconds)
        add("paced: model send -> watcher p50 (ms)", _pct(paced["model_ms"], 50))
        add("paced: model send -> watcher p99 (ms)", _pct(paced["model_ms"], 99))
        add("paced: NodeToken event_time -> watcher p50 (ms)", _pct(paced["event_ms"], 50))
        add("paced: NodeToken event_time -> watcher p99 (ms)", _pct(paced["event_ms"], 99))
        print(f"  repeat {r + 1}: {_load()}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens of the fast stream")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s of the paced stream")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced stream")
    args = parser.parse_args()
    if args.fake:
        asyncio.run(_fake_main())
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-tokens-"))
    fake = subprocess.Popen([sys.executable, __file__, "--fake"], stdout=subprocess.PIPE, text=True)
    server: Server | None = None
    try:
        assert fake.stdout is not None
        port = fake.stdout.readline().split()[-1]
        base_url = f"http://127.0.0.1:{port}/v1"
        server = Server(
            "this tree", ROOT, tmp, extra=("--ai-provider", f"fake={base_url}#bench-model")
        )
        print(f"bench-tokens: before: {_load()}", flush=True)
        server.start()
        figures = asyncio.run(_measure(server.addr, base_url, args))
    finally:
        if server is not None:
            server.stop()
        fake.terminate()
        fake.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nAI tokens: one AI node, one watcher; fast stream {args.tokens} tokens, "
        f"paced {args.rate:g} tokens/s for {args.seconds:g} s; "
        f"min / median / max over {args.repeats} repeats"
    )
    width = max(map(len, figures))
    for name, values in figures.items():
        print(f"  {name:<{width}}  {_fmt(values)}")
    print(f"bench-tokens: after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
