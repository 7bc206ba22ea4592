"""The generated docs: current with the code, and the flow JSON Schema agrees with the server."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = _generator()


@pytest.mark.parametrize("path", sorted(GENERATE.outputs()), ids=lambda p: p.name)
def test_docs_generated_files_are_current(path: Path) -> None:
    """A change to an action's JSON Schema, a serve flag or flow.proto must come
    with the regenerated docs: `make docs`."""
    assert path.read_text(encoding="utf-8") == GENERATE.outputs()[path], (
        f"{path.relative_to(ROOT)} is stale; run `make docs` and commit"
    )


def test_docs_adapter_reference_lists_every_param_of_every_action() -> None:
    text = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
    registry = GENERATE._registry()
    for name in registry.names():
        adapter = registry.get(name)
        for action, spec in adapter.actions.items():
            assert f"### `{name}` `{action}`" in text
            for param in spec.params_schema.get("properties", {}):
                assert f"| `{param}` |" in text


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads((ROOT / "docs" / "flow.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_docs_flow_schema_accepts_every_example(example: Path) -> None:
    flow = yaml.safe_load(example.read_text(encoding="utf-8"))
    assert list(_validator().iter_errors(flow)) == []


@pytest.mark.parametrize(
    ("flow", "where"),
    [
        ({"name": "x", "nodes": [{"id": "a", "acton": {}}]}, ["nodes", 0]),
        ({"name": "x", "edges": [{"source": "a", "target": "b", "condition": "FAILURE"}]}, ["edges", 0, "condition"]),
        ({"name": "x", "nodes": [{"id": "a", "timeout": "30"}]}, ["nodes", 0, "timeout"]),
        ({"name": "x", "nodes": [{"id": "a", "action": {"adapter": "fs", "action": "write-file", "params": {"path": "p"}}}]},
         ["nodes", 0, "action", "params"]),
        ({"name": "x", "nodes": [{"id": "a", "action": {"adapter": "util", "action": "sleep", "params": {"seconds": "soon"}}}]},
         ["nodes", 0, "action", "params", "seconds"]),
        ({"name": "x", "nodes": [{"id": "a", "action": {}, "approval": {}}]}, ["nodes", 0]),
    ],
)  # fmt: skip
def test_docs_flow_schema_refuses_mistakes(flow: dict[str, Any], where: list[Any]) -> None:
    errors = list(_validator().iter_errors(flow))
    assert errors
    assert any(list(e.absolute_path)[: len(where)] == where for e in errors), [
        (list(e.absolute_path), e.message) for e in errors
    ]


def test_docs_flow_schema_allows_templates_and_proto_field_names() -> None:
    """protobuf reads `max_visits` as well as `maxVisits`; so does the schema."""
    flow = {
        "name": "x",
        "edges": [{"source": "a", "target": "a"}],
        "nodes": [{"id": "a", "max_visits": 2, "action": {"adapter": "util", "action": "sleep",
                                         "params": {"seconds": "{{ inputs.wait }}"}}}],
    }  # fmt: skip
    assert list(_validator().iter_errors(flow)) == []


def test_docs_operations_keeps_every_generated_section() -> None:
    """Regression: an empty generated section swallowed the text up to the next one."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "## Client connection options" in text
    for name in GENERATE.flag_tables():
        section = text.split(f"<!-- generated: {name} -->\n", 1)[1].split("<!-- end generated -->")[
            0
        ]
        assert section.startswith("| flag | what it does |"), name
        assert "<!--" not in section
