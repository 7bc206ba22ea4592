"""RunService: requests in, engine and store calls, errors out."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import jsonschema
from google.protobuf import json_format
from opentelemetry import context as otel_context
from opentelemetry import trace

from runwire import telemetry
from runwire.engine import (
    MAX_EVENT_BYTES,
    MAX_JSON_BYTES,
    Engine,
    Graph,
    RunPlan,
    bound_event,
    canonical_json,
    flow_digest,
    json_size,
    struct_problems,
    validate_flow,
)
from runwire.errors import (
    AfterSeqBeyondEnd,
    FieldViolation,
    FlowInvalid,
    GateAlreadyResolved,
    GateNotPending,
    InvalidArgument,
    RequestIdReused,
    RunFinished,
    RunNotFound,
    ServerDraining,
    ServerUnavailable,
)
from runwire.metrics import NOOP_METRICS, Metrics
from runwire.rpc._convert import decode_page_token, encode_page_token, parse_filter, run_to_proto
from runwire.rpc._status import mapped, public_error, to_status
from runwire.rpc._streams import stream_span
from runwire.store import (
    Chunk,
    Hub,
    LogFilter,
    NewRun,
    RunHead,
    RunRow,
    Store,
    StoredEvent,
    Subscription,
    frame_event,
    frame_resume_after,
    new_run_id,
)
from runwire.v1 import events_pb2, run_service_pb2

__all__ = ["RunService", "principal_of"]

log = logging.getLogger(__name__)

_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_REPLAY_PAGE = 2000
# Keep every WatchRunResponse well under gRPC's default 4 MiB receive limit:
# responses are cut at this size, and one event (at most MAX_EVENT_BYTES, half
# of it) always fits in a response of its own.
RESPONSE_BYTES = 1 << 20
_MAX_INPUT_BYTES = 1 << 20
PRINCIPAL_HEADER = "x-runwire-principal"

# StartRun checks flows with more nodes than this on a worker thread.
_INLINE_NODES = 64


@dataclass(frozen=True)
class _Prepared:
    """A validated StartRun: the graph, the flow's JSON and the request's digests."""

    graph: Graph
    flow_json: dict[str, Any]
    inputs: dict[str, Any]
    labels: dict[str, str]
    flow_digest: str
    request_digest: str


def principal_of(context: grpc.aio.ServicerContext) -> str:
    """Who is calling: a verified client certificate's common name, else the
    principal header a mesh or proxy sets, else `anonymous`."""
    names = (context.auth_context() or {}).get("x509_common_name") or []
    if names:
        return f"cert:{names[0].decode(errors='replace')}"[:256]
    for key, value in context.invocation_metadata() or ():
        if key == PRINCIPAL_HEADER and isinstance(value, str) and value:
            return value[:256]
    return "anonymous"


def _check_edited_answer(row: RunRow, node_id: str, output_json: str) -> None:
    """An answer a reviewer edited must be JSON and satisfy the node's contract."""
    try:
        edited = json.loads(output_json)
    except ValueError as exc:
        raise InvalidArgument([FieldViolation("output_json", f"is not JSON: {exc}")]) from None
    nodes = row.flow_json.get("nodes") or []
    contract = next(
        (n.get("ai", {}).get("contract") for n in nodes if n.get("id") == node_id), None
    )
    if contract is None:
        return
    errors = sorted(
        jsonschema.Draft202012Validator(contract).iter_errors(edited),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        raise InvalidArgument(
            [
                FieldViolation(
                    "output_json",
                    f"breaks the node's contract at {'/'.join(map(str, e.absolute_path)) or '(root)'}: "
                    f"{e.message}"[:500],
                )
                for e in errors[:20]
            ]
        )


def _check_text(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument([FieldViolation(field, f"must be at most {limit} characters")])
    if "\x00" in value:
        raise InvalidArgument([FieldViolation(field, "must not contain NUL characters")])


def _check_run_id(run_id: str) -> None:
    if not run_id:
        raise InvalidArgument([FieldViolation("run_id", "must not be empty")])
    _check_text("run_id", run_id, 128)


class RunService:
    """The RunService implementation over one store, hub and engine."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        engine: Engine,
        *,
        server_id: str,
        lease_seconds: float,
        tracer: trace.Tracer | None = None,
        metrics: Metrics = NOOP_METRICS,
    ) -> None:
        self.tracer = tracer or trace.get_tracer(telemetry.TRACER_NAME)
        self.metrics = metrics
        self.server_id = server_id
        self.lease_seconds = lease_seconds
        self.store = store
        self.hub = hub
        self.engine = engine
        self.draining = asyncio.Event()
        self.closing_streams = asyncio.Event()
        # Why this server takes no new runs right now (commits or lease renewal
        # failing, or the server went dead); None while it is healthy.
        self.unavailable: str | None = None

    # -- helpers ---------------------------------------------------------------

    async def _run(self, run_id: str) -> RunRow:
        _check_run_id(run_id)
        row = await self.store.get_run(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    def _check_start(self, request: run_service_pb2.StartRunRequest) -> list[FieldViolation]:
        out: list[FieldViolation] = []
        if len(request.request_id) > 128:
            out.append(FieldViolation("request_id", "must be at most 128 characters"))
        elif request.request_id and not request.request_id.isprintable():
            out.append(FieldViolation("request_id", "must be printable"))
        for key, value in request.labels.items():
            if not _LABEL_KEY.match(key):
                out.append(
                    FieldViolation(f"labels[{key!r}]", "label keys are [a-z][a-z0-9_-]{0,62}")
                )
            elif len(value) > 256:
                out.append(
                    FieldViolation(f"labels[{key!r}]", "label values are at most 256 characters")
                )
            elif "\x00" in value:
                out.append(FieldViolation(f"labels[{key!r}]", "must not contain NUL characters"))
        if request.inputs.ByteSize() > _MAX_INPUT_BYTES:
            out.append(
                FieldViolation("inputs", f"must be at most {_MAX_INPUT_BYTES} bytes encoded")
            )
        elif problems := struct_problems(request.inputs, "inputs"):
            out.extend(problems)
        elif (size := json_size(json_format.MessageToDict(request.inputs))) > MAX_JSON_BYTES:
            # RunStarted carries the inputs: refuse what no event could hold.
            out.append(
                FieldViolation(
                    "inputs",
                    f"must be at most {MAX_JSON_BYTES} bytes as canonical JSON, got {size}",
                )
            )
        return out

    def _validate(self, request: run_service_pb2.StartRunRequest) -> Any:
        out = self._check_start(request)
        if not request.HasField("flow"):
            raise InvalidArgument([FieldViolation("flow", "a flow is required"), *out])
        try:
            graph = validate_flow(
                request.flow,
                self.engine.registry,
                ai=self.engine.settings.ai,
                # Inputs that are not valid JSON are reported below, not parsed here.
                inputs=None if out else json_format.MessageToDict(request.inputs),
            )
        except FlowInvalid as exc:
            raise FlowInvalid([*exc.violations, *out]) from None
        if out:
            raise InvalidArgument(out)
        return graph

    # -- RPCs -----------------------------------------------------------------

    def _prepare(self, request: run_service_pb2.StartRunRequest) -> _Prepared:
        """Validate a StartRun and canonicalise its flow once (digests and the stored JSON)."""
        graph = self._validate(request)
        flow_json = json_format.MessageToDict(request.flow)
        inputs = json_format.MessageToDict(request.inputs)
        labels = dict(request.labels)
        flow_text = canonical_json(flow_json)
        # The canonical JSON of {"flow", "inputs", "labels"}, assembled from the
        # flow's canonical text (keys in canonical order) instead of a second pass.
        request_text = (
            f'{{"flow":{flow_text},"inputs":{canonical_json(inputs)},'
            f'"labels":{canonical_json(labels)}}}'
        )
        return _Prepared(
            graph=graph,
            flow_json=flow_json,
            inputs=inputs,
            labels=labels,
            flow_digest=hashlib.sha256(flow_text.encode()).hexdigest(),
            request_digest=hashlib.sha256(request_text.encode()).hexdigest(),
        )

    @mapped
    async def StartRun(
        self, request: run_service_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.StartRunResponse:
        if self.unavailable is not None:
            raise ServerUnavailable(self.unavailable)
        if self.draining.is_set():
            raise ServerDraining
        if len(request.flow.nodes) > _INLINE_NODES:
            # A large flow's checks take tens of milliseconds of CPU: off the
            # event loop, so other runs' events keep flowing meanwhile.
            prepared = await asyncio.to_thread(self._prepare, request)
        else:
            prepared = self._prepare(request)
        graph, flow_json, inputs, labels = (
            prepared.graph,
            prepared.flow_json,
            prepared.inputs,
            prepared.labels,
        )
        request_digest, digest = prepared.request_digest, prepared.flow_digest
        principal = principal_of(context)
        new = NewRun(
            run_id=new_run_id(),  # time-ordered: it places the run's events (store/_partitions.py)
            flow_name=request.flow.name,
            flow_digest=digest,
            flow_json=flow_json,
            inputs=inputs,
            labels=labels,
            request_id=request.request_id or None,
            request_digest=request_digest,
            principal=principal,
            status=events_pb2.RUN_STATUS_PENDING,
            node_count=len(graph.nodes),
        )
        row, created = await self.store.create_run(
            new, owner_id=self.server_id, lease_seconds=self.lease_seconds
        )
        if not created:
            if row.request_digest != request_digest:
                raise RequestIdReused(request.request_id, row.run_id)
            return run_service_pb2.StartRunResponse(run=run_to_proto(row))
        self.engine.start(
            RunPlan(
                run_id=row.run_id,
                graph=graph,
                inputs=inputs,
                flow_digest=digest,
                principal=principal,
                trigger="api",
                request_id=request.request_id,
                parent_context=otel_context.get_current(),
            )
        )
        return run_service_pb2.StartRunResponse(run=run_to_proto(row))

    @mapped
    async def ValidateFlow(
        self, request: run_service_pb2.ValidateFlowRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.ValidateFlowResponse:
        if not request.HasField("flow"):
            raise InvalidArgument([FieldViolation("flow", "a flow is required")])
        graph = validate_flow(request.flow, self.engine.registry, ai=self.engine.settings.ai)
        return run_service_pb2.ValidateFlowResponse(
            flow_digest=flow_digest(request.flow),
            node_count=len(graph.nodes),
            root_node_ids=graph.roots,
        )

    @mapped
    async def GetRun(
        self, request: run_service_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.GetRunResponse:
        return run_service_pb2.GetRunResponse(run=await self._view(await self._run(request.run_id)))

    @mapped
    async def ListRuns(
        self, request: run_service_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.ListRunsResponse:
        if request.page_size < 0:
            raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
        size = min(request.page_size or 50, 500)
        _check_text("filter", request.filter, 4096)
        _check_text("page_token", request.page_token, 1024)
        status, labels = parse_filter(request.filter)
        after = (
            decode_page_token(request.page_token, request.filter) if request.page_token else None
        )
        rows = await self.store.list_runs(status=status, labels=labels, after=after, limit=size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return run_service_pb2.ListRunsResponse(
            runs=[run_to_proto(r) for r in rows],
            next_page_token=encode_page_token(rows[-1], request.filter) if more else "",
        )

    async def _control(
        self,
        run_id: str,
        context: grpc.aio.ServicerContext,
        *,
        pause: bool | None,
        cancel: bool,
        reason: str,
    ) -> run_service_pb2.Run:
        _check_text("reason", reason, 1024)
        row = await self._run(run_id)
        if row.finished:
            if cancel and row.status == events_pb2.RUN_STATUS_CANCELLED:
                return run_to_proto(row)  # cancelling a cancelled run is a no-op
            raise RunFinished(run_id, events_pb2.RunStatus.Name(row.status))
        principal = principal_of(context)
        updated = await self.store.request_control(
            run_id, pause=pause, cancel=cancel, principal=principal, reason=reason
        )
        if updated is None:  # finished between the read and the update
            row = await self._run(run_id)
            raise RunFinished(run_id, events_pb2.RunStatus.Name(row.status))
        # One route: the store NOTIFYs every replica and the run's owner (this
        # one included) applies the recorded request; see runwire.replica.
        return await self._view(updated)

    @mapped
    async def PauseRun(
        self, request: run_service_pb2.PauseRunRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.PauseRunResponse:
        run = await self._control(
            request.run_id, context, pause=True, cancel=False, reason=request.reason
        )
        return run_service_pb2.PauseRunResponse(run=run)

    @mapped
    async def ResumeRun(
        self, request: run_service_pb2.ResumeRunRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.ResumeRunResponse:
        run = await self._control(
            request.run_id, context, pause=False, cancel=False, reason=request.reason
        )
        return run_service_pb2.ResumeRunResponse(run=run)

    @mapped
    async def CancelRun(
        self, request: run_service_pb2.CancelRunRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.CancelRunResponse:
        run = await self._control(
            request.run_id, context, pause=None, cancel=True, reason=request.reason
        )
        return run_service_pb2.CancelRunResponse(run=run)

    async def _view(self, row: RunRow) -> run_service_pb2.Run:
        """The run with its pending gates."""
        return run_to_proto(row, await self.store.gates(row.run_id, pending=True))

    async def _decide(
        self,
        context: grpc.aio.ServicerContext,
        run_id: str,
        node_id: str,
        kind: int,
        approve: bool,
        comment: str,
        output_json: str = "",
        item_index: int | None = None,
        tool_call_id: str = "",
    ) -> run_service_pb2.Run:
        """Decide a gate idempotently: the same decision again is OK, a different one is not."""
        if not node_id:
            raise InvalidArgument([FieldViolation("node_id", "must not be empty")])
        _check_text("node_id", node_id, 64)
        _check_text("tool_call_id", tool_call_id, 256)
        row = await self._run(run_id)
        _check_text("comment", comment, 4096)
        _check_text("output_json", output_json, 1 << 20)
        if kind == run_service_pb2.GATE_KIND_REVIEW and output_json:
            _check_edited_answer(row, node_id, output_json)
        what = run_service_pb2.GateKind.Name(kind).removeprefix("GATE_KIND_").lower()
        wanted = events_pb2.GATE_DECISION_APPROVED if approve else events_pb2.GATE_DECISION_REJECTED
        gate, changed = await self.store.decide_gate(
            run_id,
            node_id,
            kind,
            decision=wanted,
            principal=principal_of(context),
            comment=comment,
            output_json=output_json,
            item_index=item_index,
            tool_call_id=tool_call_id,
        )
        which = node_id if item_index is None else f"{node_id}[{item_index}]"
        if tool_call_id:
            which = f"{which} tool call {tool_call_id}"
        if gate is None:
            if row.finished:
                raise RunFinished(run_id, events_pb2.RunStatus.Name(row.status))
            ids = {"tool_call_id": tool_call_id} if tool_call_id else {}
            raise GateNotPending(
                f"node {which!r} of run {run_id!r} has no pending {what}",
                metadata={"run_id": run_id, "node_id": node_id, **ids},
            )
        if not changed and gate.decision != wanted:
            standing = events_pb2.GateDecision.Name(gate.decision or 0)
            raise GateAlreadyResolved(
                f"the {what} of node {which!r} was already decided: {standing} by {gate.principal}",
                metadata={"run_id": run_id, "node_id": node_id, "decision": standing},
            )
        # The decision reaches the run's owner through the store's NOTIFY (one route).
        return await self._view(await self._run(run_id))

    @mapped
    async def ConfirmAction(
        self, request: run_service_pb2.ConfirmActionRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.ConfirmActionResponse:
        run = await self._decide(
            context,
            request.run_id,
            request.node_id,
            run_service_pb2.GATE_KIND_CONFIRMATION,
            request.approve,
            request.comment,
            item_index=request.item_index if request.HasField("item_index") else None,
            tool_call_id=request.tool_call_id,
        )
        return run_service_pb2.ConfirmActionResponse(run=run)

    @mapped
    async def ResolveApproval(
        self, request: run_service_pb2.ResolveApprovalRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.ResolveApprovalResponse:
        run = await self._decide(
            context,
            request.run_id,
            request.node_id,
            run_service_pb2.GATE_KIND_APPROVAL,
            request.approve,
            request.comment,
        )
        return run_service_pb2.ResolveApprovalResponse(run=run)

    @mapped
    async def ResolveReview(
        self, request: run_service_pb2.ResolveReviewRequest, context: grpc.aio.ServicerContext
    ) -> run_service_pb2.ResolveReviewResponse:
        run = await self._decide(
            context,
            request.run_id,
            request.node_id,
            run_service_pb2.GATE_KIND_REVIEW,
            request.approve,
            request.comment,
            request.output_json,
        )
        return run_service_pb2.ResolveReviewResponse(run=run)

    def close_streams(self) -> None:
        """Drain: every open WatchRun ends with UNAVAILABLE (SERVER_DRAINING)."""
        self.closing_streams.set()
        self.hub.close_all()

    # -- WatchRun ---------------------------------------------------------------

    async def WatchRun(
        self, request: run_service_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Yield serialized WatchRunResponses: replay from the store, then live chunks.

        Responses are bytes (the method's serializer is the identity), so a
        committed chunk framed once by the writer is shared by every watcher.
        """
        try:
            if request.after_seq < 0:
                raise InvalidArgument(
                    [FieldViolation("after_seq", f"must not be negative, got {request.after_seq}")]
                )
            flt: LogFilter | None = LogFilter.for_run(
                request.filter if request.HasField("filter") else None
            )
            _check_run_id(request.run_id)
        except Exception as exc:
            await context.abort_with_status(to_status(public_error(exc)))
            return
        if flt is not None and flt.selects_all_events:
            flt = None  # an empty filter: the shared, pre-framed path
        # Subscribe before the first store read, so nothing committed between
        # the read and the subscription can fall into a gap. One statement
        # reads the run's head and its first page of events.
        sub = self.hub.subscribe(request.run_id)
        try:
            opened = await self.store.open_stream(request.run_id, request.after_seq, _REPLAY_PAGE)
            if opened is None:
                raise RunNotFound(request.run_id)
        except BaseException as exc:
            sub.close()
            if not isinstance(exc, Exception):
                raise
            await context.abort_with_status(to_status(public_error(exc)))
            return
        row = opened[0]
        first: list[StoredEvent] | None = opened[1]
        del opened
        if row.finished and request.after_seq >= row.last_seq:
            sub.close()
            # Nothing after the end of a finished run: say so, never an empty
            # OK stream (a client would take that for a cut stream and resume).
            if request.after_seq > row.last_seq:
                await context.abort_with_status(to_status(_beyond_end(row, request.after_seq)))
                return
            yield _stream_end(row.last_seq, row.status)
            return
        async with stream_span(
            self.tracer, context, "WatchRun", {telemetry.ATTR_RUN_ID: request.run_id}
        ):
            cursor = _Cursor(request.after_seq, sent=request.after_seq)
            # after_seq beyond what the live run has committed: live chunks
            # up to after_seq are none of this watcher's business, and the
            # run may finish short of it. Until the store reaches after_seq
            # the run row is read on every wake-up (and once now, after
            # subscribing, in case the run finished since the read above).
            beyond: bool | None = request.after_seq > row.last_seq
            del row  # an idle stream holds nothing it no longer needs (see below)
            try:
                if beyond:
                    first = None  # the store may have more once it settles
                    beyond = await self._settle_beyond(request.run_id, cursor)
                    if beyond is None:
                        await context.abort_with_status(
                            to_status(_beyond_end(await self._run(request.run_id), cursor.last))
                        )
                        return
                replay, first = self._catch_up(request.run_id, cursor, flt, sub, first), None
                async for response in replay:
                    yield response
                del replay  # nor the first page (see below)
                while not cursor.done:
                    if self.closing_streams.is_set():
                        await context.abort_with_status(to_status(ServerDraining()))
                        return
                    # Idle until woken: keep neither the last response nor the
                    # last batch alive (a replay response may be 1 MiB).
                    response = b""
                    chunks: list[Chunk] = []
                    parts: list[bytes] = []
                    # No task per wait: the hub wakes every watcher on drain.
                    await sub.wait()
                    if self.closing_streams.is_set():
                        continue
                    chunks, overflowed, wake_seq = sub.take()
                    # Seqs behind when it woke; the hub's wake-everyone marker after
                    # a reconnect (1 << 62) is no seq and counts as nothing.
                    newest = max(
                        wake_seq if wake_seq < 1 << 62 else 0,
                        chunks[-1].last_seq if chunks else 0,
                    )
                    if newest > cursor.last and not beyond:
                        self.metrics.watcher_lag.record(newest - cursor.last)
                    if beyond:
                        if (
                            chunks
                            and not overflowed
                            and all(c.last_seq < cursor.last and not c.completed for c in chunks)
                        ):
                            continue  # local commits short of after_seq: nothing to settle
                        beyond = await self._settle_beyond(request.run_id, cursor)
                        if beyond is None:
                            await context.abort_with_status(
                                to_status(_beyond_end(await self._run(request.run_id), cursor.last))
                            )
                            return
                        if not beyond:
                            async for response in self._catch_up(request.run_id, cursor, flt, sub):
                                yield response
                        continue
                    parts = []
                    size = 0
                    for chunk in chunks:
                        if chunk.last_seq <= cursor.last:
                            continue  # already sent (replayed from the store)
                        if chunk.first_seq != cursor.last + 1:
                            overflowed = True  # a gap or an overlap: let the store settle it
                            break
                        framed = chunk.framed if flt is None else _select(chunk, flt)
                        if parts and size + len(framed) > RESPONSE_BYTES:
                            yield cursor.response(parts)
                            parts, size = [], 0
                        if framed:
                            parts.append(framed)
                            size += len(framed)
                        cursor.last, cursor.done = chunk.last_seq, chunk.completed
                        if chunk.completed:
                            cursor.status = _completed_status(
                                run_service_pb2.WatchRunResponse.FromString(chunk.framed).events[-1]
                            )
                    if parts or cursor.last > cursor.sent:
                        # A filtered watcher whose chunks were all skipped gets
                        # a response that only advances resume_after_seq.
                        yield cursor.response(parts)
                    if not cursor.done and (overflowed or wake_seq > cursor.last):
                        async for response in self._catch_up(request.run_id, cursor, flt, sub):
                            yield response
                # The end of the finished run, in a response of its own: the
                # chunks before it are shared, pre-framed bytes.
                yield _stream_end(cursor.last, cursor.status)
            except RunNotFound as exc:
                # Pruned while watched (see _catch_up).
                await context.abort_with_status(to_status(exc))
            finally:
                sub.close()

    async def _settle_beyond(self, run_id: str, cursor: _Cursor) -> bool | None:
        """For a watcher whose after_seq is beyond the run's last seq: is it still?

        Returns True while the run is live and short of the cursor, False once
        the store holds events past it or the run finished exactly at it (the
        cursor is then done), and None when the run finished short of it.
        """
        row = await self._run(run_id)
        if row.last_seq > cursor.last:
            return False
        if not row.finished:
            return True
        if row.last_seq < cursor.last:
            return None
        cursor.done, cursor.status = True, row.status
        return False

    async def _catch_up(
        self,
        run_id: str,
        cursor: _Cursor,
        flt: LogFilter | None = None,
        sub: Subscription | None = None,
        first: list[StoredEvent] | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield every committed event after the cursor that `flt` selects, advancing it;
        `first` is the first page when it was read already (see `Store.open_stream`).

        It stops where `sub`'s queue of live chunks takes over: a watcher that
        joins a busy run reads the store only up to its first queued chunk,
        not for as long as the writer stays ahead of its page reads.
        """
        while not cursor.done:
            live = sub.live_from() if sub is not None else None
            if live is not None and live <= cursor.last + 1:
                return
            page: list[StoredEvent] | None
            if first is not None:
                page, first = first, None
            else:
                page = await self.store.read_events(run_id, cursor.last, _REPLAY_PAGE)
            if page is None:
                # Retention deleted the run mid-replay: NOT_FOUND, never an
                # OK stream without its end.
                raise RunNotFound(run_id)
            rows = page if live is None else [r for r in page if r.seq < live]
            parts: list[bytes] = []
            size = 0
            for row in rows:
                if flt is not None and not flt.selects(row.kind, row.payload):
                    cursor.last = row.seq  # looked at; RunCompleted is always selected
                    continue
                payload = row.payload
                if len(payload) > MAX_EVENT_BYTES:
                    # Stored before events were bounded: cut it as new_event
                    # would have, so a client with default limits receives it.
                    event = bound_event(events_pb2.RunEvent.FromString(payload))
                    payload = event.SerializeToString(deterministic=True)
                framed = frame_event(payload)
                if parts and size + len(framed) > RESPONSE_BYTES:
                    yield cursor.response(parts)
                    parts, size = [], 0
                parts.append(framed)
                size += len(framed)
                cursor.last = row.seq
                cursor.done = row.kind == "run_completed"
                if cursor.done:
                    cursor.status = _completed_status(events_pb2.RunEvent.FromString(row.payload))
            if parts or cursor.last > cursor.sent:
                yield cursor.response(parts)
            if len(page) < _REPLAY_PAGE:
                return


def _completed_status(event: events_pb2.RunEvent) -> int:
    """The final status a RunCompleted event carries."""
    return int(event.run_completed.status)


def _stream_end(last_seq: int, status: int) -> bytes:
    """The last response of a finished run's stream (`stream_end` set)."""
    return run_service_pb2.WatchRunResponse(
        # The .pyi types enum fields as RunStatus; the store holds plain ints.
        stream_end=run_service_pb2.StreamEnd(last_seq=last_seq, status=status),  # type: ignore[arg-type]
        resume_after_seq=last_seq,
    ).SerializeToString()


def _beyond_end(row: RunRow | RunHead, after_seq: int) -> AfterSeqBeyondEnd:
    return AfterSeqBeyondEnd(
        row.run_id, after_seq, row.last_seq, events_pb2.RunStatus.Name(row.status)
    )


def _select(chunk: Chunk, flt: LogFilter) -> bytes:
    """The events of a pre-framed live chunk that the filter selects, still framed.

    The writer records each event's kind and where its framed entry ends, so
    an event is looked into only when the filter names node ids, and none is
    decoded and encoded again."""
    framed = chunk.framed
    looks_inside = bool(flt.node_ids)
    parts: list[bytes] = []
    start = 0
    for kind, end in zip(chunk.kinds, chunk.ends, strict=True):
        if flt.selects(kind, _unframed(framed, start, end) if looks_inside else b""):
            parts.append(framed[start:end])
        start = end
    return b"".join(parts)


def _unframed(framed: bytes, start: int, end: int) -> bytes:
    """The RunEvent bytes of the framed entry at [start, end): after its tag
    and its length varint (whose last byte is the first without the high bit)."""
    i = start + 1
    while framed[i] & 0x80:
        i += 1
    return framed[i + 1 : end]


@dataclass(slots=True)
class _Cursor:
    """How far one watcher has been looked through (`last`) and told (`sent`)."""

    last: int
    done: bool = False
    status: int = 0  # the RunStatus of RunCompleted, once done
    sent: int = 0  # the resume_after_seq of the last response

    def response(self, parts: list[bytes]) -> bytes:
        """A WatchRunResponse of framed events, resumable after `last`: serialized
        messages concatenate, so resume_after_seq is appended to the shared bytes."""
        self.sent = self.last
        return b"".join(parts) + frame_resume_after(self.last)
