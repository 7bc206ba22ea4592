"""Server settings: every flag has a RUNWIRE_* environment equivalent."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runwire.adapters import ShellLimits, fs, http

__all__ = [
    "Settings",
    "add_serve_arguments",
    "parse_duration",
    "parse_size",
    "settings_from_args",
]


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
    admin_tokens: tuple[str, ...] = ()
    retention: float | None = None  # seconds after its end a finished run is deleted; None: kept
    retention_batch: int = 100
    retention_interval: float = 300.0
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
    # Deployment: schema migrations at start, the embedded Postgres, HTTP/2 connections.
    migrate: bool = True
    require_database_url: bool = False
    keepalive_time: float = 30.0
    max_connection_age: float = 0.0
    max_connection_age_grace: float = 0.0
    webhook_allow: tuple[str, ...] = ()
    webhook_max_failures: int = 10
    webhook_timeout: float = 10.0
    webhook_batch_events: int = 100
    webhook_retry_initial: float = 1.0
    webhook_retry_max: float = 300.0
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


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds from `30d`, `12h`, `90m`, `45s`, `2w` or a sum such as `1d12h`.

    Raises:
        ValueError: The text is not such a duration.
    """
    s = text.strip().lower()
    parts = _DURATION.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 90m, 45s or 1d12h")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def _duration_arg(text: str) -> float | None:
    if text.strip().lower() in {"", "off"}:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        default=_flag("REFLECTION"),
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
    for flag, value, what in (
        ("--shell-cpu-seconds", limits.cpu_seconds, "CPU seconds"),
        ("--shell-processes", limits.processes, "processes of the user"),
        ("--shell-open-files", limits.open_files, "open files"),
    ):
        _number(
            parser,
            flag,
            int,
            value,
            f"limit on a shell child's {what}; 0 keeps the server's own",
            "N",
        )
    for flag, value, what in (
        ("--shell-memory", limits.memory_bytes, "address space"),
        ("--shell-file-size", limits.file_bytes, "largest file written"),
        ("--shell-output-cap", limits.output_bytes, "stdout+stderr logged per attempt"),
        ("--fs-max-bytes", d.fs_max_bytes, "fs read or write"),
        (
            "--http-max-bytes",
            d.http_max_bytes,
            "http request body (refused above) and response body (truncated)",
        ),
    ):
        _number(
            parser,
            flag,
            _size_arg,
            value,
            f"bytes for the {what}; K/M/G suffixes, 0 for no limit",
            "SIZE",
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
        "--admin-token",
        action="append",
        default=_env_list("ADMIN_TOKENS"),
        metavar="TOKEN",
        help="like --auth-token, and it may also call AdminService (`runwire runs prune`); "
        "repeatable (RUNWIRE_ADMIN_TOKENS). When the server checks credentials, "
        "AdminService needs one of these.",
    )
    parser.add_argument(
        "--trusted-network",
        action="store_true",
        default=_flag("TRUSTED_NETWORK"),
        help="accept bearer tokens over plain-text gRPC on a non-loopback listener, because "
        "the network in between is trusted, e.g. a mesh sidecar terminating mTLS "
        "(RUNWIRE_TRUSTED_NETWORK=1). Without it such a listener needs --tls-cert.",
    )
    _number(
        parser,
        "--heartbeat-interval",
        float,
        d.heartbeat_interval,
        "seconds between NodeHeartbeat events of a running node",
    )
    _number(
        parser,
        "--commit-interval",
        float,
        d.commit_interval,
        "seconds the event writer waits to gather a batch before committing; at 0 it "
        "commits at once when idle and batches what arrives while a commit is in flight",
    )
    _number(
        parser,
        "--drain-grace",
        float,
        d.drain_grace,
        "seconds SIGTERM waits for streams and RPCs before closing them",
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
    _number(
        parser,
        "--lease-seconds",
        float,
        d.lease_seconds,
        "how long this replica's claim on a run lasts without renewal; another replica "
        "takes an expired run over",
    )
    _number(
        parser,
        "--max-parallel",
        int,
        d.max_parallel,
        "nodes a run executes at once when its flow does not say",
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
    _add_retention_args(parser, d)
    _add_ai_args(parser, d)
    _add_deploy_args(parser, d)
    _add_webhook_args(parser, d)


def _flag(name: str) -> bool:
    return (_env(name, "") or "").lower() in {"1", "true", "yes"}


def _number(
    parser: argparse.ArgumentParser,
    flag: str,
    kind: Callable[[str], float],
    value: float,
    what: str,
    metavar: str | None = None,
) -> None:
    """A number flag (`kind` parses it: int, float, a size) whose default is its
    RUNWIRE_* variable, named after the flag (`--max-parallel`: RUNWIRE_MAX_PARALLEL),
    else `value`; the help is `what`, then the variable and the default."""
    env = flag.removeprefix("--").replace("-", "_").upper()
    parser.add_argument(
        flag,
        type=kind,
        default=kind(_env(env) or str(value)),
        metavar=metavar,
        help=f"{what} (RUNWIRE_{env}; default %(default)s)",
    )


def _add_deploy_args(parser: argparse.ArgumentParser, d: Settings) -> None:
    parser.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        default=not _flag("NO_MIGRATE"),
        help="do not apply schema migrations at start (a `runwire migrate` job does); refuse "
        "to start while the database lacks any (RUNWIRE_NO_MIGRATE=1). By default serve "
        "migrates under an advisory lock, once across replicas starting together.",
    )
    parser.add_argument(
        "--require-database-url",
        action="store_true",
        default=_flag("REQUIRE_DATABASE_URL"),
        help="refuse to start without --database-url instead of starting an embedded "
        "Postgres (RUNWIRE_REQUIRE_DATABASE_URL=1; the container image sets it)",
    )
    for flag, value, what in (
        (
            "--keepalive-time",
            d.keepalive_time,
            "seconds between the server's HTTP/2 keepalive pings on a connection; they find "
            "dead watchers and keep quiet streams alive through proxies",
        ),
        (
            "--max-connection-age",
            d.max_connection_age,
            "seconds after which a client connection gets GOAWAY, so clients reconnect and "
            "load spreads over new replicas; 0 never",
        ),
        (
            "--max-connection-age-grace",
            d.max_connection_age_grace,
            "seconds the calls of a connection past --max-connection-age may go on before "
            "they are cut; 0 lets them finish (a WatchRun stream stays until its run ends)",
        ),
    ):
        _number(parser, flag, float, value, what, "SECONDS")


def _add_webhook_args(parser: argparse.ArgumentParser, d: Settings) -> None:
    parser.add_argument(
        "--webhook-allow",
        action="append",
        default=_env_list("WEBHOOK_ALLOW", commas_only=True),
        metavar="HOST_OR_CIDR",
        help="let webhook subscriptions target this host name, *.suffix, IP or CIDR even though "
        "it is loopback, private, link-local or metadata, and over plain http; repeatable "
        "(RUNWIRE_WEBHOOK_ALLOW, comma-separated)",
    )
    _number(
        parser,
        "--webhook-max-failures",
        int,
        d.webhook_max_failures,
        "failed deliveries in a row that pause a subscription until ResumeSubscription",
        "N",
    )
    for flag, value, what in (
        (
            "--webhook-timeout",
            d.webhook_timeout,
            "one webhook POST may take (capped at 0.8 x --lease-seconds)",
        ),
        (
            "--webhook-retry-initial",
            d.webhook_retry_initial,
            "before the first retry of a failed delivery; doubles per failure, with jitter",
        ),
        (
            "--webhook-retry-max",
            d.webhook_retry_max,
            "at most between retries (a receiver's Retry-After is honoured up to an hour)",
        ),
    ):
        _number(parser, flag, float, value, f"seconds {what}", "SECONDS")
    _number(
        parser,
        "--webhook-batch-events",
        int,
        d.webhook_batch_events,
        "events in one webhook POST at most, when many are due (and about 1 MiB of JSON)",
        "N",
    )


def _add_retention_args(parser: argparse.ArgumentParser, d: Settings) -> None:
    parser.add_argument(
        "--retention",
        type=_duration_arg,
        default=_duration_arg(_env("RETENTION") or "off"),
        metavar="AGE",
        help="delete runs that finished more than AGE ago (30d, 12h, 1d12h), with their "
        "events, gates and workspaces; off keeps them forever "
        "(RUNWIRE_RETENTION; default off)",
    )
    _number(
        parser,
        "--retention-batch",
        int,
        d.retention_batch,
        "runs deleted per transaction by retention",
        "N",
    )
    _number(
        parser,
        "--retention-interval",
        float,
        d.retention_interval,
        "seconds between retention rounds, which also create the events partitions of "
        "the coming days and drop emptied ones",
        "SECONDS",
    )


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
        default=_flag("AI_LOCAL_ONLY"),
        help="refuse ai nodes whose provider is cloud (RUNWIRE_AI_LOCAL_ONLY=1)",
    )
    parser.add_argument(
        "--ai-capture-content",
        action="store_true",
        default=_flag("AI_CAPTURE_CONTENT"),
        help="put prompts and answers on the chat spans (gen_ai.input.messages, "
        "gen_ai.output.messages); off by default: they may hold personal data "
        "(RUNWIRE_AI_CAPTURE_CONTENT=1)",
    )
    _number(
        parser,
        "--ai-max-turns",
        int,
        d.ai_max_turns,
        "model turns of an ai node's tool loop when the node does not say, 1-100",
    )
    _number(
        parser,
        "--ai-read-timeout",
        float,
        d.ai_read_timeout,
        "seconds a model call may go without data before it fails",
    )


def _add_admission_args(parser: argparse.ArgumentParser, d: Settings) -> None:
    for flag, value, what in (
        ("--max-starting", d.max_starting, "StartRun calls in flight"),
        ("--max-active-runs", d.max_active_runs, "runs executing here"),
        ("--max-watchers", d.max_watchers, "open WatchRun streams"),
    ):
        _number(
            parser,
            flag,
            int,
            value,
            f"at most this many {what}; past it calls fail at once with "
            "RESOURCE_EXHAUSTED and a retry delay",
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
        admin_tokens=tuple(args.admin_token),
        retention=args.retention,
        retention_batch=args.retention_batch,
        retention_interval=args.retention_interval,
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
        migrate=args.migrate,
        require_database_url=args.require_database_url,
        keepalive_time=args.keepalive_time,
        max_connection_age=args.max_connection_age,
        max_connection_age_grace=args.max_connection_age_grace,
        webhook_allow=tuple(args.webhook_allow),
        webhook_max_failures=args.webhook_max_failures,
        webhook_timeout=args.webhook_timeout,
        webhook_batch_events=args.webhook_batch_events,
        webhook_retry_initial=args.webhook_retry_initial,
        webhook_retry_max=args.webhook_retry_max,
    )
