"""Looking up the object behind a `*/scale` request, so scaling a managed object is guarded too.

A Scale object carries no labels or annotations of the object it scales, so neither the API
server's objectSelector nor the policy could tell that `kubectl scale` touches a managed
Deployment. For `/validate/scale` requests only, the webhook reads the parent's metadata
(PartialObjectMetadata: no spec, no data) from the API server and decides on that.

Owns the `ParentLookup` port and its implementation with the official client, the only place
the webhook imports `kubernetes`. Errors become `LookupFailed`, which the app answers like an
unavailable policy engine (fail closed by default).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from urllib3.exceptions import HTTPError

_SAFE_SEGMENT = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


@dataclass(frozen=True)
class ParentMeta:
    """Labels and annotations of the scaled object."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]


class LookupFailed(Exception):
    """The parent object could not be read; the message names it, never its contents."""


class ParentLookup(Protocol):
    """Reads the metadata of the object a subresource request is about."""

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> ParentMeta:
        """The object's labels and annotations, or `LookupFailed`."""
        ...


class KubeParentLookup:
    """PartialObjectMetadata GETs through the official client (one client per worker)."""

    def __init__(self, kubeconfig: Path | None, timeout: float) -> None:
        configuration = k8s.Configuration()
        if kubeconfig is None:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]  # untyped library
                client_configuration=configuration
            )
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped library
                str(kubeconfig), client_configuration=configuration
            )
        self._client = k8s.ApiClient(configuration)
        self._timeout = timeout

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> ParentMeta:
        """GET the object's metadata only; any failure is `LookupFailed`."""
        # The caller has validated these (`review.check_lookup_target`); this adapter still
        # never sends a segment that could change the path or add a query.
        if any(
            not _SAFE_SEGMENT.fullmatch(part) for part in (group or "x", version, resource, name)
        ):
            raise LookupFailed(
                "refusing to look up an object whose name is not a valid path segment"
            )
        if namespace and not _SAFE_SEGMENT.fullmatch(namespace):
            raise LookupFailed("refusing to look up an object whose namespace is not valid")
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        where = f"/namespaces/{namespace}" if namespace else ""
        path = f"{base}{where}/{resource}/{name}"
        ref = f"{resource} {namespace}/{name}" if namespace else f"{resource} {name}"
        try:
            method, url, headers, _, _ = self._client.param_serialize(
                "GET",
                path,
                header_params={"Accept": _METADATA_ONLY},
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(
                method, url, header_params=headers, _request_timeout=self._timeout
            )
            status, raw = response.status, response.read()  # type: ignore[no-untyped-call]
        except (k8s.ApiException, HTTPError, OSError) as exc:
            raise LookupFailed(f"cannot read {ref}: {type(exc).__name__}") from None
        if status != 200:
            raise LookupFailed(f"cannot read {ref}: HTTP {status}")
        try:
            body = json.loads(raw)
        except ValueError:
            raise LookupFailed(f"cannot read {ref}: the answer is not JSON") from None
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            raise LookupFailed(f"cannot read {ref}: no metadata in the answer")
        return ParentMeta(
            labels=_strings(meta.get("labels")), annotations=_strings(meta.get("annotations"))
        )


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
