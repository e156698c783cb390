"""kubeconform schemas for the test cluster's Kubernetes version, made from its own API server.

Owns turning the OpenAPI v3 documents that the harness's kube-apiserver publishes (with the Sync
CRD and the optional kinds' CRDs from tests/chart/crds/ installed) into kubeconform's format:
one standalone JSON schema per kind, every reference inlined, and `additionalProperties: false`
on each object that lists its properties (what `-strict` needs; fields a schema marks
`x-kubernetes-preserve-unknown-fields` stay open). Nothing is downloaded: kubeconform is then
pointed at this directory only, so a kind without a schema fails the check instead of being
fetched. The result is cached under .tools/, keyed by the API server binary and these inputs.

usage: python -m tests.chart.kubeschemas     (prints the schema directory)
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from tests.chart import chartfiles
from tests.harness.controlplane import running_control_plane, tool

ROOT = chartfiles.ROOT
CRDS = (
    chartfiles.CHART / "files" / "crds" / "sync.yaml",
    *sorted((Path(__file__).parent / "crds").glob("*.yaml")),
)
# kubeconform's -schema-location template for the directory this writes.
LOCATION = "{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json"
_REF = "#/components/schemas/"
_WAIT_SECONDS = 60


def cache_dir() -> Path:
    """Where the schemas for this API server and these CRDs are kept."""
    key = hashlib.sha256()
    key.update(str(tool("kube-apiserver").resolve()).encode())
    for path in (Path(__file__), *CRDS):
        key.update(path.read_bytes())
    return ROOT / ".tools" / "kube-schemas" / key.hexdigest()[:16]


def _get(api: k8s.ApiClient, path: str) -> Any:
    response = api.call_api("GET", f"{api.configuration.host}{path}")
    response.read()  # type: ignore[no-untyped-call]  # the client leaves it untyped
    return json.loads(response.data)


def _install_crds(api: k8s.ApiClient) -> set[str]:
    """Create every CRD; return the group/version paths their schemas appear under."""
    ext = k8s.ApiextensionsV1Api(api)
    wanted: set[str] = set()
    for path in CRDS:
        for crd in yaml.safe_load_all(path.read_text()):
            ext.create_custom_resource_definition(crd)
            group = crd["spec"]["group"]
            wanted.update(f"apis/{group}/{v['name']}" for v in crd["spec"]["versions"])
    return wanted


def _documents(api: k8s.ApiClient, wanted: set[str]) -> dict[str, Any]:
    """Every published OpenAPI v3 schema, once the CRDs' group versions are listed."""
    deadline = time.monotonic() + _WAIT_SECONDS
    while True:
        paths = _get(api, "/openapi/v3")["paths"]
        if wanted <= set(paths):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"kubeschemas: never published: {sorted(wanted - set(paths))}")
        time.sleep(0.5)
    schemas: dict[str, Any] = {}
    for entry in paths.values():
        document = _get(api, entry["serverRelativeURL"])
        schemas.update(document.get("components", {}).get("schemas", {}))
    return schemas


def _standalone(node: Any, schemas: dict[str, Any], seen: tuple[str, ...]) -> Any:
    """A schema with references inlined (a cycle becomes an open schema) and objects closed."""
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix(_REF)
        if name in seen:
            return {}  # JSONSchemaProps refers to itself; kubeconform needs a finite document
        return _standalone(schemas[name], schemas, (*seen, name))
    out = _inline_children({k: v for k, v in node.items() if k != "default"}, schemas, seen)
    if out.get("format") == "int-or-string" or out.get("x-kubernetes-int-or-string"):
        for key in ("type", "format", "anyOf"):
            out.pop(key, None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    open_fields = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not open_fields:
        out["additionalProperties"] = False
    return out


def _inline_children(
    out: dict[str, Any], schemas: dict[str, Any], seen: tuple[str, ...]
) -> dict[str, Any]:
    """The subschemas of one schema made standalone; a lone allOf merged into it."""
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            field: _standalone(sub, schemas, seen) for field, sub in out["properties"].items()
        }
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _standalone(out[key], schemas, seen)
    for key in ("anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_standalone(sub, schemas, seen) for sub in out[key]]
    all_of = out.pop("allOf", None)
    if isinstance(all_of, list):
        inlined = [_standalone(sub, schemas, seen) for sub in all_of]
        if len(inlined) == 1:
            out = {**inlined[0], **out}
        else:
            out["allOf"] = inlined
    return out


def write(target: Path, schemas: dict[str, Any]) -> int:
    """One file per kind named as LOCATION expects; returns how many."""
    count = 0
    target.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            standalone = _standalone(schema, schemas, (name,))
            standalone["$schema"] = "http://json-schema.org/schema#"
            # kubeconform's .Group is the apiVersion's first part: the version for core kinds.
            group = gvk["group"] or gvk["version"]
            file = f"{gvk['kind'].lower()}-{group}-{gvk['version']}.json"
            (target / file).write_text(json.dumps(standalone))
            count += 1
    return count


def main() -> int:
    """Make (or reuse) the schema directory and print its path."""
    target = cache_dir()
    if not (target / ".complete").exists():
        with running_control_plane() as plane:
            api = plane.admin()
            wanted = _install_crds(api)
            count = write(target, _documents(api, wanted))
        (target / ".complete").write_text(f"{count}\n")
        print(f"kubeschemas: {count} schemas in {target}", file=sys.stderr)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
