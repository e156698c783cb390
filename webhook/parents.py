"""Looking up the object behind a subresource request, and the namespace of a request.

A Scale, Eviction, Binding, TokenRequest or exec/attach/port-forward request carries no labels
of the object it acts on, so neither the API server's objectSelector nor the policy could tell
that `kubectl scale`, `kubectl drain` or `kubectl exec` touches a managed object. For
`/validate/parent` requests of configured kinds only, the webhook reads the parent's metadata
(PartialObjectMetadata: no spec, no data) from the API server and decides on that. It reads a
namespace's metadata when an allowance holds only while the namespace is being deleted, and
before a namespace is deleted it lists the configured kinds in it for one managed object.

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
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


@dataclass(frozen=True)
class ParentMeta:
    """Labels and annotations of the scaled object."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    terminating: bool = False
    """metadata.deletionTimestamp is set."""
    uid: str = ""


class LookupFailed(Exception):
    """The parent object could not be read; the message names it, never its contents."""


class ParentLookup(Protocol):
    """Reads the metadata of the object a subresource request is about."""

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> ParentMeta | None:
        """The object's metadata, None when it does not exist, or `LookupFailed`."""
        ...

    def any_labelled(
        self, group: str, version: str, resource: str, namespace: str, selector: str
    ) -> bool:
        """Whether any object of the kind in the namespace matches the label selector."""
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
    ) -> ParentMeta | None:
        """GET the object's metadata only; 404 is None, any other failure `LookupFailed`."""
        ref = f"{resource} {namespace}/{name}" if namespace else f"{resource} {name}"
        _check_segment(name, "name")
        body = self._get(_path(group, version, resource, namespace) + f"/{name}", {}, ref)
        if body is None:
            # Nothing to protect: the API server answers the request itself with 404.
            return None
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise LookupFailed(f"cannot read {ref}: no metadata in the answer")
        return ParentMeta(
            labels=_strings(meta.get("labels")),
            annotations=_strings(meta.get("annotations")),
            terminating=bool(meta.get("deletionTimestamp")),
            uid=str(meta.get("uid") or ""),
        )

    def any_labelled(
        self, group: str, version: str, resource: str, namespace: str, selector: str
    ) -> bool:
        """LIST one item's metadata with the selector; a kind not served (404) has none."""
        ref = f"{resource} in {namespace}"
        query = {"labelSelector": selector, "limit": "1"}
        body = self._get(_path(group, version, resource, namespace), query, ref, _METADATA_LIST)
        if body is None:
            return False
        items = body.get("items") or []  # an empty list comes back as null
        if not isinstance(items, list):
            raise LookupFailed(f"cannot list {ref}: no items in the answer")
        return len(items) > 0

    def _get(
        self, path: str, query: dict[str, str], ref: str, accept: str = _METADATA_ONLY
    ) -> dict[str, object] | None:
        try:
            method, url, headers, _, _ = self._client.param_serialize(
                "GET",
                path,
                query_params=list(query.items()),
                header_params={"Accept": accept},
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(
                method, url, header_params=headers, _request_timeout=self._timeout
            )
            status, raw = response.status, response.read()  # type: ignore[no-untyped-call]
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise LookupFailed(f"cannot read {ref}: HTTP {exc.status}") from None
        except (HTTPError, OSError) as exc:
            raise LookupFailed(f"cannot read {ref}: {type(exc).__name__}") from None
        if status == 404:
            return None
        if status != 200:
            raise LookupFailed(f"cannot read {ref}: HTTP {status}")
        try:
            body = json.loads(raw)
        except ValueError:
            raise LookupFailed(f"cannot read {ref}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise LookupFailed(f"cannot read {ref}: the answer is not an object")
        return body


def _check_segment(value: str, what: str) -> None:
    if not _SAFE_SEGMENT.fullmatch(value):
        raise LookupFailed(
            f"refusing to look up an object whose {what} is not a valid path segment"
        )


def _path(group: str, version: str, resource: str, namespace: str) -> str:
    # The caller has validated these (`review.check_lookup_target`); this adapter still never
    # sends a segment that could change the path or add a query.
    for value, what in ((group or "x", "group"), (version, "version"), (resource, "resource")):
        _check_segment(value, what)
    if namespace:
        _check_segment(namespace, "namespace")
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{where}/{resource}"


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
