"""Sandboxed templates in node params: `{{ inputs.branch }}`, `{{ nodes.build.output.exit_code }}`.

Rendered values are data: a string that is exactly one `{{ expression }}`
keeps the expression's type (a number stays a number, an object an object);
any other string renders to a string, exactly as written around the
expressions (trailing newline included), with each expression's value as its
JSON text: `3` not `3.0`, `true`, `false`, `null`, objects and lists as
compact JSON with sorted keys; a string is inserted as is. Nothing is ever spliced into
a shell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runwire.engine._limits import MAX_JSON_BYTES, json_size

__all__ = [
    "TemplateError",
    "TemplateRef",
    "contains_template",
    "has_template",
    "references",
    "render_value",
]


class _DataEnvironment(ImmutableSandboxedEnvironment):
    """Mapping keys win over attributes: `nodes.get.output` is the node `get`,
    not `dict.get`; `output.items` is the key `items` of a JSON body."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    # `'x' * 50000000` or `9 ** 9 ** 9` would take the memory or the CPU before
    # any output check: refuse such operands up front.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_JSON_BYTES
                ):
                    raise SecurityError(
                        f"repeating a value of length {len(seq)} {n} times exceeds "
                        f"the {MAX_JSON_BYTES}-byte limit on a rendered value"
                    )
        elif operator == "**" and isinstance(right, int) and abs(right) > 1024:
            raise SecurityError("exponents above 1024 are not allowed in templates")
        return super().call_binop(context, operator, left, right)


def _integral(value: Any) -> Any:
    """`value` with every integral float as an int: inputs travel as
    `google.protobuf.Struct`, where every number is a double."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_integral(v) for v in value]
    return value


def _json_text(value: Any) -> Any:
    """How a value reads inside a string: its JSON text, a string as itself."""
    if isinstance(value, str | Undefined):
        return value
    try:
        return json.dumps(
            _integral(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True
        )
    except (TypeError, ValueError):
        return value


_ENV = _DataEnvironment(
    undefined=StrictUndefined, autoescape=False, finalize=_json_text, keep_trailing_newline=True
)
_WHOLE = re.compile(r"^\{\{(?P<expr>.*)\}\}$", re.DOTALL)
ROOTS = frozenset({"inputs", "nodes"})


class TemplateError(Exception):
    """A template failed to parse or render; `path` names the params sub-path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class TemplateRef:
    """One variable a template reads: `inputs.<key>` or `nodes.<id>`."""

    root: str
    key: str | None
    path: str


def has_template(value: str) -> bool:
    """True when the string holds template syntax."""
    return "{{" in value or "{%" in value


def contains_template(value: Any) -> bool:
    """True when any string inside `value` holds template syntax."""
    return any(has_template(text) for _, text in _strings(value, ""))


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def _key_of(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def references(
    value: Any, path: str = "", extra: frozenset[str] = frozenset()
) -> list[TemplateRef]:
    """Every variable the templates in `value` read; TemplateError on bad syntax.

    `extra` names further variables the context has (a fan-out node's `item`
    and `item_index`); they are accepted and not reported.
    """
    refs: list[TemplateRef] = []
    for where, text in _strings(value, path):
        if not has_template(text):
            continue
        try:
            tree = _ENV.parse(text)
        except TemplateSyntaxError as exc:
            raise TemplateError(where, f"template syntax error: {exc.message}") from None
        seen: set[int] = set()
        # `nodes.build.output` is Getattr(Getattr(Name(nodes), build), output):
        # look at the innermost attribute access on a root name.
        accesses: list[nodes.Getattr | nodes.Getitem] = [
            *tree.find_all(nodes.Getattr),
            *tree.find_all(nodes.Getitem),
        ]
        for access in accesses:
            inner = access.node
            if isinstance(inner, nodes.Name) and inner.name in ROOTS and id(access) not in seen:
                seen.add(id(access))
                refs.append(TemplateRef(inner.name, _key_of(access), where))
        for name in tree.find_all(nodes.Name):
            if name.ctx == "load" and name.name not in ROOTS and name.name not in extra:
                raise TemplateError(
                    where, f"unknown variable {name.name!r}; use inputs.<key> or nodes.<id>.output"
                )
    return refs


def _render_string(text: str, context: Mapping[str, Any], where: str) -> Any:
    result = _render_unbounded(text, context, where)
    size = json_size(result)
    if size > MAX_JSON_BYTES:
        raise TemplateError(
            where,
            f"renders to {size} bytes of JSON, more than the limit of {MAX_JSON_BYTES} bytes",
        )
    return result


def _render_unbounded(text: str, context: Mapping[str, Any], where: str) -> Any:
    try:
        whole = _WHOLE.match(text)
        if whole and "{{" not in whole["expr"] and "{%" not in text:
            result = _ENV.compile_expression(whole["expr"], undefined_to_none=False)(**context)
            if isinstance(result, Undefined):
                str(result)  # StrictUndefined raises UndefinedError here
            return result
        return _ENV.from_string(text).render(**context)
    except (UndefinedError, SecurityError, TemplateSyntaxError, TypeError, ValueError) as exc:
        raise TemplateError(where, str(exc)) from None


def render_value(value: Any, context: Mapping[str, Any], path: str = "") -> Any:
    """`value` with every templated string rendered against `context`."""
    if isinstance(value, str):
        return _render_string(value, context, path) if has_template(value) else value
    if isinstance(value, Mapping):
        return {
            k: render_value(v, context, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [render_value(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
