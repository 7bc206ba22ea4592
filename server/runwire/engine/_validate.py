"""Flow checks shared by StartRun and ValidateFlow; every problem names its field path."""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import rfc8785
from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from runwire.adapters import ActionSpec, Registry
from runwire.engine._limits import MAX_JSON_BYTES, json_size
from runwire.engine._ports import ModelGateway
from runwire.engine._templates import TemplateError, has_template, references
from runwire.errors import AdapterDisabled, FieldViolation, FlowInvalid
from runwire.v1 import flow_pb2

__all__ = ["Graph", "canonical_json", "flow_digest", "struct_problems", "validate_flow"]

NODE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# The engine's cost per node is flat (see `make bench-engine`): a 10 000-node
# flow is checked in about a second (off the event loop) and runs at the
# speed of its nodes. The bound keeps one StartRun's request and its stored
# flow JSON a few MiB at most.
MAX_NODES = 10_000
MAX_ATTEMPTS = 10
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_PARALLEL = 64
# Bidirectional overrides and isolates can make a name read differently than it is.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


_VALIDATORS: dict[int, jsonschema.Draft202012Validator] = {}


def params_validator(spec: ActionSpec) -> jsonschema.Draft202012Validator:
    """The compiled validator of an action's params schema (built once per spec)."""
    validator = _VALIDATORS.get(id(spec))
    if validator is None:
        validator = _VALIDATORS[id(spec)] = jsonschema.Draft202012Validator(spec.params_schema)
    return validator


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
_EXACT = 2**53


def _plain(value: Any) -> Any:
    """`value` with integral floats as ints, or None when the stdlib encoder would not
    write RFC 8785 for it (a fractional or huge number, a key outside ASCII, a lone
    surrogate): then the rfc8785 library does."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return None
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_EXACT < value < _EXACT else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and -_EXACT < value < _EXACT else None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k.isascii():
                return None  # RFC 8785 sorts by UTF-16 code units, the stdlib by code points
            p = _plain(v)
            if p is None and v is not None:
                return None
            out[k] = p
        return out
    if isinstance(value, list | tuple):
        items = []
        for v in value:
            p = _plain(v)
            if p is None and v is not None:
                return None
            items.append(p)
        return items
    return None


def canonical_json(value: Any) -> str:
    """RFC 8785 canonical JSON text.

    Most values (integral numbers, ASCII keys) are written by the stdlib's C
    encoder, whose output is the same text for them; the rest by rfc8785.
    """
    plain = _plain(value)
    if plain is not None or value is None:
        return _JSON.encode(plain)
    return rfc8785.dumps(value).decode("utf-8")


def flow_digest(flow: flow_pb2.Flow) -> str:
    """Hex SHA-256 of the flow's canonical proto3 JSON."""
    return hashlib.sha256(canonical_json(json_format.MessageToDict(flow)).encode()).hexdigest()


@dataclass
class Graph:
    """A validated flow as a graph.

    Edges are split into forward edges (a DAG, which decides when a node is
    ready) and back edges (an edge to a node already on the path from a root,
    which re-visits that node: a bounded loop).
    """

    flow: flow_pb2.Flow
    nodes: dict[str, flow_pb2.Node]
    incoming: dict[str, list[flow_pb2.Edge]] = field(default_factory=dict)
    outgoing: dict[str, list[flow_pb2.Edge]] = field(default_factory=dict)
    back_edges: dict[str, list[flow_pb2.Edge]] = field(default_factory=dict)
    _into: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _downstream: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def roots(self) -> list[str]:
        """Node ids with no incoming forward edge (where the run starts), in flow order."""
        return [n for n in self.nodes if not self.incoming[n]]

    def downstream(self, node_id: str) -> list[str]:
        """`node_id` and every node reachable from it over forward edges, in flow order."""
        cached = self._downstream.get(node_id)
        if cached is not None:
            return cached
        seen = {node_id}
        stack = [node_id]
        while stack:
            for e in self.outgoing[stack.pop()]:
                if e.target not in seen:
                    seen.add(e.target)
                    stack.append(e.target)
        if not self._index:
            self._index = {n: i for i, n in enumerate(self.nodes)}
        found = self._downstream[node_id] = sorted(seen, key=self._index.__getitem__)
        return found

    def reaches(self, source: str, target: str) -> bool:
        """Whether a path leads from `source` to `target` over any edges (loops included).

        Searched backwards from `target` and stopped as soon as `source` is
        found: a template usually reads a node close upstream, so checking a
        flow's templates stays about linear in its size.
        """
        into = self._edges_into()
        seen: set[str] = set()
        stack = [target]
        while stack:
            for s in into[stack.pop()]:
                if s == source:
                    return True
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return False

    def _edges_into(self) -> dict[str, list[str]]:
        if not self._into:
            self._into = {n: [] for n in self.nodes}
            for edges in (*self.outgoing.values(), *self.back_edges.values()):
                for e in edges:
                    self._into[e.target].append(e.source)
        return self._into


_MAX_DURATION_SECONDS = 315_576_000_000  # 10 000 years, as google/protobuf/duration.proto says


def _duration_problem(d: Duration) -> str | None:
    if not -999_999_999 <= d.nanos <= 999_999_999:
        return f"nanos must be within ±999999999, got {d.nanos}"
    if (d.seconds < 0 < d.nanos) or (d.nanos < 0 < d.seconds):
        return f"seconds ({d.seconds}) and nanos ({d.nanos}) must have the same sign"
    if not -_MAX_DURATION_SECONDS <= d.seconds <= _MAX_DURATION_SECONDS:
        return f"seconds must be within ±{_MAX_DURATION_SECONDS}, got {d.seconds}"
    return None


def duration_problems(message: Message, path: str) -> list[FieldViolation]:
    """Durations that are not valid google.protobuf.Durations, anywhere in `message`.

    Checked before anything reads the message as JSON, which fails on them.
    """
    out: list[FieldViolation] = []
    for fd, value in message.ListFields():
        sub = fd.message_type
        if sub is None or (sub.full_name.startswith("google.protobuf.") and sub.name != "Duration"):
            continue
        items = list(value) if fd.is_repeated else [value]
        for i, item in enumerate(items):
            where = f"{path}.{fd.name}[{i}]" if fd.is_repeated else f"{path}.{fd.name}"
            if sub.full_name == "google.protobuf.Duration":
                if problem := _duration_problem(item):
                    out.append(FieldViolation(where, problem))
            else:
                out.extend(duration_problems(item, where))
    return out


def _seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _text_problem(value: str) -> str | None:
    if any(c in _BIDI for c in value):
        return "must not contain bidirectional control characters"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "must not contain control characters"
    return None


def struct_problems(value: struct_pb2.Struct | struct_pb2.Value, path: str) -> list[FieldViolation]:
    """NUL characters and non-finite numbers, which JSON (and Postgres jsonb) cannot hold."""
    out: list[FieldViolation] = []
    if isinstance(value, struct_pb2.Struct):
        for key, item in value.fields.items():
            where = f"{path}.{key}"
            if "\x00" in key:
                out.append(FieldViolation(where, "keys must not contain NUL characters"))
            out.extend(struct_problems(item, where))
        return out
    kind = value.WhichOneof("kind")
    if kind == "string_value" and "\x00" in value.string_value:
        out.append(FieldViolation(path, "must not contain NUL characters"))
    elif kind == "number_value" and not math.isfinite(value.number_value):
        out.append(FieldViolation(path, "must be a finite number"))
    elif kind == "struct_value":
        out.extend(struct_problems(value.struct_value, path))
    elif kind == "list_value":
        for i, item in enumerate(value.list_value.values):
            out.extend(struct_problems(item, f"{path}[{i}]"))
    return out


def _schema_path(base: str, parts: Iterable[str | int]) -> str:
    out = base
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _check_retry(policy: flow_pb2.RetryPolicy, path: str, out: list[FieldViolation]) -> None:
    if not 0 <= policy.max_attempts <= MAX_ATTEMPTS:
        out.append(
            FieldViolation(
                f"{path}.max_attempts",
                f"must be between 0 and {MAX_ATTEMPTS}, got {policy.max_attempts}",
            )
        )
    if policy.HasField("initial_backoff") and _seconds(policy.initial_backoff) <= 0:
        out.append(FieldViolation(f"{path}.initial_backoff", "must be positive"))
    if policy.backoff_multiplier != 0 and not 1 <= policy.backoff_multiplier <= 10:
        out.append(
            FieldViolation(
                f"{path}.backoff_multiplier",
                f"must be between 1 and 10, got {policy.backoff_multiplier}",
            )
        )
    if policy.HasField("max_backoff"):
        if _seconds(policy.max_backoff) <= 0:
            out.append(FieldViolation(f"{path}.max_backoff", "must be positive"))
        elif policy.HasField("initial_backoff") and _seconds(policy.max_backoff) < _seconds(
            policy.initial_backoff
        ):
            out.append(
                FieldViolation(f"{path}.max_backoff", "must not be less than initial_backoff")
            )


def _check_timeout(d: Duration, path: str, out: list[FieldViolation]) -> None:
    s = _seconds(d)
    if s <= 0:
        out.append(FieldViolation(path, f"must be positive, got {s:g}s"))
    elif s > MAX_TIMEOUT_SECONDS:
        out.append(FieldViolation(path, f"must be at most {MAX_TIMEOUT_SECONDS}s, got {s:g}s"))


def _oversized_param(params: Mapping[str, Any], path: str, size: int) -> tuple[str, int]:
    """The param that is over MAX_JSON_BYTES by itself (and its size), else all of them."""
    for key, value in params.items():
        if (value_size := json_size(value)) > MAX_JSON_BYTES:
            return f"{path}.{key}", value_size
    return path, size


def _check_action(
    action: flow_pb2.ActionNode,
    path: str,
    registry: Registry,
    out: list[FieldViolation],
    disabled: list[AdapterDisabled],
) -> None:
    if problems := struct_problems(action.params, f"{path}.params"):
        out.extend(problems)
        return
    adapter = registry.get(action.adapter)
    if adapter is None:
        out.append(
            FieldViolation(
                f"{path}.adapter",
                f"unknown adapter {action.adapter!r}; known: {', '.join(registry.names())}",
            )
        )
        return
    if action.adapter in registry.disabled:
        disabled.append(
            AdapterDisabled(f"{path}.adapter", action.adapter, registry.disabled[action.adapter])
        )
        return
    spec = adapter.actions.get(action.action)
    if spec is None:
        out.append(
            FieldViolation(
                f"{path}.action",
                f"adapter {action.adapter!r} has no action {action.action!r}; known: {', '.join(sorted(adapter.actions))}",
            )
        )
        return
    params: Mapping[str, Any] = json_format.MessageToDict(action.params)
    if (size := json_size(params)) > MAX_JSON_BYTES:
        # NodeStarted carries the params: refuse what no event could hold, and
        # name the param that alone is too big when there is one.
        where, size = _oversized_param(params, f"{path}.params", size)
        out.append(
            FieldViolation(
                where, f"must be at most {MAX_JSON_BYTES} bytes as canonical JSON, got {size}"
            )
        )
        return
    errors = sorted(
        params_validator(spec).iter_errors(params),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    # A templated string is checked after rendering, at run time.
    errors = [e for e in errors if not (isinstance(e.instance, str) and has_template(e.instance))]
    for err in errors:
        out.append(FieldViolation(_schema_path(f"{path}.params", err.absolute_path), err.message))
    if not errors:
        for sub, why in adapter.check(action.action, params):
            out.append(FieldViolation(f"{path}.params.{sub}", why))


MAX_TOOLS = 32
MAX_CONTRACT_BYTES = 16_384
MAX_TURNS = 100
_TOOL = re.compile(r"^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*$")


def _check_ai(
    node: flow_pb2.AiNode,
    path: str,
    registry: Registry,
    ai: ModelGateway | None,
    out: list[FieldViolation],
    disabled: list[AdapterDisabled],
    check_providers: bool = True,
) -> None:
    if not check_providers:
        pass  # a takeover: a node this server cannot serve is skipped when it comes up
    elif ai is None:
        disabled.append(AdapterDisabled(path, "ai", "no AI provider is configured on this server"))
        return
    embed = node.operation == flow_pb2.AI_OPERATION_EMBED
    classify = node.operation == flow_pb2.AI_OPERATION_CLASSIFY
    found = (
        ai.problems(node.provider, node.model, embedding=embed) if ai and check_providers else []
    )
    for where, why in found:
        if "local-only" in why:
            disabled.append(AdapterDisabled(f"{path}.{where}", "ai", why))
        else:
            out.append(FieldViolation(f"{path}.{where}", why))
    if node.operation not in flow_pb2.AiOperation.values():
        out.append(FieldViolation(f"{path}.operation", f"unknown operation {node.operation}"))
    if embed:
        for name, what in (
            ("tools", "tools"),
            ("contract", "a contract"),
            ("review_policy", "a review policy"),
            ("labels", "labels"),
        ):
            value = getattr(node, name)
            if node.HasField(name) if name in ("contract", "review_policy") else bool(value):
                out.append(FieldViolation(f"{path}.{name}", f"an EMBED node takes no {what}"))
    if classify:
        if node.HasField("contract"):
            out.append(
                FieldViolation(f"{path}.contract", "a CLASSIFY node's contract is its labels")
            )
        if len(node.labels) < 2:
            out.append(
                FieldViolation(
                    f"{path}.labels", f"CLASSIFY needs at least 2 labels, got {len(node.labels)}"
                )
            )
        first: dict[str, int] = {}
        for i, label in enumerate(node.labels):
            if not label.strip() or len(label) > 128 or "\x00" in label:
                out.append(FieldViolation(f"{path}.labels[{i}]", "1-128 characters, not blank"))
            elif label in first:
                out.append(
                    FieldViolation(
                        f"{path}.labels[{i}]",
                        f"duplicate label {label!r} (first at {path}.labels[{first[label]}])",
                    )
                )
            else:
                first[label] = i
        if len(node.labels) > 100:
            out.append(
                FieldViolation(f"{path}.labels", f"at most 100 labels, got {len(node.labels)}")
            )
    if not node.task.strip():
        out.append(FieldViolation(f"{path}.task", "must not be empty: it is the user message"))
    for name in ("prompt", "task"):
        text = getattr(node, name)
        if "\x00" in text:
            out.append(FieldViolation(f"{path}.{name}", "must not contain NUL characters"))
        elif (size := json_size(text)) > MAX_JSON_BYTES:
            out.append(
                FieldViolation(
                    f"{path}.{name}",
                    f"must be at most {MAX_JSON_BYTES} bytes as a JSON string, got {size}",
                )
            )
    if not 0 <= node.max_turns <= MAX_TURNS:
        out.append(
            FieldViolation(
                f"{path}.max_turns", f"must be between 0 and {MAX_TURNS}, got {node.max_turns}"
            )
        )
    if len(node.tools) > MAX_TOOLS:
        out.append(
            FieldViolation(f"{path}.tools", f"at most {MAX_TOOLS} tools, got {len(node.tools)}")
        )
    seen: dict[str, int] = {}
    for i, tool in enumerate(node.tools):
        tpath = f"{path}.tools[{i}]"
        if not _TOOL.match(tool):
            out.append(FieldViolation(tpath, f"{tool!r} is not a tool: name it `adapter.action`"))
            continue
        if tool in seen:
            out.append(
                FieldViolation(
                    tpath, f"duplicate tool {tool!r} (first at {path}.tools[{seen[tool]}])"
                )
            )
            continue
        seen[tool] = i
        adapter_name, _, action_name = tool.partition(".")
        adapter = registry.get(adapter_name)
        if adapter is None:
            out.append(
                FieldViolation(
                    tpath, f"unknown adapter {adapter_name!r}; known: {', '.join(registry.names())}"
                )
            )
        elif adapter_name in registry.disabled:
            disabled.append(AdapterDisabled(tpath, adapter_name, registry.disabled[adapter_name]))
        elif action_name not in adapter.actions:
            out.append(
                FieldViolation(
                    tpath,
                    f"adapter {adapter_name!r} has no action {action_name!r}; "
                    f"known: {', '.join(sorted(adapter.actions))}",
                )
            )
    if node.HasField("contract"):
        contract = json_format.MessageToDict(node.contract)
        if (size := json_size(contract)) > MAX_CONTRACT_BYTES:
            out.append(
                FieldViolation(
                    f"{path}.contract",
                    f"must be at most {MAX_CONTRACT_BYTES} bytes as canonical JSON, got {size}",
                )
            )
        else:
            try:
                jsonschema.Draft202012Validator.check_schema(contract)
            except jsonschema.SchemaError as exc:
                where = ".".join(map(str, exc.absolute_path))
                out.append(
                    FieldViolation(
                        f"{path}.contract" + (f".{where}" if where else ""),
                        f"not a valid JSON Schema (draft 2020-12): {exc.message}",
                    )
                )
    if node.HasField("review_policy"):
        policy = node.review_policy
        ppath = f"{path}.review_policy"
        for name in ("confidence_pointer", "escalate_pointer"):
            pointer = getattr(policy, name)
            if pointer and (not pointer.startswith("/") or re.search(r"~[^01]|~$", pointer)):
                out.append(
                    FieldViolation(
                        f"{ppath}.{name}", f"{pointer!r} is not a JSON Pointer such as /confidence"
                    )
                )
        if not policy.confidence_pointer:
            out.append(
                FieldViolation(
                    f"{ppath}.confidence_pointer",
                    "must point at the answer's confidence, e.g. /confidence",
                )
            )
        for name in ("approve_at", "suppress_below"):
            value = getattr(policy, name)
            if not 0 <= value <= 1:
                out.append(FieldViolation(f"{ppath}.{name}", f"must be in [0,1], got {value:g}"))
        if policy.suppress_below > policy.approve_at:
            out.append(
                FieldViolation(
                    f"{ppath}.suppress_below",
                    f"must not exceed approve_at ({policy.suppress_below:g} > "
                    f"{policy.approve_at:g})",
                )
            )
        if policy.HasField("review_timeout"):
            _check_timeout(policy.review_timeout, f"{ppath}.review_timeout", out)
    if node.labels and not (classify or embed):
        out.append(FieldViolation(f"{path}.labels", "labels are for CLASSIFY nodes"))


def _split_back_edges(
    nodes: dict[str, flow_pb2.Node], outgoing: dict[str, list[flow_pb2.Edge]]
) -> dict[int, list[str]]:
    """Depth-first from the entry nodes: each back edge (by id) with the cycle it closes.

    Iterative, so a 1000-node chain does not hit Python's recursion limit.
    """
    has_incoming = {e.target for edges in outgoing.values() for e in edges}
    on_path: set[str] = set()
    done: set[str] = set()
    back: dict[int, list[str]] = {}
    # Entry nodes first, so a loop's head is the node the flow enters it by;
    # then whatever only a cycle leads to, in flow order.
    for start in [*(n for n in nodes if n not in has_incoming), *nodes]:
        if start in done:
            continue
        path = [start]
        on_path.add(start)
        cursors = [iter(outgoing[start])]
        while cursors:
            e = next(cursors[-1], None)
            if e is None:
                finished = path.pop()
                cursors.pop()
                on_path.discard(finished)
                done.add(finished)
            elif e.target in on_path:
                back[id(e)] = [*path[path.index(e.target) :], e.target]
            elif e.target not in done:
                path.append(e.target)
                on_path.add(e.target)
                cursors.append(iter(outgoing[e.target]))
    return back


def validate_flow(
    flow: flow_pb2.Flow,
    registry: Registry,
    *,
    inputs: Mapping[str, Any] | None = None,
    path: str = "flow",
    ai: ModelGateway | None = None,
    check_providers: bool = True,
) -> Graph:
    """Check every rule; raise FlowInvalid listing each bad field, or AdapterDisabled.

    `ai` is the server's model providers; without it every ai node is refused.
    `check_providers=False` (a takeover) accepts AI nodes this server cannot
    serve: the engine skips them, saying why, when they come up.
    """
    out: list[FieldViolation] = duration_problems(flow, path)
    if out:
        raise FlowInvalid(out)
    disabled: list[AdapterDisabled] = []
    if not flow.name:
        out.append(FieldViolation(f"{path}.name", "must not be empty"))
    elif len(flow.name) > 128:
        out.append(
            FieldViolation(f"{path}.name", f"must be at most 128 characters, got {len(flow.name)}")
        )
    elif problem := _text_problem(flow.name):
        out.append(FieldViolation(f"{path}.name", problem))
    if not flow.nodes:
        out.append(FieldViolation(f"{path}.nodes", "a flow needs at least one node"))
    if len(flow.nodes) > MAX_NODES:
        out.append(
            FieldViolation(f"{path}.nodes", f"at most {MAX_NODES} nodes, got {len(flow.nodes)}")
        )

    nodes: dict[str, flow_pb2.Node] = {}
    first_at: dict[str, int] = {}
    for i, node in enumerate(flow.nodes):
        npath = f"{path}.nodes[{i}]"
        if not NODE_ID.match(node.id):
            out.append(
                FieldViolation(
                    f"{npath}.id",
                    f"{node.id!r} is not a node id: 1-64 of [A-Za-z0-9_-], starting with a letter",
                )
            )
        elif node.id in first_at:
            out.append(
                FieldViolation(
                    f"{npath}.id",
                    f"duplicate node id {node.id!r} (first at {path}.nodes[{first_at[node.id]}])",
                )
            )
        else:
            first_at[node.id] = i
            nodes[node.id] = node
        if "\x00" in node.description:
            out.append(FieldViolation(f"{npath}.description", "must not contain NUL characters"))
        if node.HasField("timeout"):
            _check_timeout(node.timeout, f"{npath}.timeout", out)
        if node.HasField("retry_policy"):
            _check_retry(node.retry_policy, f"{npath}.retry_policy", out)
        if not 0 <= node.max_visits <= 1000:
            out.append(
                FieldViolation(
                    f"{npath}.max_visits", f"must be between 0 and 1000, got {node.max_visits}"
                )
            )
        if node.HasField("for_each"):
            _check_for_each(node, npath, out)
        kind = node.WhichOneof("kind")
        if kind is None:
            out.append(FieldViolation(f"{npath}.kind", "set one of action, ai, approval"))
        elif kind == "action":
            _check_action(node.action, f"{npath}.action", registry, out, disabled)
        elif kind == "ai":
            _check_ai(node.ai, f"{npath}.ai", registry, ai, out, disabled, check_providers)
        else:
            if "\x00" in node.approval.message:
                out.append(
                    FieldViolation(f"{npath}.approval.message", "must not contain NUL characters")
                )
            elif (size := json_size(node.approval.message)) > MAX_JSON_BYTES:
                out.append(
                    FieldViolation(
                        f"{npath}.approval.message",
                        f"must be at most {MAX_JSON_BYTES} bytes as a JSON string, got {size}",
                    )
                )
            if node.approval.HasField("timeout"):
                _check_timeout(node.approval.timeout, f"{npath}.approval.timeout", out)

    incoming: dict[str, list[flow_pb2.Edge]] = {n: [] for n in nodes}
    outgoing: dict[str, list[flow_pb2.Edge]] = {n: [] for n in nodes}
    seen_edges: dict[tuple[str, str, int], int] = {}
    for i, edge in enumerate(flow.edges):
        epath = f"{path}.edges[{i}]"
        ok = True
        for end in ("source", "target"):
            value = getattr(edge, end)
            if value not in nodes and value not in first_at:
                out.append(FieldViolation(f"{epath}.{end}", f"no node has id {value!r}"))
                ok = False
        if ok and edge.source == edge.target:
            out.append(
                FieldViolation(
                    f"{epath}.target",
                    f"edge from {edge.source!r} to itself; loop through another node with max_visits",
                )
            )
            ok = False
        if edge.condition not in flow_pb2.EdgeCondition.values():
            out.append(FieldViolation(f"{epath}.condition", f"unknown condition {edge.condition}"))
            ok = False
        key = (edge.source, edge.target, edge.condition or flow_pb2.EDGE_CONDITION_SUCCESS)
        if ok and key in seen_edges:
            out.append(FieldViolation(f"{epath}", f"duplicate of {path}.edges[{seen_edges[key]}]"))
            ok = False
        if ok and edge.source in nodes and edge.target in nodes:
            seen_edges[key] = i
            incoming[edge.target].append(edge)
            outgoing[edge.source].append(edge)

    back_edges: dict[str, list[flow_pb2.Edge]] = {n: [] for n in nodes}
    if nodes and not out:
        back = _split_back_edges(nodes, outgoing)
        for i, edge in enumerate(flow.edges):
            cycle = back.get(id(edge))
            if cycle is None:
                continue
            if nodes[edge.target].max_visits < 1:
                out.append(
                    FieldViolation(
                        f"{path}.edges[{i}]",
                        "edges form a cycle "
                        + " -> ".join(cycle)
                        + f"; set max_visits on node {edge.target!r} to bound the loop",
                    )
                )
            outgoing[edge.source].remove(edge)
            incoming[edge.target].remove(edge)
            back_edges[edge.source].append(edge)
    graph = Graph(
        flow=flow, nodes=nodes, incoming=incoming, outgoing=outgoing, back_edges=back_edges
    )
    for i, node in enumerate(flow.nodes):
        if node.WhichOneof("kind") == "ai" and (
            node.ai.HasField("contract")
            or node.ai.HasField("review_policy")
            or node.ai.operation == flow_pb2.AI_OPERATION_CLASSIFY
        ):
            handled = any(
                e.source == node.id
                and e.condition in (flow_pb2.EDGE_CONDITION_FAILURE, flow_pb2.EDGE_CONDITION_ALWAYS)
                for e in flow.edges
            )
            if not handled:
                out.append(
                    FieldViolation(
                        f"{path}.nodes[{i}].ai",
                        f"node {node.id!r} has a contract (or labels) or a review policy, so its "
                        "answer may be suppressed or rejected: give it a FAILURE (or ALWAYS) edge",
                    )
                )
    if not out:
        _check_templates(flow, graph, inputs, path, out)

    settings = flow.settings
    if not 0 <= settings.max_parallel <= MAX_PARALLEL:
        out.append(
            FieldViolation(
                f"{path}.settings.max_parallel",
                f"must be between 0 and {MAX_PARALLEL}, got {settings.max_parallel}",
            )
        )
    if settings.HasField("default_timeout"):
        _check_timeout(settings.default_timeout, f"{path}.settings.default_timeout", out)
    if settings.HasField("default_retry_policy"):
        _check_retry(settings.default_retry_policy, f"{path}.settings.default_retry_policy", out)

    if out:
        raise FlowInvalid(out)
    if disabled:
        raise disabled[0]
    return graph


_ITEM_VARIABLES = frozenset({"item", "item_index"})
_KEY_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _check_for_each(node: flow_pb2.Node, npath: str, out: list[FieldViolation]) -> None:
    fe = node.for_each
    if node.WhichOneof("kind") != "action":
        out.append(FieldViolation(f"{npath}.for_each", "only an action node can fan out"))
    if not fe.items.strip():
        out.append(
            FieldViolation(
                f"{npath}.for_each.items",
                "required: a template evaluating to a JSON array, such as {{ nodes.list.output }}",
            )
        )
    if not 0 <= fe.max_parallel <= 1000:
        out.append(
            FieldViolation(
                f"{npath}.for_each.max_parallel",
                f"must be between 0 and 1000, got {fe.max_parallel}",
            )
        )
    if fe.failure_policy not in flow_pb2.ItemFailurePolicy.values():
        out.append(
            FieldViolation(
                f"{npath}.for_each.failure_policy", f"unknown policy {fe.failure_policy}"
            )
        )
    if fe.key_field and not _KEY_FIELD.fullmatch(fe.key_field):
        out.append(
            FieldViolation(
                f"{npath}.for_each.key_field",
                f"must be a field name of [A-Za-z0-9_], got {fe.key_field!r}",
            )
        )


def _check_templates(
    flow: flow_pb2.Flow,
    graph: Graph,
    inputs: Mapping[str, Any] | None,
    path: str,
    out: list[FieldViolation],
) -> None:
    for i, node in enumerate(flow.nodes):
        kind = node.WhichOneof("kind")
        npath = f"{path}.nodes[{i}]"
        fan_out = node.HasField("for_each")
        if fan_out:
            _check_refs(node, node.for_each.items, f"{npath}.for_each.items", graph, inputs, out)
        texts: list[tuple[Any, str]]
        if kind == "action":
            texts = [(json_format.MessageToDict(node.action.params), f"{npath}.action.params")]
        elif kind == "approval":
            texts = [(node.approval.message, f"{npath}.approval.message")]
        elif kind == "ai":
            texts = [(node.ai.prompt, f"{npath}.ai.prompt"), (node.ai.task, f"{npath}.ai.task")]
        else:
            continue
        for value, base in texts:
            _check_refs(
                node, value, base, graph, inputs, out, _ITEM_VARIABLES if fan_out else frozenset()
            )


def _check_refs(
    node: flow_pb2.Node,
    value: Any,
    base: str,
    graph: Graph,
    inputs: Mapping[str, Any] | None,
    out: list[FieldViolation],
    extra: frozenset[str] = frozenset(),
) -> None:
    try:
        refs = references(value, extra=extra)
    except TemplateError as exc:
        out.append(FieldViolation(f"{base}.{exc.path}" if exc.path else base, exc.message))
        return
    for ref in refs:
        where = f"{base}.{ref.path}" if ref.path else base
        if ref.root == "nodes":
            if ref.key is None:
                out.append(FieldViolation(where, "reference a node as nodes.<id> or nodes['<id>']"))
            elif ref.key not in graph.nodes:
                out.append(FieldViolation(where, f"no node has id {ref.key!r}"))
            elif not graph.reaches(ref.key, node.id):
                out.append(
                    FieldViolation(
                        where,
                        f"node {ref.key!r} is not upstream of {node.id!r}, so its output is not available",
                    )
                )
        elif inputs is not None and ref.key is not None and ref.key not in inputs:
            out.append(FieldViolation(where, f"run input {ref.key!r} is not given"))
