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
(one kept-alive TLS connection per thread, no retries), or, for the serving worker's event
loop, started as a `Pending` read over apitransport's `LoopTransport` and advanced whenever
its socket is ready: the same GET, headers and reading of the answer (`Read`, `result`).
Every failure, a status other than 200 or 404, and an answer that is not a JSON object become
`LookupFailed`, which the app answers like an unavailable policy engine (fail closed by
default); 404 means "no such object".
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

import orjson
import yaml
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


@dataclass(frozen=True)
class Read:
    """One GET a lookup makes: an object's metadata, or one labelled item of a kind.

    Built by `object_read` and `list_read` from checked segments; equal reads are the same
    GET (a replay of gathered facts keys answers on them, webhook/facts).
    """

    listing: bool
    target: str
    """Path and query below the API server's prefix."""
    ref: str
    """What an error names: the kind and namespace/name, never an answer's contents."""

    @property
    def kind(self) -> str:
        """The read as /metrics names it: "object" or "list"."""
        return "list" if self.listing else "object"

    @property
    def accept(self) -> str:
        return _METADATA_LIST if self.listing else _METADATA_ONLY


Answered = ParentMeta | bool | None
"""What a read answers: an object's metadata (None: no such object), or whether a labelled
item exists."""


def object_read(group: str, version: str, resource: str, namespace: str, name: str) -> Read:
    """The GET of one object's metadata; `LookupFailed` for a segment that is not a name."""
    ref = f"{resource} {namespace}/{name}" if namespace else f"{resource} {name}"
    _check_segment(name, "name")
    return Read(False, _path(group, version, resource, namespace) + f"/{name}", ref)


def list_read(group: str, version: str, resource: str, namespace: str, selector: str) -> Read:
    """The LIST of one item's metadata with `selector`."""
    query = urllib.parse.urlencode({"labelSelector": selector, "limit": "1"})
    path = _path(group, version, resource, namespace)
    return Read(True, f"{path}?{query}", f"{resource} in {namespace}")


def result(read: Read, answer: apitransport.Answer) -> Answered:
    """What `answer` says for `read`: 404 is "none", anything but 200 or JSON `LookupFailed`."""
    body = _body(read, answer)
    if read.listing:
        if body is None:  # a kind not served (404) has none
            return False
        items = body.get("items") or []  # an empty list comes back as null
        if not isinstance(items, list):
            raise LookupFailed(f"cannot list {read.ref}: no items in the answer")
        return len(items) > 0
    if body is None:
        # Nothing to protect: the API server answers the request itself with 404.
        return None
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        raise LookupFailed(f"cannot read {read.ref}: no metadata in the answer")
    return ParentMeta(
        labels=_strings(meta.get("labels")),
        annotations=_strings(meta.get("annotations")),
        terminating=bool(meta.get("deletionTimestamp")),
        uid=str(meta.get("uid") or ""),
    )


def _body(read: Read, answer: apitransport.Answer) -> dict[str, object] | None:
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise LookupFailed(f"cannot read {read.ref}: HTTP {answer.status}")
    try:
        body = orjson.loads(answer.body)
    except ValueError:  # not JSON, not UTF-8, or nested past orjson's depth limit
        raise LookupFailed(f"cannot read {read.ref}: the answer is not JSON") from None
    if not isinstance(body, dict):
        raise LookupFailed(f"cannot read {read.ref}: the answer is not an object")
    return body


class Pending:
    """A read in flight on an event loop: wait for `sock` (writable when `wants_write`), then
    `advance` until it is True; `result` then answers or raises `LookupFailed`. Past
    `deadline` (time.monotonic), `expire` ends it as failed. Each read is timed as
    `TimedLookup` times a thread's."""

    def __init__(
        self, read: Read, exchange: apitransport.Exchange, observe: Observe | None
    ) -> None:
        self.read, self._exchange, self._observe = read, exchange, observe
        self._started = time.perf_counter()
        self._outcome: Answered | LookupFailed | None = None
        self._over = False

    @property
    def over(self) -> bool:
        """The read has ended (answered or failed): nothing is left to wait for."""
        return self._over

    @property
    def sock(self) -> socket.socket:
        return self._exchange.sock

    @property
    def wants_write(self) -> bool:
        return self._exchange.wants_write

    @property
    def deadline(self) -> float:
        return self._exchange.deadline

    def advance(self) -> bool:
        """Step the GET as far as its socket allows; True once it is over."""
        if self._over:
            return True
        try:
            answer = self._exchange.advance()
        except apitransport.TransportFailed as exc:
            self._end(LookupFailed(f"cannot read {self.read.ref}: {exc}"))
            return True
        if answer is None:
            return False
        try:
            self._end(result(self.read, answer))
        except LookupFailed as exc:
            self._end(exc)
        return True

    def expire(self) -> None:
        """Give up on the GET (past its deadline): it is over, failed."""
        if not self._over:
            self._exchange.abandon()
            self._end(LookupFailed(f"cannot read {self.read.ref}: timed out"))

    def result(self) -> Answered:
        """The read's answer, once `advance` said it is over; `LookupFailed` if it failed."""
        if not self._over:
            raise LookupFailed(f"cannot read {self.read.ref}: not answered yet")
        if isinstance(self._outcome, LookupFailed):
            raise self._outcome
        return self._outcome

    def _end(self, outcome: Answered | LookupFailed) -> None:
        self._over, self._outcome = True, outcome
        if self._observe is not None:
            if isinstance(outcome, LookupFailed):
                said = "failed"
            elif self.read.listing:
                said = "found" if outcome else "absent"
            else:
                said = "absent" if outcome is None else "found"
            self._observe(self.read.kind, said, time.perf_counter() - self._started)


@runtime_checkable
class LoopReads(Protocol):
    """A lookup that can also start its reads on an event loop (`KubeParentLookup`)."""

    def start(self, read: Read) -> Pending | None:
        """The read begun (nothing sent yet), or None: the caller makes it on a thread."""
        ...


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

    def start(self, read: Read) -> Pending | None:
        """The inner lookup's read on an event loop, timed; None when it has none."""
        inner = self._inner
        return inner.start(read, self._observe) if isinstance(inner, KubeParentLookup) else None

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

    def __init__(
        self, configuration: k8s.Configuration, timeout: float, *, loop_reads: bool = True
    ) -> None:
        """`loop_reads` False: `start` always answers None (every read is a thread's)."""
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
        self._loop = apitransport.LoopTransport(server, context, timeout) if loop_reads else None

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
            return cls(configuration, timeout)
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped library
            str(kubeconfig), client_configuration=configuration
        )
        return cls(configuration, timeout, loop_reads=loop_reads_allowed(kubeconfig))

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> ParentMeta | None:
        """GET the object's metadata only; 404 is None, any other failure `LookupFailed`."""
        read = object_read(group, version, resource, namespace, name)
        return cast(ParentMeta | None, result(read, self._get(read)))

    def any_labelled(
        self, group: str, version: str, resource: str, namespace: str, selector: str
    ) -> bool:
        """LIST one item's metadata with the selector; a kind not served (404) has none."""
        read = list_read(group, version, resource, namespace, selector)
        return cast(bool, result(read, self._get(read)))

    def start(self, read: Read, observe: Observe | None = None) -> Pending | None:
        """`read` begun on the calling event loop (`Pending`), or None: make it on a thread.

        None when the API server is named by a host name, every loop connection is busy, or
        the kubeconfig's user gets its credentials from an exec or auth-provider plugin (the
        client refreshes those by running a command or calling out, which an event loop must
        not wait for; a static token, a token file and in-cluster credentials are files);
        `LookupFailed` when the request cannot be sent or the connection is refused at once.
        """
        if self._loop is None:
            return None
        try:
            exchange = self._loop.start(read.target, self._headers(read))
        except apitransport.TransportFailed as exc:
            raise LookupFailed(f"cannot read {read.ref}: {exc}") from None
        if exchange is None:
            return None
        pending = Pending(read, exchange, observe)
        if exchange.reused:  # connected already: send now rather than after a wait
            pending.advance()
        return pending

    def _headers(self, read: Read) -> dict[str, str]:
        headers = {"Accept": read.accept, "User-Agent": _USER_AGENT}
        # Asked on every request, as the client does: the loaders' refresh hook re-reads a
        # rotated service-account token (the kubelet rewrites the file) or an expired one.
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer and bearer["value"]:
            headers["Authorization"] = str(bearer["value"])
        return headers

    def _get(self, read: Read) -> apitransport.Answer:
        try:
            return self._transport.get(read.target, self._headers(read))
        except apitransport.TransportFailed as exc:
            raise LookupFailed(f"cannot read {read.ref}: {exc}") from None


def loop_reads_allowed(kubeconfig: Path) -> bool:
    """Whether reads may be made on an event loop with this kubeconfig: False when its
    current user is an exec or auth-provider plugin, or when this cannot tell."""
    try:
        config = yaml.safe_load(kubeconfig.read_text())
        context = next(
            c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
        )
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, StopIteration):
        return False  # the loader read it, in a way this does not follow: threads only
    return isinstance(user, dict) and "exec" not in user and "auth-provider" not in user


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
