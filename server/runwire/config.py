"""Server settings: every flag has a RUNWIRE_* environment equivalent."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "add_serve_arguments", "settings_from_args"]


@dataclass(frozen=True)
class Settings:
    """Everything `runwire serve` can be told; defaults are the embedded ones."""

    listen: str = "127.0.0.1:50051"
    database_url: str | None = None
    data_dir: Path = Path(".runwire")
    reflection: bool = False
    shell_allow: tuple[str, ...] = ()
    auth_tokens: tuple[str, ...] = ()
    heartbeat_interval: float = 5.0
    commit_interval: float = 0.004
    drain_grace: float = 5.0
    max_parallel: int = 4
    watcher_queue_chunks: int = 256
    lease_seconds: float = 15.0
    server_id: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")

    def listen_is_loopback(self) -> bool:
        """True when the listener only accepts connections from this machine."""
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"RUNWIRE_{name}", default)


def _env_list(name: str) -> list[str]:
    raw = _env(name) or ""
    return [p for p in raw.replace(",", os.pathsep).split(os.pathsep) if p]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `serve` flags, each defaulting to its RUNWIRE_* variable."""
    d = Settings()
    parser.add_argument(
        "--listen",
        default=_env("LISTEN", d.listen),
        help="host:port to listen on (RUNWIRE_LISTEN; default %(default)s). "
        "A non-loopback address requires --auth-token.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="Postgres URL (DATABASE_URL). Unset: start an embedded Postgres in --data-dir.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env("DATA_DIR", str(d.data_dir)) or d.data_dir),
        help="directory for the embedded Postgres and run workspaces "
        "(RUNWIRE_DATA_DIR; default %(default)s)",
    )
    parser.add_argument(
        "--reflection",
        action="store_true",
        default=(_env("REFLECTION", "") or "").lower() in {"1", "true", "yes"},
        help="serve gRPC server reflection (RUNWIRE_REFLECTION=1)",
    )
    parser.add_argument(
        "--shell-allow",
        action="append",
        default=_env_list("SHELL_ALLOW"),
        metavar="PATH",
        help="enable the shell adapter for this executable; repeatable "
        "(RUNWIRE_SHELL_ALLOW, colon-separated). Without it the shell adapter is off.",
    )
    parser.add_argument(
        "--auth-token",
        action="append",
        default=_env_list("AUTH_TOKENS"),
        metavar="TOKEN",
        help="accept `authorization: Bearer TOKEN`; repeatable (RUNWIRE_AUTH_TOKENS). "
        "When any is set, every RPC but health needs one.",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=float(_env("HEARTBEAT_INTERVAL", str(d.heartbeat_interval)) or 5.0),
        help="seconds between NodeHeartbeat events of a running node "
        "(RUNWIRE_HEARTBEAT_INTERVAL; default %(default)s)",
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=float(_env("COMMIT_INTERVAL", str(d.commit_interval)) or 0.004),
        help="seconds the event writer gathers a batch before committing "
        "(RUNWIRE_COMMIT_INTERVAL; default %(default)s)",
    )
    parser.add_argument(
        "--drain-grace",
        type=float,
        default=float(_env("DRAIN_GRACE", str(d.drain_grace)) or 5.0),
        help="seconds SIGTERM waits for streams and RPCs before closing them "
        "(RUNWIRE_DRAIN_GRACE; default %(default)s)",
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=int(_env("MAX_PARALLEL", str(d.max_parallel)) or 4),
        help="nodes a run executes at once when its flow does not say "
        "(RUNWIRE_MAX_PARALLEL; default %(default)s)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build Settings from parsed `serve` arguments."""
    return Settings(
        listen=args.listen,
        database_url=args.database_url or None,
        data_dir=args.data_dir,
        reflection=args.reflection,
        shell_allow=tuple(args.shell_allow),
        auth_tokens=tuple(args.auth_token),
        heartbeat_interval=args.heartbeat_interval,
        commit_interval=args.commit_interval,
        drain_grace=args.drain_grace,
        max_parallel=args.max_parallel,
    )
