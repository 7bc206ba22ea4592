"""Server settings: every flag has a RUNWIRE_* environment equivalent."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from runwire.adapters import ShellLimits, fs, http

__all__ = ["Settings", "add_serve_arguments", "parse_size", "settings_from_args"]


@dataclass(frozen=True)
class Settings:
    """Everything `runwire serve` can be told; defaults are the embedded ones."""

    listen: str = "127.0.0.1:50051"
    database_url: str | None = None
    data_dir: Path = Path(".runwire")
    reflection: bool = False
    shell_allow: tuple[str, ...] = ()
    shell_destructive: tuple[str, ...] = ()
    shell_limits: ShellLimits = field(default_factory=ShellLimits)
    fs_roots: tuple[str, ...] = ()
    fs_max_bytes: int = fs.DEFAULT_MAX_BYTES
    http_allow: tuple[str, ...] = ()
    http_max_bytes: int = http.DEFAULT_MAX_BYTES
    auth_tokens: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    trusted_network: bool = False
    heartbeat_interval: float = 5.0
    commit_interval: float = 0.0
    drain_grace: float = 5.0
    max_parallel: int = 4
    max_starting: int = 128
    max_active_runs: int = 5000
    max_watchers: int = 10_000
    watcher_queue_chunks: int = 256
    lease_seconds: float = 15.0
    metrics_listen: str | None = None  # HOST:PORT of the Prometheus endpoint; None: none
    # Set in the worker processes of `serve --workers N` (N > 1): they share
    # the port with SO_REUSEPORT, which the supervisor checked no one else held.
    reuse_port: bool = False
    ai_config: Path | None = None
    ai_providers: tuple[str, ...] = ()
    ai_local_only: bool = False
    ai_max_turns: int = 10
    ai_read_timeout: float = 120.0
    ai_capture_content: bool = False
    server_id: str = field(
        default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )

    def mutual_tls(self) -> bool:
        """True when clients must present a certificate signed by --tls-client-ca."""
        return self.tls_cert is not None and self.tls_client_ca is not None

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


def _env_list(name: str, *, commas_only: bool = False) -> list[str]:
    raw = _env(name) or ""
    if not commas_only:
        raw = raw.replace(os.pathsep, ",")
    return [p.strip() for p in raw.split(",") if p.strip()]


_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from `4096`, `512K`, `8M`, `1GiB` (binary multiples); 0 means no limit.

    Raises:
        ValueError: The text is not a size.
    """
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size such as 4096, 512K, 8M or 1G")
    return int(m.group(1)) << (10 * " KMGT".index((m.group(2) or " ").upper()))


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        "--workers",
        type=int,
        default=int(_env("WORKERS", "") or (os.cpu_count() or 1)),
        help="server processes sharing the port and the database; runs are spread by "
        "their leases, and each watcher is served by the process its connection reached "
        "(RUNWIRE_WORKERS; default: the number of cores)",
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
        "--shell-destructive",
        action="append",
        default=_env_list("SHELL_DESTRUCTIVE"),
        metavar="PROGRAM",
        help="shell nodes running this program wait for ConfirmAction first; repeatable "
        "(RUNWIRE_SHELL_DESTRUCTIVE, colon-separated)",
    )
    limits = d.shell_limits
    for flag, env, default, what in (
        ("--shell-cpu-seconds", "SHELL_CPU_SECONDS", limits.cpu_seconds, "CPU seconds"),
        ("--shell-processes", "SHELL_PROCESSES", limits.processes, "processes of the user"),
        ("--shell-open-files", "SHELL_OPEN_FILES", limits.open_files, "open files"),
    ):
        parser.add_argument(
            flag,
            type=int,
            default=int(_env(env, str(default)) or default),
            metavar="N",
            help=f"limit on a shell child's {what}; 0 keeps the server's own "
            f"(RUNWIRE_{env}; default %(default)s)",
        )
    for flag, env, default, what in (
        ("--shell-memory", "SHELL_MEMORY", limits.memory_bytes, "address space"),
        ("--shell-file-size", "SHELL_FILE_SIZE", limits.file_bytes, "largest file written"),
        (
            "--shell-output-cap",
            "SHELL_OUTPUT_CAP",
            limits.output_bytes,
            "stdout+stderr logged per attempt",
        ),
        ("--fs-max-bytes", "FS_MAX_BYTES", d.fs_max_bytes, "fs read or write"),
        (
            "--http-max-bytes",
            "HTTP_MAX_BYTES",
            d.http_max_bytes,
            "http request body (refused above) and response body (truncated)",
        ),
    ):
        parser.add_argument(
            flag,
            type=_size_arg,
            default=_size_arg(_env(env) or str(default)),
            metavar="SIZE",
            help=f"bytes for the {what}; K/M/G suffixes, 0 for no limit "
            f"(RUNWIRE_{env}; default %(default)s)",
        )
    parser.add_argument(
        "--fs-root",
        action="append",
        default=_env_list("FS_ROOTS"),
        metavar="[NAME=]PATH",
        help="an extra directory fs nodes may use with `root: NAME` (NAME defaults to the "
        "directory's name); repeatable (RUNWIRE_FS_ROOTS, colon-separated). "
        "Without it fs nodes see only their run's workspace.",
    )
    parser.add_argument(
        "--http-allow",
        action="append",
        default=_env_list("HTTP_ALLOW", commas_only=True),
        metavar="HOST_OR_CIDR",
        help="let http nodes reach this host name, *.suffix, IP or CIDR even though it is "
        "loopback, private, link-local or metadata; repeatable "
        "(RUNWIRE_HTTP_ALLOW, comma-separated)",
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
        "--trusted-network",
        action="store_true",
        default=(_env("TRUSTED_NETWORK", "") or "").lower() in {"1", "true", "yes"},
        help="accept bearer tokens over plain-text gRPC on a non-loopback listener, because "
        "the network in between is trusted, e.g. a mesh sidecar terminating mTLS "
        "(RUNWIRE_TRUSTED_NETWORK=1). Without it such a listener needs --tls-cert.",
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
        default=float(_env("COMMIT_INTERVAL", str(d.commit_interval)) or 0.0),
        help="seconds the event writer waits to gather a batch before committing; at 0 it "
        "commits at once when idle and batches what arrives while a commit is in flight "
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
        "--tls-cert",
        type=Path,
        default=_env("TLS_CERT"),
        metavar="FILE",
        help="serve TLS with this PEM certificate chain (RUNWIRE_TLS_CERT); needs --tls-key",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=_env("TLS_KEY"),
        metavar="FILE",
        help="PEM private key of --tls-cert (RUNWIRE_TLS_KEY)",
    )
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        default=_env("TLS_CLIENT_CA"),
        metavar="FILE",
        help="require client certificates signed by these PEM CAs: mutual TLS "
        "(RUNWIRE_TLS_CLIENT_CA). The certificate's common name becomes the caller's principal.",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=float(_env("LEASE_SECONDS", str(d.lease_seconds)) or 15.0),
        help="how long this replica's claim on a run lasts without renewal; another replica "
        "takes an expired run over (RUNWIRE_LEASE_SECONDS; default %(default)s)",
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=int(_env("MAX_PARALLEL", str(d.max_parallel)) or 4),
        help="nodes a run executes at once when its flow does not say "
        "(RUNWIRE_MAX_PARALLEL; default %(default)s)",
    )
    parser.add_argument(
        "--metrics-listen",
        default=_env("METRICS_LISTEN") or None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (RUNWIRE_METRICS_LISTEN; "
        "default: none). With --workers N, worker i (from 0) listens on PORT+i, or each on a "
        "port of its own at PORT 0. Metrics also go over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT "
        "is set.",
    )
    _add_admission_args(parser, d)
    _add_ai_args(parser, d)


def _add_ai_args(parser: argparse.ArgumentParser, d: Settings) -> None:
    parser.add_argument(
        "--ai-config",
        type=Path,
        default=_env("AI_CONFIG") or None,
        metavar="FILE",
        help="YAML provider registry for ai nodes: providers (base_url, api_key_env or "
        "api_key_file, locality, default_model, models), default_provider, aliases, prices, "
        "limits (RUNWIRE_AI_CONFIG). Without it and --ai-provider, ai nodes are refused.",
    )
    parser.add_argument(
        "--ai-provider",
        action="append",
        default=_env_list("AI_PROVIDERS", commas_only=True),
        metavar="NAME=BASE_URL[#MODEL]",
        help="an OpenAI-compatible provider, e.g. local=http://127.0.0.1:8080/v1#qwen; a "
        "non-loopback one reads its key from RUNWIRE_AI_KEY_<NAME>; repeatable "
        "(RUNWIRE_AI_PROVIDERS, comma-separated)",
    )
    parser.add_argument(
        "--ai-local-only",
        action="store_true",
        default=(_env("AI_LOCAL_ONLY", "") or "").lower() in {"1", "true", "yes"},
        help="refuse ai nodes whose provider is cloud (RUNWIRE_AI_LOCAL_ONLY=1)",
    )
    parser.add_argument(
        "--ai-capture-content",
        action="store_true",
        default=(_env("AI_CAPTURE_CONTENT", "") or "").lower() in {"1", "true", "yes"},
        help="put prompts and answers on the chat spans (gen_ai.input.messages, "
        "gen_ai.output.messages); off by default: they may hold personal data "
        "(RUNWIRE_AI_CAPTURE_CONTENT=1)",
    )
    parser.add_argument(
        "--ai-max-turns",
        type=int,
        default=int(_env("AI_MAX_TURNS", str(d.ai_max_turns)) or d.ai_max_turns),
        help="model turns of an ai node's tool loop when the node does not say, 1-100 "
        "(RUNWIRE_AI_MAX_TURNS; default %(default)s)",
    )
    parser.add_argument(
        "--ai-read-timeout",
        type=float,
        default=float(_env("AI_READ_TIMEOUT", str(d.ai_read_timeout)) or d.ai_read_timeout),
        help="seconds a model call may go without data before it fails "
        "(RUNWIRE_AI_READ_TIMEOUT; default %(default)s)",
    )


def _add_admission_args(parser: argparse.ArgumentParser, d: Settings) -> None:
    for flag, env, value, what in (
        ("--max-starting", "MAX_STARTING", d.max_starting, "StartRun calls in flight"),
        ("--max-active-runs", "MAX_ACTIVE_RUNS", d.max_active_runs, "runs executing here"),
        ("--max-watchers", "MAX_WATCHERS", d.max_watchers, "open WatchRun streams"),
    ):
        parser.add_argument(
            flag,
            type=int,
            default=int(_env(env, str(value)) or value),
            help=f"at most this many {what}; past it calls fail at once with "
            f"RESOURCE_EXHAUSTED and a retry delay (RUNWIRE_{env}; default %(default)s)",
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build Settings from parsed `serve` arguments."""
    return Settings(
        listen=args.listen,
        database_url=args.database_url or None,
        data_dir=args.data_dir,
        reflection=args.reflection,
        shell_allow=tuple(args.shell_allow),
        shell_destructive=tuple(args.shell_destructive),
        shell_limits=ShellLimits(
            cpu_seconds=args.shell_cpu_seconds,
            memory_bytes=args.shell_memory,
            processes=args.shell_processes,
            file_bytes=args.shell_file_size,
            open_files=args.shell_open_files,
            output_bytes=args.shell_output_cap,
        ),
        fs_roots=tuple(args.fs_root),
        fs_max_bytes=args.fs_max_bytes,
        http_allow=tuple(args.http_allow),
        http_max_bytes=args.http_max_bytes,
        auth_tokens=tuple(args.auth_token),
        heartbeat_interval=args.heartbeat_interval,
        commit_interval=args.commit_interval,
        drain_grace=args.drain_grace,
        max_parallel=args.max_parallel,
        lease_seconds=args.lease_seconds,
        metrics_listen=args.metrics_listen or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        trusted_network=args.trusted_network,
        max_starting=args.max_starting,
        max_active_runs=args.max_active_runs,
        max_watchers=args.max_watchers,
        ai_config=args.ai_config,
        ai_providers=tuple(args.ai_provider),
        ai_local_only=args.ai_local_only,
        ai_max_turns=args.ai_max_turns,
        ai_read_timeout=args.ai_read_timeout,
        ai_capture_content=args.ai_capture_content,
    )
