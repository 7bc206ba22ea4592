"""Dependencies point one way, and each package's public surface is exactly its `__all__`.

`engine` knows flows and events, not gRPC or Postgres; `store` and `rpc`
reach into the engine only through its public names. A package's `__all__`
changes only on purpose: edit the list here in the same commit.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent.parent / "server" / "runwire"

PUBLIC: dict[str, list[str]] = {
    "runwire.engine": [
        "MAX_EVENT_BYTES",
        "MAX_FAN_OUT_ITEMS",
        "MAX_JSON_BYTES",
        "TRUNCATED_KEY",
        "VARIANTS",
        "Decision",
        "Engine",
        "EngineSettings",
        "GateStore",
        "Graph",
        "HeldCall",
        "Journal",
        "JournalFailed",
        "LeaseLost",
        "ModelCallFailed",
        "ModelEmbedding",
        "ModelGateway",
        "ModelRoute",
        "ModelToolCall",
        "ModelTurn",
        "NodeRef",
        "NodeStatus",
        "RunExecutor",
        "RunPatch",
        "RunPlan",
        "RunState",
        "SpanIds",
        "bound_event",
        "canonical_json",
        "flow_digest",
        "json_size",
        "new_event",
        "struct_problems",
        "validate_flow",
    ],
    "runwire.adapters.ai": [
        "AiConfig",
        "AiConfigError",
        "OpenAiGateway",
        "ProviderConfig",
        "StreamAccumulator",
        "load_ai_config",
        "parse_provider_flag",
    ],
    "runwire.store": [
        "EVENT_KINDS",
        "Chunk",
        "DurableGates",
        "EmbeddedPostgres",
        "EventWriter",
        "GateRow",
        "Hub",
        "LogEntry",
        "LogFilter",
        "LogTail",
        "NewRun",
        "NewSubscription",
        "PendingBatch",
        "RunHead",
        "RunRow",
        "SchemaBehind",
        "Store",
        "StoredEvent",
        "Subscription",
        "SubscriptionRow",
        "SubscriptionStore",
        "WriterFailed",
        "decision_of",
        "decode_cursor",
        "encode_cursor",
        "frame_cursor",
        "frame_event",
        "frame_events",
        "frame_resume_after",
        "is_transient",
        "log_bounds",
        "mark_pruned",
        "migrate",
        "new_run_id",
        "open_pool",
        "pending_migrations",
        "read_log",
        "session_settings",
        "writer_settings",
    ],
    "runwire.rpc": [
        "DOMAIN",
        "LIVENESS_SERVICE",
        "PRINCIPAL_HEADER",
        "SERVICE_NAME",
        "RunService",
        "RunwireServer",
        "ServerFailed",
        "to_status",
    ],
    "runwire.replica": ["PruneResult", "Replica", "Retention"],
    "runwire.webhooks": [
        "EVENT_TYPE",
        "SECRET_PREFIX",
        "Deliverer",
        "DeliverySettings",
        "Outcome",
        "Sender",
        "backoff",
        "build_batch",
        "event_json",
        "generate_secret",
        "secret_key",
        "sign",
        "target_problem",
        "verify",
    ],
    "runwire.adapters": [
        "ActionFailed",
        "ActionSpec",
        "Adapter",
        "EgressPolicy",
        "FsAdapter",
        "HttpAdapter",
        "NodeContext",
        "Registry",
        "SandboxRefused",
        "ShellAdapter",
        "ShellLimits",
        "UtilAdapter",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_layers_package_all_is_locked(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == PUBLIC[package]


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_layers_public_names_exist_and_nothing_else_is_public(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} == set(module.__all__)


def test_layers_engine_loads_without_grpc_or_asyncpg() -> None:
    """Neither the engine nor the AI gateway loads grpc, asyncpg or the openai SDK at import."""
    probe = (
        "import sys, runwire.engine, runwire.adapters.ai; "
        "print(','.join(m for m in ('grpc', 'asyncpg', 'openai') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing runwire.engine loaded {out}"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


@pytest.mark.parametrize("package", ["store", "rpc", "replica", "webhooks"])
def test_layers_package_uses_only_public_engine_names(package: str) -> None:
    private = {
        f"{path.relative_to(SERVER)}: {name}"
        for path in sorted((SERVER / package).rglob("*.py"))
        for name in _imports(path)
        if name.startswith("runwire.engine._")
    }
    assert not private


def test_layers_engine_imports_neither_rpc_store_grpc_nor_asyncpg() -> None:
    banned = ("runwire.rpc", "runwire.store", "grpc", "asyncpg")
    bad = {
        f"{path.relative_to(SERVER)}: {name}"
        for path in sorted((SERVER / "engine").rglob("*.py"))
        for name in _imports(path)
        if name.startswith(banned)
    }
    assert not bad


def test_layers_webhooks_import_neither_rpc_nor_grpc() -> None:
    """Webhook delivery sits between `rpc` and `store`: rpc serves it, it never calls back."""
    bad = {
        f"{path.relative_to(SERVER)}: {name}"
        for path in sorted((SERVER / "webhooks").rglob("*.py"))
        for name in _imports(path)
        if name.startswith(("runwire.rpc", "grpc"))
    }
    assert not bad
