"""TLS and mutual TLS on the listener, with certificates made by openssl for the test."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import Harness, util_node

from runwire.config import Settings
from runwire.rpc import RunwireServer
from runwire.v1 import flow_pb2, run_service_pb2, run_service_pb2_grpc


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate for `alice`."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn, ext in (
        ("server", "localhost", ["-extfile", "san.ext"]),
        ("client", "alice", []),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", *ext, cwd=d)  # fmt: skip
    return d


def _stub(h: Harness, pki: Path, *, client_cert: bool) -> tuple[grpc.aio.Channel, Any]:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(pki / "client.pem").read_bytes() if client_cert else None,
    )
    channel = grpc.aio.secure_channel(h.addr, credentials)
    return channel, run_service_pb2_grpc.RunServiceStub(channel)


async def test_mutual_tls_names_the_client_as_principal(harness_factory: Any, pki: Path) -> None:
    h: Harness = await harness_factory(
        tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem"
    )
    channel, stub = _stub(h, pki, client_cert=True)
    flow = flow_pb2.Flow(name="mtls", nodes=[util_node("a", "set", value=1)])
    run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
    first = await anext(aiter(stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id))))
    assert first.events[0].run_started.principal == "cert:alice"
    await channel.close()
    anonymous, stub = _stub(h, pki, client_cert=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListRuns(run_service_pb2.ListRunsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake is refused
    await anonymous.close()


def test_mutual_tls_allows_a_non_loopback_listener(pki: Path, tmp_path: Path) -> None:
    tls = {"tls_cert": pki / "server.pem", "tls_key": pki / "server.key"}
    with pytest.raises(ValueError, match="without --auth-token or mutual TLS"):
        RunwireServer(Settings(listen="0.0.0.0:0", data_dir=tmp_path, **tls))
    RunwireServer(
        Settings(listen="0.0.0.0:0", data_dir=tmp_path, tls_client_ca=pki / "ca.pem", **tls)
    )
    with pytest.raises(ValueError, match="go together"):
        RunwireServer(Settings(data_dir=tmp_path, tls_cert=pki / "server.pem"))


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_connects_with_mutual_tls_from_flags_or_env(
    harness_factory: Any, pki: Path
) -> None:
    h: Harness = await harness_factory(
        tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem"
    )
    flow = pki / "flow.yaml"
    flow.write_text("name: mtls\nnodes:\n  - {id: a, action: {adapter: util, action: set, params: {value: 1}}}\n")  # fmt: skip
    certs = ["--ca-cert", str(pki / "ca.pem"), "--client-cert", str(pki / "client.pem"),
             "--client-key", str(pki / "client.key")]  # fmt: skip
    code, out, err = await _cli("run", str(flow), "--watch", "--plain", "--addr", h.addr, *certs)
    assert code == 0, err
    assert 'principal: "cert:alice"' in out
    env = {"RUNWIRE_ADDR": h.addr, "RUNWIRE_CA_CERT": str(pki / "ca.pem"),
           "RUNWIRE_CLIENT_CERT": str(pki / "client.pem"), "RUNWIRE_CLIENT_KEY": str(pki / "client.key")}  # fmt: skip
    code, out, err = await _cli("runs", "list", "-o", "json", env=env)
    assert code == 0, err
    assert json.loads(out)["runs"][0]["flowName"] == "mtls"
    # Without a client certificate the handshake fails: the server is unreachable to us.
    code, _, err = await _cli("runs", "list", "--addr", h.addr, "--ca-cert", str(pki / "ca.pem"))
    assert code == 3, err


async def test_cli_sends_bearer_token_from_flag_or_env(harness_factory: Any) -> None:
    h: Harness = await harness_factory(auth_tokens=("s3cret",))
    code, _, err = await _cli("runs", "list", "--addr", h.addr)
    assert code == 1
    assert err.startswith("runwire: UNAUTHENTICATED")
    code, _, err = await _cli("runs", "list", "--addr", h.addr, "--token", "s3cret")
    assert code == 0, err
    code, _, err = await _cli(
        "runs", "list", env={"RUNWIRE_ADDR": h.addr, "RUNWIRE_TOKEN": "s3cret"}
    )
    assert code == 0, err
