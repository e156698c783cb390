"""Looking up the object behind a subresource request, and the namespace of a request.

A Scale, Eviction, Binding, TokenRequest or exec/attach/port-forward request carries no labels
of the object it acts on, so neither the API server's objectSelector nor the policy could tell
that `kubectl scale`, `kubectl drain` or `kubectl exec` touches a managed object. For
`/validate/parent` requests of configured kinds only, the webhook reads the parent's metadata
(PartialObjectMetadata: no spec, no data) from the API server and decides on that. It reads a
namespace's metadata when an allowance holds only while the namespace is being deleted, and
before a namespace is deleted it lists the configured kinds in it for one managed object.

Owns the `ParentLookup` port and its implementation: configured by the official client's
loaders (the only place the webhook imports `kubernetes`), sent through webhook/apitransport
(one kept-alive TLS connection per thread, no retries). Every failure, a status other than
200 or 404, and an answer that is not a JSON object become `LookupFailed`, which the app
answers like an unavailable policy engine (fail closed by default); 404 means "no such object".
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from webhook import apitransport

_SAFE_SEGMENT = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_USER_AGENT = "gitwarden-webhook"


@dataclass(frozen=True)
class ParentMeta:
    """Labels and annotations of the scaled object."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    terminating: bool = False
    """metadata.deletionTimestamp is set."""
    uid: str = ""


class UnsupportedConfig(ValueError):
    """The kubeconfig asks for something the lookups refuse; the message says what (no secrets)."""


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


Observe = Callable[[str, str, float], None]
"""Told of each lookup: the read ("object" or "list"), its outcome ("found": the object or a
labelled one is there, "absent", "failed") and its seconds."""


class TimedLookup:
    """A ParentLookup that tells `observe` how each read went and how long it took.

    For /metrics: a webhook that is slow because the API server is slow to answer its lookups
    says so there. The reads themselves are the wrapped lookup's.
    """

    def __init__(self, inner: ParentLookup, observe: Observe) -> None:
        self._inner, self._observe = inner, observe

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> ParentMeta | None:
        started, outcome = time.perf_counter(), "failed"
        try:
            found = self._inner.metadata(group, version, resource, namespace, name)
            outcome = "absent" if found is None else "found"
            return found
        finally:
            self._observe("object", outcome, time.perf_counter() - started)

    def any_labelled(
        self, group: str, version: str, resource: str, namespace: str, selector: str
    ) -> bool:
        started, outcome = time.perf_counter(), "failed"
        try:
            found = self._inner.any_labelled(group, version, resource, namespace, selector)
            outcome = "found" if found else "absent"
            return found
        finally:
            self._observe("list", outcome, time.perf_counter() - started)


class KubeParentLookup:
    """PartialObjectMetadata GETs over one kept-alive connection per thread (one per worker).

    The official client's loaders read the kubeconfig or the in-cluster service account, so
    client certificates, CAs, tokens and their refresh work as with the client; the requests
    go through webhook/apitransport, not the client's connection pool.
    """

    def __init__(self, configuration: k8s.Configuration, timeout: float) -> None:
        if configuration.proxy:
            # The lookups never go through a proxy; one the kubeconfig asks for is refused
            # loudly rather than bypassed in silence.
            raise UnsupportedConfig(
                "the kubeconfig names a proxy-url; lookups connect directly only"
            )
        if configuration.assert_hostname is not None:
            raise UnsupportedConfig("assert_hostname is not supported; use tls-server-name")
        try:
            server = apitransport.Server.from_url(configuration.host, configuration.tls_server_name)
        except ValueError as exc:
            raise UnsupportedConfig(str(exc)) from None
        context = apitransport.tls_context(
            verify=bool(configuration.verify_ssl),
            ca_file=configuration.ssl_ca_cert,
            ca_data=configuration.ca_cert_data,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
        )
        self._configuration = configuration
        self._transport = apitransport.ApiTransport(server, context, timeout)

    @classmethod
    def load(cls, kubeconfig: Path | None, timeout: float) -> KubeParentLookup:
        """A lookup configured from `kubeconfig`, or in-cluster when it is None."""
        # proxy="" and no_proxy="": the client would otherwise take HTTPS_PROXY from the
        # environment; only a kubeconfig's own proxy-url can set one (and is refused above).
        configuration = k8s.Configuration(proxy="", no_proxy="")
        if kubeconfig is None:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]  # untyped library
                client_configuration=configuration
            )
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped library
                str(kubeconfig), client_configuration=configuration
            )
        return cls(configuration, timeout)

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> ParentMeta | None:
        """GET the object's metadata only; 404 is None, any other failure `LookupFailed`."""
        ref = f"{resource} {namespace}/{name}" if namespace else f"{resource} {name}"
        _check_segment(name, "name")
        body = self._get(_path(group, version, resource, namespace) + f"/{name}", ref)
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
        query = urllib.parse.urlencode({"labelSelector": selector, "limit": "1"})
        path = _path(group, version, resource, namespace)
        body = self._get(f"{path}?{query}", ref, _METADATA_LIST)
        if body is None:
            return False
        items = body.get("items") or []  # an empty list comes back as null
        if not isinstance(items, list):
            raise LookupFailed(f"cannot list {ref}: no items in the answer")
        return len(items) > 0

    def _get(self, target: str, ref: str, accept: str = _METADATA_ONLY) -> dict[str, object] | None:
        headers = {"Accept": accept, "User-Agent": _USER_AGENT}
        # Asked on every request, as the client does: the loaders' refresh hook re-reads a
        # rotated service-account token (the kubelet rewrites the file) or an expired one.
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer and bearer["value"]:
            headers["Authorization"] = str(bearer["value"])
        try:
            answer = self._transport.get(target, headers)
        except apitransport.TransportFailed as exc:
            raise LookupFailed(f"cannot read {ref}: {exc}") from None
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise LookupFailed(f"cannot read {ref}: HTTP {answer.status}")
        try:
            body = orjson.loads(answer.body)
        except ValueError:  # not JSON, not UTF-8, or nested past orjson's depth limit
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
