"""How the CLI reaches a server: address, TLS or mutual TLS and a bearer token, from flags or `RUNWIRE_*`."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["DEFAULT_ADDR", "Connection", "UsageError", "add_connection_arguments"]

DEFAULT_ADDR = "127.0.0.1:50051"


class UsageError(Exception):
    """A mistake on the command line or in a local file; the CLI exits 2."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a server takes, each with its env equivalent."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--addr",
        default=os.environ.get("RUNWIRE_ADDR", DEFAULT_ADDR),
        help="server address host:port (RUNWIRE_ADDR; default %(default)s)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("RUNWIRE_TOKEN") or None,
        help="bearer token sent as `authorization: Bearer …` (RUNWIRE_TOKEN)",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=_env_flag("RUNWIRE_TLS"),
        help="connect with TLS, trusting the system roots unless --ca-cert (RUNWIRE_TLS=1)",
    )
    group.add_argument(
        "--ca-cert",
        type=Path,
        default=os.environ.get("RUNWIRE_CA_CERT") or None,
        metavar="PEM",
        help="CA bundle that signed the server's certificate; implies --tls (RUNWIRE_CA_CERT)",
    )
    group.add_argument(
        "--client-cert",
        type=Path,
        default=os.environ.get("RUNWIRE_CLIENT_CERT") or None,
        metavar="PEM",
        help="client certificate chain for mutual TLS; implies --tls (RUNWIRE_CLIENT_CERT)",
    )
    group.add_argument(
        "--client-key",
        type=Path,
        default=os.environ.get("RUNWIRE_CLIENT_KEY") or None,
        metavar="PEM",
        help="private key of --client-cert (RUNWIRE_CLIENT_KEY)",
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to prove who we are to it."""

    addr: str
    token: str | None = None
    tls: bool = False
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Connection:
        """The connection the parsed connection options describe.

        Raises:
            UsageError: A client certificate without its key, or the reverse.
        """
        if (args.client_cert is None) != (args.client_key is None):
            raise UsageError("--client-cert and --client-key go together")
        return cls(
            addr=args.addr,
            token=args.token,
            tls=bool(args.tls or args.ca_cert or args.client_cert),
            ca_cert=args.ca_cert,
            client_cert=args.client_cert,
            client_key=args.client_key,
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS channel credentials, or None for a plaintext channel.

        Raises:
            UsageError: A certificate or key file cannot be read.
        """
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_cert, "CA certificate") if self.ca_cert else None,
            private_key=_read(self.client_key, "client key") if self.client_key else None,
            certificate_chain=(
                _read(self.client_cert, "client certificate") if self.client_cert else None
            ),
        )

    def channel(self) -> grpc.Channel:
        """A new channel to the server; the caller closes it."""
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(self.addr)
        return grpc.secure_channel(self.addr, credentials)

    def metadata(self) -> list[tuple[str, str]]:
        """Call metadata: the bearer token and the principal the caller names."""
        md = []
        if self.token:
            md.append(("authorization", f"Bearer {self.token}"))
        principal = os.environ.get("RUNWIRE_PRINCIPAL") or os.environ.get("USER")
        if principal:
            md.append(("x-runwire-principal", f"user:{principal}"))
        return md
