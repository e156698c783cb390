"""The generated sections of the user's guide (`docs/`), rendered from the code that owns them.

Owns rendering each section (the reconciler's settings from `reconciler.configdoc`, the
webhook's environment from `webhook.settings`, the admission configuration's keys from
`webhook.config`, the chart's values from `charts/*/values.yaml` once a chart exists) and
rewriting or checking them between their markers. `python -m tests.docs_sections` (`make docs`)
rewrites them; `tests/unit/test_docs.py` fails when one is stale. Adding a section is one entry
in `SECTIONS` and its markers in a page. Must not hand-write a setting that code declares.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from reconciler import configdoc
from webhook import config as config_mod
from webhook import settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"


def begin(name: str) -> str:
    return f"<!-- generated: {name} (make docs), do not edit -->"


def end(name: str) -> str:
    return f"<!-- end generated: {name} -->"


def reconciler_settings() -> str:
    table = configdoc.markdown_table()
    inner = table.split(configdoc.BEGIN, 1)[1].split(configdoc.END, 1)[0]
    return inner.strip("\n")


def webhook_settings() -> str:
    rows = ["| variable | default | what |", "|---|---|---|"]
    rows += [f"| `{v}` | {d} | {h} |" for v, d, h in settings.documented()]
    return "\n".join(rows)


# What each key of the admission configuration means. The keys come from the code
# (`config.to_document`); a key added there without a line here fails `tests/unit/test_docs.py`.
ADMISSION_KEYS: Mapping[str, str] = {
    "namespace": "GitWarden's own namespace: home of the GitOps service account, never blocked",
    "gitops.service_account": "the GitOps service account; its requests are always allowed",
    "gitops.extra_usernames": "more usernames treated as the GitOps identity (one identity each)",
    "gitops.require_pod_bound_token": "only tokens bound to a reconciler pod count as GitOps",
    "gitops.pod_name_prefixes": "with pod-bound tokens: the reconciler pods' name prefixes",
    "gitops.verify_pod_live": "the webhook also checks that the token's pod is alive (same uid)",
    "gitops.pod_labels": "with verify_pod_live: labels the live reconciler pod must carry",
    "managed_label.key": "the label the reconciler stamps on every object it applies",
    "managed_label.value": "its value",
    "protected_namespace_label.key": "namespaces with this label are protected: no creates",
    "protected_namespace_label.value": "its value",
    "repository.url": "the repository named in denials (where to make the change)",
    "repository.branch": "the branch named in denials",
    "repository.path_annotation": "the annotation holding an object's file in Git",
    "repository.default_path": "what a denial says when an object has no such annotation",
    "cluster_scoped_kinds": "cluster-scoped kinds guarded as a whole ({group, kind, resource})",
    "scale_resources": "(group, resource) pairs whose */scale is guarded",
    "namespace_content_kinds": "kinds a namespace delete is checked for (managed ones inside)",
    "parent_subresources": "subresources decided on their parent's labels (exec, eviction...)",
    "guarded_crd_groups": "groups whose CRDs cannot be deleted while managed resources exist",
    "protected_workloads": "workload kinds whose updates in protected namespaces are guarded",
    "exemptions.usernames": "users always allowed (operators that must write managed objects)",
    "exemptions.groups": "groups always allowed; groups holding many identities are refused",
    "break_glass.groups": "groups allowed with a warning and an audit annotation, then reverted",
    "modes.default": "enforce (deny), warn (allow with a warning) or audit (annotation only)",
    "modes.namespaces": "per-namespace mode overrides",
    "allow_dry_run": "allow dry-run requests of anyone (off: a dry run is decided like a write)",
    "excluded_namespaces": "namespaces the webhooks never see (GitWarden's own is always added)",
    "system_allowances": "each controller's allowance, by username (webhook/allowances.py)",
    "webhook.timeout_seconds": "the registration's timeoutSeconds",
}


def _leaves(document: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in document.items():
        if isinstance(value, Mapping) and value and f"{prefix}{key}" not in ADMISSION_KEYS:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def admission_keys() -> list[tuple[str, Any]]:
    """Every key of the admission configuration with its default."""
    return list(_leaves(config_mod.to_document(config_mod.AdmissionConfig())))


def _shown(value: Any) -> str:
    if isinstance(value, list) and len(value) > 3:
        return f"{len(value)} entries"
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("...").strip()
    return f"`{text}`".replace("|", "\\|")


def admission_settings() -> str:
    rows = ["| key | default | what |", "|---|---|---|"]
    for key, value in admission_keys():
        rows.append(f"| `{key}` | {_shown(value)} | {ADMISSION_KEYS.get(key, '')} |")
    return "\n".join(rows)


def _chart_values(values: Mapping[str, Any], comments: Mapping[str, str]) -> list[str]:
    rows = []
    for key, value in _leaves_plain(values):
        rows.append(f"| `{key}` | {_shown(value)} | {comments.get(key, '')} |")
    return rows


def _leaves_plain(document: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in document.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves_plain(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _comments(text: str) -> dict[str, str]:
    """`# comment` lines directly above a `key:` line, by the key's dotted path."""
    found: dict[str, str] = {}
    pending: list[str] = []
    path: list[tuple[int, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip().removeprefix("--").strip())
            continue
        match = re.match(r"(\s*)([A-Za-z0-9_.-]+):", line)
        if match:
            indent = len(match.group(1))
            while path and path[-1][0] >= indent:
                path.pop()
            path.append((indent, match.group(2)))
            if pending:
                found[".".join(key for _, key in path)] = " ".join(pending)
        pending = []
    return found


def chart_values() -> str:
    charts = sorted(REPO_ROOT.glob("charts/*/values.yaml"))
    if not charts:
        return "No chart in this tree yet: `make docs` fills this table from its values.yaml."
    parts = []
    for values_file in charts:
        text = values_file.read_text()
        values = yaml.safe_load(text) or {}
        parts.append(f"`{values_file.relative_to(REPO_ROOT)}`:\n")
        parts.append("\n".join(["| value | default | what |", "|---|---|---|",
                                *_chart_values(values, _comments(text))]))  # fmt: skip
    return "\n".join(parts)


SECTIONS: Mapping[str, tuple[Path, Callable[[], str]]] = {
    "reconciler-settings": (CONFIGURATION, reconciler_settings),
    "webhook-settings": (CONFIGURATION, webhook_settings),
    "admission-settings": (CONFIGURATION, admission_settings),
    "chart-values": (CONFIGURATION, chart_values),
}


def render(text: str, name: str, body: str) -> str:
    """`text` with the section `name` replaced by `body` (ValueError if its markers are gone)."""
    start, stop = begin(name), end(name)
    if start not in text or stop not in text:
        raise ValueError(f"the markers of section {name} are missing")
    head, rest = text.split(start, 1)
    _, tail = rest.split(stop, 1)
    return f"{head}{start}\n{body}\n{stop}{tail}"


def stale() -> list[str]:
    """Names of the sections whose text differs from what the code renders."""
    found = []
    for name, (path, make) in SECTIONS.items():
        text = path.read_text()
        if render(text, name, make()) != text:
            found.append(name)
    return found


def write() -> None:
    for name, (path, make) in SECTIONS.items():
        path.write_text(render(path.read_text(), name, make()))


if __name__ == "__main__":
    write()
    sys.exit(0)
