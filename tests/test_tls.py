"""TLS and mutual TLS on the listener, with certificates made by openssl for the test."""

from __future__ import annotations

import subprocess
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
