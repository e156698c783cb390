"""Rendering the chart for the render tests: `helm template` once per value set, parsed.

Owns the command line (the test cluster's Kubernetes version, the release name and namespace
the tests assume) and a per-process cache, so each value set is rendered once however many
tests read it. No cluster is contacted (`helm template` without --validate).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gitwarden"
KUBE_VERSION = "1.35.4"
RELEASE = "gitwarden"
NAMESPACE = "gitwarden"
HOOK = "helm.sh/hook"
COMPONENT = "app.kubernetes.io/component"


def value_sets() -> list[str]:
    """ "default" and the name of every file under the chart's ci/ directory."""
    return ["default", *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))]


def helm_args(value_set: str, *extra: str) -> list[str]:
    """`helm template` arguments for a value set."""
    args = [
        str(tool("helm")),
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *extra,
    ]
    if value_set != "default":
        args += ["--values", str(CHART / "ci" / value_set)]
    return args


@functools.cache
def _rendered(value_set: str, extra: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        helm_args(value_set, *extra), capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"helm template ({value_set}) failed: {done.stderr}")
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def documents(value_set: str, *extra: str) -> list[dict[str, Any]]:
    """Every rendered object of a value set (hooks included)."""
    return [dict(d) for d in _rendered(value_set, tuple(extra))]


def render_error(value_set_file: Path) -> str:
    """helm's stderr for a values file that must be refused (fails if it renders)."""
    args = helm_args("default", "--values", str(value_set_file))
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0, f"{value_set_file.name} rendered but must be refused"
    return done.stderr


def is_hook(doc: dict[str, Any]) -> bool:
    """Whether a rendered object is a Helm hook."""
    return HOOK in (doc.get("metadata", {}).get("annotations") or {})


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one non-hook object of `kind` (and `name`)."""
    found = [
        d
        for d in docs
        if d["kind"] == kind and not is_hook(d) and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def every(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Every non-hook object of `kind`."""
    return [d for d in docs if d["kind"] == kind and not is_hook(d)]


def of(docs: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    """Every non-hook object of `kind` labelled with `component` (webhook or reconciler)."""
    return [
        d
        for d in every(docs, kind)
        if (d["metadata"].get("labels") or {}).get(COMPONENT) == component
    ]


def file_of(docs: list[dict[str, Any]], key: str) -> Any:
    """The one ConfigMap file named `key` (admission.yaml, reconciler.yaml), parsed as YAML."""
    found = [d for d in every(docs, "ConfigMap") if key in (d.get("data") or {})]
    assert len(found) == 1, f"expected one ConfigMap with {key}, found {len(found)}"
    return yaml.safe_load(found[0]["data"][key])
