"""Read what a person hands the CLI: flow files, inputs files, and `key=value` / `key:=json` inputs."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from runwire._connect import UsageError
from runwire.v1 import flow_pb2

__all__ = ["load_flow", "load_mapping", "parse_inputs"]


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: `2024-01-01` stays the string it reads as,
    as the proto3 JSON mapping wants (a Timestamp is a string)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML or JSON file (by suffix; YAML otherwise) that must hold one mapping.

    Raises:
        UsageError: The file is missing, unreadable, malformed (with line and
            column), or not a mapping.
    """
    text = _read_text(path, what)
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path}:{exc.lineno}:{exc.colno}: JSON syntax error: {exc.msg}"
            ) from None
    else:
        try:
            data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or str(exc)
            raise UsageError(f"{where}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data


_NO_FIELD = re.compile(r'has no field named "(?P<name>[^"]*)" at "(?P<at>[^"]*)"')
_AVAILABLE = re.compile(r"Available Fields\(except extensions\): \"\[(?P<names>[^\]]*)\]\"")
_BAD_ENUM = re.compile(
    r"Invalid enum value (?P<value>\S+) for enum type (?P<enum>\S+) at (?P<at>\S+?)\.?$"
)
_PREFIX = re.compile(r"^(?:Failed to parse \w+ field: )+")


def _flow_path(at: str) -> str:
    return "flow" + at.removeprefix("Flow") if at.startswith("Flow") else at


def _suggest(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _explain(message: str) -> str:
    """protobuf's ParseError text, rewritten to name the field and the valid choices."""
    first = message.splitlines()[0]
    if m := _NO_FIELD.search(first):
        names_m = _AVAILABLE.search(message)
        names = re.findall(r"'([^']*)'", names_m["names"]) if names_m else []
        return f"{_flow_path(m['at'])}: unknown field {m['name']!r}{_suggest(m['name'], names)}" + (
            f" (valid fields: {', '.join(names)})" if names else ""
        )
    if m := _BAD_ENUM.search(first.rstrip(".")):
        try:
            enum = descriptor_pool.Default().FindEnumTypeByName(m["enum"])
            names = [v.name for v in enum.values if not v.name.endswith("_UNSPECIFIED")]
        except KeyError:
            names = []
        value = m["value"]
        guess = [n for n in names if n.endswith(f"_{value.upper()}")]
        hint = f"; did you mean {guess[0]!r}?" if guess else _suggest(value, names)
        return f"{_flow_path(m['at'])}: invalid value {value!r}{hint}" + (
            f" (valid values: {', '.join(names)})" if names else ""
        )
    text = _PREFIX.sub("", first).rstrip(".")
    if "expected string or bytes-like object" in text:
        return "a key is not a string; field names are text"
    return text.replace(" at Flow", " at flow")


def _parses(data: Any, message: Message) -> bool:
    try:
        json_format.ParseDict(data, type(message)())
    except (json_format.ParseError, TypeError, ValueError, AttributeError):
        return False
    return True


def _locate(data: Any, message: Message, path: str) -> str:
    """The path of the first value in `data` that does not parse into `message`.

    protobuf names the field for some errors and not for others (an integer
    field given `many`); narrowing down field by field always can.
    """
    if not isinstance(data, dict):
        return path
    fields: dict[str, Any] = dict(message.DESCRIPTOR.fields_by_camelcase_name)
    fields.update(message.DESCRIPTOR.fields_by_name)
    for key, value in data.items():
        if not isinstance(key, str):
            return path
        if _parses({key: value}, message):
            continue
        field = fields.get(key)
        where = f"{path}.{key}"
        if field is None or field.type != FieldDescriptor.TYPE_MESSAGE:
            return where
        child = getattr(type(message)(), field.name)
        if field.is_repeated and isinstance(value, list):
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                return where
            item = child.add()
            for i, element in enumerate(value):
                if not _parses(element, item):
                    return _locate(element, item, f"{where}[{i}]")
            return where
        return _locate(value, child, where)
    return path


def load_flow(path: Path) -> flow_pb2.Flow:
    """Read a YAML or JSON flow file (the proto3 JSON mapping of Flow).

    Raises:
        UsageError: The file cannot be read or parsed, or a field name or enum
            value is not in the Flow schema; the message names the field.
    """
    data = load_mapping(path, "flow file")
    try:
        return json_format.ParseDict(data, flow_pb2.Flow())
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        explained = _explain(str(exc)).rstrip(".")
        if not explained.startswith("flow"):
            where = _locate(data, flow_pb2.Flow(), "flow")
            explained = f"{where}: {explained}".replace(f" at {where}", "").removesuffix(" at flow")
        raise UsageError(f"{path}: {explained}") from None


def parse_inputs(pairs: list[str], files: list[str] | None = None) -> dict[str, Any]:
    """Run inputs from `--inputs-file` files, then `--input` pairs, later ones winning.

    As in HTTPie: `key=value` makes the string `value`, exactly as written;
    `key:=json` parses `json` as a JSON value (number, boolean, null, list, object).

    Raises:
        UsageError: A pair without `=`, an empty key, invalid JSON after `:=`,
            or an inputs file that is not a mapping.
    """
    inputs: dict[str, Any] = {}
    for name in files or []:
        inputs.update(load_mapping(Path(name), "inputs file"))
    for pair in pairs:
        eq = pair.find("=")
        typed = eq > 0 and pair[eq - 1] == ":"
        key = pair[: eq - 1] if typed else pair[:eq]
        if eq < 0 or not key:
            raise UsageError(f"--input takes KEY=STRING or KEY:=JSON, got {pair!r}")
        value = pair[eq + 1 :]
        if typed:
            try:
                inputs[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"--input {key}:= needs a JSON value, got {value!r} ({exc.msg});"
                    f" for a string use {key}={value}"
                ) from None
        else:
            inputs[key] = value
    return inputs
