"""Ports: what the engine needs from whoever persists a run (Protocols and plain values)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from runwire.v1 import events_pb2

__all__ = [
    "Decision",
    "GateStore",
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
    "RunPatch",
]


class LeaseLost(Exception):
    """This server no longer holds the run's lease: it must start nothing more for it.

    Raised by a Journal or GateStore when a write for the run was fenced (another
    server owns the run now); the executor stops the run without finishing it.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(f"this server no longer holds the lease on run {run_id}")
        self.run_id = run_id


class JournalFailed(RuntimeError):
    """The journal stopped for good: nothing appended from now on will commit.

    The executor stops the run without finishing it (the server is going down;
    another server takes the run over from what was committed).
    """


@dataclass(frozen=True)
class RunPatch:
    """Changes to a run's row that commit atomically with the events they ride on."""

    status: int | None = None
    succeeded_node_count: int | None = None
    failed_node_count: int | None = None
    skipped_node_count: int | None = None
    finished: bool = False
    error: events_pb2.ErrorSummary | None = None


class Journal(Protocol):
    """Where a run's events go: durable storage with group commit."""

    async def wait_for_space(self) -> None:
        """Wait while too many events are pending commit (backpressure)."""
        ...

    def append(
        self, run_id: str, events: list[events_pb2.RunEvent], patch: RunPatch | None = None
    ) -> None:
        """Queue events (in seq order) for the next commit; never blocks.

        Synchronous on purpose: a caller that assigns seqs and appends without
        an await in between cannot be cancelled half-way and leave a gap.
        """
        ...

    async def flush(self) -> None:
        """Wait until everything appended so far is committed.

        Raises JournalFailed when the journal stopped for good.
        """
        ...

    def holds(self, run_id: str) -> bool:
        """False once any event of the run was fenced: another server owns it now."""
        ...


@dataclass(frozen=True)
class Decision:
    """How a human gate was decided, and by whom."""

    decision: events_pb2.GateDecision
    principal: str
    comment: str = ""
    output_json: str = ""


@dataclass(frozen=True)
class HeldCall:
    """A model's tool call held at its own confirmation gate (an AI visit may hold several).

    `call_index` counts the visit's held calls from 1, as the run state folds
    them; `context_json` is what the engine needs to go on after the decision
    on another server without asking the model again.
    """

    call_index: int
    tool_call_id: str
    context_json: str = ""


class GateStore(Protocol):
    """Durable gate state, so a run waiting at a gate survives a restart."""

    async def open_gate(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        kind: int,
        message: str,
        expire_time: datetime | None,
        *,
        item_index: int | None = None,
        call: HeldCall | None = None,
        renew: bool = False,
    ) -> Decision | None:
        """Record a pending gate (idempotent); returns the decision if it was already made.

        `item_index` names a fan-out item's own gate (None: the node's);
        `call` a held tool call's. `renew` (a call's gate not announced yet)
        replaces what a dead server left under the same key: it held another call.

        Raises LeaseLost when this server no longer owns the run.
        """
        ...

    async def call_context(self, run_id: str, node_id: str, iteration: int, call_index: int) -> str:
        """The `context_json` a held tool call's gate was opened with; "" when unknown."""
        ...

    async def decide_gate(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        kind: int,
        decision: Decision,
        *,
        item_index: int | None = None,
        call_index: int | None = None,
    ) -> Decision:
        """Decide a pending gate; the first decision stands and is returned.

        `call_index` names a held tool call's gate.

        Raises LeaseLost when this server no longer owns the run.
        """
        ...


@dataclass(frozen=True)
class ModelRoute:
    """Which provider and model serve an AI node, and why."""

    provider: str
    model: str
    requested_model: str
    reason: str
    cloud: bool = False


@dataclass(frozen=True)
class ModelToolCall:
    """One tool call as the model asked for it (arguments still unparsed JSON text)."""

    call_id: str
    name: str
    arguments: str


@dataclass
class ModelTurn:
    """What one streamed chat completion returned."""

    text: str
    finish_reason: str
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    tool_calls: list[ModelToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class ModelEmbedding:
    """What one embeddings call returned."""

    vector: list[float]
    input_tokens: int
    model: str


class ModelCallFailed(Exception):
    """A model call failed; `reason` is an AI_* failure reason, `message` names provider and model.

    Tokens a broken stream already reported are kept: the call was billed.
    """

    def __init__(
        self, reason: str, message: str, *, input_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class ModelGateway(Protocol):
    """The server's configured model providers, as the engine sees them."""

    max_turns: int
    sanitize_patterns: tuple[str, ...]  # operator regexes the sanitizer hides too
    capture_content: bool  # prompts and answers may go on spans
    tool_result_bytes: int  # a tool result the model reads is cut to this many UTF-8 bytes

    def problems(
        self, provider: str, model: str, *, embedding: bool = False
    ) -> list[tuple[str, str]]:
        """(field, message) pairs for a node naming this provider and model; empty when fine.

        `field` is `provider` or `model`; `embedding` defaults to the embedding model.
        """
        ...

    def route(self, provider: str, model: str, *, embedding: bool = False) -> ModelRoute:
        """Resolve a node's provider and model (aliases, defaults); call after `problems`."""
        ...

    async def embed(self, route: ModelRoute, text: str) -> ModelEmbedding:
        """One embeddings call. Raises ModelCallFailed."""
        ...

    def cost_micros(self, route: ModelRoute, input_tokens: int, output_tokens: int) -> int:
        """Cost of one call in millionths of a US dollar, from the price table (0 if unpriced)."""
        ...

    async def chat(
        self,
        route: ModelRoute,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        on_delta: Callable[[str], Awaitable[None]],
        *,
        schema: dict[str, Any] | None = None,
    ) -> ModelTurn:
        """One streamed chat completion; `on_delta` gets each text delta as it arrives.

        `schema` is the node's contract, sent as structured output where the
        provider supports it (the answer is always validated by the engine).

        Raises ModelCallFailed. Cancelling it closes the stream.
        """
        ...
