"""How the CLI reaches a server: address, TLS or mutual TLS and a bearer token, from flags, `RUNWIRE_*` or a runwire.toml profile."""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = [
    "DEFAULT_ADDR",
    "Connection",
    "UsageError",
    "add_connection_arguments",
    "load_profile",
]

DEFAULT_ADDR = "127.0.0.1:50051"


class UsageError(Exception):
    """A mistake on the command line or in a local file; the CLI exits 2."""


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in {"1", "true", "yes", "on"}


# Profile keys, each also a flag (`--ca-cert`) and a variable (RUNWIRE_CA_CERT).
_KEYS = ("addr", "token", "token_file", "tls", "ca_cert", "client_cert", "client_key")


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a server takes.

    Each is resolved flag first, then its RUNWIRE_* variable, then the profile
    (`--profile`, from runwire.toml), then the built-in default.
    """
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--addr", help=f"server address host:port (RUNWIRE_ADDR; default {DEFAULT_ADDR})"
    )
    group.add_argument(
        "--token", help="bearer token sent as `authorization: Bearer …` (RUNWIRE_TOKEN)"
    )
    group.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="read the bearer token from this file (RUNWIRE_TOKEN_FILE)",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="connect with TLS, trusting the system roots unless --ca-cert (RUNWIRE_TLS=1)",
    )
    group.add_argument(
        "--ca-cert",
        type=Path,
        metavar="PEM",
        help="CA bundle that signed the server's certificate; implies --tls (RUNWIRE_CA_CERT)",
    )
    group.add_argument(
        "--client-cert",
        type=Path,
        metavar="PEM",
        help="client certificate chain for mutual TLS; implies --tls (RUNWIRE_CLIENT_CERT)",
    )
    group.add_argument(
        "--client-key",
        type=Path,
        metavar="PEM",
        help="private key of --client-cert (RUNWIRE_CLIENT_KEY)",
    )
    group.add_argument(
        "--profile",
        help="a [profiles.NAME] table of runwire.toml holding any of the options above "
        "(RUNWIRE_PROFILE; the file is RUNWIRE_CONFIG, else ./runwire.toml, else "
        "~/.config/runwire/runwire.toml)",
    )


def _config_path() -> Path | None:
    named = os.environ.get("RUNWIRE_CONFIG")
    if named:
        return Path(named).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (Path("runwire.toml"), config_home / "runwire" / "runwire.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_profile(name: str | None) -> dict[str, object]:
    """The named profile (or the file's `default_profile`), paths made absolute.

    Raises:
        UsageError: The file is unreadable or malformed, the profile is missing,
            or it holds a key that is not a connection option.
    """
    path = _config_path()
    if path is None:
        if name:
            raise UsageError(f"--profile {name}: no runwire.toml found (set RUNWIRE_CONFIG)")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from None
    profiles = data.get("profiles", {})
    name = name or data.get("default_profile")
    if not name:
        return {}
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise UsageError(f"{path}: no profile {name!r} (profiles: {known})")
    profile = dict(profiles[name])
    unknown = sorted(set(profile) - set(_KEYS))
    if unknown:
        raise UsageError(
            f"{path}: profiles.{name}: unknown key {unknown[0]!r} (keys: {', '.join(_KEYS)})"
        )
    for key in ("token_file", "ca_cert", "client_cert", "client_key"):
        if key in profile:
            profile[key] = path.parent / Path(str(profile[key])).expanduser()
    return profile


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
        """The connection the options describe: flag, then RUNWIRE_*, then profile.

        Raises:
            UsageError: A client certificate without its key (or the reverse),
                an unreadable token file, or a bad profile.
        """
        profile = load_profile(args.profile or os.environ.get("RUNWIRE_PROFILE"))

        def pick(key: str) -> object:
            flag = getattr(args, key, None)
            if flag is not None:
                return flag
            env = os.environ.get(f"RUNWIRE_{key.upper()}")
            return env if env else profile.get(key)

        ca_cert, client_cert, client_key = (
            Path(str(v)) if v else None
            for v in (pick("ca_cert"), pick("client_cert"), pick("client_key"))
        )
        if (client_cert is None) != (client_key is None):
            raise UsageError("--client-cert and --client-key go together")
        token = pick("token")
        token_file = pick("token_file")
        if not token and token_file:
            token = _read(Path(str(token_file)), "token file").decode().strip()
        return cls(
            addr=str(pick("addr") or DEFAULT_ADDR),
            token=str(token) if token else None,
            tls=_flag(pick("tls")) or bool(ca_cert or client_cert),
            ca_cert=ca_cert,
            client_cert=client_cert,
            client_key=client_key,
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
