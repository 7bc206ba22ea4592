"""The http adapter end to end against a real HTTP server on loopback: outputs,
status handling, egress protection after DNS and on every redirect, size caps,
and bad requests refused at StartRun."""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from conftest import Harness, edge
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.adapters import http as http_adapter
from runwire.config import add_serve_arguments, settings_from_args
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2

ALLOW_LOOPBACK = ("127.0.0.1",)


@dataclass
class Seen:
    """One request the test server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Web:
    """A real HTTP server on 127.0.0.1 and what it has received."""

    base: str
    port: int
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


class _Handler(BaseHTTPRequestHandler):
    web: Web

    def log_message(self, *args: Any) -> None:
        pass  # keep pytest's output clean

    def _reply(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.web.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/json":
            self._reply(200, b'{"hello": "world", "n": 1}', "application/json")
        elif url.path == "/text":
            self._reply(200, b"plain text", "text/plain; charset=utf-8")
        elif url.path.startswith("/status/"):
            self._reply(int(url.path.rsplit("/", 1)[1]), b'{"error": "nope"}', "application/json")
        elif url.path == "/redirect":
            self._reply(int(query.get("code", "302")), b"", "text/plain", Location=query["to"])
        elif url.path == "/loop":
            self._reply(302, b"", "text/plain", Location="/loop")
        elif url.path == "/big":
            self._reply(200, b"x" * int(query["n"]), "application/json")
        elif url.path == "/echo":
            echo = {
                "method": self.command,
                "host": self.headers.get("Host"),
                "content_type": self.headers.get("Content-Type"),
                "authorization": self.headers.get("Authorization"),
                "body": body.decode(),
            }
            self._reply(200, json.dumps(echo).encode(), "application/json")
        else:
            self._reply(404, b"not found", "text/plain")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Web]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    web = Web(f"{'https' if tls else 'http'}://127.0.0.1:{port}", port)
    handler.web = web
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield web
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def web() -> Iterator[Web]:
    """A plain HTTP server on 127.0.0.1:0."""
    yield from _serve()


@pytest.fixture
def tls_web(tmp_path: Path) -> Iterator[tuple[Web, Path]]:
    """An HTTPS server on 127.0.0.1:0 whose certificate names only `localhost`."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    for web in _serve(context):
        yield web, cert


def http_node(node_id: str, url: str, **params: Any) -> flow_pb2.Node:
    """An http request node."""
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = "http", "request"
    node.action.params.update({"url": url, **params})
    return node


def _flow(*nodes: flow_pb2.Node, edges: list[flow_pb2.Edge] | None = None) -> flow_pb2.Flow:
    flow = flow_pb2.Flow(name="http", nodes=list(nodes), edges=edges or [])
    flow.settings.confirm_destructive = False
    return flow


def _outputs(events: list[events_pb2.RunEvent]) -> dict[str, Any]:
    return {
        e.node_id: json.loads(e.node_succeeded.output_json)
        for e in events
        if e.HasField("node_succeeded")
    }


def _by_node(events: list[events_pb2.RunEvent], case: str) -> dict[str, Any]:
    return {e.node_id: getattr(e, case) for e in events if e.HasField(case)}


async def test_http_request_outputs_status_headers_and_parsed_json(
    harness_factory: Any, web: Web
) -> None:
    h: Harness = await harness_factory(http_allow=ALLOW_LOOPBACK)
    flow = _flow(
        http_node("fetch", web.url("/json")),
        http_node("text", web.url("/text")),
        http_node(
            "post",
            web.url("/echo"),
            method="POST",
            json={"greeting": "{{ nodes.fetch.output.body.hello }}", "count": 3},
            headers={"Authorization": "Bearer t0ken"},
        ),
        edges=[edge("fetch", "post")],
    )
    run = await h.start(flow)
    events = await h.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    out = _outputs(events)
    assert out["fetch"]["status"] == 200
    assert out["fetch"]["body"] == {"hello": "world", "n": 1}
    assert out["fetch"]["size"] == len(b'{"hello": "world", "n": 1}')
    assert out["fetch"]["truncated"] is False
    assert out["fetch"]["headers"]["content-type"] == "application/json"
    assert out["fetch"]["url"] == web.url("/json")
    assert out["text"]["body"] == "plain text"
    echo = out["post"]["body"]
    assert echo["method"] == "POST"
    assert echo["content_type"] == "application/json"
    assert echo["body"] == '{"count":3,"greeting":"world"}'
    assert echo["authorization"] == "Bearer t0ken"
    assert echo["host"] == f"127.0.0.1:{web.port}"


async def test_http_non_2xx_fails_the_node_unless_accepted(harness_factory: Any, web: Web) -> None:
    h: Harness = await harness_factory(http_allow=ALLOW_LOOPBACK)
    flow = _flow(
        http_node("missing", web.url("/status/404")),
        http_node("tolerated", web.url("/status/404"), accept_status=[404]),
        http_node("handler", web.url("/json")),
        edges=[edge("missing", "handler", flow_pb2.EDGE_CONDITION_FAILURE)],
    )
    run = await h.start(flow)
    events = await h.events(run.run_id)
    failed = _by_node(events, "node_failed")
    assert list(failed) == ["missing"]
    assert failed["missing"].error.reason == "HTTP_STATUS"
    assert failed["missing"].error.message == f"GET {web.url('/status/404')} answered 404 Not Found"
    response = json.loads(failed["missing"].output_json)
    assert response["status"] == 404
    assert response["body"] == {"error": "nope"}
    out = _outputs(events)
    assert out["tolerated"]["status"] == 404
    assert "handler" in out


async def test_http_loopback_is_refused_without_an_allow_entry(harness: Harness, web: Web) -> None:
    """Without --http-allow, loopback is refused, by address and by a name that
    resolves to it, before any connection is made."""
    flow = _flow(
        http_node("by_ip", web.url("/json")),
        http_node("by_name", f"http://localhost:{web.port}/json"),
        http_node("mapped", f"http://[::ffff:127.0.0.1]:{web.port}/json"),
    )
    run = await harness.start(flow)
    events = await harness.events(run.run_id)
    violations = _by_node(events, "sandbox_violation")
    assert sorted(violations) == ["by_ip", "by_name", "mapped"]
    for v in violations.values():
        assert v.kind == events_pb2.SANDBOX_VIOLATION_KIND_NETWORK
        assert v.adapter == "http"
    assert violations["by_ip"].target == web.url("/json")
    assert violations["by_ip"].detail.startswith("127.0.0.1 is a loopback address")
    assert "localhost resolves to" in violations["by_name"].detail
    assert all(f.error.reason == "SANDBOX" for f in _by_node(events, "node_failed").values())
    assert web.seen == []


async def test_http_redirects_are_checked_at_every_hop(harness_factory: Any, web: Web) -> None:
    h: Harness = await harness_factory(http_allow=ALLOW_LOOPBACK)
    metadata = "http://169.254.169.254/latest/meta-data/"
    flow = _flow(
        http_node("to_metadata", web.url(f"/redirect?to={metadata}")),
        http_node("to_other_loopback", web.url(f"/redirect?to=http://127.0.0.2:{web.port}/json")),
        http_node("to_file", web.url("/redirect?to=file:///etc/passwd")),
        http_node("followed", web.url("/redirect?to=/json&code=307")),
        http_node("not_followed", web.url("/redirect?to=/json"), follow_redirects=False),
        http_node("looping", web.url("/loop")),
    )
    flow.settings.max_parallel = len(flow.nodes)  # all start before the first failure ends the run
    run = await h.start(flow)
    events = await h.events(run.run_id)
    violations = _by_node(events, "sandbox_violation")
    assert sorted(violations) == ["to_file", "to_metadata", "to_other_loopback"]
    assert violations["to_metadata"].target == metadata
    assert "a cloud metadata address" in violations["to_metadata"].detail
    assert "127.0.0.2 is a loopback address" in violations["to_other_loopback"].detail
    assert violations["to_file"].target == "file:///etc/passwd"
    out = _outputs(events)
    assert out["followed"]["body"] == {"hello": "world", "n": 1}
    assert out["followed"]["url"] == web.url("/json")
    failed = _by_node(events, "node_failed")
    assert failed["not_followed"].error.reason == "HTTP_STATUS"
    assert json.loads(failed["not_followed"].output_json)["headers"]["location"] == "/json"
    assert failed["looping"].error.reason == "HTTP_REDIRECTS"
    assert sum(1 for s in web.seen if s.path == "/loop") == http_adapter.MAX_REDIRECTS + 1


async def test_http_redirect_to_another_origin_drops_credentials(
    harness_factory: Any, web: Web
) -> None:
    h: Harness = await harness_factory(http_allow=("127.0.0.1", "localhost"))
    other = f"http://localhost:{web.port}/echo"
    run = await h.start(
        _flow(
            http_node(
                "post",
                web.url(f"/redirect?to={other}&code=303"),
                method="POST",
                body="secret body",
                headers={"Authorization": "Bearer t0ken", "Content-Type": "text/plain"},
            )
        )
    )
    echo = _outputs(await h.events(run.run_id))["post"]["body"]
    assert echo == {
        "method": "GET",
        "host": f"localhost:{web.port}",
        "content_type": None,
        "authorization": None,
        "body": "",
    }


async def test_http_connects_to_the_address_it_checked(
    harness_factory: Any, web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name is resolved once per hop, by the adapter, and the
    connection goes to that checked address. `svc.test` does not exist in real
    DNS, so any second lookup (by httpx) would fail the request."""
    lookups: list[str] = []

    async def fake_resolve(host: str, port: int) -> list[Any]:
        lookups.append(host)
        addresses = {"svc.test": ["127.0.0.1"], "rebind.test": ["93.184.216.34", "127.0.0.1"]}
        return [http_adapter.ipaddress.ip_address(a) for a in addresses[host]]

    monkeypatch.setattr(http_adapter, "resolve_host", fake_resolve)
    h: Harness = await harness_factory(http_allow=("svc.test",))
    flow = _flow(
        http_node("named", f"http://svc.test:{web.port}/echo"),
        http_node("mixed", f"http://rebind.test:{web.port}/echo"),
    )
    run = await h.start(flow)
    events = await h.events(run.run_id)
    assert _outputs(events)["named"]["body"]["host"] == f"svc.test:{web.port}"
    violation = _by_node(events, "sandbox_violation")["mixed"]
    assert "rebind.test resolves to 127.0.0.1, a loopback address" in violation.detail
    assert sorted(lookups) == ["rebind.test", "svc.test"]
    assert [s.headers["Host"] for s in web.seen] == [f"svc.test:{web.port}"]


async def test_http_tls_verifies_the_name_while_connecting_by_address(
    harness_factory: Any, tls_web: tuple[Web, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connecting to the checked IP must still send SNI and verify the certificate
    against the URL's host name: this certificate names only `localhost`."""
    web, cert = tls_web
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    h: Harness = await harness_factory(http_allow=("localhost", "127.0.0.1"))
    flow = _flow(
        http_node("by_name", f"https://localhost:{web.port}/json"),
        http_node("by_ip", f"https://127.0.0.1:{web.port}/json"),
    )
    run = await h.start(flow)
    events = await h.events(run.run_id)
    assert _outputs(events)["by_name"]["body"] == {"hello": "world", "n": 1}
    failed = _by_node(events, "node_failed")["by_ip"]
    assert failed.error.reason == "HTTP_CONNECT"
    assert "CERTIFICATE_VERIFY_FAILED" in failed.error.message


async def test_http_response_over_the_cap_is_truncated_and_flagged(
    harness_factory: Any, web: Web
) -> None:
    h: Harness = await harness_factory(http_allow=ALLOW_LOOPBACK, http_max_bytes=1024)
    run = await h.start(_flow(http_node("big", web.url("/big?n=5000"))))
    out = _outputs(await h.events(run.run_id))["big"]
    assert out["truncated"] is True
    assert out["size"] == 1024
    assert out["body"] == "x" * 1024  # not parsed: a cut JSON document is not JSON


async def test_http_templated_body_over_the_cap_is_refused_at_run_time(
    harness_factory: Any, web: Web
) -> None:
    h: Harness = await harness_factory(http_allow=ALLOW_LOOPBACK, http_max_bytes=1024)
    inputs = struct_pb2.Struct()
    inputs.update({"blob": "b" * 2000})
    flow = _flow(http_node("send", web.url("/echo"), method="PUT", body="{{ inputs.blob }}"))
    run = await h.start(flow, inputs=inputs)
    events = await h.events(run.run_id)
    violation = _by_node(events, "sandbox_violation")["send"]
    assert violation.kind == events_pb2.SANDBOX_VIOLATION_KIND_LIMIT
    assert (
        violation.detail == "request body is 2000 bytes, over this server's 1024-byte request limit"
    )
    assert web.seen == []


async def test_http_delete_waits_for_confirmation(harness_factory: Any, web: Web) -> None:
    h: Harness = await harness_factory(http_allow=ALLOW_LOOPBACK)
    flow = flow_pb2.Flow(name="http", nodes=[http_node("drop", web.url("/echo"), method="DELETE")])
    run = await h.start(flow)
    events: list[events_pb2.RunEvent] = []
    async for response in h.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
        events.extend(response.events)
        if any(e.HasField("awaiting_confirmation") for e in events):
            break
    summary = _by_node(events, "awaiting_confirmation")["drop"].action_summary
    assert summary == f"HTTP DELETE {web.url('/echo')}"
    assert web.seen == []
    await h.stub.ConfirmAction(
        run_service_pb2.ConfirmActionRequest(run_id=run.run_id, node_id="drop", approve=True)
    )
    events = await h.events(run.run_id)
    assert _outputs(events)["drop"]["body"]["method"] == "DELETE"


P = "flow.nodes[0].action.params"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"url": "file:///etc/passwd"}, f"{P}.url"),
        ({"url": "ftp://example.com/x"}, f"{P}.url"),
        ({"url": "gopher://{{ inputs.host }}/"}, f"{P}.url"),
        ({"url": "http://exa mple.com/"}, f"{P}.url"),
        ({"url": "http://example.com/\r\nX-Injected: 1"}, f"{P}.url"),
        ({"url": "http:///path-only"}, f"{P}.url"),
        (
            {"url": "https://example.com", "headers": {"X-A": "ok\r\nX-B: injected"}},
            f"{P}.headers.X-A",
        ),
        ({"url": "https://example.com", "headers": {"X-A": "nul\x00"}}, f"{P}.headers.X-A"),
        ({"url": "https://example.com", "headers": {"Bad Name": "v"}}, f"{P}.headers"),
        ({"url": "https://example.com", "headers": {"X\r\nY": "v"}}, f"{P}.headers"),
        ({"url": "https://example.com", "headers": {"Host": "evil"}}, f"{P}.headers.Host"),
        ({"url": "https://example.com", "method": "TRACE"}, f"{P}.method"),
        ({"url": "https://example.com", "timeout": 0}, f"{P}.timeout"),
        ({"url": "https://example.com", "body": "a", "json": {}}, f"{P}.json"),
        ({"url": "https://example.com", "body": "b" * (1024 * 1024 + 1)}, f"{P}.body"),
        ({"url": "https://example.com", "json": {"k": "j" * (1024 * 1024)}}, f"{P}.json"),
        ({"url": "https://example.com", "accept_status": [99]}, f"{P}.accept_status[0]"),
    ],
    ids=[
        "file-scheme",
        "ftp-scheme",
        "templated-gopher",
        "space-in-host",
        "crlf-in-url",
        "no-host",
        "crlf-in-header-value",
        "nul-in-header-value",
        "space-in-header-name",
        "crlf-in-header-name",
        "host-header",
        "unknown-method",
        "zero-timeout",
        "body-and-json",
        "oversized-body",
        "oversized-json",
        "bad-accept-status",
    ],
)
async def test_http_bad_params_are_refused_at_start_run(
    harness: Harness, params: dict[str, Any], field: str
) -> None:
    node = http_node("a", **params)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.start(_flow(node))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    assert [v.field for v in bad.field_violations] == [field]
    assert list((await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []
    # Still serving: a request refused by egress protection is a run, not an error.
    run = await harness.start(_flow(http_node("ok", "http://127.0.0.1:9/")))
    events = await harness.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_FAILED


def test_http_allow_flag_and_environment_take_hosts_and_cidrs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNWIRE_HTTP_ALLOW", "fd00::/8, internal.example")
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings = settings_from_args(
        parser.parse_args(["--http-allow", "10.0.0.0/8", "--http-max-bytes", "2M"])
    )
    assert settings.http_allow == ("fd00::/8", "internal.example", "10.0.0.0/8")
    assert settings.http_max_bytes == 2 << 20
    policy = http_adapter.EgressPolicy.parse(settings.http_allow)
    ip = http_adapter.ipaddress.ip_address
    assert policy.refusal("x", ip("10.1.2.3")) is None
    assert policy.refusal("x", ip("fd12::1")) is None
    assert policy.refusal("internal.example", ip("192.168.0.1")) is None
    assert policy.refusal("x", ip("192.168.0.1")) == "a private address"
    assert policy.refusal("x", ip("2002:7f00:1::1")) == "a loopback address"  # 6to4 of 127.0.0.1
    assert policy.refusal("x", ip("168.63.129.16")) == "a cloud metadata address"
    assert policy.refusal("x", ip("93.184.216.34")) is None
    with pytest.raises(ValueError, match="not a host name"):
        http_adapter.EgressPolicy.parse(("http://x/",))
